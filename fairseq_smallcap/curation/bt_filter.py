"""Online curation of back-translated pairs: score every synthetic pair with the registered
pair scores (:mod:`.pair_scores`) and train on the best ones.

The combined score of a pair is ``sum_i weight_i * z_i`` (lower is better), where ``z_i`` is
score i standardised over the batch (zero mean, unit variance; a score constant over the batch
counts zero): the scores come in different units (cross-entropies in nats, rates in [0, 1]),
and raw, the one with the widest range would decide alone whatever the weights say
(``--no-bt-filter-normalize`` weights the raw scores, as releases before issue 20 did). Each batch
keeps the ``keep(update)`` fraction with the lowest combined scores — ``keep`` is a
piecewise-linear schedule like the lambdas (``"0:1,2000:1,4000:0.7"``: no filtering while the
model is still babbling, then a growing cut) — and, with a threshold, drops pairs scoring above
it. At least one pair per batch is kept, so that every data-parallel worker runs the same
backward passes. Logged per training direction: the kept fraction and the mean of each score
over all scored pairs.
"""
import math
from typing import Dict, List, Optional, Tuple

import torch

from ..schedules import parse_schedule
from .pair_scores import BackTranslatedPairs
from .registry import PAIR_SCORES, CurationConfigError


class BackTranslationFilter:
    def __init__(self, cfg, score_names: str, weights: str, keep: str, max_score: Optional[float],
                 normalize: bool = True):
        classes = PAIR_SCORES.resolve(score_names, "--bt-filter-scores")
        self.scores = [cls(cfg) for cls in classes]
        if weights:
            try:
                self.weights = [float(w) for w in weights.split(",")]
            except ValueError:
                raise CurationConfigError(f"--bt-filter-weights {weights!r}: expected comma-separated numbers")
        else:
            self.weights = [1.0] * len(self.scores)
        if len(self.weights) != len(self.scores):
            raise CurationConfigError(
                f"--bt-filter-weights has {len(self.weights)} values for {len(self.scores)} "
                f"--bt-filter-scores ({score_names})")
        self.keep = parse_schedule(keep, "--bt-filter-keep")
        if not all(0 < value <= 1 for _, value in self.keep.pieces):
            raise CurationConfigError(f"--bt-filter-keep {keep!r}: fractions must be in (0, 1]")
        self.max_score = max_score
        self.normalize = normalize

    @property
    def names(self) -> List[str]:
        return [score.name for score in self.scores]

    def score(self, pairs: BackTranslatedPairs) -> Tuple[List[torch.Tensor], torch.Tensor]:
        """Each score's raw values (one per pair, on CPU) and the weighted sum of the scores,
        each standardised over the batch first unless ``normalize`` is off."""
        columns = [score(pairs).detach().float().cpu() for score in self.scores]
        return columns, self.combine(columns)

    def combine(self, columns: List[torch.Tensor]) -> torch.Tensor:
        """The weighted sum of score columns (one value per pair each), each standardised over
        its pairs first unless ``normalize`` is off."""
        ranked = [standardise(c) for c in columns] if self.normalize else columns
        return sum(w * c for w, c in zip(self.weights, ranked))

    def select(self, pairs: BackTranslatedPairs, update_num: int) -> Tuple[torch.Tensor, Dict[str, float]]:
        """Rows of the batch to train on (sorted), and sums to log."""
        columns, combined = self.score(pairs)
        n = combined.numel()
        n_keep = max(1, math.ceil(self.keep(update_num) * n - 1e-9))
        order = torch.argsort(combined, stable=True)[:n_keep]
        if self.max_score is not None:
            below = order[combined[order] <= self.max_score]
            order = below if below.numel() else order[:1]
        direction = f"{pairs.source_lang}_{pairs.target_lang}"
        log = {f"bt_filter_pairs_{direction}": n, f"bt_filter_kept_{direction}": order.numel()}
        for name, column in zip(self.names, columns):
            log[f"bt_score_{name}_{direction}"] = float(column.sum())
        return order.sort().values, log


def standardise(values: torch.Tensor) -> torch.Tensor:
    """``(values - mean) / std`` over the batch; zeros when the values do not vary."""
    if values.numel() < 2:
        return torch.zeros_like(values)
    std = values.std(unbiased=False)
    return (values - values.mean()) / std if std > 1e-12 else torch.zeros_like(values)


def select_rows(sample: Dict, rows: torch.Tensor, pad: int) -> Dict:
    """The sub-batch of ``sample`` made of ``rows`` (a LanguagePairDataset collated batch)."""
    if rows.numel() == sample["nsentences"]:
        return sample
    net_input = sample["net_input"]
    device_rows = rows.to(net_input["src_tokens"].device)
    pick = lambda t: t.index_select(0, device_rows)  # noqa: E731
    new_input = {k: pick(v) if torch.is_tensor(v) and v.dim() > 0 and v.size(0) == sample["nsentences"] else v
                 for k, v in net_input.items()}
    target = pick(sample["target"])
    new_sample = {**sample, "net_input": new_input, "target": target, "id": pick(sample["id"]),
                  "nsentences": rows.numel(), "ntokens": int(target.ne(pad).sum())}
    return new_sample

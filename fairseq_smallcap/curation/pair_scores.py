"""Scores of back-translated (synthetic) pairs, one registered class per score; lower is better.

Online back-translation trains on pairs (model translation of a real sentence -> the real
sentence). Early in training, and for small models throughout, many translations are useless:
too short or too long, copies of their input (the classic failure of unsupervised MT, where
the model learns to copy instead of translating), or babbling loops. Scoring each pair with the
model itself and training on the best ones is the data-side fix; it needs no other model.

* ``dual_xent`` — dual conditional cross-entropy (Junczys-Dowmunt 2018, "Dual Conditional
  Cross-Entropy Filtering of Noisy Parallel Corpora"): ``|H(y|x) - H(x|y)| + (H(y|x) + H(x|y))/2``
  with per-token cross-entropies from the same shared model in both directions (eval mode).
* ``length_ratio`` — ``|log(len(x) / len(y))|``.
* ``copy_rate`` — share of the translation's tokens that also occur in its input.
* ``repeated_ngrams`` — share of the translation's bigrams that repeat an earlier bigram.

Each class gets the task config and scores a :class:`BackTranslatedPairs` batch, returning one
float per pair. Add your own with ``@register_pair_score("name")`` in a module loaded through
``--curation-plugins`` and select it with ``--bt-filter-scores``.
"""
from collections import Counter
from dataclasses import dataclass
from typing import Dict, List

import torch
from fairseq.data import data_utils

from .registry import register_pair_score


@dataclass
class BackTranslatedPairs:
    """One back-translated batch. ``translations[i]`` (language ``source_lang``, ends with eos)
    was generated from ``originals[i]`` (language ``target_lang``, ends with eos); the model
    learns ``translation -> original`` from ``sample`` (the training batch), and ``mono_sample``
    is the monolingual batch the translations were generated from."""

    model: torch.nn.Module
    task: object
    source_lang: str
    target_lang: str
    translations: List[torch.Tensor]
    originals: List[torch.Tensor]
    sample: Dict
    mono_sample: Dict


def per_sentence_xent(model, net_input: Dict, target: torch.Tensor, pad: int) -> torch.Tensor:
    """Mean negative log-likelihood per target token, one value per row (eval mode, no grad)."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        net_output = model(**net_input)
        lprobs = model.get_normalized_probs(net_output, log_probs=True).float()
        nll = -lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
        mask = target.ne(pad)
        nll = (nll * mask).sum(-1) / mask.sum(-1).clamp(min=1)
    model.train(was_training)
    return nll


@register_pair_score("dual_xent")
class DualConditionalCrossEntropy:
    """Junczys-Dowmunt (2018): good pairs have low and similar cross-entropies both ways."""

    def __init__(self, cfg):
        self.cfg = cfg

    def __call__(self, pairs: BackTranslatedPairs) -> torch.Tensor:
        task, model = pairs.task, pairs.model
        pad, eos = task.dictionary.pad(), task.dictionary.eos()
        forward = per_sentence_xent(model, pairs.sample["net_input"], pairs.sample["target"], pad)
        # backward direction: real sentence (as in the monolingual batch) -> its translation
        bos = pairs.translations[0].new([task.lang_idx[pairs.source_lang]])
        target = data_utils.collate_tokens(pairs.translations, pad, eos, left_pad=False)
        prev_output_tokens = data_utils.collate_tokens(
            [torch.cat([bos, t[:-1]]) for t in pairs.translations], pad, eos, left_pad=False)
        mono_input = pairs.mono_sample["net_input"]
        net_input = {"src_tokens": mono_input["src_tokens"], "src_lengths": mono_input["src_lengths"],
                     "prev_output_tokens": prev_output_tokens.to(target.device)}
        backward = per_sentence_xent(model, net_input, target, pad)
        return (forward - backward).abs() + 0.5 * (forward + backward)


@register_pair_score("length_ratio")
class LengthRatio:
    """Absolute log ratio of the token lengths (eos excluded)."""

    def __init__(self, cfg):
        self.cfg = cfg

    def __call__(self, pairs: BackTranslatedPairs) -> torch.Tensor:
        src = torch.tensor([max(t.numel() - 1, 1) for t in pairs.translations], dtype=torch.float)
        tgt = torch.tensor([max(t.numel() - 1, 1) for t in pairs.originals], dtype=torch.float)
        return (src / tgt).log().abs()


@register_pair_score("copy_rate")
class CopyRate:
    """Share of the translation's tokens (eos excluded, with multiplicity) found in its input."""

    def __init__(self, cfg):
        self.cfg = cfg

    def __call__(self, pairs: BackTranslatedPairs) -> torch.Tensor:
        rates = []
        for translation, original in zip(pairs.translations, pairs.originals):
            hyp, ref = Counter(translation[:-1].tolist()), Counter(original[:-1].tolist())
            total = sum(hyp.values())
            rates.append(sum((hyp & ref).values()) / total if total else 1.0)
        return torch.tensor(rates)


@register_pair_score("repeated_ngrams")
class RepeatedNgrams:
    """Share of the translation's bigrams that already occurred earlier in it (babbling loops)."""

    order = 2

    def __init__(self, cfg):
        self.cfg = cfg

    def __call__(self, pairs: BackTranslatedPairs) -> torch.Tensor:
        shares = []
        for translation in pairs.translations:
            tokens = translation[:-1].tolist()
            ngrams = [tuple(tokens[i:i + self.order]) for i in range(len(tokens) - self.order + 1)]
            shares.append(1 - len(set(ngrams)) / len(ngrams) if ngrams else 0.0)
        return torch.tensor(shares)

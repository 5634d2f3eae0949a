"""Scoring shared by the benchmark scripts: sacreBLEU and chrF with their signatures, the
collapse and copy diagnostics, sacreBLEU's paired bootstrap test, and paired multi-seed
statistics (mean ± std, per-seed differences with a 95% t interval).

Low-BLEU systems are hard to tell apart by BLEU alone, so every test set is also described by
two low-noise diagnostics of the failure modes of unsupervised MT:

* ``distinct``: the share of distinct hypotheses among the test sentences (a collapsed model
  writes the same caption for many inputs: 79 distinct fr→en outputs for 1,000 inputs);
* ``copied``: the share of hypothesis words that also occur in their source sentence (a model
  that copies instead of translating; names and numbers make it never quite 0).

Only sacrebleu and scipy are used; the plugin is not imported.
"""
import math
import statistics
from typing import Dict, List, Sequence


def read_lines(path) -> List[str]:
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def translation_scores(hyps: Sequence[str], refs: Sequence[str], sources: Sequence[str]) -> Dict:
    """sacreBLEU and chrF (with signatures) of ``hyps`` against ``refs``, and the diagnostics."""
    from sacrebleu.metrics import BLEU, CHRF

    if not len(hyps) == len(refs) == len(sources):
        raise ValueError(f"{len(hyps)} hypotheses, {len(refs)} references, {len(sources)} sources")
    bleu, chrf = BLEU(), CHRF()
    return {
        "bleu": round(bleu.corpus_score(hyps, [refs]).score, 2),
        "chrf": round(chrf.corpus_score(hyps, [refs]).score, 2),
        "bleu_signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
        **diagnostics(hyps, sources),
    }


def diagnostics(hyps: Sequence[str], sources: Sequence[str]) -> Dict[str, float]:
    """``distinct``: distinct hypotheses / hypotheses; ``copied``: hypothesis words (lower-cased,
    split on white space) that occur in their own source sentence / all hypothesis words."""
    words = copied = 0
    for hyp, src in zip(hyps, sources):
        source_words = set(src.lower().split())
        tokens = hyp.lower().split()
        words += len(tokens)
        copied += sum(token in source_words for token in tokens)
    return {"distinct": round(len(set(hyps)) / max(len(hyps), 1), 4),
            "copied": round(copied / words, 4) if words else 0.0}


def paired_bootstrap(refs: Sequence[str], baseline: Sequence[str], system: Sequence[str],
                     samples: int = 1000) -> Dict:
    """sacreBLEU's paired bootstrap resampling (``sacrebleu --paired-bs``) of ``system`` against
    ``baseline`` on BLEU and chrF: each one's score, the p-value and the signature."""
    from sacrebleu.metrics import BLEU, CHRF
    from sacrebleu.significance import PairedTest

    metrics = {"bleu": BLEU(references=[list(refs)]), "chrf": CHRF(references=[list(refs)])}
    test = PairedTest([("baseline", list(baseline)), ("system", list(system))], metrics,
                      references=None, test_type="bs", n_samples=samples)
    signatures, scores = test()
    out = {}
    for name in metrics:
        key = next(k for k in scores if k.lower().startswith(name))
        base, sys_ = scores[key]
        out[name] = {"baseline": round(base.score, 2), "system": round(sys_.score, 2),
                     "p_value": sys_.p_value, "signature": str(signatures[key])}
    return out


def t_quantile_975(dof: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.975, dof))


def t_interval_95(values: Sequence[float]):
    """The mean of two values or more and its 95% Student t interval ``(low, high)``."""
    mean = statistics.mean(values)
    half = t_quantile_975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return mean, (mean - half, mean + half)


def paired_differences(baseline: Dict[int, float], system: Dict[int, float]) -> Dict:
    """Per-seed differences ``system - baseline`` over the seeds both have, their mean and a 95%
    Student t interval (none with fewer than two seeds), and each side's mean ± std."""
    seeds = sorted(set(baseline) & set(system))
    diffs = [system[s] - baseline[s] for s in seeds]
    out = {"seeds": seeds, "differences": [round(d, 2) for d in diffs],
           "baseline": mean_std([baseline[s] for s in seeds]), "system": mean_std([system[s] for s in seeds])}
    if not diffs:
        return {**out, "mean": None, "ci95": None}
    if len(diffs) < 2:
        return {**out, "mean": round(statistics.mean(diffs), 2), "ci95": None}
    mean, (low, high) = t_interval_95(diffs)
    return {**out, "mean": round(mean, 2), "ci95": [round(low, 2), round(high, 2)]}


def mean_std(values: Sequence[float]) -> Dict:
    values = list(values)
    return {"n": len(values), "mean": round(statistics.mean(values), 2) if values else None,
            "std": round(statistics.stdev(values), 2) if len(values) > 1 else None}


def format_paired(p: Dict) -> str:
    """``+1.23 [−0.40, +2.86] (3 seeds: +0.9, +2.1, +0.7)``."""
    if p["mean"] is None:
        return "no common seed"
    if not p["ci95"]:
        return f"{p['mean']:+.2f} (seed {p['seeds'][0]} only: no interval)"
    per_seed = ", ".join(f"{d:+.2f}" for d in p["differences"])
    return f"{p['mean']:+.2f} [{p['ci95'][0]:+.2f}, {p['ci95'][1]:+.2f}] ({len(p['seeds'])} seeds: {per_seed})"

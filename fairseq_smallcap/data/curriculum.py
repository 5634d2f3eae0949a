"""Competence-based curriculum (Platanios et al. 2019, "Competence-based Curriculum Learning
for Neural Machine Translation").

Every monolingual sentence gets a difficulty, turned into its CDF value in [0, 1] over the
corpus (the share of sentences at most as difficult). At training update ``t`` the model's
competence is ``c(t) = min(1, sqrt(t * (1 - c0^2) / T + c0^2))`` (their square-root schedule),
and only sentences with CDF value <= c(t) are sampled: a small model first sees the short,
common-word sentences it can learn, and the whole corpus after ``T`` updates. Difficulties are
registered components (``@register_difficulty``): ``length`` (tokens) and ``rarity`` (their
"sentence rarity", ``-sum log p(token)`` with unigram probabilities from the dictionary counts).
"""
import math

import numpy as np

from ..registry import Registry

DIFFICULTIES = Registry("curriculum difficulty")
register_difficulty = DIFFICULTIES.register


def competence(update: int, total_updates: int, initial: float) -> float:
    """Platanios et al. (2019), Eq. 6 (c_sqrt)."""
    if total_updates <= 0:
        return 1.0
    return min(1.0, math.sqrt(update * (1 - initial ** 2) / total_updates + initial ** 2))


def as_cdf(difficulty: np.ndarray) -> np.ndarray:
    """Each value's share of the corpus at most as difficult (ties get the same value)."""
    order = np.sort(difficulty, kind="stable")
    return np.searchsorted(order, difficulty, side="right") / max(len(difficulty), 1)


def dataset_tokens(dataset):
    """(all tokens of a fairseq indexed dataset, start offset of each sentence), read from the
    mmap buffer when possible (fast on large corpora), else item by item."""
    buffer, index = getattr(dataset, "_bin_buffer", None), getattr(dataset, "_index", None)
    if buffer is not None and index is not None and hasattr(index, "_pointers"):
        tokens = np.frombuffer(buffer, dtype=index.dtype)
        return tokens, (np.asarray(index._pointers) // index.dtype().itemsize).astype(np.int64)
    items = [np.asarray(dataset[i]) for i in range(len(dataset))]
    starts = np.cumsum([0] + [len(x) for x in items[:-1]]).astype(np.int64)
    return (np.concatenate(items) if items else np.zeros(0, dtype=np.int64)), starts


@register_difficulty("length")
def length_difficulty(dataset, dictionary) -> np.ndarray:
    return np.asarray(dataset.sizes, dtype=np.float64)


@register_difficulty("rarity")
def rarity_difficulty(dataset, dictionary) -> np.ndarray:
    counts = np.asarray(dictionary.count, dtype=np.float64)
    neg_log_p = -np.log((counts + 1) / (counts.sum() + len(counts)))  # add-one smoothed unigrams
    tokens, starts = dataset_tokens(dataset)
    sizes = np.asarray(dataset.sizes)
    if len(sizes) == 0:
        return np.zeros(0)
    per_token = neg_log_p[np.minimum(tokens.astype(np.int64), len(neg_log_p) - 1)]
    sums = np.add.reduceat(per_token, starts) if len(per_token) else np.zeros(len(sizes))
    return np.where(sizes > 0, sums, 0.0)

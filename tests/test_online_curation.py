"""Online curation of back-translated pairs (scores, the keep-fraction filter) and the
competence-based curriculum."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fairseq_smallcap.curation import PAIR_SCORES, register_pair_score
from fairseq_smallcap.curation import pair_scores
from fairseq_smallcap.curation.bt_filter import BackTranslationFilter, select_rows
from fairseq_smallcap.curation.pair_scores import BackTranslatedPairs
from fairseq_smallcap.curation.registry import CurationConfigError
from fairseq_smallcap.schedules import ScheduleError
from fairseq_smallcap.data.curriculum import DIFFICULTIES, as_cdf, competence

EOS = 2


def pairs_of(translations, originals, **kw):
    t = [torch.tensor(x + [EOS]) for x in translations]
    o = [torch.tensor(x + [EOS]) for x in originals]
    fields = dict(model=None, task=None, source_lang="fr", target_lang="en", sample={}, mono_sample={})
    fields.update(kw)
    return BackTranslatedPairs(translations=t, originals=o, **fields)


def score(name, pairs):
    return PAIR_SCORES.entries[name](None)(pairs).tolist()


def test_length_ratio_prefers_similar_lengths():
    pairs = pairs_of([[5, 6, 7, 8], [5, 6], [5] * 12], [[10, 11, 12, 13]] * 3)
    good, short, long = score("length_ratio", pairs)
    assert good == 0 and short == pytest.approx(math.log(2)) and long == pytest.approx(math.log(3))


def test_copy_rate_flags_copies_of_the_input():
    original = [10, 11, 12, 13]
    pairs = pairs_of([[10, 11, 12, 13], [20, 21, 12, 23], [20, 21, 22, 23]], [original] * 3)
    assert score("copy_rate", pairs) == [1.0, 0.25, 0.0]


def test_repeated_ngrams_flags_babbling_loops():
    pairs = pairs_of([[1, 2, 3, 4, 5], [1, 2, 1, 2, 1, 2], [7]], [[9]] * 3)
    clean, loop, single = score("repeated_ngrams", pairs)
    assert clean == 0 and single == 0 and loop == pytest.approx(1 - 2 / 5)


def test_dual_xent_combines_both_directions(monkeypatch):
    """|H(y|x) - H(x|y)| + (H(y|x) + H(x|y)) / 2 with the model's per-token cross-entropies."""
    calls = iter([torch.tensor([1.0, 1.0, 5.0]), torch.tensor([1.0, 3.0, 5.0])])
    monkeypatch.setattr(pair_scores, "per_sentence_xent", lambda *a, **k: next(calls))
    task = SimpleNamespace(dictionary=SimpleNamespace(pad=lambda: 1, eos=lambda: EOS), lang_idx={"fr": 50})
    mono = {"net_input": {"src_tokens": torch.ones(3, 4, dtype=torch.long), "src_lengths": torch.full((3,), 4)}}
    pairs = pairs_of([[5, 6], [5], [7, 8, 9]], [[4]] * 3, task=task, mono_sample=mono,
                     sample={"net_input": {}, "target": torch.ones(3, 2, dtype=torch.long)})
    # equal and low cross-entropies rank first; disagreement is penalised
    assert score("dual_xent", pairs) == [1.0, 4.0, 5.0]


@register_pair_score("test_given_order")
class GivenOrder:
    """Scores a pair by its first translated token (lets tests fix the ranking)."""

    def __init__(self, cfg):
        pass

    def __call__(self, pairs):
        return torch.tensor([float(t[0]) for t in pairs.translations])


@pytest.mark.parametrize("keep,update,expected", [
    ("0.3", 0, 3), ("1", 0, 10), ("0:1,100:0.5", 50, 8), ("0:1,100:0.5", 500, 5), ("0.01", 0, 1),
])
def test_filter_keeps_exactly_the_asked_fraction_of_lowest_scores(keep, update, expected):
    scores = [7, 3, 9, 1, 8, 2, 6, 0, 5, 4]
    pairs = pairs_of([[s] for s in scores], [[1]] * 10)
    rows, log = BackTranslationFilter(None, "test_given_order", "", keep, None).select(pairs, update)
    assert len(rows) == expected
    assert sorted(scores[i] for i in rows) == sorted(scores)[:expected]
    assert rows.tolist() == sorted(rows.tolist())  # batch order kept
    assert log["bt_filter_pairs_fr_en"] == 10 and log["bt_filter_kept_fr_en"] == expected
    assert log["bt_score_test_given_order_fr_en"] == sum(scores)


@register_pair_score("test_second_token_per_cent")
class SecondTokenPerCent:
    """A score in [0, 1] (the second translated token / 100), beside test_given_order's tens."""

    def __init__(self, cfg):
        pass

    def __call__(self, pairs):
        return torch.tensor([float(t[1]) / 100 for t in pairs.translations])


def test_filter_threshold_and_weights():
    pairs = pairs_of([[s] for s in [1, 5, 2, 8]], [[1, 1, 1]] * 4)
    raw = dict(normalize=False)
    rows, _ = BackTranslationFilter(None, "test_given_order", "", "1", 2.5, **raw).select(pairs, 0)
    assert rows.tolist() == [0, 2]
    rows, _ = BackTranslationFilter(None, "test_given_order", "", "1", -10, **raw).select(pairs, 0)
    assert rows.tolist() == [0]  # never an empty batch
    # normalised (the default), the threshold applies to the combined z-score: 1, 5, 2, 8 have
    # mean 4 and std sqrt(7.5), so z = -1.10, 0.37, -0.73, 1.46
    rows, _ = BackTranslationFilter(None, "test_given_order", "", "1", 0.0).select(pairs, 0)
    assert rows.tolist() == [0, 2]


def test_scores_are_standardised_over_the_batch_before_weighting():
    # first score 10, 11, 30, 40 (tens, like cross-entropies in nats); second 0.9, 0.1, 0.5, 0.5
    # (a rate). Raw, the first decides alone: 10.9 is lowest (row 0). Standardised,
    # z1 = -1.00, -0.92, 0.57, 1.35 and z2 = 1.41, -1.41, 0, 0: row 1 is lowest (-2.33).
    pairs = pairs_of([[10, 90], [11, 10], [30, 50], [40, 50]], [[1, 1]] * 4)
    names = "test_given_order,test_second_token_per_cent"
    raw, _ = BackTranslationFilter(None, names, "", "0.25", None, normalize=False).select(pairs, 0)
    normalised, log = BackTranslationFilter(None, names, "", "0.25", None).select(pairs, 0)
    assert raw.tolist() == [0] and normalised.tolist() == [1]
    assert log["bt_score_test_second_token_per_cent_fr_en"] == pytest.approx(2.0)  # raw values logged
    # standardised, a score's unit does not matter: the first score in hundreds picks the same rows
    scaled = pairs_of([[1000, 90], [1100, 10], [3000, 50], [4000, 50]], [[1, 1]] * 4)
    for keep in ("0.25", "0.5", "0.75"):
        a, _ = BackTranslationFilter(None, names, "", keep, None).select(pairs, 0)
        b, _ = BackTranslationFilter(None, names, "", keep, None).select(scaled, 0)
        assert a.tolist() == b.tolist()
    weighted = BackTranslationFilter(None, "test_given_order,length_ratio", "1,100", "0.5", None)
    rows, _ = weighted.select(pairs_of([[1], [5, 6, 7], [2, 3]], [[1, 1, 1]] * 3), 0)
    assert rows.tolist() == [1, 2]  # the length ratio outweighs the first token


@pytest.mark.parametrize("kwargs,message", [
    (dict(score_names="nope"), "--bt-filter-scores: unknown pair score 'nope'"),
    (dict(weights="1,2"), "--bt-filter-weights has 2 values for 1 --bt-filter-scores"),
    (dict(keep="0:1,10:0"), "fractions must be in (0, 1]"),
    (dict(keep="oops"), "--bt-filter-keep 'oops'"),
    (dict(keep="0:1,10:1,10:0.5"), "strictly increasing updates"),
])
def test_filter_flags_are_checked(kwargs, message):
    args = {**dict(cfg=None, score_names="copy_rate", weights="", keep="1", max_score=None), **kwargs}
    with pytest.raises((CurationConfigError, ScheduleError), match=message.replace("(", r"\(").replace(")", r"\)")):
        BackTranslationFilter(**args)


def test_select_rows_keeps_every_field_aligned():
    sample = {
        "id": torch.tensor([10, 11, 12]), "nsentences": 3, "ntokens": 6,
        "net_input": {"src_tokens": torch.tensor([[1, 5, 2], [6, 7, 2], [1, 1, 2]]),
                      "src_lengths": torch.tensor([2, 3, 1]),
                      "prev_output_tokens": torch.tensor([[9, 3, 1], [9, 4, 4], [9, 5, 1]])},
        "target": torch.tensor([[3, 2, 1], [4, 4, 2], [5, 2, 1]]),
    }
    out = select_rows(sample, torch.tensor([0, 2]), pad=1)
    assert out["id"].tolist() == [10, 12] and out["nsentences"] == 2 and out["ntokens"] == 4
    assert out["net_input"]["src_lengths"].tolist() == [2, 1]
    assert out["target"].tolist() == [[3, 2, 1], [5, 2, 1]]
    assert out["net_input"]["prev_output_tokens"][:, 0].tolist() == [9, 9]


def test_competence_follows_the_square_root_schedule():
    assert competence(0, 1000, 0.1) == pytest.approx(0.1)
    assert competence(1000, 1000, 0.1) == 1.0 and competence(5000, 1000, 0.1) == 1.0
    assert competence(500, 1000, 0.1) == pytest.approx(math.sqrt(0.5 * 0.99 + 0.01))


def test_difficulties_rank_short_and_common_sentences_first():
    counts = [0, 0, 0, 0, 1000, 1000, 1]  # token 6 is rare
    dictionary = SimpleNamespace(count=counts)
    sentences = [np.array(s) for s in ([4, 5, 2], [4, 6, 2], [4, 5, 4, 5, 4, 2])]

    class Sentences(list):
        sizes = np.array([len(s) for s in sentences])

    dataset = Sentences(sentences)
    length = DIFFICULTIES.entries["length"](dataset, dictionary)
    rarity = DIFFICULTIES.entries["rarity"](dataset, dictionary)
    assert length.tolist() == [3, 3, 6]
    assert rarity[0] < rarity[1] and rarity[0] < rarity[2]
    assert as_cdf(np.array([3.0, 3.0, 6.0, 1.0])).tolist() == [0.75, 0.75, 1.0, 0.25]

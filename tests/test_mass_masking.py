import numpy as np
import pytest
import torch
from fairseq.data import Dictionary

from fairseq_smallcap.data import mass_span_mask

PAD, MASK = 1, 99


def sentence(n):
    return torch.cat([torch.arange(10, 10 + n), torch.tensor([2])])  # n tokens + eos


def test_span_is_contiguous_half_and_decoder_predicts_only_it():
    for n in (1, 2, 7, 20, 51):
        for seed in range(20):
            tokens = sentence(n)
            out = mass_span_mask(tokens, np.random.RandomState(seed), MASK, PAD, (4, 50))
            span = (out["target"] != PAD).nonzero().view(-1)
            assert len(span) == max(1, round(0.5 * n))
            assert torch.equal(span, torch.arange(int(span[0]), int(span[-1]) + 1))  # contiguous
            assert int(span[-1]) < n  # eos is never part of the span
            assert torch.equal(out["target"][span], tokens[span])
            # decoder input: the previous token inside the span, <mask> elsewhere
            for j in range(len(tokens)):
                if j in span.tolist() and j > 0:
                    assert out["decoder_input"][j] == tokens[j - 1]
                elif j not in span.tolist():
                    assert out["decoder_input"][j] == MASK
            # source: unchanged outside the span, eos kept
            outside = torch.ones(len(tokens), dtype=torch.bool)
            outside[span] = False
            assert torch.equal(out["source"][outside], tokens[outside])
            assert out["source"][-1] == 2


def test_mask_random_keep_proportions():
    rng = np.random.RandomState(0)
    counts = {"mask": 0, "kept": 0, "random": 0}
    for _ in range(400):
        tokens = sentence(40)
        out = mass_span_mask(tokens, rng, MASK, PAD, (1000, 2000))
        span = out["target"] != PAD
        src = out["source"][span]
        counts["mask"] += int((src == MASK).sum())
        counts["kept"] += int((src == tokens[span]).sum())
        counts["random"] += int(((src >= 1000) & (src < 2000)).sum())
    total = sum(counts.values())
    assert total == 400 * 20
    assert abs(counts["mask"] / total - 0.8) < 0.02
    assert abs(counts["random"] / total - 0.1) < 0.02
    assert abs(counts["kept"] / total - 0.1) < 0.02


def test_mass_dataset_collates_with_lang_token_and_padding():
    from fairseq.data import LanguagePairDataset

    from fairseq_smallcap.data import MassSpanMaskingDataset

    d = Dictionary()
    for i in range(30):
        d.add_symbol(f"w{i}")
    mask, lang = d.add_symbol("<mask>"), d.add_symbol("__en__")
    sents = [torch.tensor([5, 6, 7, 8, 2]), torch.tensor([9, 10, 2]), torch.tensor([11, 12, 13, 14, 15, 16, 2])]
    pairs = LanguagePairDataset(sents, [len(s) for s in sents], d, tgt=sents, tgt_sizes=[len(s) for s in sents], tgt_dict=d)
    ds = MassSpanMaskingDataset(pairs, d, lang, mask, seed=1, num_special_tail=2)
    batch = ds.collater([ds[i] for i in range(3)])
    src, prev, tgt = batch["net_input"]["src_tokens"], batch["net_input"]["prev_output_tokens"], batch["target"]
    assert src.shape == (3, 8) and prev.shape == (3, 8) and tgt.shape == (3, 8)
    assert (src[:, 0] == d.pad()).any()  # left padded source
    for i, s in enumerate(sents):
        row = src[i][src[i] != d.pad()]
        assert row[0] == lang and len(row) == len(s) + 1
        assert prev[i, 0] == lang
    assert batch["ntokens"] == int((tgt != d.pad()).sum()) == 2 + 1 + 3
    # a new epoch draws new masks, the same epoch the same ones
    again = ds.collater([ds[i] for i in range(3)])
    assert torch.equal(again["target"], tgt)
    ds.set_epoch(2)
    spans = [tuple((ds[2]["target"] != d.pad()).nonzero().view(-1).tolist())]
    changed = False
    for epoch in range(3, 12):
        ds.set_epoch(epoch)
        changed |= tuple((ds[2]["target"] != d.pad()).nonzero().view(-1).tolist()) != spans[0]
    assert changed


class FixedRng:
    """Puts the span at ``start`` and masks every span token (tests fix the span by hand)."""

    def __init__(self, start):
        self.start = start

    def randint(self, low, high, size=None):
        if size is not None:  # random replacement tokens: none are drawn (all masked)
            return np.full(size, low)
        assert low <= self.start < high
        return self.start

    def random_sample(self, n):
        return np.zeros(n)


# "a b c d e f </s>" = 10..15, 2; L = __en__, M = <mask>, P = padding; encoder and decoder
# positions line up (one leading position each): the decoder predicts x[j] where the encoder
# holds x[j], having seen x[j-1].
L, M, P, E = 31, 30, 1, 2
HAND_CASES = [
    (6, 0, [L, M, M, M, 13, 14, 15, E], [L, L, 10, 11, M, M, M, M], [P, 10, 11, 12, P, P, P, P]),
    (6, 1, [L, 10, M, M, M, 14, 15, E], [L, M, 10, 11, 12, M, M, M], [P, P, 11, 12, 13, P, P, P]),
    (6, 3, [L, 10, 11, 12, M, M, M, E], [L, M, M, M, 12, 13, 14, M], [P, P, P, P, 13, 14, 15, P]),
    (5, 3, [L, 10, 11, 12, M, M, E], [L, M, M, M, 12, 13, M], [P, P, P, P, 13, 14, P]),  # odd: span 2
    (1, 0, [L, M, E], [L, L, M], [P, 10, P]),
]


@pytest.mark.parametrize("n,start,source,prev,target", HAND_CASES)
def test_mass_samples_match_hand_computed_cases(monkeypatch, n, start, source, prev, target):
    from fairseq.data import LanguagePairDataset

    from fairseq_smallcap.data import MassSpanMaskingDataset
    from fairseq_smallcap.data import mass_span_masking_dataset as module

    d = Dictionary()
    for i in range(26):
        d.add_symbol(f"w{i}")
    assert d.add_symbol("<mask>") == M and d.add_symbol("__en__") == L
    real = module.mass_span_mask
    monkeypatch.setattr(module, "mass_span_mask", lambda tokens, rng, *a, **k: real(tokens, FixedRng(start), *a, **k))
    sent = torch.cat([torch.arange(10, 10 + n), torch.tensor([E])])
    pairs = LanguagePairDataset([sent], [len(sent)], d, tgt=[sent], tgt_sizes=[len(sent)], tgt_dict=d)
    dataset = MassSpanMaskingDataset(pairs, d, L, M, seed=1, num_special_tail=2)
    sample = dataset[0]
    assert dataset.size(0)[1] == len(target)  # what fairseq filters by --max-target-positions
    assert sample["source"].tolist() == source
    assert sample["prev_output_tokens"].tolist() == prev
    assert sample["target"].tolist() == target

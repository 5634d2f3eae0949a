import numpy as np
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
    assert src.shape == (3, 8) and prev.shape == (3, 7) and tgt.shape == (3, 7)
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

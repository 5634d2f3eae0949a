"""Batched greedy back-translation: same output as fairseq's SequenceGenerator (beam 1), length
caps, banned tokens, and the construction of the back-translated batch; sampled decoding
(--bt-sampling-topk): top-1 is greedy, draws follow softmax(logits / T) over the top K, and every
sampled token is among its step's K best when the sequence is scored again by a full forward."""
import argparse

import pytest
import torch
from fairseq.data import Dictionary
from fairseq.models import ARCH_CONFIG_REGISTRY, ARCH_MODEL_REGISTRY
from fairseq.sequence_generator import SequenceGenerator

import fairseq_smallcap  # noqa: F401
from fairseq_smallcap.backtranslation import greedy_decode, make_backtranslated_source, sample_next


class _Task:
    def __init__(self, d):
        self.source_dictionary = self.target_dictionary = d


@pytest.fixture(scope="module")
def model_and_dict():
    torch.manual_seed(0)
    d = Dictionary()
    for i in range(40):
        d.add_symbol(f"w{i}")
    d.add_symbol("<mask>")
    d.add_symbol("__en__")
    d.add_symbol("__fr__")
    args = argparse.Namespace(encoder_embed_dim=16, decoder_embed_dim=16, encoder_ffn_embed_dim=32,
                              decoder_ffn_embed_dim=32, decoder_layers=2, dropout=0.0, attention_dropout=0.0)
    ARCH_CONFIG_REGISTRY["smallcap_very_small"](args)
    model = ARCH_MODEL_REGISTRY["smallcap_very_small"].build_model(args, _Task(d))
    model.eval()
    return model, d


def batch(d, lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = [torch.cat([torch.tensor([d.index("__en__")]), torch.randint(4, 44, (n,), generator=g), torch.tensor([d.eos()])])
            for n in lengths]
    width = max(len(r) for r in rows)
    src = torch.full((len(rows), width), d.pad())
    for i, r in enumerate(rows):
        src[i, width - len(r):] = r  # left padded, like fairseq's LanguagePairDataset
    return src, torch.tensor([len(r) for r in rows])


def test_greedy_matches_sequence_generator_beam1(model_and_dict):
    model, d = model_and_dict
    src, lengths = batch(d, [3, 9, 5, 12, 1, 7])
    fr = d.index("__fr__")
    ours = greedy_decode(model, src, lengths, torch.full_like(lengths, fr), d.eos(), d.pad(),
                         max_len_a=0, max_len_b=20, banned_tokens=[d.bos()])
    gen = SequenceGenerator([model], d, beam_size=1, max_len_a=0, max_len_b=19)
    sample = {"net_input": {"src_tokens": src, "src_lengths": lengths}}
    with torch.no_grad():
        theirs = gen.generate([model], sample, bos_token=fr)
    for mine, hyp in zip(ours, theirs):
        ref = hyp[0]["tokens"]
        # fairseq forbids eos at step 0 only with min_len >= 1; compare where both generated >1 token
        assert mine[-1] == d.eos()
        if len(ref) > 1:
            assert torch.equal(mine, ref), (mine, ref)


def test_length_caps_and_banned_tokens(model_and_dict):
    model, d = model_and_dict
    src, lengths = batch(d, [2, 6, 10, 4], seed=1)
    banned = [d.index("__en__"), d.index("__fr__"), d.index("<mask>"), d.bos()]
    out = greedy_decode(model, src, lengths, torch.full_like(lengths, d.index("__fr__")), d.eos(), d.pad(),
                        max_len_a=0.5, max_len_b=2, max_len=6, banned_tokens=banned)
    for hyp, n in zip(out, lengths.tolist()):
        cap = min(int(n * 0.5 + 2), 6)
        assert 1 <= len(hyp) <= cap and hyp[-1] == d.eos()
        assert (hyp[:-1] != d.eos()).all()
        assert not any(t in banned + [d.pad()] for t in hyp.tolist())


def test_rows_do_not_depend_on_the_rest_of_the_batch(model_and_dict):
    model, d = model_and_dict
    src, lengths = batch(d, [3, 8, 5, 11], seed=2)
    fr = torch.full_like(lengths, d.index("__fr__"))
    together = greedy_decode(model, src, lengths, fr, d.eos(), d.pad(), 1.3, 5)
    for i in range(len(lengths)):
        row = src[i : i + 1, src.size(1) - lengths[i]:]
        alone = greedy_decode(model, row, lengths[i : i + 1], fr[i : i + 1], d.eos(), d.pad(), 1.3, 5)
        assert torch.equal(alone[0], together[i])


def test_backtranslated_source_layout():
    pad, eos, lang = 1, 2, 50
    hyps = [torch.tensor([7, 8, 2]), torch.tensor([9, 2]), torch.tensor([3, 4, 5, 6, 2])]
    src, lengths = make_backtranslated_source(hyps, lang, pad, eos, left_pad=True)
    assert lengths.tolist() == [4, 3, 6]
    assert src.tolist() == [[1, 1, 50, 7, 8, 2], [1, 1, 1, 50, 9, 2], [50, 3, 4, 5, 6, 2]]
    src, _ = make_backtranslated_source(hyps, lang, pad, eos, left_pad=False)
    assert src[1].tolist() == [50, 9, 2, 1, 1, 1]


# ---------------------------------------------------------------------------- sampling
def test_top1_sampling_is_greedy(model_and_dict):
    model, d = model_and_dict
    src, lengths = batch(d, [3, 9, 5, 12, 1, 7], seed=3)
    fr = torch.full_like(lengths, d.index("__fr__"))
    greedy = greedy_decode(model, src, lengths, fr, d.eos(), d.pad(), 1.3, 5)
    top1 = greedy_decode(model, src, lengths, fr, d.eos(), d.pad(), 1.3, 5, sampling_topk=1,
                         temperature=0.7, generator=torch.Generator().manual_seed(5))
    assert all(torch.equal(a, b) for a, b in zip(greedy, top1))


def test_draws_follow_the_tempered_top_k_distribution():
    """A second statement of the distribution: softmax(logits / T) renormalised over the K best."""
    logits = torch.tensor([[2.0, 1.0, 0.5, float("-inf"), -1.0]]).repeat(20000, 1)
    g = torch.Generator().manual_seed(0)
    for topk, temperature in ((2, 0.5), (-1, 1.0), (3, 2.0)):
        draws = sample_next(logits.clone(), topk, temperature, g)
        freq = torch.bincount(draws, minlength=5).float() / len(draws)
        kept = [0, 1] if topk == 2 else [0, 1, 2] if topk == 3 else [0, 1, 2, 4]
        expected = torch.zeros(5)
        expected[kept] = torch.softmax(logits[0, kept] / temperature, dim=0)
        assert freq[3] == 0 and all(freq[i] == 0 for i in range(5) if i not in kept)
        assert torch.allclose(freq, expected, atol=0.015), (topk, freq, expected)


def test_sampled_tokens_are_among_their_steps_top_k(model_and_dict):
    model, d = model_and_dict
    src, lengths = batch(d, [4, 9, 6, 12], seed=4)
    fr = d.index("__fr__")
    banned = [d.index("__en__"), fr, d.index("<mask>"), d.bos()]
    k = 3

    def sample(seed):
        return greedy_decode(model, src, lengths, torch.full_like(lengths, fr), d.eos(), d.pad(), 0, 12,
                             banned_tokens=banned, sampling_topk=k, generator=torch.Generator().manual_seed(seed))

    out = sample(1)
    assert all(torch.equal(a, b) for a, b in zip(out, sample(1)))  # same generator seed, same draws
    assert any(not torch.equal(a, b) for a, b in zip(out, sample(2)))
    not_argmax = 0
    with torch.no_grad():
        for i, hyp in enumerate(out):
            row = src[i : i + 1, src.size(1) - lengths[i]:]
            prev = torch.cat([torch.tensor([fr]), hyp[:-1]]).unsqueeze(0)
            logits, _ = model(row, lengths[i : i + 1], prev)  # teacher-forced, no incremental state
            logits = logits[0].float()
            logits[:, banned + [d.pad()]] = float("-inf")
            logits[0, d.eos()] = float("-inf")  # no empty translations
            for step, token in enumerate(hyp.tolist()):
                if step == len(hyp) - 1 and len(hyp) == 12:
                    break  # the length cap wrote this eos
                rank = int((logits[step] > logits[step, token]).sum())
                assert rank < k, (i, step, token, rank)
                not_argmax += rank > 0
    assert not_argmax > 0  # it did sample

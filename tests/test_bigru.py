"""The recurrent student ``smallcap_bigru``: size, incremental decoding, padding independence,
batched greedy decoding, and training plus generation through the fairseq command line."""
import argparse

import pytest
import torch
import torch.nn.functional as F
from fairseq.data import Dictionary, data_utils
from fairseq.models import ARCH_CONFIG_REGISTRY, ARCH_MODEL_REGISTRY
from fairseq.sequence_generator import SequenceGenerator

import fairseq_smallcap  # noqa: F401
from fairseq_smallcap.backtranslation import greedy_decode
from fairseq_smallcap.models.smallcap_transformer import DictionaryMismatchError
from fairseq_smallcap.param_table import count_parameters

from conftest import TRAIN_FLAGS, USER_DIR, run, tool


class _Task:
    def __init__(self, d):
        self.source_dictionary = self.target_dictionary = d


def make_dict(n=40):
    d = Dictionary()
    for i in range(n):
        d.add_symbol(f"w{i}")
    for symbol in ("<mask>", "__en__", "__fr__"):
        d.add_symbol(symbol)
    return d


def build(d, **overrides):
    args = argparse.Namespace(encoder_embed_dim=16, decoder_embed_dim=16, encoder_hidden_size=24,
                              decoder_hidden_size=20, decoder_attention_dim=12, dropout=0.0)
    vars(args).update(overrides)
    ARCH_CONFIG_REGISTRY["smallcap_bigru"](args)
    return ARCH_MODEL_REGISTRY["smallcap_bigru"].build_model(args, _Task(d)).eval()


@pytest.fixture(scope="module")
def model_and_dict():
    torch.manual_seed(0)
    d = make_dict()
    return build(d), d


def batch(d, lengths, seed=0, left_pad=True):
    g = torch.Generator().manual_seed(seed)
    rows = [torch.cat([torch.tensor([d.index("__en__")]), torch.randint(4, 44, (n,), generator=g),
                       torch.tensor([d.eos()])]) for n in lengths]
    width = max(len(r) for r in rows)
    src = torch.full((len(rows), width), d.pad())
    for i, r in enumerate(rows):
        if left_pad:
            src[i, width - len(r):] = r
        else:
            src[i, :len(r)] = r
    return src, torch.tensor([len(r) for r in rows])


def prev_tokens(d, bsz, steps, seed=1):
    g = torch.Generator().manual_seed(seed)
    body = torch.randint(4, 44, (bsz, steps - 1), generator=g)
    return torch.cat([torch.full((bsz, 1), d.index("__fr__")), body], dim=1)


def incremental_logits(model, encoder_out, prev, incremental_state=None):
    state = {} if incremental_state is None else incremental_state
    steps = [model.decoder(prev[:, : t + 1], encoder_out=encoder_out, incremental_state=state)[0]
             for t in range(prev.size(1))]
    return torch.cat(steps, dim=1)


def test_parameter_count_close_to_very_small_transformer():
    ours = count_parameters("smallcap_bigru", 52104)
    transformer = count_parameters("smallcap_very_small", 52104)
    assert ours == 14_982_784  # the count given in the module docstring
    assert abs(ours / transformer - 1) < 0.10, (ours, transformer)
    # every size stays overridable, and tied output embeddings add no table
    assert count_parameters("smallcap_bigru", 1000, {"decoder_hidden_size": 512}) > count_parameters("smallcap_bigru", 1000)
    assert count_parameters("smallcap_bigru", 1000, {"share_all_embeddings": True}) == count_parameters("smallcap_bigru", 1000) - 1000 * 128


@pytest.mark.parametrize("input_feed, layers", [("True", 1), ("False", 2)])
def test_incremental_decoding_equals_teacher_forcing(input_feed, layers):
    torch.manual_seed(1)
    d = make_dict()
    model = build(d, decoder_input_feed=input_feed, decoder_layers=layers, encoder_layers=layers)
    src, lengths = batch(d, [3, 9, 5, 1])
    prev = prev_tokens(d, 4, 7)
    with torch.no_grad():
        encoder_out = model.encoder(src, src_lengths=lengths)
        full, extra = model.decoder(prev, encoder_out=encoder_out)
        step_by_step = incremental_logits(model, encoder_out, prev)
        torch.testing.assert_close(step_by_step, full, rtol=1e-5, atol=1e-5)
        assert extra["attn"][0].shape == (4, 7, src.size(1))
        # no attention on padding: the shortest sentence (3 tokens) only looks at its own positions
        assert extra["attn"][0][3, :, : src.size(1) - 3].abs().max() == 0

        # reordering the cached state mid-sentence (as beam search does) keeps rows consistent
        order = torch.tensor([2, 0, 0, 3])
        state = {}
        first = incremental_logits(model, encoder_out, prev[:, :3], state)
        model.decoder.reorder_incremental_state_scripting(state, order)
        reordered_out = model.encoder.reorder_encoder_out(encoder_out, order)
        rest = [model.decoder(prev[order, : t + 1], encoder_out=reordered_out, incremental_state=state)[0]
                for t in range(3, 7)]
        torch.testing.assert_close(first[order], full[order, :3], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(torch.cat(rest, dim=1), full[order, 3:], rtol=1e-5, atol=1e-5)


def test_outputs_do_not_depend_on_padding(model_and_dict):
    model, d = model_and_dict
    src, lengths = batch(d, [4, 12, 7, 10], seed=3)
    right_src, _ = batch(d, [4, 12, 7, 10], seed=3, left_pad=False)
    prev = prev_tokens(d, 4, 6)
    with torch.no_grad():
        left = model.encoder(src, src_lengths=lengths)
        right = model.encoder(right_src, src_lengths=lengths)
        batched_logits = model.decoder(prev, encoder_out=left)[0]
        for i, n in enumerate(lengths.tolist()):
            alone_src = src[i : i + 1, src.size(1) - n:]
            alone = model.encoder(alone_src, src_lengths=lengths[i : i + 1])
            torch.testing.assert_close(left["encoder_out"][i, -n:], alone["encoder_out"][0], rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(right["encoder_out"][i, :n], alone["encoder_out"][0], rtol=1e-6, atol=1e-6)
            torch.testing.assert_close(left["final_hidden"][i], alone["final_hidden"][0], rtol=1e-6, atol=1e-6)
            assert left["encoder_out"][i, : src.size(1) - n].abs().sum() == 0  # padding stays empty
            alone_logits = model.decoder(prev[i : i + 1], encoder_out=alone)[0]
            torch.testing.assert_close(batched_logits[i : i + 1], alone_logits, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def copy_model():
    """A tiny model trained for 100 steps to copy its input (so it learns when to stop)."""
    torch.manual_seed(0)
    d = make_dict()
    model = build(d).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    fr = d.index("__fr__")
    g = torch.Generator().manual_seed(0)
    for step in range(100):
        src, lengths = batch(d, torch.randint(1, 9, (32,), generator=g).tolist(), seed=100 + step)
        words = [src[i, src.size(1) - n + 1:] for i, n in enumerate(lengths.tolist())]  # no lang token
        target = data_utils.collate_tokens(words, d.pad(), left_pad=False)
        prev = data_utils.collate_tokens([torch.cat([torch.tensor([fr]), w[:-1]]) for w in words],
                                         d.pad(), left_pad=False)
        logits = model(src, lengths, prev)[0]
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), target.view(-1), ignore_index=d.pad())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), d


def test_greedy_decode_stops_each_row_at_its_eos(copy_model):
    model, d = copy_model
    src, lengths = batch(d, [3, 9, 5, 12, 1, 7, 4, 6], seed=4)
    fr = torch.full_like(lengths, d.index("__fr__"))
    banned = [d.index("__en__"), d.index("__fr__"), d.index("<mask>"), d.bos()]
    out = greedy_decode(model, src, lengths, fr, d.eos(), d.pad(), max_len_a=0, max_len_b=15,
                        banned_tokens=banned)
    assert len(out) == len(lengths)
    for hyp in out:
        assert hyp[-1] == d.eos() and (hyp[:-1] != d.eos()).all()
        assert not any(t in banned + [d.pad()] for t in hyp.tolist())
    # every row stops at its own eos, well before the cap, after about as many words as its source
    hyp_lengths = [len(hyp) for hyp in out]
    assert max(hyp_lengths) < 15 and len(set(hyp_lengths)) >= 5, hyp_lengths
    for i, mine in enumerate(out):  # alone as in the batch
        row = src[i : i + 1, src.size(1) - lengths[i]:]
        alone = greedy_decode(model, row, lengths[i : i + 1], fr[i : i + 1], d.eos(), d.pad(),
                              max_len_a=0, max_len_b=15, banned_tokens=banned)
        assert torch.equal(alone[0], mine)
    # same translations as fairseq's beam search with a beam of 1 (which bans nothing but pad)
    unbanned = greedy_decode(model, src, lengths, fr, d.eos(), d.pad(), max_len_a=0, max_len_b=15)
    gen = SequenceGenerator([model], d, beam_size=1, max_len_a=0, max_len_b=14, min_len=1)
    with torch.no_grad():
        theirs = gen.generate([model], {"net_input": {"src_tokens": src, "src_lengths": lengths}},
                              bos_token=int(fr[0]))
    for i, (mine, hyp) in enumerate(zip(unbanned, theirs)):
        assert torch.equal(mine, hyp[0]["tokens"]), (i, mine, hyp[0]["tokens"])


def test_checkpoint_of_another_vocabulary_is_reported():
    small, large = build(make_dict(40)), build(make_dict(41))
    with pytest.raises(DictionaryMismatchError, match="mismatched dictionary"):
        large.load_state_dict(small.state_dict())
    large.load_state_dict(build(make_dict(41)).state_dict())


def without_transformer_flags(flags):
    """conftest's TRAIN_FLAGS minus the architecture and the Transformer's sizes."""
    out, skip = [], False
    for flag in flags:
        if skip:
            skip = False
        elif flag in ("--arch", "--encoder-embed-dim", "--decoder-embed-dim", "--encoder-ffn-embed-dim",
                      "--decoder-ffn-embed-dim", "--decoder-layers"):
            skip = True
        else:
            out.append(flag)
    return out


def test_train_all_objectives_then_generate_both_directions(tiny_data, tmp_path):
    flags = [*without_transformer_flags(TRAIN_FLAGS), "--arch", "smallcap_bigru",
             "--encoder-embed-dim", "32", "--decoder-embed-dim", "32", "--encoder-hidden-size", "32",
             "--decoder-hidden-size", "32", "--decoder-attention-dim", "32"]
    result = run([tool("fairseq-train"), tiny_data, *flags, "--lambda-mass", "1", "--lambda-dae", "1",
                  "--lambda-bt", "1", "--max-update", "3", "--save-dir", tmp_path])
    for key in ("mass_loss=", "dae_loss=", "bt_loss=", "en_fr_loss", "fr_en_loss", "back-translation sample"):
        assert key in result.stdout, key
    assert "SmallcapBiGRUModel" in result.stdout
    ckpt = tmp_path / "checkpoint_last.pt"
    for src, tgt in (("en", "fr"), ("fr", "en")):
        gen = run([tool("fairseq-generate"), tiny_data, "--user-dir", USER_DIR, "--task",
                   "unsupervised_translation", "-s", src, "-t", tgt, "--gen-subset", "valid",
                   "--path", ckpt, "--beam", "3", "--max-len-b", "20", "--batch-size", "128", "--cpu"])
        hyps = [line for line in gen.stdout.splitlines() if line.startswith("D-")]
        raw = (tiny_data / "raw" / f"valid.{src}").read_text().splitlines()
        assert len(hyps) == len(raw) == 1014
        assert len({int(line.split("\t")[0][2:]) for line in hyps}) == 1014
        assert "__" not in " ".join(hyps)

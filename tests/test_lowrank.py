"""Low-rank (SVD) factorisation: the modules, the rank rules, and checkpoints through
smallcap-lowrank, fairseq-train and fairseq-generate."""
import re
import sys
from argparse import Namespace

import pytest
import torch
import torch.nn as nn

import fairseq_smallcap  # noqa: F401  (checkpoints load weights-only with its allowlist)
from fairseq_smallcap.compression import lowrank, lowrank_cli

from conftest import TRAIN_FLAGS, USER_DIR, run, tool

LOWRANK = [sys.executable, "-m", "fairseq_smallcap.compression.lowrank_cli"]
# the test model: dims 32 (FFN 64), so every matrix has rank at most 32
FULL = ["--layers", ".*", "--rank", "32", "--embeddings", "32"]


def test_low_rank_linear_counts_parameters_and_reproduces_at_full_rank():
    torch.manual_seed(0)
    dense = nn.Linear(48, 20)
    x = torch.randn(7, 48)
    full = lowrank.factorise_linear(dense, 20)
    assert sum(p.numel() for p in full.parameters()) == 20 * (48 + 20) + 20 == lowrank.linear_params(48, 20, 20)
    torch.testing.assert_close(full(x), dense(x), atol=1e-5, rtol=0)
    torch.testing.assert_close(full.weight, dense.weight, atol=1e-6, rtol=0)  # read as a dense layer
    low = lowrank.factorise_linear(dense, 5)
    assert sum(p.numel() for p in low.parameters()) == 5 * (48 + 20) + 20
    # the best rank-5 approximation: the error is the energy of the dropped singular values
    s = torch.linalg.svdvals(dense.weight.detach().double())
    error = (low.weight - dense.weight).detach().double().norm() ** 2
    assert abs(float(error) - float((s[5:] ** 2).sum())) < 1e-5
    merged = lowrank.merge_linear(low)
    assert type(merged) is nn.Linear
    torch.testing.assert_close(merged(x), low(x), atol=1e-5, rtol=0)


def test_embedding_and_tied_output_reproduce_at_full_rank():
    torch.manual_seed(0)
    table = nn.Embedding(50, 12, padding_idx=1)
    tokens = torch.randint(0, 50, (3, 9))
    full = lowrank.factorise_embedding(table, 12)
    torch.testing.assert_close(full(tokens), table(tokens), atol=1e-5, rtol=0)
    features = torch.randn(4, 12)
    torch.testing.assert_close(lowrank.TiedLowRankOutput(full)(features), features @ table.weight.t(),
                               atol=1e-5, rtol=0)
    assert sum(p.numel() for p in lowrank.factorise_embedding(table, 3).parameters()) == 3 * (50 + 12)


def test_energy_rank_is_the_smallest_rank_holding_the_energy():
    s = torch.tensor([3.0, 2.0, 1.0])  # squares 9, 4, 1 of 14
    assert [lowrank.energy_rank(s, e) for e in (0.5, 9 / 14, 0.9, 13 / 14, 0.95, 1.0)] == [1, 1, 2, 2, 3, 3]
    torch.manual_seed(0)
    s = torch.linalg.svdvals(torch.randn(40, 30).double())
    for energy in (0.3, 0.7, 0.99):
        r = lowrank.energy_rank(s, energy)
        held = (s ** 2).cumsum(0) / (s ** 2).sum()
        assert held[r - 1] >= energy and (r == 1 or held[r - 2] < energy)


def _weights(path):
    return torch.load(path, weights_only=True)


def _logits(path, seed=0):
    _, model = lowrank_cli.load_model(str(path), "CKPT")
    torch.manual_seed(seed)
    src, prev = torch.randint(4, 300, (4, 12)), torch.randint(4, 300, (4, 9))
    with torch.no_grad():
        return model(src, torch.full((4,), 12), prev)[0]


def _generate(data, ckpt):
    """fairseq-generate's greedy hypotheses: {id: (score, tokens)}."""
    out = run([tool("fairseq-generate"), data, "--user-dir", USER_DIR, "--task", "unsupervised_translation",
               "-s", "en", "-t", "fr", "--gen-subset", "valid", "--path", ckpt, "--beam", "1",
               "--max-len-a", "0", "--max-len-b", "8", "--batch-size", "256", "--cpu"]).stdout
    hyps = {}
    for line in out.splitlines():
        if line.startswith("H-"):
            key, score, *text = line.split("\t")
            hyps[int(key[2:])] = (float(score), text[0] if text else "")
    return hyps


def _assert_same_hypotheses(a, b):
    assert len(a) == len(b) == 1014
    assert {k: v[1] for k, v in a.items()} == {k: v[1] for k, v in b.items()}
    assert max(abs(a[k][0] - b[k][0]) for k in a) < 1e-4


def test_full_rank_reproduces_the_model_and_merge_gives_a_plain_checkpoint(tiny_data, trained_checkpoint, tmp_path):
    dense_path, _ = trained_checkpoint
    factored, merged = tmp_path / "factored.pt", tmp_path / "merged.pt"
    result = run([*LOWRANK, dense_path, "--out", factored, *FULL])
    assert "encoder.layers.0.fc1: 64x32 -> rank 32" in result.stdout
    assert f"--finetune-from-model {factored} --low-rank-ranks {factored}" in result.stdout
    state = _weights(factored)
    assert "encoder.layers.0.fc1.down.weight" in state["model"] and "encoder.layers.0.fc1.weight" not in state["model"]
    assert "decoder.embed_tokens.down.weight" in state["model"]
    assert "encoder.layers.0.fc1=32" in state["cfg"]["model"].low_rank_ranks
    assert state["cfg"]["model"].low_rank_embeddings == 32

    dense_logits, factored_logits = _logits(dense_path), _logits(factored)
    assert (dense_logits - factored_logits).abs().max() < 1e-4
    _assert_same_hypotheses(_generate(tiny_data, dense_path), _generate(tiny_data, factored))

    run([*LOWRANK, "--merge", factored, "--out", merged])
    plain = _weights(merged)
    assert set(plain["model"]) == set(_weights(dense_path)["model"])  # the standard architecture's keys
    assert plain["cfg"]["model"].low_rank_ranks is None and plain["cfg"]["model"].low_rank_embeddings is None
    assert (_logits(merged) - factored_logits).abs().max() < 1e-4


def test_factorised_checkpoint_finetunes_and_generates(tiny_data, trained_checkpoint, tmp_path):
    dense_path, _ = trained_checkpoint
    factored = tmp_path / "rank8.pt"
    run([*LOWRANK, dense_path, "--out", factored, "--layers", r"(encoder|decoder)\.layers\.\d+\.fc[12]",
         "--rank", "8", "--embeddings", "16"])
    state = _weights(factored)
    vocab = state["model"]["encoder.embed_tokens.down.weight"].shape[0]
    # 3 FFNs of two 32x64 matrices at rank 8, 2 embedding tables V x 32 at rank 16
    saved = 3 * 2 * (32 * 64 - 8 * (32 + 64)) + 2 * (vocab * 32 - 16 * (vocab + 32))
    extra = state["extra_state"]["low_rank"]
    assert extra["params_before"] - extra["params_after"] == saved
    assert extra["ranks"] == {f"{side}.layers.{i}.{fc}": 8 for side, n in (("encoder", 1), ("decoder", 2))
                              for i in range(n) for fc in ("fc1", "fc2")}

    log = run([tool("fairseq-train"), tiny_data, *TRAIN_FLAGS, "--lambda-dae", "1", "--lambda-bt", "1",
               "--max-update", "2", "--disable-validation", "--save-dir", tmp_path / "ft",
               "--finetune-from-model", factored, "--low-rank-ranks", factored]).stdout
    assert f"loading pretrained model from {factored}" in log and "num_updates 2" in log
    assert f"num. shared model params: {extra['params_after']:,}" in log
    tuned = _weights(tmp_path / "ft" / "checkpoint_last.pt")
    assert tuned["cfg"]["model"].low_rank_ranks == state["cfg"]["model"].low_rank_ranks  # ranks, not a path
    assert not torch.equal(tuned["model"]["encoder.layers.0.fc1.down.weight"],
                           state["model"]["encoder.layers.0.fc1.down.weight"])  # it trained
    assert len(_generate(tiny_data, tmp_path / "ft" / "checkpoint_last.pt")) == 1014


def test_energy_picks_per_layer_ranks(trained_checkpoint, tmp_path):
    dense_path, _ = trained_checkpoint
    out = tmp_path / "energy.pt"
    run([*LOWRANK, dense_path, "--out", out, "--layers", r".*\.fc1", "--energy", "0.6"])
    ranks = _weights(out)["extra_state"]["low_rank"]["ranks"]
    dense = _weights(dense_path)["model"]
    assert set(ranks) == {"encoder.layers.0.fc1", "decoder.layers.0.fc1", "decoder.layers.1.fc1"}
    for name, rank in ranks.items():
        s = torch.linalg.svdvals(dense[f"{name}.weight"].double())
        held = (s ** 2).cumsum(0) / (s ** 2).sum()
        assert 1 <= rank < 32 and held[rank - 1] >= 0.6 and (rank == 1 or held[rank - 2] < 0.6)


def test_options_build_a_factorised_model_and_record_the_ranks(trained_checkpoint):
    _, model = lowrank_cli.load_model(str(trained_checkpoint[0]), "CKPT")
    args = Namespace(low_rank_layers=r"decoder\.layers\.1\.self_attn\.out_proj", low_rank_rank=4)
    lowrank.apply_low_rank_args(model, args)
    assert isinstance(model.decoder.layers[1].self_attn.out_proj, lowrank.LowRankLinear)
    assert args.low_rank_ranks == "decoder.layers.1.self_attn.out_proj=4"
    with pytest.raises(lowrank.LowRankError, match="--low-rank-energy chooses ranks from trained weights"):
        lowrank.apply_low_rank_args(model, Namespace(low_rank_layers=".*fc1", low_rank_energy=0.9))


@pytest.mark.parametrize("flags, message", [
    (["--layers", ".*fc1", "--rank", "33"], "--rank 33: encoder.layers.0.fc1 is a 64x32 matrix, whose rank is at most 32"),
    (["--layers", ".*fc1", "--energy", "1.5"], "--energy 1.5: the energy kept must be in (0, 1]"),
    (["--layers", ".*fc1", "--energy", "0"], "--energy 0.0: the energy kept must be in (0, 1]"),
    (["--layers", "encoder.layers.*.fc3", "--rank", "4"], "--layers 'encoder.layers.*.fc3' matches no Linear layer"),
    (["--embeddings", "33"], "--embeddings 33: encoder.embed_tokens is a"),
])
def test_bad_input_is_one_line_and_exit_2(trained_checkpoint, tmp_path, flags, message):
    out = tmp_path / "out.pt"
    result = run([*LOWRANK, trained_checkpoint[0], "--out", out, *flags], check=False)
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert result.returncode == 2 and errors == [f"smallcap-lowrank: error: {errors[0].split(': error: ')[1]}"]
    assert message in errors[0] and "Traceback" not in result.stderr
    assert not out.exists() and not list(tmp_path.glob(".lowrank-*"))


def test_bad_rank_inside_fairseq_train_is_one_line_and_exit_2(tiny_data, tmp_path):
    result = run([tool("fairseq-train"), tiny_data, *TRAIN_FLAGS, "--max-update", "1", "--no-save",
                  "--low-rank-layers", r"encoder\.layers\.0\.fc2", "--low-rank-rank", "40"], check=False)
    assert result.returncode == 2
    assert re.search(r"error: --low-rank-rank 40: encoder\.layers\.0\.fc2 is a 32x64 matrix, whose rank is at "
                     r"most 32", result.stderr)
    assert "Traceback" not in result.stderr

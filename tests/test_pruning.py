"""Magnitude pruning inside fairseq-train (schedule, masks through save/resume, rounds with LR
rewinding, finalize) and structured pruning of heads and FFN neurons (smaller matrices)."""
import re
import sys

import pytest
import torch
from fairseq import checkpoint_utils
from fairseq.models import ARCH_MODEL_REGISTRY

import fairseq_smallcap  # noqa: F401  (architectures, checkpoint loading)
from conftest import TRAIN_FLAGS, USER_DIR, run, tool
from fairseq_smallcap.compression import prune_cli, pruning, structured_cli
from fairseq_smallcap.compression.pruning import PruningError, PruningSchedule
from fairseq_smallcap.param_table import _DictionaryOnlyTask, arch_args

PY = sys.executable
TINY = dict(encoder_embed_dim=32, decoder_embed_dim=32, encoder_ffn_embed_dim=64, decoder_ffn_embed_dim=64,
            decoder_layers=2, encoder_attention_heads=4, decoder_attention_heads=4)
FAST = ["--lambda-dae", "1", "--lambda-bt", "0", "--disable-validation"]


def build(arch="smallcap_very_small", **options):
    overrides = dict(TINY, **options) if arch != "smallcap_bigru" else options
    return ARCH_MODEL_REGISTRY[arch].build_model(arch_args(arch, overrides), _DictionaryOnlyTask(60))


def weights(path):
    return checkpoint_utils.load_checkpoint_to_cpu(str(path))


def masks(state):
    return {k: v for k, v in state["model"].items() if k.endswith("_mask")}


def hypotheses(data, path):
    gen = run([tool("fairseq-generate"), data, "--user-dir", USER_DIR, "--task", "unsupervised_translation",
               "-s", "en", "-t", "fr", "--gen-subset", "valid", "--path", path, "--beam", "1",
               "--max-len-a", "0", "--max-len-b", "6", "--batch-size", "256", "--cpu"]).stdout
    hyps = sorted(line.split("\t") for line in gen.splitlines() if line.startswith("H-"))
    assert hyps
    return hyps


def last_error_line(result):
    lines = result.stderr.strip().splitlines()
    return lines[-1] if lines else ""


# ------------------------------------------------------------------------------- in-process units
def test_schedule_is_zhu_and_gupta_cubic():
    s = PruningSchedule(0.8, "global", start=10, end=40, frequency=10)
    assert [s.target(t) for t in (0, 9, 10, 19)] == [0, 0, 0, 0]
    assert s.target(20) == pytest.approx(0.8 * (1 - (1 - 10 / 30) ** 3))
    assert s.target(39) == s.target(30) == pytest.approx(0.8 * (1 - (1 - 20 / 30) ** 3))
    assert s.target(40) == s.target(1000) == 0.8
    one_shot = PruningSchedule(0.5, "layer", start=3, end=3)
    assert (one_shot.target(2), one_shot.target(3)) == (0.0, 0.5)
    # an end that is no multiple of the frequency still reaches the target at the end
    assert PruningSchedule(0.5, start=0, end=7, frequency=3).target(7) == 0.5


@pytest.mark.parametrize("scope", ["global", "layer"])
def test_sparsity_by_magnitude_global_and_per_layer(scope):
    torch.manual_seed(0)
    model = build(prune_sparsity=0.7, prune_scope=scope)
    targets = model._smallcap_pruning.targets
    assert len(targets) == 6 + 2 * 10  # encoder: q, k, v, out, fc1, fc2; decoder: also the cross-attention's
    names = {f"{n}.{p}" for n, _, p in targets}
    assert "encoder.layers.0.fc1.weight" in names and "decoder.layers.1.encoder_attn.k_proj.weight" in names
    assert not any("embed" in n or "output_projection" in n for n in names)
    model.set_num_updates(0)
    orig = {f"{n}.{p}": getattr(m, p + "_orig").detach().abs() for n, m, p in targets}
    mask = {f"{n}.{p}": getattr(m, p + "_mask") for n, m, p in targets}
    sizes = {k: v.numel() for k, v in mask.items()}
    zeros = {k: int((v == 0).sum()) for k, v in mask.items()}
    if scope == "layer":
        assert all(zeros[k] == round(0.7 * sizes[k]) for k in mask)
        for k in mask:  # within each matrix, every pruned weight is smaller than every kept one
            assert orig[k][mask[k] == 0].max() <= orig[k][mask[k] == 1].min()
    else:
        assert sum(zeros.values()) == round(0.7 * sum(sizes.values()))
        pruned = torch.cat([orig[k][mask[k] == 0] for k in mask])
        kept = torch.cat([orig[k][mask[k] == 1] for k in mask])
        assert pruned.max() <= kept.min()  # one threshold over all matrices
        assert len({round(zeros[k] / sizes[k], 3) for k in mask}) > 1  # so matrices differ
    # the effective weights are zero exactly where the mask is, also on the fused attention path
    src, prev = torch.randint(4, 60, (2, 5)), torch.randint(4, 60, (2, 4))
    model.eval()
    model(src, torch.full((2,), 5), prev)
    for n, m, p in targets:
        assert (getattr(m, p)[getattr(m, p + "_mask") == 0] == 0).all()


def test_training_keeps_pruned_weights_zero_and_state_dicts_convert():
    torch.manual_seed(0)
    model = build(prune_sparsity=0.5, prune_end_update=4, prune_frequency=2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    src, prev = torch.randint(4, 60, (3, 6)), torch.randint(4, 60, (3, 5))
    for step in range(5):  # two forwards per step would fail on a stale (graph-freed) q_proj.weight
        model.train()
        model.set_num_updates(step)
        model(src, torch.full((3,), 6), prev)[0].sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert pruning.sparsity_of(state)["all"] == pytest.approx(0.5, abs=1e-4)
    model.eval()
    out = model(src, torch.full((3,), 6), prev)[0]

    again = build(prune_sparsity=0.5, prune_end_update=4, prune_frequency=2)
    again.load_state_dict({k: v.clone() for k, v in state.items()})
    again.set_num_updates(5)  # the schedule is done: the loaded masks stay as they are
    assert all(torch.equal(again.state_dict()[k], v) for k, v in state.items())
    again.eval()
    assert torch.equal(again(src, torch.full((3,), 6), prev)[0], out)

    dense = build()  # a masked checkpoint into an unpruned model: weights multiplied by their masks
    dense.load_state_dict({k: v.clone() for k, v in state.items()})
    dense.eval()
    assert torch.allclose(dense(src, torch.full((3,), 6), prev)[0], out, atol=1e-6)

    pruned = build(prune_sparsity=0.5)  # a dense checkpoint into a pruned model: masks of ones
    pruned.load_state_dict({k: v.clone() for k, v in dense.state_dict().items()})
    assert pruning.sparsity_of(pruned.state_dict())["all"] == 0.0

    final = {k: v.clone() for k, v in state.items()}
    assert pruning.finalize_state_dict(final) == pytest.approx(0.5, abs=1e-4)
    assert pruning.make_permanent(again) == pytest.approx(0.5, abs=1e-4)  # prune.remove
    assert set(final) == set(again.state_dict()) and not pruning.masked_keys(final)
    assert all(torch.equal(final[k], v) for k, v in again.state_dict().items())


def test_bigru_prunes_its_gru_and_linear_matrices():
    torch.manual_seed(0)
    model = build("smallcap_bigru", prune_sparsity=0.4, prune_scope="layer",
                  encoder_hidden_size=16, decoder_hidden_size=16, encoder_embed_dim=8, decoder_embed_dim=8)
    names = {f"{n}.{p}" for n, _, p in model._smallcap_pruning.targets}
    assert {"encoder.rnn.weight_ih_l0", "encoder.rnn.weight_hh_l0_reverse", "decoder.layers.0.weight_hh",
            "decoder.combine_proj.weight"} <= names
    model.set_num_updates(0)
    for _, m, p in model._smallcap_pruning.targets:
        mask = getattr(m, p + "_mask")
        assert int((mask == 0).sum()) == round(0.4 * mask.numel())
    out = model(torch.randint(4, 60, (2, 5)), torch.full((2,), 5), torch.randint(4, 60, (2, 3)))[0]
    out.sum().backward()
    rnn = model.encoder.rnn
    assert (rnn.weight_ih_l0_orig.grad[rnn.weight_ih_l0_mask == 0] == 0).all()


@pytest.mark.parametrize("options, message", [
    (dict(prune_sparsity=1.0), "--prune-sparsity 1.0: the sparsity must be in [0, 1)"),
    (dict(prune_sparsity=-0.1), "--prune-sparsity -0.1: the sparsity must be in [0, 1)"),
    (dict(prune_sparsity=0.5, prune_start_update=5, prune_end_update=2), "--prune-end-update 2: must not come"),
    (dict(prune_sparsity=0.5, prune_frequency=0), "--prune-frequency 0: must be >= 1"),
    (dict(encoder_heads_kept=5), "--encoder-heads-kept 5: the encoder has 4 attention heads per layer"),
])
def test_bad_model_options_raise_one_clear_error(options, message):
    with pytest.raises(PruningError, match=re.escape(message)):
        build(**options)


# ------------------------------------------------------------------------------- fairseq-train
@pytest.fixture(scope="module")
def pruned_run(tiny_data, tmp_path_factory):
    """3 updates with gradual global pruning (50% at update 2), then resumed to 6 updates."""
    save_dir = tmp_path_factory.mktemp("pruned")
    flags = [tool("fairseq-train"), tiny_data, *TRAIN_FLAGS, *FAST, "--save-dir", save_dir,
             "--prune-sparsity", "0.5", "--prune-scope", "global", "--prune-start-update", "1",
             "--prune-end-update", "2", "--prune-frequency", "1"]
    first_log = run([*flags, "--max-update", "3"]).stdout
    first = weights(save_dir / "checkpoint_last.pt")
    second_log = run([*flags, "--max-update", "6"]).stdout
    return {"dir": save_dir, "first": first, "first_log": first_log, "second_log": second_log,
            "second": weights(save_dir / "checkpoint_last.pt")}


def test_masks_survive_save_and_resume_and_pruned_weights_stay_zero(pruned_run):
    first, second = pruned_run["first"], pruned_run["second"]
    assert first["optimizer_history"][-1]["num_updates"] == 3
    assert "@ 3 updates" in pruned_run["second_log"]  # resumed from checkpoint_last.pt
    assert second["optimizer_history"][-1]["num_updates"] == 6
    assert masks(first) and set(masks(first)) == set(masks(second))
    for key, mask in masks(first).items():
        assert torch.equal(mask, masks(second)[key]), key  # the very masks of before the resume
    changed = False
    for key in masks(second):
        base = key[: -len("_mask")]
        orig1, orig2, mask = first["model"][base + "_orig"], second["model"][base + "_orig"], masks(second)[key]
        effective = orig2 * mask
        assert (effective[mask == 0] == 0).all()
        changed |= not torch.equal(orig1[mask == 1], orig2[mask == 1])
    assert changed  # it did train after the resume


def test_achieved_sparsity_follows_the_schedule(pruned_run):
    # update 1 (schedule 0.5 * (1 - (1 - 1/1)^3) ... with T0=1, T1=2: 0 at update 1, 0.5 from update 2
    log = pruned_run["first_log"]
    assert "pruning at update 2: sparsity 0.5000" in log and "pruning at update 1" not in log
    state = pruned_run["first"]["model"]
    zeros = total = 0
    for key in masks(pruned_run["first"]):
        base = key[: -len("_mask")]
        effective = state[base + "_orig"] * state[key]
        zeros, total = zeros + int((effective == 0).sum()), total + effective.numel()
    assert zeros == round(0.5 * total)


def test_per_layer_scope_prunes_every_matrix_alike(tiny_data, tmp_path):
    run([tool("fairseq-train"), tiny_data, *TRAIN_FLAGS, *FAST, "--save-dir", tmp_path, "--max-update", "1",
         "--prune-sparsity", "0.3", "--prune-scope", "layer"])
    state = weights(tmp_path / "checkpoint_last.pt")
    assert len(masks(state)) == 26
    for key, mask in masks(state).items():
        assert int((mask == 0).sum()) == round(0.3 * mask.numel()), key


def test_finalize_gives_a_plain_checkpoint_with_the_same_outputs(pruned_run, tiny_data, tmp_path):
    masked = pruned_run["dir"] / "checkpoint_last.pt"
    out = tmp_path / "final.pt"
    result = run([PY, "-m", "fairseq_smallcap.compression.prune_cli", "finalize", masked, "--out", out])
    assert "sparsity 0.5000" in result.stdout
    final = weights(out)
    assert not pruning.masked_keys(final["model"]) and "last_optimizer_state" not in final
    assert final["cfg"]["model"].prune_sparsity == 0.0 and final["cfg"]["model"].prune_finalized == pytest.approx(0.5, abs=1e-4)
    for key, mask in masks(pruned_run["second"]).items():
        assert (final["model"][key[: -len("_mask")]][mask == 0] == 0).all()
    assert hypotheses(tiny_data, out) == hypotheses(tiny_data, masked)


def test_rounds_rewind_the_learning_rate_and_resume(trained_checkpoint, tiny_data, tmp_path):
    dense, _ = trained_checkpoint
    cmd = [PY, "-m", "fairseq_smallcap.compression.prune_cli", "rounds", "--sparsities", "0.3,0.6",
           "--init", dense, "--save-dir", tmp_path / "rounds", "--finalize", "--",
           tiny_data, *TRAIN_FLAGS, *FAST, "--max-update", "2", "--lr-scheduler", "inverse_sqrt",
           "--warmup-updates", "4", "--warmup-init-lr", "1e-05"]
    log = run(cmd)
    r1, r2 = (weights(tmp_path / "rounds" / f"round{i}" / "checkpoint_last.pt") for i in (1, 2))
    assert pruning.sparsity_of(r1["model"])["all"] == pytest.approx(0.3, abs=1e-3)
    assert pruning.sparsity_of(r2["model"])["all"] == pytest.approx(0.6, abs=1e-3)
    for key, mask in masks(r1).items():
        assert (masks(r2)[key][mask == 0] == 0).all()  # pruned in round 1 stays pruned
    # each round restarts the learning-rate schedule (warm-up from its start) and the update count
    lrs = re.findall(r"num_updates[= ]1\b[^\n]*?\blr[= ]([0-9.e+-]+)", log.stdout + log.stderr)
    assert len(lrs) == 2 and lrs[0] == lrs[1]
    assert (log.stdout + log.stderr).count("loading pretrained model from") == 2
    assert r2["optimizer_history"][-1]["num_updates"] == 2
    assert (tmp_path / "rounds" / "checkpoint_pruned.pt").is_file()
    again = run(cmd)  # finished rounds are skipped
    assert "round 1: done already" in again.stdout + again.stderr and "num_updates" not in again.stdout


# ------------------------------------------------------------------------------- structured
@pytest.fixture(scope="module")
def four_heads(tiny_data, tmp_path_factory):
    save_dir = tmp_path_factory.mktemp("heads")
    run([tool("fairseq-train"), tiny_data, *TRAIN_FLAGS, *FAST, "--encoder-attention-heads", "4",
         "--decoder-attention-heads", "4", "--max-update", "2", "--save-dir", save_dir])
    return save_dir / "checkpoint_last.pt"


def test_structured_pruning_shrinks_and_matches_masking(four_heads, tiny_data, tmp_path):
    small, masked = tmp_path / "small.pt", tmp_path / "masked.pt"
    result = run([PY, "-m", "fairseq_smallcap.compression.structured_cli", four_heads, "--data", tiny_data,
                  "--prune-heads", "2", "--ffn-keep", "0.5", "--out", small, "--masked-out", masked])
    assert "encoder: 2 of 4 heads, 32 of 64 FFN neurons per layer" in result.stdout
    state, full = weights(small), weights(four_heads)
    m = state["model"]
    assert m["encoder.layers.0.self_attn.q_proj.weight"].shape == (16, 32)
    assert m["decoder.layers.1.encoder_attn.out_proj.weight"].shape == (32, 16)
    assert m["encoder.layers.0.fc1.weight"].shape == (32, 32) and m["decoder.layers.0.fc2.weight"].shape == (32, 32)
    cfg = state["cfg"]["model"]
    assert (cfg.encoder_heads_kept, cfg.decoder_heads_kept, cfg.encoder_ffn_embed_dim) == (2, 2, 32)
    assert cfg.encoder_attention_heads == 4  # the head size stays 32 / 4
    params = lambda s: sum(v.numel() for k, v in s["model"].items() if "layers" in k)  # noqa: E731
    assert params(state) < 0.6 * params(full)
    ours, theirs = hypotheses(tiny_data, small), hypotheses(tiny_data, masked)
    assert [h[0] for h in ours] == [h[0] for h in theirs] and [h[2] for h in ours] == [h[2] for h in theirs]
    assert all(abs(float(a[1]) - float(b[1])) < 1e-3 for a, b in zip(ours, theirs))


def test_gradient_importance_prunes_a_silenced_head_first(four_heads, tiny_data, tmp_path, capsys):
    state = weights(four_heads)
    state["model"]["encoder.layers.0.self_attn.out_proj.weight"][:, 8:16] = 0  # head 1 says nothing
    state["model"]["encoder.layers.0.fc2.weight"][:, 5] = 0  # neither does FFN neuron 5
    silenced = tmp_path / "silenced.pt"
    pruning.save_checkpoint(state, str(silenced))
    out = tmp_path / "small.pt"
    argv = [str(silenced), "--data", str(tiny_data), "--encoder-prune-heads", "1", "--decoder-prune-heads", "0",
            "--ffn-keep", str(63 / 64), "--out", str(out)]
    assert structured_cli.cli_main(argv) == 0
    kept = weights(out)["extra_state"]["structured_pruning"]["kept"]
    assert kept["encoder.layers.0.self_attn"] == [0, 2, 3] and 5 not in kept["encoder.layers.0.ffn"]
    assert kept["decoder.layers.0.self_attn"] == [0, 1, 2, 3]
    capsys.readouterr()


# ------------------------------------------------------------------------------- bad input
def test_bad_sparsity_in_fairseq_train_is_one_line_and_status_2(tiny_data, tmp_path):
    result = run([tool("fairseq-train"), tiny_data, *TRAIN_FLAGS, *FAST, "--save-dir", tmp_path,
                  "--max-update", "1", "--prune-sparsity", "1.0"], check=False)
    assert result.returncode == 2
    assert last_error_line(result) == ("fairseq-train: error: --prune-sparsity 1.0: the sparsity must be in "
                                       "[0, 1) (the fraction of weights set to zero; 1 would remove every weight)")
    assert "Traceback" not in result.stderr


def _other(trained_checkpoint, tmp_path, **cfg):
    state = weights(trained_checkpoint[0])
    for section, values in cfg.items():
        for key, value in values.items():
            setattr(state["cfg"][section], key, value)  # a Namespace (model) or a DictConfig (task)
    path = tmp_path / "other.pt"
    pruning.save_checkpoint(state, str(path))
    return path


@pytest.mark.parametrize("case, message", [
    ("no-masks", "has no pruning masks (weight_orig/weight_mask)"),
    ("arch", "a checkpoint of architecture transformer (model transformer); pruning works on"),
    ("task", "a checkpoint of task language_modeling"),
    ("missing", "no such checkpoint"),
])
def test_finalize_bad_checkpoints(trained_checkpoint, tmp_path, capsys, case, message):
    path = {"no-masks": lambda: trained_checkpoint[0],
            "arch": lambda: _other(trained_checkpoint, tmp_path, model={"arch": "transformer", "_name": "transformer"}),
            "task": lambda: _other(trained_checkpoint, tmp_path, task={"_name": "language_modeling"}),
            "missing": lambda: tmp_path / "none.pt"}[case]()
    out = tmp_path / "out.pt"
    assert prune_cli.finalize_main([str(path), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("smallcap-prune-finalize: error: ") and message in err[-1], err
    assert not out.exists() and not list(tmp_path.glob("out.pt.partial*"))


@pytest.mark.parametrize("flags, message", [
    (["--prune-heads", "4"], "--prune-heads 4: the encoder has 4 attention heads per layer; at most 3 can be removed"),
    (["--decoder-prune-heads", "7"], "--decoder-prune-heads 7: the decoder has 4 attention heads"),
    (["--ffn-keep", "0"], "--ffn-keep 0.0: the fraction of FFN neurons kept must be in (0, 1]"),
    ([], "nothing to remove"),
])
def test_structured_bad_requests(four_heads, tiny_data, tmp_path, capsys, flags, message):
    out = tmp_path / "s.pt"
    assert structured_cli.cli_main([str(four_heads), "--data", str(tiny_data), "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("smallcap-prune-structured: error: ") and message in err, err
    assert not out.exists()


def test_structured_refuses_a_bigru_and_rounds_refuse_bad_sparsities(trained_checkpoint, tiny_data, tmp_path, capsys):
    bigru = _other(trained_checkpoint, tmp_path, model={"arch": "smallcap_bigru", "_name": "smallcap_bigru"})
    assert structured_cli.cli_main([str(bigru), "--data", str(tiny_data), "--out", str(tmp_path / "s.pt"),
                                "--prune-heads", "1"]) == 2
    assert "a smallcap_bigru checkpoint has no attention heads" in capsys.readouterr().err
    assert prune_cli.rounds_main(["--sparsities", "0.5,1.2", "--save-dir", str(tmp_path / "r"), "--", "x"]) == 2
    assert "--sparsities 0.5,1.2: sparsity 1.2: the sparsity must be in [0, 1)" in capsys.readouterr().err
    assert prune_cli.rounds_main(["--sparsities", "0.6,0.5", "--save-dir", str(tmp_path / "r"), "--", "x"]) == 2
    assert "in increasing order" in capsys.readouterr().err
    assert prune_cli.rounds_main(["--sparsities", "0.5", "--save-dir", str(tmp_path / "r"), "--", "x",
                                "--save-dir", "y"]) == 2
    assert "--save-dir: set by smallcap-prune-rounds itself" in capsys.readouterr().err

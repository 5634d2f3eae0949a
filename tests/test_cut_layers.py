"""smallcap-cut-layers: a shallower student initialised from a teacher's layers."""
import shlex

import pytest
import torch
from fairseq import checkpoint_utils

import fairseq_smallcap  # noqa: F401  (checkpoint loading)
from conftest import TRAIN_FLAGS, run, tool
from fairseq_smallcap.distillation import cut_layers
from fairseq_smallcap.distillation.cut_layers import evenly_spaced

MODEL_FLAGS = {"--arch", "--encoder-embed-dim", "--decoder-embed-dim", "--encoder-ffn-embed-dim",
               "--decoder-ffn-embed-dim", "--decoder-layers"}


def _without_model_flags(flags):
    """TRAIN_FLAGS without the architecture and its sizes (those come from cut-layers)."""
    kept, it = [], iter(flags)
    for flag in it:
        if flag in MODEL_FLAGS:
            next(it)
        else:
            kept.append(flag)
    return kept


TRAIN_BASE = _without_model_flags(TRAIN_FLAGS)


@pytest.fixture(scope="module")
def deep_teacher(tiny_data, tmp_path_factory):
    """A teacher with smallcap_very_small's widths and 2 encoder + 7 decoder layers (1 update)."""
    save_dir = tmp_path_factory.mktemp("deep_teacher")
    run([tool("fairseq-train"), tiny_data, *TRAIN_BASE, "--arch", "smallcap_very_small", "--encoder-layers", "2",
         "--decoder-layers", "7", "--lambda-dae", "1", "--lambda-bt", "0", "--max-update", "1",
         "--disable-validation", "--save-dir", save_dir])
    return save_dir / "checkpoint_last.pt"


def _weights(path):
    return checkpoint_utils.load_checkpoint_to_cpu(str(path))


def _assert_layers_copied(teacher, student, keep):
    """Student layer i is teacher layer keep[side][i]; everything else is the teacher's."""
    for key, value in student["model"].items():
        parts = key.split(".")
        if parts[1:2] == ["layers"]:
            parts[2] = str(keep[parts[0]][int(parts[2])])
        assert torch.equal(value, teacher["model"][".".join(parts)]), key
    n_layer_keys = {side: sum(k.startswith(f"{side}.layers.0.") for k in teacher["model"]) for side in keep}
    expected = sum(1 for k in teacher["model"] if ".layers." not in k)
    expected += sum(n_layer_keys[side] * len(keep[side]) for side in keep)
    assert len(student["model"]) == expected


def test_evenly_spaced_layers_keep_first_and_last():
    assert evenly_spaced(6, 3) == [0, 2, 5]
    assert evenly_spaced(12, 6) == [0, 2, 4, 6, 8, 11]
    assert evenly_spaced(7, 6) == [0, 1, 2, 3, 4, 6]
    assert evenly_spaced(4, 4) == [0, 1, 2, 3]
    assert evenly_spaced(6, 1) == [0]


def test_cut_checkpoint_generates_and_finetunes(tiny_data, trained_checkpoint, tmp_path):
    teacher_path, _ = trained_checkpoint
    student_path = tmp_path / "student.pt"
    result = run([tool("smallcap-cut-layers"), "--teacher", teacher_path, "--decoder-layers", "1",
                  "--output", student_path])
    assert "decoder: kept layers 1 of 2" in result.stdout
    flags = shlex.split(result.stdout.strip().splitlines()[-1])
    assert flags == ["--finetune-from-model", str(student_path), "--arch", "smallcap_very_small",
                     "--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "32",
                     "--encoder-ffn-embed-dim", "64", "--decoder-embed-dim", "32", "--decoder-ffn-embed-dim", "64"]

    teacher, student = _weights(teacher_path), _weights(student_path)
    _assert_layers_copied(teacher, student, {"encoder": [0], "decoder": [1]})
    assert (student["cfg"].model.encoder_layers, student["cfg"].model.decoder_layers) == (1, 1)
    assert "last_optimizer_state" not in student and student["optimizer_history"][-1]["num_updates"] == 0
    assert student["extra_state"]["cut_from"]["decoder_layers"] == [1]

    gen = run([tool("fairseq-generate"), tiny_data, "--user-dir", TRAIN_FLAGS[1], "--task",
               "unsupervised_translation", "-s", "en", "-t", "fr", "--gen-subset", "valid", "--path", student_path,
               "--beam", "1", "--max-len-a", "0", "--max-len-b", "3", "--batch-size", "256", "--cpu"])
    assert "Generate valid with beam=1" in gen.stdout + gen.stderr

    # the printed flags are all the model needs: the base flags say nothing about its shape
    log = run([tool("fairseq-train"), tiny_data, *TRAIN_BASE, *flags, "--lambda-dae", "1", "--lambda-bt", "0",
               "--max-update", "2", "--disable-validation", "--save-dir", tmp_path / "ckpt"]).stdout
    assert f"loading pretrained model from {student_path}" in log
    assert "(epoch 1 @ 0 updates)" in log and "num_updates 2" in log


def test_student_arch_sets_the_layers_kept(deep_teacher, tmp_path, capsys):
    student_path = tmp_path / "student.pt"
    argv = ["--teacher", str(deep_teacher), "--student-arch", "smallcap_very_small", "--output", str(student_path)]
    assert cut_layers.cli_main(argv) == 0
    out = capsys.readouterr().out
    assert "encoder: kept layers 0 of 2" in out and "decoder: kept layers 0,1,2,3,4,6 of 7" in out
    assert shlex.split(out.strip().splitlines()[-1]) == [
        "--finetune-from-model", str(student_path), "--arch", "smallcap_very_small",
        "--encoder-layers", "1", "--decoder-layers", "6"]
    _assert_layers_copied(_weights(deep_teacher), _weights(student_path),
                          {"encoder": [0], "decoder": [0, 1, 2, 3, 4, 6]})

    # explicit indices win over the architecture's layer counts
    argv += ["--encoder-layers", "1", "--decoder-layers", "2,5"]
    assert cut_layers.cli_main(argv) == 0
    assert shlex.split(capsys.readouterr().out.strip().splitlines()[-1])[-4:] == [
        "--encoder-layers", "1", "--decoder-layers", "2"]
    _assert_layers_copied(_weights(deep_teacher), _weights(student_path), {"encoder": [1], "decoder": [2, 5]})


@pytest.mark.parametrize("flags, message", [
    (["--student-arch", "smallcap_very_small"], "--student-arch smallcap_very_small: layers can only be cut "
     "where the widths match, but smallcap_very_small has encoder_embed_dim=128"),
    (["--student-arch", "smallcap_small"], "smallcap_small has encoder_embed_dim=256"),
    (["--student-arch", "transformer"], "--student-arch transformer: not an architecture of the teacher's model"),
    (["--student-arch", "nope"], "--student-arch nope: unknown architecture (those of the teacher's model: "),
    (["--decoder-layers", "0,0"], "--decoder-layers 0,0: each layer can be kept only once"),
    (["--decoder-layers", "2"], "--decoder-layers 2: layer 2 does not exist, the teacher's decoder has 2 layers (0-1)"),
    (["--encoder-layers", "-1"], "--encoder-layers -1: layer -1 does not exist"),
    (["--decoder-layers", "1,0"], "--decoder-layers 1,0: give the layers in increasing order"),
    (["--encoder-layers", "first"], "--encoder-layers 'first': expected comma-separated layer indices"),
])
def test_bad_layers_and_widths_are_one_clear_error(trained_checkpoint, tmp_path, capsys, flags, message):
    teacher_path, _ = trained_checkpoint
    assert cut_layers.cli_main(["--teacher", str(teacher_path), "--output", str(tmp_path / "s.pt"), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("smallcap-cut-layers: error: ") and message in err, err
    assert not (tmp_path / "s.pt").exists()


def test_missing_teacher_and_overwriting_it(trained_checkpoint, tmp_path, capsys):
    teacher_path, _ = trained_checkpoint
    assert cut_layers.cli_main(["--teacher", str(tmp_path / "none.pt"), "--output", str(tmp_path / "s.pt")]) == 2
    assert "--teacher " + str(tmp_path / "none.pt") + ": no such checkpoint" in capsys.readouterr().err
    assert cut_layers.cli_main(["--teacher", str(teacher_path), "--output", str(teacher_path)]) == 2
    assert "would overwrite the teacher" in capsys.readouterr().err

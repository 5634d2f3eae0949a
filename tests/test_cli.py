"""End to end through the fairseq command line with --user-dir, on a tiny Multi30k slice."""
import re

import pytest
import torch

import fairseq_smallcap  # noqa: F401  (checkpoints load weights-only with its allowlist)

from conftest import TRAIN_FLAGS, USER_DIR, run, tool


def updates_logged(stdout):
    return [int(n) for n in re.findall(r"num_updates=(\d+)", stdout)]


def test_train_logs_every_objective_and_validates_both_directions(trained_checkpoint):
    ckpt, stdout = trained_checkpoint
    assert ckpt.exists()
    for key in ("mass_loss=", "dae_loss=", "bt_loss=", "en_fr_loss", "fr_en_loss", "en_fr_bleu", "fr_en_bleu", "| bleu "):
        assert key in stdout, key
    assert "back-translation sample" in stdout
    assert updates_logged(stdout)[-1] == 3


@pytest.mark.parametrize("src, tgt", [("en", "fr"), ("fr", "en")])
def test_generate_both_directions(tiny_data, trained_checkpoint, src, tgt):
    ckpt, _ = trained_checkpoint
    result = run([tool("fairseq-generate"), tiny_data, "--user-dir", USER_DIR, "--task",
                  "unsupervised_translation", "-s", src, "-t", tgt, "--gen-subset", "valid",
                  "--path", ckpt, "--beam", "2", "--max-len-a", "0", "--max-len-b", "8",
                  "--batch-size", "64", "--cpu", "--post-process", "sentencepiece"])
    hyps = [line for line in result.stdout.splitlines() if line.startswith("D-")]
    sources = [line for line in result.stdout.splitlines() if line.startswith("S-")]
    raw_sources = (tiny_data / "raw" / f"valid.{src}").read_text().splitlines()
    # every sentence: 1,014 = 15 * 64 + 54, and fairseq drops a last batch that is not a multiple
    # of --required-batch-size-multiple (8 by default; fairseq issue #5036) unless the task stops it
    assert len(raw_sources) == 1014 and len(hyps) == 1014
    assert "__" not in " ".join(hyps)  # language tokens never reach the output
    first = int(sources[0].split("\t")[0][2:])
    # fairseq-generate prints the source as the model sees it: tagged with its language
    assert sources[0].split("\t")[1].strip() == f"__{src}__ " + raw_sources[first].strip()


def test_interactive_translates_raw_text(tiny_data, trained_checkpoint):
    ckpt, _ = trained_checkpoint
    result = run([tool("fairseq-interactive"), tiny_data, "--user-dir", USER_DIR, "--task",
                  "unsupervised_translation", "-s", "en", "-t", "fr", "--path", ckpt,
                  "--bpe", "sentencepiece", "--sentencepiece-model", tiny_data / "spm.model",
                  "--beam", "1", "--cpu", "--max-len-b", "10"],
                 input="A dog runs in the park.\nTwo men are talking.\n")
    hyps = [line for line in result.stdout.splitlines() if line.startswith("D-")]
    assert len(hyps) == 2


def test_resume_continues_from_checkpoint_last(tiny_data, tmp_path):
    flags = [tool("fairseq-train"), tiny_data, *TRAIN_FLAGS, "--lambda-dae", "1", "--lambda-bt", "1",
             "--save-dir", tmp_path, "--disable-validation"]
    first = run([*flags, "--max-update", "2"])
    assert updates_logged(first.stdout)[-1] == 2
    state = torch.load(tmp_path / "checkpoint_last.pt", weights_only=True)
    assert state["optimizer_history"][-1]["num_updates"] == 2
    second = run([*flags, "--max-update", "4"])
    assert re.search(r"Loaded checkpoint \S*checkpoint_last.pt \(epoch \d+ @ 2 updates\)", second.stdout)
    assert updates_logged(second.stdout) == [3, 4]


def test_mass_then_finetune_from_checkpoint(tiny_data, tmp_path):
    run([tool("fairseq-train"), tiny_data, *TRAIN_FLAGS, "--lambda-mass", "1", "--lambda-dae", "0",
         "--lambda-bt", "0", "--max-update", "2", "--save-dir", tmp_path / "mass", "--disable-validation"])
    second = run([tool("fairseq-train"), tiny_data, *TRAIN_FLAGS, "--lambda-mass", "0", "--lambda-dae",
                  "1", "--lambda-bt", "1", "--max-update", "2", "--save-dir", tmp_path / "bt",
                  "--finetune-from-model", tmp_path / "mass" / "checkpoint_last.pt", "--disable-validation"])
    assert "mass_loss" not in second.stdout and "bt_loss" in second.stdout


def test_two_worker_data_parallel_cpu_run_sums_statistics(tiny_data, tmp_path):
    flags = [*TRAIN_FLAGS, "--lambda-dae", "1", "--lambda-bt", "1", "--max-update", "2",
             "--disable-validation", "--no-save"]
    two = run([tool("smallcap-train-distributed"), "--nproc", "2", "--", tiny_data, *flags])
    one = run([tool("fairseq-train"), tiny_data, *flags, "--update-freq", "2"])
    # both updates see the same two batches: worker 0 and 1 each take one, the single
    # process accumulates them; the logged statistics must be the sums over both
    for key in ("wpb", "bsz"):
        two_vals = re.findall(rf"{key}=([\d.]+)", two.stdout)
        one_vals = re.findall(rf"{key}=([\d.]+)", one.stdout)
        assert two_vals and two_vals[:2] == one_vals[:2], (key, two_vals, one_vals)
    assert "distributed init (rank 1)" in two.stdout


@pytest.mark.parametrize("args, message", [
    (["MISSING_DIR"], "data directory not found"),
    (["DATA", "-s", "en", "-t", "de"], "unknown language 'de' for --target-lang"),
    (["DATA", "--lambda-bt", "0:1,100:1,100:0.5"], "--lambda-bt '0:1,100:1,100:0.5': expected a number or"),
    (["DATA", "--bt-filter-scores", "dual_xent,nope"], "--bt-filter-scores: unknown pair score 'nope'"),
    (["DATA", "--curriculum-by", "hardness"], "--curriculum-by: unknown curriculum difficulty 'hardness'"),
    (["DATA", "--lambda-bp", "1"], "--lambda-bp 1 needs --back-parallel-data"),
    (["DATA", "--bt-sampling-topk", "-2"], "--bt-sampling-topk -2: must be -1 (the whole distribution)"),
    (["DATA", "--bt-sampling-topk", "5", "--bt-sampling-temperature", "0"], "--bt-sampling-temperature 0.0: must be > 0"),
    (["DATA", "--bt-sampling-temperature", "0.5"], "--bt-sampling-temperature 0.5 has no effect on greedy"),
])
def test_bad_input_gives_one_clear_line(tiny_data, tmp_path, args, message):
    args = [str(tmp_path / "missing") if a == "MISSING_DIR" else str(tiny_data) if a == "DATA" else a for a in args]
    result = run([tool("fairseq-train"), *args, *TRAIN_FLAGS, "--max-update", "1", "--save-dir", tmp_path],
                 check=False)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_mismatched_dictionary_is_reported(tiny_data, trained_checkpoint, tmp_path):
    ckpt, _ = trained_checkpoint
    other = tmp_path / "other"
    other.mkdir()
    for f in tiny_data.iterdir():
        if f.is_file():
            (other / f.name).symlink_to(f)
    (other / "dict.txt").unlink()
    (other / "dict.txt").write_text((tiny_data / "dict.txt").read_text() + "extra_piece 1\n")
    result = run([tool("fairseq-generate"), other, "--user-dir", USER_DIR, "--task",
                  "unsupervised_translation", "-s", "en", "-t", "fr", "--gen-subset", "test",
                  "--path", ckpt, "--cpu", "--max-sentences", "2"], check=False)
    assert result.returncode == 2
    assert "mismatched dictionary" in result.stderr and "Traceback" not in result.stderr

"""smallcap-export-ct2 and smallcap-translate: CTranslate2 export of a trained model, its
equality with fairseq-generate, one output line per input line, and bad input."""
import json
import os
import sys

import pytest
import torch

import fairseq_smallcap  # noqa: F401  (the weights-only loader accepts fairseq checkpoints)

from conftest import TRAIN_FLAGS, error_lines, run, tool

ctranslate2 = pytest.importorskip("ctranslate2")

EXPORT = [sys.executable, "-m", "fairseq_smallcap.compression.ct2_export"]
TRANSLATE = [sys.executable, "-m", "fairseq_smallcap.compression.translate"]


def read_lines(path):
    with open(path, encoding="utf-8", newline="\n") as f:
        return f.read().split("\n")[:-1]


@pytest.fixture(scope="session")
def ct2_checkpoint(tiny_data, tmp_path_factory):
    """A tiny model trained long enough (MASS + DAE, 200 updates) to produce varied hypotheses,
    some of them long enough to reach fairseq-generate's maximum length (200 pieces)."""
    save_dir = tmp_path_factory.mktemp("ct2_ckpt")
    run([tool("fairseq-train"), tiny_data, *TRAIN_FLAGS, "--lambda-mass", "1", "--lambda-dae", "1",
         "--lambda-bt", "0", "--max-update", "200", "--save-dir", save_dir])
    return save_dir / "checkpoint_last.pt"


@pytest.fixture(scope="session")
def float32_model(ct2_checkpoint, tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ct2_models") / "float32"
    result = run([*EXPORT, ct2_checkpoint, "--data", tiny_data, "--out", out, "--quantization", "float32"])
    assert "exported to" in result.stdout
    return out


def fairseq_hypotheses(data, checkpoint, src, tgt):
    """fairseq-generate's greedy hypotheses on the test set, in the order of the raw test file."""
    result = run([tool("fairseq-generate"), data, "--user-dir", str(fairseq_smallcap.__path__[0]),
                  "--task", "unsupervised_translation", "-s", src, "-t", tgt, "--gen-subset", "test",
                  "--path", checkpoint, "--beam", "1", "--post-process", "sentencepiece", "--cpu",
                  "--batch-size", "250"])
    hypotheses = {}
    for line in result.stdout.split("\n"):
        if line.startswith("H-"):
            sample_id, _score, text = line[2:].split("\t", 2)
            hypotheses[int(sample_id)] = text
    return [hypotheses[i] for i in range(len(hypotheses))]


# ---------------------------------------------------------------------------- equality
@pytest.mark.parametrize("src,tgt", [("en", "fr"), ("fr", "en")])
def test_greedy_float32_equals_fairseq_generate(tiny_data, ct2_checkpoint, float32_model, tmp_path, src, tgt):
    raw = tiny_data / "raw" / f"test.{src}"
    expected = fairseq_hypotheses(tiny_data, ct2_checkpoint, src, tgt)
    assert len(expected) == len(read_lines(raw)) == 1000
    # real hypotheses: not empty, not all the same, and some cut at the maximum length
    assert all(expected) and len(set(expected)) > 100
    assert any(len(line) > 150 for line in expected)
    # one worker, then two translating batches in parallel: each line back in its place
    for inter_threads in ("1", "2"):
        out = tmp_path / f"test.{inter_threads}.{tgt}"
        result = run([*TRANSLATE, "--model", float32_model, "-s", src, "-t", tgt, "--beam", "1",
                      "--threads", "1", "--inter-threads", inter_threads, "--batch-size", "16",
                      "--input", raw, "--output", out])
        assert f"{len(expected):,} lines translated" in result.stderr
        assert result.stdout == ""
        got = read_lines(out)
        mismatches = [(i, e, g) for i, (e, g) in enumerate(zip(expected, got)) if e != g]
        assert len(got) == len(expected) and not mismatches, (
            f"--inter-threads {inter_threads}: {len(mismatches)} of {len(expected)} lines differ, "
            f"first: {mismatches[:3]}")


def test_head_pruned_model_exports_with_its_head_count(tiny_data, tmp_path):
    """A structured-pruned model keeps 2 of 4 heads per attention (the head size stays 8): the
    export gives CTranslate2 the heads kept, so greedy float32 still equals fairseq-generate
    (with the original count, CTranslate2 would split 16 dimensions into 4 heads of 4)."""
    run([tool("fairseq-train"), tiny_data, *TRAIN_FLAGS, "--encoder-attention-heads", "4",
         "--decoder-attention-heads", "4", "--lambda-mass", "1", "--lambda-dae", "1", "--lambda-bt", "0",
         "--max-update", "200", "--save-dir", tmp_path / "four"])
    pruned, out = tmp_path / "pruned.pt", tmp_path / "ct2"
    run([sys.executable, "-m", "fairseq_smallcap.compression.structured_cli", tmp_path / "four" / "checkpoint_last.pt",
         "--data", tiny_data, "--encoder-prune-heads", "2", "--decoder-prune-heads", "1", "--ffn-keep", "0.5",
         "--importance", "weight", "--out", pruned])
    run([*EXPORT, pruned, "--data", tiny_data, "--out", out, "--quantization", "float32"])
    assert json.loads((out / "smallcap_ct2.json").read_text())["heads_kept"] == {"encoder": 2, "decoder": 3}
    for src, tgt in (("en", "fr"), ("fr", "en")):
        expected = fairseq_hypotheses(tiny_data, pruned, src, tgt)
        assert len(set(expected)) > 20, expected[:5]
        result = tmp_path / f"test.{tgt}"
        run([*TRANSLATE, "--model", out, "-s", src, "-t", tgt, "--beam", "1", "--threads", "1",
             "--batch-size", "16", "--input", tiny_data / "raw" / f"test.{src}", "--output", result])
        got = read_lines(result)
        mismatches = [(i, e, g) for i, (e, g) in enumerate(zip(expected, got)) if e != g]
        assert len(got) == len(expected) and not mismatches, f"{len(mismatches)} lines differ: {mismatches[:2]}"


# ---------------------------------------------------------------------------- one line per line
def test_empty_lines_keep_the_line_count(float32_model, tmp_path):
    text = "\nA man rides a bike.\n   \n\nTwo dogs play in the snow.\r\n\t\nA woman.\n\nLast line without newline"
    result = run([*TRANSLATE, "--model", float32_model, "-s", "en", "-t", "fr", "--beam", "2",
                  "--threads", "1", "--batch-size", "2"], input=text)
    lines = result.stdout.split("\n")
    assert lines[-1] == "" and len(lines) - 1 == 9, lines
    inputs = text.split("\n")
    for given, produced in zip(inputs, lines):
        assert (produced == "") == (given.strip() == ""), (given, produced)
    # the same through --input/--output: written whole, no temporary file left
    src = tmp_path / "in.en"
    src.write_text(text, encoding="utf-8")
    out = tmp_path / "out.fr"
    run([*TRANSLATE, "--model", float32_model, "-s", "en", "-t", "fr", "--beam", "2", "--threads", "1",
         "--batch-size", "2", "--input", src, "--output", out])
    assert out.read_text(encoding="utf-8") == result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.en", "out.fr"]


def test_int8_export_loads_and_translates(trained_checkpoint, tiny_data, float32_model, tmp_path):
    checkpoint, _ = trained_checkpoint
    out = tmp_path / "int8"
    run([*EXPORT, checkpoint, "--data", tiny_data, "--out", out, "--quantization", "int8"])
    assert (out / "spm.model").is_file() and (out / "smallcap_ct2.json").is_file()
    # int8 matrices (the positional tables, biases and layer norms stay float32 in this tiny model)
    assert os.path.getsize(out / "model.bin") < 0.6 * os.path.getsize(float32_model / "model.bin")
    src = tmp_path / "in.fr"
    sentences = (tiny_data / "raw" / "test.fr").read_text(encoding="utf-8").split("\n")[:20]
    src.write_text("\n".join(sentences[:10] + [""] + sentences[10:]) + "\n", encoding="utf-8")
    result = run([*TRANSLATE, "--model", out, "-s", "fr", "-t", "en", "--beam", "4", "--threads", "1",
                  "--input", src])
    lines = result.stdout.split("\n")
    assert len(lines) == 22 and lines[-1] == "" and lines[10] == ""


def test_export_does_not_need_the_init_embeddings_file(ct2_checkpoint, tiny_data, float32_model, tmp_path):
    """A checkpoint trained with --init-embeddings FILE exports where FILE no longer exists (a
    model shipped elsewhere), to the same model.bin; the checkpoint itself is left unchanged."""
    source = tmp_path / "shipped.pt"

    def name_a_gone_file(state):
        state["cfg"]["model"].init_embeddings = str(tmp_path / "gone.vec")

    _craft_checkpoint(ct2_checkpoint, source, name_a_gone_file)
    before = source.read_bytes()
    out = tmp_path / "models" / "float32"
    out.parent.mkdir()
    result = run([*EXPORT, source, "--data", tiny_data, "--out", out, "--quantization", "float32"], check=False)
    assert result.returncode == 0, error_lines(result.stderr)
    assert (out / "model.bin").read_bytes() == (float32_model / "model.bin").read_bytes()
    assert source.read_bytes() == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["float32"]  # no copy left behind


# ---------------------------------------------------------------------------- bad input
def _craft_checkpoint(source, dest, edit):
    state = torch.load(source, map_location="cpu", weights_only=True)
    edit(state)
    torch.save(state, dest)
    return dest


def _other_task(state):
    state["cfg"]["task"]["_name"] = "translation"


def _other_arch(state):
    state["cfg"]["model"].arch = "smallcap_bigru"


def _mismatched_data(data, dest):
    dest.mkdir()
    lines = (data / "dict.txt").read_text(encoding="utf-8").splitlines(keepends=True)
    (dest / "dict.txt").write_text("".join(lines[:-3]), encoding="utf-8")
    (dest / "spm.model").write_bytes((data / "spm.model").read_bytes())
    return dest


@pytest.mark.parametrize("case,message", [
    ("other_task", "checkpoint {checkpoint} is a model of the task 'translation', not "
                   "unsupervised_translation"),
    ("other_arch", "checkpoint {checkpoint}: architecture 'smallcap_bigru' (model 'smallcap_bigru') "
                   "is not a Transformer"),
    ("mismatched_dictionary", "mismatched dictionary: {data}/dict.txt gives"),
    ("unknown_quantization", "unknown quantization type 'int4'"),
    ("missing_checkpoint", "checkpoint not found: {checkpoint}"),
    ("not_a_checkpoint", "cannot read checkpoint {checkpoint}: not a fairseq checkpoint"),
])
def test_bad_export_input_gives_one_line_and_status_2(ct2_checkpoint, tiny_data, tmp_path, case, message):
    checkpoint, data, quantization = ct2_checkpoint, tiny_data, "int8"
    if case == "other_task":
        checkpoint = _craft_checkpoint(ct2_checkpoint, tmp_path / "task.pt", _other_task)
    elif case == "other_arch":
        checkpoint = _craft_checkpoint(ct2_checkpoint, tmp_path / "arch.pt", _other_arch)
    elif case == "mismatched_dictionary":
        data = _mismatched_data(tiny_data, tmp_path / "data")
    elif case == "unknown_quantization":
        quantization = "int4"
    elif case == "missing_checkpoint":
        checkpoint = tmp_path / "missing.pt"
    elif case == "not_a_checkpoint":
        checkpoint = tmp_path / "text.pt"
        checkpoint.write_text("not a checkpoint\n")
    out_parent = tmp_path / "models"
    out_parent.mkdir()
    out = out_parent / "model"
    result = run([*EXPORT, checkpoint, "--data", data, "--out", out, "--quantization", quantization],
                 check=False)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = error_lines(result.stderr)
    expected = "smallcap-export-ct2: error: " + message.format(data=data, checkpoint=checkpoint)
    assert len(lines) == 1 and lines[0].startswith(expected), lines
    assert list(out_parent.iterdir()) == []  # nothing half-written


def test_failed_conversion_leaves_nothing_and_keeps_the_old_model(ct2_checkpoint, tiny_data, tmp_path,
                                                                  monkeypatch):
    from fairseq_smallcap.compression import ct2_export

    def failing_convert(checkpoint, data, output_dir, quantization, model_name, kept_heads=None):
        os.makedirs(output_dir)
        with open(os.path.join(output_dir, "model.bin"), "wb") as f:
            f.write(b"half")
        raise RuntimeError("conversion interrupted")

    monkeypatch.setattr(ct2_export, "convert", failing_convert)
    out = tmp_path / "model"
    with pytest.raises(RuntimeError, match="conversion interrupted"):
        ct2_export.export(str(ct2_checkpoint), str(tiny_data), str(out), "int8")
    assert list(tmp_path.iterdir()) == []
    out.mkdir()
    (out / "old").write_text("previous export")
    assert ct2_export.cli_main([str(ct2_checkpoint), "--data", str(tiny_data), "--out", str(out)]) == 2
    with pytest.raises(RuntimeError, match="conversion interrupted"):
        ct2_export.export(str(ct2_checkpoint), str(tiny_data), str(out), "int8", force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert [p.name for p in out.iterdir()] == ["old"]


def test_bad_translate_input_gives_one_line_and_status_2(float32_model, tiny_data, tmp_path):
    cases = [
        (["--model", float32_model, "-s", "en", "-t", "de"],
         "unknown language 'de' for -t/--target-lang: the model knows en,fr"),
        (["--model", tiny_data, "-s", "en", "-t", "fr"],
         f"{tiny_data} is not a model exported by smallcap-export-ct2 (no smallcap_ct2.json)"),
        (["--model", float32_model, "-s", "en", "-t", "fr", "--inter-threads", "0"],
         "--inter-threads must be at least 1, got 0"),
    ]
    for flags, message in cases:
        result = run([*TRANSLATE, *flags, "--output", tmp_path / "out.txt"], check=False, input="A man.\n")
        assert result.returncode == 2, result.stderr[-3000:]
        assert error_lines(result.stderr) == [f"smallcap-translate: error: {message}"]
        assert list(tmp_path.iterdir()) == []


def test_loading_the_user_dir_does_not_import_ctranslate2():
    result = run([sys.executable, "-c", "import sys, fairseq_smallcap, fairseq_smallcap.compression; "
                                        "print('ctranslate2' in sys.modules)"])
    assert result.stdout.strip() == "False"

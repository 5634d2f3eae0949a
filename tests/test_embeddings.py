"""smallcap-embeddings (skip-gram subword embeddings) and the models' --init-embeddings."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from fairseq import options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf

import fairseq_smallcap  # noqa: F401
from fairseq_smallcap.models.pretrained_embeddings import read_vectors

from conftest import TRAIN_FLAGS, USER_DIR, error_lines, run, tool

DIM = 32  # TRAIN_FLAGS' --encoder-embed-dim and --decoder-embed-dim


def make_vectors(data, out, *flags):
    return run([tool("smallcap-embeddings"), data, "--dim", DIM, "--out", out, "--threads", "1",
                "--epochs", "2", *flags])


@pytest.fixture(scope="session")
def vectors(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("embeddings") / "emb.vec"
    result = make_vectors(tiny_data, out)
    return out, result


def dict_symbols(data):
    return [line.split(" ")[0] for line in (data / "dict.txt").read_text(encoding="utf-8").splitlines()]


# ---------------------------------------------------------------------------- smallcap-embeddings
def test_file_has_the_dictionary_symbols_in_order(tiny_data, vectors):
    path, result = vectors
    lines = path.read_text(encoding="utf-8").splitlines()
    symbols = dict_symbols(tiny_data)
    assert lines[0] == f"{len(symbols)} {DIM}"
    assert [line.split(" ")[0] for line in lines[1:]] == symbols
    assert all(len(line.split(" ")) == DIM + 1 for line in lines[1:])
    read, matrix = read_vectors(str(path))
    assert read == symbols and matrix.shape == (len(symbols), DIM) and np.isfinite(matrix).all()
    assert matrix.std() > 0
    summary = json.loads(path.with_name(path.name + ".json").read_text(encoding="utf-8"))
    assert summary["symbols"] == len(symbols) and summary["langs"] == ["en", "fr"]
    assert summary["seen"] + len(summary["unseen"]) == len(symbols) and summary["seen"] > 0.9 * len(symbols)
    assert set(summary["unseen"]) <= set(symbols)
    assert f"{summary['seen']:,}/{len(symbols):,} symbols seen" in result.stdout
    assert "epoch 2/2" in result.stdout and "sentences/s" in result.stdout
    assert sorted(p.name for p in path.parent.iterdir()) == ["emb.vec", "emb.vec.json"]  # no .partial


def test_same_seed_one_thread_gives_the_same_file(tiny_data, vectors, tmp_path):
    path, _ = vectors
    make_vectors(tiny_data, tmp_path / "again.vec")
    assert (tmp_path / "again.vec").read_bytes() == path.read_bytes()
    make_vectors(tiny_data, tmp_path / "seed2.vec", "--seed", "2")
    assert (tmp_path / "seed2.vec").read_bytes() != path.read_bytes()


def bad_data(tiny_data, tmp_path, what):
    """A copy of the data directory (links) broken in one way; returns (data, extra flags)."""
    data = tmp_path / "data"
    for lang in ("en", "fr"):
        (data / lang).mkdir(parents=True)
        for suffix in ("bin", "idx"):
            (data / lang / f"train.{suffix}").symlink_to(tiny_data / lang / f"train.{suffix}")
    (data / "dict.txt").symlink_to(tiny_data / "dict.txt")
    if what == "no dict":
        (data / "dict.txt").unlink()
    elif what == "no train data":
        shutil.rmtree(data / "fr")
        (data / "fr").mkdir()
    elif what == "garbage idx":
        (data / "fr" / "train.idx").unlink()
        (data / "fr" / "train.idx").write_bytes(b"not an index")
    elif what == "truncated bin":
        (data / "fr" / "train.bin").unlink()
        (data / "fr" / "train.bin").write_bytes((tiny_data / "fr" / "train.bin").read_bytes()[:100])
    return data


@pytest.mark.parametrize("what, flags, message", [
    ("no dict", [], "no dictionary at {data}/dict.txt"),
    ("no train data", ["--langs", "en,fr"], "no training data: {data}/fr/train.idx not found"),
    ("no train data", [], "no training data: {data}/fr/train.idx not found"),
    ("garbage idx", [], "cannot read {data}/fr/train.idx: not a fairseq mmap index"),
    ("truncated bin", [], "truncated training corpus: {data}/fr/train.bin"),
    ("ok", ["--dim", "0"], "--dim must be positive, got 0"),
    ("ok", ["--langs", ","], "--langs names no language"),
])
def test_bad_input_gives_one_line_and_status_2(tiny_data, tmp_path, what, flags, message):
    data = bad_data(tiny_data, tmp_path, what)
    out = tmp_path / "out.vec"
    if what == "no train data" and not flags:  # default --langs: fr has no train.idx, en alone
        (data / "en" / "train.idx").unlink()
        message = f"no training data in {data}: no {data}/*/train.idx"
    result = run([tool("smallcap-embeddings"), data, "--dim", DIM, "--out", out, *flags], check=False)
    assert result.returncode == 2, result.stderr
    lines = error_lines(result.stderr)
    assert lines == [f"smallcap-embeddings: error: {message.format(data=data)}"] or (
        len(lines) == 1 and lines[0].startswith(f"smallcap-embeddings: error: {message.format(data=data)}")), lines
    assert not out.exists() and not (tmp_path / "out.vec.partial").exists()


# ---------------------------------------------------------------------------- --init-embeddings
def build(data, flags, from_checkpoint=False, seed=1):
    """The model fairseq-train builds for ``flags`` (same parser, config and task.build_model)."""
    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [str(data), *flags])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    torch.manual_seed(seed)
    return task, task.build_model(cfg.model, from_checkpoint=from_checkpoint)


TRANSFORMER_FLAGS = [str(f) for f in TRAIN_FLAGS]


def bigru_flags():
    out, skip = [], False
    for flag in TRANSFORMER_FLAGS:
        if skip:
            skip = False
        elif flag in ("--arch", "--encoder-ffn-embed-dim", "--decoder-ffn-embed-dim", "--decoder-layers"):
            skip = True
        else:
            out.append(flag)
    return [*out, "--arch", "smallcap_bigru", "--encoder-hidden-size", "32", "--decoder-hidden-size", "32"]


@pytest.mark.parametrize("arch, target_std", [("transformer", DIM ** -0.5), ("bigru", 0.1 / 3 ** 0.5)])
def test_init_embeddings_round_trip(tiny_data, vectors, tmp_path, arch, target_std):
    path, _ = vectors
    flags = TRANSFORMER_FLAGS if arch == "transformer" else bigru_flags()
    symbols, matrix = read_vectors(str(path))
    task, model = build(tiny_data, [*flags, "--init-embeddings", str(path)])
    _, plain = build(tiny_data, flags)  # same seed, no --init-embeddings
    d = task.source_dictionary
    first, end = d.nspecial, d.nspecial + len(symbols)
    assert d.symbols[first:end] == symbols and end < len(d)  # <mask>, __en__, __fr__ follow
    expected = torch.from_numpy(matrix) * (target_std / float(np.std(matrix.astype(np.float64))))
    for side in ("encoder", "decoder"):
        weight = getattr(model, side).embed_tokens.weight.detach()
        torch.testing.assert_close(weight[first:end], expected, rtol=1e-5, atol=1e-6)
        assert abs(weight[first:end].std().item() - target_std) < 0.01 * target_std
        untouched = getattr(plain, side).embed_tokens.weight.detach()
        assert torch.equal(weight[:first], untouched[:first])  # specials, padding row (zeros)
        assert torch.equal(weight[end:], untouched[end:])  # <mask> and the language tokens
        mask = d.index("<mask>")
        assert not torch.isclose(weight[mask], expected, atol=1e-4).all(dim=1).any()
    if arch == "transformer":  # tied output projection
        assert model.decoder.output_projection.weight is model.decoder.embed_tokens.weight
    assert model.encoder.embed_tokens.weight is not model.decoder.embed_tokens.weight

    # building a model to load a checkpoint into does not read the file (it may be gone)
    missing = tmp_path / "gone.vec"
    _, restored = build(tiny_data, [*flags, "--init-embeddings", str(missing)], from_checkpoint=True)
    assert torch.equal(restored.encoder.embed_tokens.weight, plain.encoder.embed_tokens.weight)


def test_train_with_init_embeddings_logs_what_it_loaded(tiny_data, vectors, tmp_path):
    path, _ = vectors
    result = run([tool("fairseq-train"), tiny_data, *TRANSFORMER_FLAGS, "--init-embeddings", path,
                  "--lambda-mass", "1", "--max-update", "1", "--save-dir", tmp_path, "--no-save"])
    summary = json.loads(path.with_name(path.name + ".json").read_text(encoding="utf-8"))
    n = summary["symbols"]
    assert (f"--init-embeddings: loaded {n:,} {DIM}-dimensional vectors of {path} into the encoder "
            f"and decoder embeddings (rows 4..{n + 3}") in result.stdout
    assert f"symbols never seen when training the vectors: {len(summary['unseen']):,}" in result.stdout


def test_fairseq_generate_loads_a_checkpoint_without_the_embeddings_file(tiny_data, vectors, tmp_path):
    """fairseq's loader passes from_checkpoint=True only to a build_model that names it (read with
    inspect.getfullargspec): the checkpoint's weights replace the vectors, whose file may be gone."""
    path, _ = vectors
    vec = shutil.copy(path, tmp_path / "gone.vec")
    run([tool("fairseq-train"), tiny_data, *TRANSFORMER_FLAGS, "--init-embeddings", vec,
         "--lambda-mass", "1", "--max-update", "1", "--save-dir", tmp_path / "ckpt"])
    Path(vec).unlink()
    result = run([tool("fairseq-generate"), tiny_data, "--user-dir", USER_DIR, "--task", "unsupervised_translation",
                  "-s", "en", "-t", "fr", "--gen-subset", "test", "--path", tmp_path / "ckpt" / "checkpoint_last.pt",
                  "--cpu", "--max-sentences", "8", "--max-len-b", "5"], check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--init-embeddings: loaded" not in result.stdout
    assert result.stdout.count("\nH-") == 1000


def edited(path, out, edit):
    lines = path.read_text(encoding="utf-8").splitlines()
    out.write_text("\n".join(edit(lines)) + "\n", encoding="utf-8")
    return out


def change_symbol(lines):
    lines[17] = "XX_not_a_piece " + lines[17].split(" ", 1)[1]
    return lines


def drop_last(lines):
    n, d = lines[0].split()
    return [f"{int(n) - 1} {d}", *lines[1:-1]]


def halve_dim(lines):
    return [f"{lines[0].split()[0]} {DIM // 2}"] + [" ".join(line.split(" ")[:DIM // 2 + 1]) for line in lines[1:]]


@pytest.mark.parametrize("edit", [change_symbol, drop_last, halve_dim])
def test_mismatched_file_is_one_clear_line(tiny_data, vectors, tmp_path, edit):
    path, _ = vectors
    bad = edited(path, tmp_path / "bad.vec", edit)
    symbols = dict_symbols(tiny_data)
    expected = {
        change_symbol: f"symbol 17 is 'XX_not_a_piece' but the dictionary ({tiny_data}/dict.txt) has "
                       f"{symbols[16]!r}",
        drop_last: f"has {len(symbols) - 1:,} symbols but the dictionary ({tiny_data}/dict.txt) has "
                   f"{len(symbols):,}",
        halve_dim: f"has {DIM // 2}-dimensional vectors but the encoder embeddings have {DIM} dimensions",
    }[edit]
    result = run([tool("fairseq-train"), tiny_data, *TRANSFORMER_FLAGS, "--init-embeddings", bad,
                  "--max-update", "1", "--save-dir", tmp_path], check=False)
    assert result.returncode == 2, result.stderr[-2000:]
    # fairseq-train's stderr also has hydra's deprecation warnings: look at the error lines
    lines = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(lines) == 1 and lines[0].startswith(f"fairseq-train: error: --init-embeddings {bad}"), lines
    assert expected in lines[0], lines[0]
    assert "Traceback" not in result.stderr

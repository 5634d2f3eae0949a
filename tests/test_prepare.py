"""Tests of smallcap-prepare (the fairseq_smallcap/prepare package) on small synthetic corpora.

The two end-to-end tests run fairseq-preprocess for real (about 10 s each); the Multi30k
split test replaces the binarization step, the error tests stop before it.
"""
import gzip
import json
import logging
import os
import random
import subprocess
import sys
from array import array
from pathlib import Path

import pytest

from fairseq_smallcap import prepare as prep

REPO_ROOT = Path(__file__).resolve().parent.parent
REAL_MULTI30K = REPO_ROOT.parent / "shared" / "data" / "multi30k"

EN_WORDS = ("the a dog cat man woman child girl boy runs walks sits plays on in near with "
            "red blue green big small old young house street park water ball").split()
FR_WORDS = ("le la un une chien chat homme femme enfant fille garçon court marche joue est "
            "sur dans près avec rouge bleu vert grand petit vieux jeune maison rue parc eau").split()


def sentences(words, n, seed):
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))).capitalize() + " ."
            for _ in range(n)]


def write_lines(path: Path, lines, gz=False):
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def read_lines(path: Path):
    return path.read_text(encoding="utf-8").split("\n")[:-1]


def read_lines_gz(path: Path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return f.read().split("\n")[:-1]


@pytest.fixture
def corpus(tmp_path):
    """Small en/fr corpus: mono en in two files (plain + gz), mono fr (gz), valid, test."""
    d = tmp_path / "in"
    d.mkdir()
    en_a, en_b, fr = sentences(EN_WORDS, 150, 1), sentences(EN_WORDS, 150, 2), sentences(FR_WORDS, 300, 3)
    files = {
        "mono_en_a": write_lines(d / "mono_a.en", en_a),
        "mono_en_b": write_lines(d / "mono_b.en.gz", en_b, gz=True),
        "mono_fr": write_lines(d / "mono.fr.gz", fr, gz=True),
        "valid_en": write_lines(d / "valid.en", sentences(EN_WORDS, 40, 4)),
        "valid_fr": write_lines(d / "valid.fr", sentences(FR_WORDS, 40, 5)),
        "test_en": write_lines(d / "test.en", sentences(EN_WORDS, 30, 6)),
        "test_fr": write_lines(d / "test.fr", sentences(FR_WORDS, 30, 7)),
    }
    return files


def run_generic(corpus, dest, **kwargs):
    kwargs.setdefault("vocab_size", 120)
    kwargs.setdefault("soft_vocab_limit", True)
    return prep.prepare(
        dest, "en,fr",
        mono={"en": [corpus["mono_en_a"], corpus["mono_en_b"]], "fr": corpus["mono_fr"]},
        valid={"en": corpus["valid_en"], "fr": corpus["valid_fr"]},
        test={"en": corpus["test_en"], "fr": corpus["test_fr"]},
        **kwargs,
    )


def load_binarized(prefix: Path, dict_txt: Path):
    from fairseq.data import Dictionary, data_utils

    dictionary = Dictionary.load(str(dict_txt))
    dataset = data_utils.load_indexed_dataset(str(prefix), dictionary, "mmap")
    assert dataset is not None, prefix
    return dictionary, dataset


def check_binarized_matches_raw(dest: Path, prefix: str, raw_name: str, sp):
    """Every raw line is one sentence whose pieces are the spm encoding of that line."""
    raw = read_lines(dest / "raw" / raw_name)
    dictionary, dataset = load_binarized(dest / prefix, dest / "dict.txt")
    assert len(dataset) == len(raw)
    for i in (0, len(raw) // 2, len(raw) - 1):
        tokens = dataset[i]
        assert tokens[-1].item() == dictionary.eos()
        assert dictionary.string(tokens).split() == sp.encode(raw[i], out_type=str)
    return len(raw)


# ------------------------------------------------------------------ end to end


def test_generic_end_to_end(corpus, tmp_path, caplog):
    import sentencepiece as spm

    # one empty and one whitespace-only line in the first English file (lines 5 and 10)
    en_a = read_lines(corpus["mono_en_a"])
    en_a.insert(4, "")
    en_a.insert(9, " \t ")
    write_lines(corpus["mono_en_a"], en_a)
    dest = tmp_path / "out"
    caplog.set_level(logging.INFO, logger="fairseq_smallcap.prepare")

    summary = run_generic(corpus, dest, drop_empty=True)

    expected = [
        "dict.txt", "spm.model", "spm.vocab", "prepare.json", "rejects.tsv",
        "en/train.bin", "en/train.idx", "en/dict.txt", "fr/train.bin", "fr/train.idx", "fr/dict.txt",
        "valid.en-fr.en.bin", "valid.en-fr.en.idx", "valid.en-fr.fr.bin", "valid.en-fr.fr.idx",
        "test.en-fr.en.bin", "test.en-fr.en.idx", "test.en-fr.fr.bin", "test.en-fr.fr.idx",
        "raw/train.en", "raw/train.fr", "raw/valid.en", "raw/valid.fr", "raw/test.en", "raw/test.fr",
    ]
    for rel in expected:
        assert (dest / rel).is_file(), rel
    assert not (dest / "tmp").exists()

    # raw text: the mono files concatenated without the empty lines, valid/test verbatim
    kept_en = [line for line in en_a if line.strip()] + read_lines_gz(corpus["mono_en_b"])
    assert read_lines(dest / "raw" / "train.en") == kept_en
    assert read_lines(dest / "raw" / "valid.fr") == read_lines(corpus["valid_fr"])

    # rejects.tsv and the counts: kept + rejected = input
    rows = [line.split("\t") for line in read_lines(dest / "rejects.tsv")]
    assert rows == [[str(corpus["mono_en_a"]), "5", "empty"], [str(corpus["mono_en_a"]), "10", "empty"]]
    on_disk = json.loads((dest / "prepare.json").read_text())
    assert on_disk["empty_lines_dropped"] == summary["empty_lines_dropped"] == 2
    en = on_disk["lines"]["train"]["en"]
    assert (en["lines_read"], en["lines_kept"], en["empty_dropped"]) == (302, 300, 2)
    assert en["lines_kept"] + en["empty_dropped"] == en["lines_read"]
    assert any("dropped 2 empty" in r.getMessage() for r in caplog.records)

    # dict.txt: every spm piece but <unk>, in spm order, counts from the training text
    sp = spm.SentencePieceProcessor(model_file=str(dest / "spm.model"))
    entries = [line.rsplit(" ", 1) for line in read_lines(dest / "dict.txt")]
    assert [piece for piece, _ in entries] == [sp.id_to_piece(i) for i in range(1, sp.get_piece_size())]
    train_pieces = sum(len(sp.encode(line)) for name in ("train.en", "train.fr")
                       for line in read_lines(dest / "raw" / name))
    assert sum(int(count) for _, count in entries) == train_pieces
    assert on_disk["vocab"]["dict_txt_entries"] == sp.get_piece_size() - 1

    # binarized: one sentence per kept line, nothing lost, loads with fairseq
    assert check_binarized_matches_raw(dest, "en/train", "train.en", sp) == 300
    assert check_binarized_matches_raw(dest, "fr/train", "train.fr", sp) == 300
    for split, n in (("valid", 40), ("test", 30)):
        for lang in ("en", "fr"):
            assert check_binarized_matches_raw(dest, f"{split}.en-fr.{lang}", f"{split}.{lang}", sp) == n
    assert on_disk["binarized"]["en/train"]["sentences"] == 300
    # the check that nothing was silently lost does fire on a count mismatch
    one_short = prep.EncodedFile(sizes=array("i", [len(sp.encode(line)) + 1 for line in kept_en[:-1]]))
    with pytest.raises(prep.PrepareError, match="has 300 sentences but .* has 299 lines"):
        prep.verify_binarized(dest / "en" / "train", one_short, dest / "raw" / "train.en")

    # a second run with the same inputs and options does nothing
    stamp = (dest / "en" / "train.bin").stat().st_mtime_ns
    caplog.clear()
    again = run_generic(corpus, dest, drop_empty=True)
    assert again["created"] == summary["created"]
    assert any("already prepared" in r.getMessage() for r in caplog.records)
    assert (dest / "en" / "train.bin").stat().st_mtime_ns == stamp


@pytest.mark.skipif(not REAL_MULTI30K.is_dir(), reason="../shared/data/multi30k is not there")
def test_multi30k_real_data(tmp_path, monkeypatch):
    import sentencepiece as spm

    # default --raw-dir: not found from the current directory, found from the repository root
    monkeypatch.delenv("SMALLCAP_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    dest = tmp_path / "m30k"
    summary = prep.prepare_multi30k(dest, max_train_lines=500, vocab_size=1000)

    train_en = read_lines_gz(REAL_MULTI30K / "train.en.gz")
    train_fr = read_lines_gz(REAL_MULTI30K / "train.fr.gz")
    half = len(train_en) // 2
    assert half == 14500
    assert read_lines(dest / "raw" / "train.en") == train_en[:500]
    assert read_lines(dest / "raw" / "train.fr") == train_fr[half:half + 500]
    assert summary["multi30k"]["split"] == {"en": "lines 1-500 of train.en.gz",
                                            "fr": "lines 14501-15000 of train.fr.gz"}
    sp = spm.SentencePieceProcessor(model_file=str(dest / "spm.model"))
    assert sp.get_piece_size() == 1000
    assert check_binarized_matches_raw(dest, "en/train", "train.en", sp) == 500
    assert check_binarized_matches_raw(dest, "valid.en-fr.fr", "valid.fr", sp) == 1014
    assert check_binarized_matches_raw(dest, "test.en-fr.en", "test.en", sp) == 1000


# ------------------------------------------------------------------ Multi30k split


def english(numbers):
    return [f"english sentence number {i}" for i in numbers]


def french(numbers):
    return [f"phrase française numéro {i}" for i in numbers]


def fake_multi30k(root: Path, n_train=40, en_lines=None, fr_lines=None):
    """train.* (gz), val.* (plain: names without .gz are accepted too), test_2016_flickr.* (gz)."""
    root.mkdir()
    write_lines(root / "train.en.gz", en_lines or english(range(1, n_train + 1)), gz=True)
    write_lines(root / "train.fr.gz", fr_lines or french(range(1, n_train + 1)), gz=True)
    write_lines(root / "val.en", sentences(EN_WORDS, 10, 8))
    write_lines(root / "val.fr", sentences(FR_WORDS, 10, 9))
    write_lines(root / "test_2016_flickr.en.gz", sentences(EN_WORDS, 10, 10), gz=True)
    write_lines(root / "test_2016_flickr.fr.gz", sentences(FR_WORDS, 10, 11), gz=True)
    return root


@pytest.fixture
def no_binarize(monkeypatch):
    """Skip fairseq-preprocess (tested end to end above) to keep the split tests fast."""
    monkeypatch.setattr(prep.pipeline, "binarize_all", lambda *args, **kwargs: {})  # prepare() calls it


def test_multi30k_unsupervised_split(tmp_path, no_binarize):
    raw = fake_multi30k(tmp_path / "raw")
    dest = tmp_path / "out"
    summary = prep.prepare_multi30k(dest, raw, vocab_size=60, soft_vocab_limit=True)
    assert read_lines(dest / "raw" / "train.en") == english(range(1, 21))  # lines 1-20
    assert read_lines(dest / "raw" / "train.fr") == french(range(21, 41))  # lines 21-40
    assert read_lines(dest / "raw" / "valid.en") == read_lines(raw / "val.en")
    assert read_lines(dest / "raw" / "test.fr") == read_lines_gz(raw / "test_2016_flickr.fr.gz")
    assert summary["lines"]["train"] == {
        "en": {"lines_read": 20, "lines_kept": 20, "empty_dropped": 0},
        "fr": {"lines_read": 20, "lines_kept": 20, "empty_dropped": 0},
    }

    limited = prep.prepare_multi30k(tmp_path / "out5", raw, max_train_lines=5, vocab_size=60,
                                    soft_vocab_limit=True)
    assert read_lines(tmp_path / "out5" / "raw" / "train.en") == english(range(1, 6))
    assert read_lines(tmp_path / "out5" / "raw" / "train.fr") == french(range(21, 26))
    assert limited["multi30k"]["split"]["fr"] == "lines 21-25 of train.fr.gz"


def test_multi30k_errors(tmp_path, monkeypatch):
    raw = fake_multi30k(tmp_path / "raw", en_lines=["a"] * 40, fr_lines=["b"] * 38)
    with pytest.raises(prep.PrepareError, match=r"differ in length.*40 lines.*38"):
        prep.prepare_multi30k(tmp_path / "out", raw)
    monkeypatch.setenv("SMALLCAP_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(prep.PrepareError, match="--raw-dir"):
        prep.prepare_multi30k(tmp_path / "out")
    (raw / "val.fr").unlink()
    with pytest.raises(prep.PrepareError, match=r"val\.fr"):
        prep.multi30k_sources(raw)


# ------------------------------------------------------------------ input errors


def test_invalid_utf8_in_mono(corpus, tmp_path):
    data = corpus["mono_fr"]
    lines = read_lines_gz(data)
    payload = b"".join(line.encode() + b"\n" for line in lines[:6]) + b"caf\xe9 au lait\n"  # latin-1
    payload += b"".join(line.encode() + b"\n" for line in lines[6:])
    with gzip.open(data, "wb") as f:
        f.write(payload)
    with pytest.raises(prep.PrepareError) as err:
        run_generic(corpus, tmp_path / "out")
    message = str(err.value)
    assert str(data) in message and "line 7" in message and "UTF-8" in message


def test_empty_line_in_valid(corpus, tmp_path):
    lines = read_lines(corpus["valid_fr"])
    lines[2] = "   "
    write_lines(corpus["valid_fr"], lines)
    with pytest.raises(prep.PrepareError) as err:
        run_generic(corpus, tmp_path / "out", drop_empty=True)
    assert str(corpus["valid_fr"]) in str(err.value) and "line 3" in str(err.value)


def test_empty_line_in_mono_without_drop_empty(corpus, tmp_path):
    lines = read_lines(corpus["mono_en_a"])
    lines.insert(11, "")
    write_lines(corpus["mono_en_a"], lines)
    with pytest.raises(prep.PrepareError, match=r"line 12: empty line.*--drop-empty"):
        run_generic(corpus, tmp_path / "out")


def test_missing_input_file(corpus, tmp_path):
    corpus["mono_fr"] = tmp_path / "in" / "does-not-exist.fr"
    with pytest.raises(prep.PrepareError) as err:
        run_generic(corpus, tmp_path / "out")
    assert "does-not-exist.fr" in str(err.value) and "--mono fr" in str(err.value)


def test_mismatched_valid_line_counts(corpus, tmp_path):
    write_lines(corpus["valid_en"], read_lines(corpus["valid_en"])[:-3])
    with pytest.raises(prep.PrepareError) as err:
        run_generic(corpus, tmp_path / "out")
    message = str(err.value)
    assert str(corpus["valid_en"]) in message and str(corpus["valid_fr"]) in message
    assert "37 lines" in message and "40 lines" in message


def test_carriage_return_inside_line(corpus, tmp_path):
    corpus["test_en"].write_bytes(corpus["test_en"].read_bytes().replace(b"\n", b"\r\n"))  # CRLF is fine
    lines = read_lines(corpus["test_fr"])
    lines[4] = "une ligne\rcoupée"
    write_lines(corpus["test_fr"], lines)
    with pytest.raises(prep.PrepareError, match=r"line 5: carriage return"):
        run_generic(corpus, tmp_path / "out")


# ------------------------------------------------------------------ command line


def test_cli_error_exit_code_and_message(corpus, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    missing = tmp_path / "in" / "missing.en"
    proc = subprocess.run(
        [sys.executable, "-m", "fairseq_smallcap.prepare", "--dest", str(tmp_path / "out"),
         "--langs", "en,fr", "--mono", f"en={missing}", "--mono", f"fr={corpus['mono_fr']}",
         "--valid", f"en={corpus['valid_en']}", "--valid", f"fr={corpus['valid_fr']}"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert f"smallcap-prepare: error: input file not found: {missing} (from --mono en)" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_cli_usage_errors(capsys):
    with pytest.raises(SystemExit) as err:
        prep.cli_main(["--dest", "x", "--multi30k", "--mono", "en=a.txt"])
    assert err.value.code == 2
    assert "do not pass --mono" in capsys.readouterr().err
    with pytest.raises(SystemExit) as err:
        prep.cli_main(["--dest", "x", "--mono", "en-a.txt"])
    assert err.value.code == 2
    assert "expected LANG=PATH" in capsys.readouterr().err
    with pytest.raises(SystemExit) as err:
        prep.cli_main(["--help"])
    assert err.value.code == 0
    out = capsys.readouterr().out
    assert "--multi30k" in out and "--drop-empty" in out and "--spm-model" in out

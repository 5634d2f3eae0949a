"""smallcap-seqkd: sequence-level KD data (Kim & Rush 2016) translated by the session's teacher."""
import json
import shutil
from argparse import Namespace

import pytest
import torch
from fairseq.data import Dictionary, data_utils, indexed_dataset
from fairseq.tasks.translation import load_langpair_dataset

from conftest import TRAIN_FLAGS, USER_DIR, run, tool
from fairseq_smallcap.distillation import sequence_kd

# beam 2, at most 8 tokens a translation (max_len_a 0: the same limit whatever the batch)
GENERATION = ["--beam", "2", "--max-len-a", "0", "--max-len-b", "8", "--cpu"]
SMALL = 6  # sentences per language in small_data


def _write(dictionary, prefix, items):
    builder = indexed_dataset.make_builder(f"{prefix}.bin", impl="mmap", vocab_size=len(dictionary))
    for item in items:
        builder.add_item(item)
    builder.finalize(f"{prefix}.idx")


@pytest.fixture(scope="module")
def small_data(tiny_data, tmp_path_factory):
    """The first sentences of tiny_data: monolingual ``{lang}/train``, the same sentences as the
    parallel ``valid`` (for fairseq-generate), a ``test`` set whose third source sentence is too
    long for the teacher, and the translation task's layout (``train.en-fr``, ``dict.{lang}.txt``)."""
    dest = tmp_path_factory.mktemp("small")
    dictionary = Dictionary.load(str(tiny_data / "dict.txt"))
    for name in ("dict.txt", "dict.en.txt", "dict.fr.txt"):
        shutil.copyfile(tiny_data / "dict.txt", dest / name)
    mono = {lang: data_utils.load_indexed_dataset(str(tiny_data / lang / "train"), dictionary) for lang in ("en", "fr")}
    for lang, dataset in mono.items():
        (dest / lang).mkdir()
        first = [dataset[i] for i in range(SMALL)]
        _write(dictionary, dest / lang / "train", first)
        _write(dictionary, dest / f"valid.en-fr.{lang}", first)
        _write(dictionary, dest / f"train.en-fr.{lang}", first)
        too_long = torch.cat([dataset[0][:-1].repeat(600 // len(dataset[0]) + 1), dataset[0][-1:]])
        _write(dictionary, dest / f"test.en-fr.{lang}", [first[0], first[1], too_long])
    return dest


def _generate(data, checkpoint, src, tgt):
    """fairseq-generate's best translations of the valid set, in sentence order."""
    out = run([tool("fairseq-generate"), data, "--user-dir", USER_DIR, "--task", "unsupervised_translation",
               "-s", src, "-t", tgt, "--gen-subset", "valid", "--path", checkpoint, "--batch-size", "8",
               "--post-process", "sentencepiece", *GENERATION]).stdout
    hypotheses = dict(line.split("\t")[0:3:2] for line in out.splitlines() if line.startswith("H-"))
    return [hypotheses[f"H-{i}"] for i in range(len(hypotheses))]


def _lines(path):
    return path.read_text(encoding="utf-8").splitlines()


def _text_by_id(dest, direction, lang, n):
    """``{sentence id: line}`` of a text file, the rejected sentences (rejects.tsv) left out."""
    rejected = {int(row.split("\t")[1]) for row in _lines(dest / "rejects.tsv")[1:]
                if row.startswith(direction + "\t")}
    kept = [i for i in range(n) if i not in rejected]
    lines = _lines(dest / "text" / f"train.{direction}.{lang}")
    assert len(lines) == len(kept)
    return dict(zip(kept, lines))


def test_monolingual_pairs_train_a_student(tiny_data, trained_checkpoint, tmp_path):
    checkpoint, _ = trained_checkpoint
    dest = tmp_path / "seqkd"
    result = run([tool("smallcap-seqkd"), tiny_data, "--path", checkpoint, "--dest", dest,
                  "--max-sentences", "16", *GENERATION])
    summary = json.loads((dest / "summary.json").read_text())
    dictionary = Dictionary.load(str(dest / "dict.txt"))
    rejects = [row.split("\t") for row in _lines(dest / "rejects.tsv")[1:]]
    for direction in ("en-fr", "fr-en"):
        src, tgt = direction.split("-")
        counts = summary["directions"][direction]
        assert counts["kind"] == "monolingual" and counts["input"] == 16
        assert counts["kept"] + counts["rejected"] == 16 and counts["kept"] > 0
        assert counts["rejected"] == sum(counts["reasons"].values()) == sum(r[0] == direction for r in rejects)
        assert f"{direction}: {counts['kept']} kept + {counts['rejected']} rejected = 16 sentences" in result.stdout
        # real sentences -> teacher translations, the same pairs binarized and as text
        for lang in (src, tgt):
            binarized = data_utils.load_indexed_dataset(str(dest / f"train.{direction}.{lang}"), dictionary)
            text = _lines(dest / "text" / f"train.{direction}.{lang}")
            assert len(binarized) == len(text) == counts["kept"]
            assert [dictionary.string(binarized[i], "sentencepiece") for i in range(len(text))] == text
        mono = data_utils.load_indexed_dataset(str(tiny_data / src / "train"), dictionary)
        real = data_utils.load_indexed_dataset(str(dest / f"train.{direction}.{src}"), dictionary)
        kept_ids = [i for i in range(16) if str(i) not in {r[1] for r in rejects if r[0] == direction}]
        assert all(real[j].tolist() == mono[i].tolist() for j, i in enumerate(kept_ids))
    assert not list(dest.rglob("*.partial"))

    log = run([tool("fairseq-train"), tiny_data, *TRAIN_FLAGS, "--lambda-dae", "0", "--lambda-bt", "0",
               "--lambda-bp", "1", "--back-parallel-data", dest, "--max-update", "2", "--disable-validation",
               "--save-dir", tmp_path / "student"]).stdout
    kept = summary["directions"]["en-fr"]["kept"]
    assert f"back-parallel en->fr: {kept} curated pairs from {dest}" in log
    assert "bp_loss=" in [line for line in log.splitlines() if "| train_inner |" in line][-1]


def test_translations_equal_fairseq_generate(small_data, trained_checkpoint, tmp_path):
    checkpoint, _ = trained_checkpoint
    mono = tmp_path / "mono"
    run([tool("smallcap-seqkd"), small_data, "--path", checkpoint, "--dest", mono, *GENERATION])
    teacher = _text_by_id(mono, "en-fr", "fr", SMALL)
    generated = _generate(small_data, checkpoint, "en", "fr")
    assert len(generated) == SMALL
    # the same best hypotheses; those not written are the empty ones
    assert {i: line for i, line in enumerate(generated) if line} == teacher

    # parallel data (no monolingual "test" split): the source side; a source too long is rejected
    parallel = tmp_path / "parallel"
    result = run([tool("smallcap-seqkd"), small_data, "--path", checkpoint, "--dest", parallel,
                  "--subset", "test", "-s", "en", "-t", "fr", "--batch-size", "2", *GENERATION])
    counts = json.loads((parallel / "summary.json").read_text())["directions"]
    assert list(counts) == ["en-fr"] and counts["en-fr"]["kind"] == "parallel"
    assert counts["en-fr"]["reasons"]["source longer than the teacher's max positions"] == 1
    for lang in ("en", "fr"):
        first_two = {i: line for i, line in _text_by_id(mono, "en-fr", lang, SMALL).items() if i < 2}
        assert _text_by_id(parallel, "en-fr", lang, 3) == first_two
    kept = len(first_two)
    assert f"en-fr: {kept} kept + {3 - kept} rejected = 3 sentences" in result.stdout
    reasons = {row.split("\t")[1]: row.split("\t")[2] for row in _lines(parallel / "rejects.tsv")[1:]}
    assert reasons["2"] == "source longer than the teacher's max positions"


def test_translation_task_teacher(small_data, tmp_path):
    """A ``--task translation`` teacher: its own language pair and dictionaries."""
    run([tool("fairseq-train"), small_data, "--task", "translation", "-s", "en", "-t", "fr", "--arch", "transformer",
         "--encoder-layers", "1", "--decoder-layers", "1", "--encoder-embed-dim", "16", "--decoder-embed-dim", "16",
         "--encoder-ffn-embed-dim", "32", "--decoder-ffn-embed-dim", "32", "--encoder-attention-heads", "2",
         "--decoder-attention-heads", "2", "--optimizer", "adam", "--lr", "0.001", "--max-tokens", "600", "--cpu",
         "--max-update", "1", "--required-batch-size-multiple", "1", "--disable-validation", "--no-epoch-checkpoints",
         "--num-workers", "0", "--save-dir", tmp_path / "teacher"])
    dest = tmp_path / "seqkd"
    run([tool("smallcap-seqkd"), small_data, "--path", tmp_path / "teacher" / "checkpoint_last.pt",
         "--dest", dest, *GENERATION])
    counts = json.loads((dest / "summary.json").read_text())["directions"]
    assert list(counts) == ["en-fr"] and counts["en-fr"]["input"] == SMALL
    assert sorted(p.name for p in dest.glob("dict*")) == ["dict.en.txt", "dict.fr.txt"]
    dictionary = Dictionary.load(str(dest / "dict.en.txt"))
    pairs = load_langpair_dataset(str(dest), "train", "en", dictionary, "fr", dictionary, combine=False,
                                  dataset_impl=None, upsample_primary=1, left_pad_source=True,
                                  left_pad_target=False, max_source_positions=512, max_target_positions=512)
    assert len(pairs) == counts["en-fr"]["kept"] == len(_lines(dest / "text" / "train.en-fr.fr"))


def test_empty_translations_are_rejected(tmp_path):
    dictionary = Dictionary()
    for word in ("\u2581a", "\u2581b"):
        dictionary.add_symbol(word)
    eos, a, b = dictionary.eos(), dictionary.index("\u2581a"), dictionary.index("\u2581b")
    source = [torch.tensor([a, b, eos]), torch.tensor([b, eos])]
    translations = {0: torch.tensor([eos]), 1: torch.tensor([a, a, eos])}
    args = Namespace(post_process="sentencepiece", dest=str(tmp_path))
    task = Namespace(source_dictionary=dictionary, target_dictionary=dictionary)
    outputs = sequence_kd.Outputs(str(tmp_path))
    with open(tmp_path / "rejects.tsv", "w") as rejects:
        counts = sequence_kd.write_direction(args, task, outputs, rejects, source, translations, "en", "fr")
    outputs.commit()
    assert counts == {"input": 2, "kept": 1, "rejected": 1,
                      "reasons": {"empty translation": 1, "source longer than the teacher's max positions": 0}}
    assert (tmp_path / "rejects.tsv").read_text() == "en-fr\t0\tempty translation\ta b\t\n"
    assert _lines(tmp_path / "text" / "train.en-fr.en") == ["b"]
    assert _lines(tmp_path / "text" / "train.en-fr.fr") == ["a a"]


@pytest.mark.parametrize("flags, message", [
    (["--beam", "0"], "--beam 0: must be at least 1"),
    (["--max-sentences", "0"], "--max-sentences 0: must be at least 1"),
    (["--max-len-a", "-1"], "--max-len-a -1.0: must not be negative"),
    (["--fp16", "--cpu"], "--fp16 needs a CUDA GPU"),
    (["--path", "missing.pt"], "--path missing.pt: no such checkpoint"),
    (["-s", "de"], "unknown language 'de' for --source-lang/-s"),
    (["--subset", "nope"], "no nope data to translate for en->fr"),
])
def test_bad_input_is_one_clear_error(small_data, trained_checkpoint, tmp_path, capsys, flags, message):
    checkpoint, _ = trained_checkpoint
    argv = [str(small_data), "--path", str(checkpoint), "--dest", str(tmp_path / "out"), *flags]
    assert sequence_kd.cli_main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("smallcap-seqkd: error: ") and message in err[-1], err
    assert not (tmp_path / "out" / "summary.json").exists()


def test_missing_data_directory(trained_checkpoint, tmp_path, capsys):
    checkpoint, _ = trained_checkpoint
    assert sequence_kd.cli_main([str(tmp_path / "none"), "--path", str(checkpoint), "--dest", str(tmp_path)]) == 2
    assert "none: no such data directory" in capsys.readouterr().err

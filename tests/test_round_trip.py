"""Unsupervised model selection by round-trip BLEU (Lample et al. 2018, "Unsupervised Machine
Translation Using Monolingual Corpora Only", Sec. 4.4): held-out monolingual sentences from
``smallcap-prepare --heldout-mono`` and ``--eval-round-trip`` validation, through the CLI."""
import re
import shutil

import pytest
import torch

from conftest import MULTI30K, TRAIN_FLAGS, run, tool

HELDOUT = 20
RT_FLAGS = ["--eval-round-trip", "--best-checkpoint-metric", "round_trip_bleu",
            "--maximize-best-checkpoint-metric"]


def read_lines(path):
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def valid_values(stdout, name):
    """``name`` of every validation line, in order."""
    return [float(m.group(1)) for line in stdout.splitlines() if "| valid on 'valid' subset" in line
            for m in [re.search(rf"\| {name} ([-0-9.]+)", line)] if m]


@pytest.fixture(scope="module")
def rt_data(tmp_path_factory):
    """Multi30k, 300 lines of each language's half, the last 20 of each held out."""
    dest = tmp_path_factory.mktemp("rt") / "m30k"
    run([tool("smallcap-prepare"), "--multi30k", "--raw-dir", MULTI30K, "--dest", dest,
         "--max-train-lines", "300", "--heldout-mono", str(HELDOUT), "--vocab-size", "400",
         "--soft-vocab-limit"])
    return dest


@pytest.fixture(scope="module")
def unsup_data(rt_data, tmp_path_factory):
    """A copy of rt_data without the parallel valid/test files: truly unsupervised."""
    dest = tmp_path_factory.mktemp("unsup") / "m30k"
    shutil.copytree(rt_data, dest)
    for path in dest.glob("*.*-*.*.*"):  # valid.en-fr.en.bin, test.en-fr.fr.idx, ...
        path.unlink()
    assert not list(dest.glob("valid.*")) and (dest / "en" / "valid.idx").is_file()
    return dest


# ------------------------------------------------------------------ (a) smallcap-prepare


def test_prepare_holds_out_monolingual_lines(rt_data):
    import json

    from fairseq.data import Dictionary, data_utils

    from fairseq_smallcap.prepare import read_mmap_sizes

    summary = json.loads((rt_data / "prepare.json").read_text())
    gz = {"en": MULTI30K / "train.en.gz", "fr": MULTI30K / "train.fr.gz"}
    import gzip
    half = 14500
    for lang in ("en", "fr"):
        assert len(read_mmap_sizes(rt_data / lang / "valid")) == HELDOUT
        train = read_lines(rt_data / "raw" / f"train.{lang}")
        heldout = read_lines(rt_data / "raw" / f"valid_mono.{lang}")
        assert len(heldout) == HELDOUT and len(train) == 300 - HELDOUT
        assert not set(heldout) & set(train), "held-out lines are in the training text"
        # kept + held out = the input lines, in order: the end of each language's half
        with gzip.open(gz[lang], "rt", encoding="utf-8") as f:
            source = [line.rstrip("\n") for line in f]
        first = 0 if lang == "en" else half
        assert train + heldout == source[first:first + 300]
        lines = summary["lines"]
        assert lines["train"][lang]["lines_read"] == 300
        assert lines["train"][lang]["lines_kept"] + lines["train"][lang]["heldout_mono"] == 300
        assert lines["valid_mono"][lang]["lines_kept"] == HELDOUT
        assert len(read_mmap_sizes(rt_data / lang / "train")) == 300 - HELDOUT
        # same dictionary, one binarized sentence per held-out line
        dictionary = Dictionary.load(str(rt_data / "dict.txt"))
        ds = data_utils.load_indexed_dataset(str(rt_data / lang / "valid"), dictionary, "mmap")
        assert len(ds) == HELDOUT and ds[0][-1].item() == dictionary.eos()
    assert summary["heldout_mono"]["lines"] == {"en": HELDOUT, "fr": HELDOUT}
    assert summary["fingerprint"]["options"]["heldout_mono"] == HELDOUT
    # the sentencepiece model never saw the held-out text: it was trained on raw/train.* after
    # the split (the training text of spm is exactly the kept lines)
    assert summary["binarized"]["en/valid"]["sentences"] == HELDOUT


def test_heldout_flag_in_fingerprint(rt_data, tmp_path):
    """Same inputs, other --heldout-mono: redone, not taken from the cache."""
    from fairseq_smallcap import prepare as prep

    fp20 = prep.json.loads((rt_data / "prepare.json").read_text())["fingerprint"]
    mono, valid, test, _ = prep.multi30k_sources(MULTI30K, 300)
    parallel = {"valid": valid, "test": test}
    opts = prep.SpmOptions(vocab_size=400, soft_vocab_limit=True)
    assert prep._fingerprint(["en", "fr"], mono, parallel, opts, False, 20) == fp20
    assert prep._fingerprint(["en", "fr"], mono, parallel, opts, False, 10) != fp20


# ------------------------------------------------------------------ (b), (c) training


def train(data, save_dir, *extra):
    return run([tool("fairseq-train"), data, *TRAIN_FLAGS, *RT_FLAGS, "--validate-interval-updates", "1",
                "--save-interval-updates", "1", "--max-update", "3", "--save-dir", save_dir, *extra])


def check_best(save_dir, stdout):
    values = valid_values(stdout, "round_trip_bleu")
    assert len(values) >= 3, stdout[-3000:]
    assert len(valid_values(stdout, "round_trip_en_bleu")) == len(values)
    assert len(valid_values(stdout, "round_trip_fr_bleu")) == len(values)
    best = torch.load(save_dir / "checkpoint_best.pt", map_location="cpu", weights_only=False)
    assert best["extra_state"]["best"] == pytest.approx(max(values))
    assert best["extra_state"]["val_loss"] == pytest.approx(max(values))
    return values


def test_round_trip_selection_with_parallel_valid(rt_data, tmp_path):
    result = train(rt_data, tmp_path / "ckpt")
    check_best(tmp_path / "ckpt", result.stdout)
    # the parallel directions are still validated, with their loss
    assert valid_values(result.stdout, "en_fr_loss") and valid_values(result.stdout, "fr_en_loss")
    assert all(v > 0 for v in valid_values(result.stdout, "loss"))


def test_truly_unsupervised_validation(unsup_data, tmp_path):
    result = train(unsup_data, tmp_path / "ckpt")
    check_best(tmp_path / "ckpt", result.stdout)
    assert valid_values(result.stdout, "loss") and all(v == 0 for v in valid_values(result.stdout, "loss"))
    assert not valid_values(result.stdout, "en_fr_loss")
    # without --eval-round-trip, missing parallel valid data is still an error
    failed = run([tool("fairseq-train"), unsup_data, *TRAIN_FLAGS, "--max-update", "1",
                  "--save-dir", tmp_path / "ckpt2"], check=False)
    assert failed.returncode != 0 and "no parallel valid data" in failed.stdout + failed.stderr


# ------------------------------------------------------------------ (d) the BLEU computation


def test_round_trip_bleu_scores_x_hat_against_x(rt_data, monkeypatch):
    """With a stand-in decoder that reverses a sentence, the round trip x -> reverse(x) -> x is
    perfect: BLEU 100 against x; against the intermediate y = reverse(x) it would be low."""
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.logging import metrics

    import fairseq_smallcap.tasks.unsupervised_translation as ut

    parser = options.get_training_parser()
    args = options.parse_args_and_arch(parser, [str(rt_data), *TRAIN_FLAGS, *RT_FLAGS])
    cfg = convert_namespace_to_omegaconf(args)
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    dataset = task.load_dataset("valid")
    calls = []

    def reversing_decode(model, src_tokens, src_lengths, bos, eos, pad, **kwargs):
        calls.append(bos[0].item())
        out = []
        for row in src_tokens:
            tokens = row[row.ne(pad)]
            assert tokens[0].item() in task.lang_idx.values() and tokens[-1].item() == eos
            out.append(torch.cat([tokens[1:-1].flip(0), tokens.new([eos])]))
        return out

    monkeypatch.setattr(ut, "greedy_decode", reversing_decode)
    itr = task.get_batch_iterator(dataset, max_tokens=600, seed=1).next_epoch_itr(shuffle=False)
    with metrics.aggregate(new_root=True) as agg:
        seen = 0
        for i, sample in enumerate(itr):
            _, _, log = task.valid_step(sample, model, criterion)
            seen += sum(v for k, v in log.items() if k.endswith("nsentences") and k.startswith("round_trip"))
            task.reduce_metrics([log], criterion)
        values = agg.get_smoothed_values()
    assert seen == 2 * HELDOUT  # every held-out sentence once over the whole epoch, none twice
    # x_hat = x: BLEU 100 but for the <unk> pieces, which never match (as in --eval-bleu)
    import sacrebleu
    from fairseq.data import data_utils

    expected = {}
    for lang in ("en", "fr"):
        mono = data_utils.load_indexed_dataset(str(rt_data / lang / "valid"), task.dictionary, "mmap")
        xs = [mono[i] for i in range(len(mono))]
        expected[lang] = sacrebleu.corpus_bleu(
            [task.dictionary.string(x, "sentencepiece", unk_string="UNKNOWNTOKENINHYP") for x in xs],
            [[task.dictionary.string(x, "sentencepiece", unk_string="UNKNOWNTOKENINREF") for x in xs]]).score
        assert expected[lang] > 90
        assert values[f"round_trip_{lang}_bleu"] == pytest.approx(round(expected[lang], 2), abs=0.011)
    assert values["round_trip_bleu"] == pytest.approx((expected["en"] + expected["fr"]) / 2, abs=0.011)
    # it went through the other language and back
    assert task.lang_idx["fr"] in calls and task.lang_idx["en"] in calls


def test_logged_round_trip_bleu_matches_independent_decoding(unsup_data, tmp_path):
    """Decode the round trips of the held-out sentences with greedy_decode from the checkpoint
    and score the detokenized x_hat against the raw held-out text with sacrebleu.corpus_bleu."""
    import sacrebleu
    from fairseq import checkpoint_utils
    from fairseq.data import data_utils

    from fairseq_smallcap.backtranslation import greedy_decode

    save_dir = tmp_path / "ckpt"
    result = run([tool("fairseq-train"), unsup_data, *TRAIN_FLAGS, *RT_FLAGS, "--lambda-bt", "0",
                  "--lr", "0.01", "--max-update", "20", "--max-valid-steps", "100",
                  "--save-dir", save_dir])
    logged = {lang: valid_values(result.stdout, f"round_trip_{lang}_bleu")[-1] for lang in ("en", "fr")}
    models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(save_dir / "checkpoint_last.pt")], arg_overrides={"data": str(unsup_data)})
    model = models[0].eval()
    d = task.dictionary
    scores = {}
    for lang, other in (("en", "fr"), ("fr", "en")):
        mono = data_utils.load_indexed_dataset(str(unsup_data / lang / "valid"), d, "mmap")
        src = [torch.cat([torch.LongTensor([task.lang_idx[lang]]), mono[i]]) for i in range(len(mono))]
        src_tokens = data_utils.collate_tokens(src, d.pad(), d.eos(), left_pad=True)
        src_lengths = torch.LongTensor([len(s) for s in src])
        banned = [task.mask_idx, d.bos(), *task.lang_idx.values()]
        y = greedy_decode(model, src_tokens, src_lengths, bos=torch.full_like(src_lengths, task.lang_idx[other]),
                          eos=d.eos(), pad=d.pad(), max_len_a=1.3, max_len_b=5, banned_tokens=banned)
        back = [torch.cat([torch.LongTensor([task.lang_idx[other]]), t]) for t in y]
        back_tokens = data_utils.collate_tokens(back, d.pad(), d.eos(), left_pad=True)
        back_lengths = torch.LongTensor([len(t) for t in back])
        x_hat = greedy_decode(model, back_tokens, back_lengths, bos=torch.full_like(back_lengths, task.lang_idx[lang]),
                              eos=d.eos(), pad=d.pad(), max_len_a=1.3, max_len_b=5, banned_tokens=banned)
        hyps = [d.string(t, "sentencepiece", unk_string="UNKNOWNTOKENINHYP") for t in x_hat]
        refs = read_lines(unsup_data / "raw" / f"valid_mono.{lang}")
        scores[lang] = sacrebleu.corpus_bleu(hyps, [refs]).score
    for lang in ("en", "fr"):
        assert logged[lang] == pytest.approx(round(scores[lang], 2), abs=0.011), (logged, scores)
    mean = valid_values(result.stdout, "round_trip_bleu")[-1]
    assert mean == pytest.approx((scores["en"] + scores["fr"]) / 2, abs=0.011)

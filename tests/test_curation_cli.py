"""Curation through the fairseq CLI with --user-dir: online pair filtering, curriculum and a
back-parallel round, all in one tiny training run."""
import json
import re

import numpy as np
from fairseq.data import Dictionary, data_utils

from conftest import TRAIN_FLAGS, run, tool
from fairseq_smallcap.data.curriculum import DIFFICULTIES, dataset_tokens

SCORES = "dual_xent,length_ratio,copy_rate,repeated_ngrams"


def test_back_parallel_round_counts_every_pair(tiny_data, trained_checkpoint, tmp_path):
    checkpoint, _ = trained_checkpoint
    dest = tmp_path / "bp1"
    result = run([tool("smallcap-back-parallel"), tiny_data, "--path", checkpoint, "--dest", dest,
                  "--max-sentences", "40", "--keep", "0.25", "--max-tokens", "800", "--cpu"])
    summary = json.loads((dest / "summary.json").read_text())
    for direction in ("en-fr", "fr-en"):
        counts = summary["directions"][direction]
        assert counts["pairs"] == 40 and counts["kept"] == 10
        assert counts["kept"] + counts["below keep fraction"] + counts["above --max-score"] == counts["pairs"]
        rows = (dest / f"pairs.{direction}.tsv").read_text(encoding="utf-8").splitlines()[1:]
        assert len(rows) == 40 and sum(r.split("\t")[1] == "kept" for r in rows) == 10
        kept_scores = [float(r.split("\t")[2]) for r in rows if r.split("\t")[1] == "kept"]
        other_scores = [float(r.split("\t")[2]) for r in rows if r.split("\t")[1] != "kept"]
        assert max(kept_scores) <= min(other_scores)
        src, tgt = direction.split("-")
        assert (dest / f"train.{direction}.{src}.idx").exists() and (dest / f"train.{direction}.{tgt}.bin").exists()
    assert "en-fr: 10 kept + 30 rejected = 40 pairs" in result.stdout


def test_training_with_every_curation_option(tiny_data, trained_checkpoint, tmp_path):
    checkpoint, _ = trained_checkpoint
    dest = tmp_path / "bp1"
    run([tool("smallcap-back-parallel"), tiny_data, "--path", checkpoint, "--dest", dest,
         "--max-sentences", "40", "--keep", "0.5", "--cpu"])
    result = run([tool("fairseq-train"), tiny_data, *TRAIN_FLAGS, "--lambda-dae", "1", "--lambda-bt", "1",
                  "--lambda-bp", "1", "--back-parallel-data", dest, "--bt-filter-scores", SCORES,
                  "--bt-filter-weights", "1,1,2,2", "--bt-filter-keep", "0:1,2:0.5",
                  "--curriculum-by", "rarity", "--curriculum-updates", "4", "--max-update", "6",
                  "--save-dir", tmp_path / "ckpt"])
    log = result.stdout
    assert "curriculum by rarity: competence 0.100 at update 0" in log
    assert "back-parallel en->fr: 20 curated pairs" in log
    last = [line for line in log.splitlines() if "| train_inner |" in line][-1]
    for key in ("bp_loss=", "bt_loss=", "dae_loss=", "bt_kept_en_fr=0.5", "bt_kept_fr_en=0.5",
                "bt_dual_xent_fr_en=", "bt_copy_rate_en_fr=", "bt_repeated_ngrams_fr_en=", "bt_length_ratio_en_fr="):
        assert key in last, key
    # the curation is training-time only: the checkpoint translates like any other
    gen = run([tool("fairseq-generate"), tiny_data, "--user-dir", TRAIN_FLAGS[1], "--task",
               "unsupervised_translation", "-s", "en", "-t", "fr", "--gen-subset", "valid", "--path",
               tmp_path / "ckpt" / "checkpoint_last.pt", "--beam", "1", "--max-len-a", "0", "--max-len-b", "5",
               "--batch-size", "256", "--cpu"])
    assert "Generate valid with beam=1" in gen.stdout + gen.stderr


def test_rarity_from_the_mmap_buffer_matches_item_by_item(tiny_data):
    dictionary = Dictionary.load(str(tiny_data / "dict.txt"))
    mono = data_utils.load_indexed_dataset(str(tiny_data / "en" / "train"), dictionary, "mmap")
    tokens, starts = dataset_tokens(mono)
    assert len(starts) == len(mono) and tokens[starts[5]: starts[5] + mono.sizes[5]].tolist() == mono[5].tolist()
    fast = DIFFICULTIES.entries["rarity"](mono, dictionary)

    class Items(list):
        sizes = mono.sizes

    slow = DIFFICULTIES.entries["rarity"](Items(mono[i] for i in range(len(mono))), dictionary)
    np.testing.assert_allclose(fast, slow)
    assert (fast > 0).all()


def curriculum_lines(log):
    return re.findall(r"curriculum by length: competence ([\d.]+) at update (\d+); sentences in use: (.*)", log)


def test_curriculum_advances_within_what_would_be_one_epoch(tiny_data, tmp_path):
    """At competence 0.7 the 300-sentence slice makes many batches of each objective, so a
    whole epoch would pass before the competence is recomputed; capped at one batch of each
    objective per epoch, it is recomputed every update or two and grows each time."""
    flags = [tool("fairseq-train"), tiny_data, *TRAIN_FLAGS, "--lambda-dae", "1", "--lambda-bt", "0",
             "--curriculum-by", "length", "--curriculum-updates", "12", "--curriculum-init-competence", "0.7",
             "--max-update", "6", "--disable-validation"]
    capped = curriculum_lines(run([*flags, "--curriculum-refresh-batches", "1", "--save-dir", tmp_path / "a"]).stdout)
    whole = curriculum_lines(run([*flags, "--curriculum-refresh-batches", "0", "--save-dir", tmp_path / "b"]).stdout)
    assert len(whole) == 1 and whole[0][:2] == ("0.700", "0")
    in_use = dict(item.split(" ") for item in whole[0][2].split(", "))
    assert int(in_use["en-DAE"]) > 150  # about 70% of 300 (ties in length): many batches of 600 tokens
    updates = [int(update) for _, update, _ in capped]
    assert len(updates) >= 3 and updates[0] == 0 and max(b - a for a, b in zip(updates, updates[1:])) <= 2
    values = [float(value) for value, _, _ in capped]
    assert all(a < b for a, b in zip(values, values[1:]))
    for _, _, use in capped:  # about one batch of each objective
        assert all(int(n) < 60 for n in dict(item.split(" ") for item in use.split(", ")).values())

"""benchmarks/compression.py end to end on the tiny trained checkpoint: a few cheap variants, the
record's fields, CTranslate2 float32 greedy equal to fairseq-generate (fidelity 100), sizes, and
the Pareto set recomputed from the figures."""
import json
import shlex
import sys

import pytest

from conftest import REPO_ROOT, TRAIN_FLAGS, run, tool

pytest.importorskip("ctranslate2")

SCRIPT = REPO_ROOT / "benchmarks" / "compression.py"
VARIANTS = ["fairseq-fp32", "ct2-float32", "ct2-int8", "ct2-int8_float16", "torch-int8-dynamic"]
FIELDS = ["variant", "kind", "engine", "quantization", "fine_tuned", "params", "params_nonzero", "size_mb", "weights_mb",
          "peak_rss_mib", "test", "speed", "bleu_mean", "chrf_mean", "fidelity", "ratios"]
SPEED_FIELDS = ["threads", "batch", "beam", "sentences", "tokens", "words", "seconds", "process_s", "tokens_per_s",
                "rss_mib", "fidelity"]
TEST_FIELDS = ["bleu", "chrf", "bleu_signature", "chrf_signature", "fidelity", "peak_rss_mib"]
# the four int8 targets of each CTranslate2 int8 variant, as targets() names them when it was
# measured and when it was not
INT8_GOALS = [">= 5x fairseq-generate fp32 tokens/s at batch 32", "fidelity >= 90", "loses <= 0.3 BLEU",
              ">= 3.5x smaller on disk"]
INT8_NOT_MEASURED = ["ct2-int8 speed", "ct2-int8 fidelity", "ct2-int8 BLEU loss", "ct2-int8 size"]


def dominated(p, others):
    """p = (size, speed, bleu): another point at most as large, at least as fast and as good, not equal."""
    return any(q[0] <= p[0] and q[1] >= p[1] and q[2] >= p[2] and q != p for q in others)


def test_compression_benchmark_record(tiny_data, trained_checkpoint, tmp_path):
    checkpoint, _ = trained_checkpoint
    ledger, figure = tmp_path / "compression.jsonl", tmp_path / "pareto.png"
    result = run([sys.executable, SCRIPT, "--work", tmp_path / "work", "--checkpoint", checkpoint,
                  "--data", tiny_data, "--variants", ",".join(VARIANTS), "--speed-sentences", "20",
                  "--test-lines", "20", "--threads", "1", "--batch-sizes", "1,32", "--beams", "1",
                  "--quality-beam", "1", "--max-len-b", "30", "--min-speed-seconds", "0",
                  "--results-log", ledger, "--plot", figure],
                 cwd=REPO_ROOT)
    records = [json.loads(line) for line in ledger.read_text(encoding="utf-8").splitlines()]
    assert len(records) == 1
    record = records[0]
    for key in ("command", "commit", "git_commit", "worktree_modified", "machine", "load_avg_before",
                "omp_num_threads", "date", "setup"):
        assert key in record, key
    assert record["setup"]["arch"] == "smallcap_very_small"  # TRAIN_FLAGS' (the README's table is per model)
    rows = record["figures"]["variants"]
    assert list(rows) == VARIANTS
    for name, row in rows.items():
        for field in FIELDS:
            assert field in row and row[field] is not None, (name, field)
        assert set(row["test"]) == {"en-fr", "fr-en"}
        for scores in row["test"].values():
            assert all(scores.get(f) is not None for f in TEST_FIELDS), (name, scores)
        assert set(row["speed"]) == {"t1.b1.beam1", "t1.b32.beam1"}
        for entry in row["speed"].values():
            assert all(entry.get(f) is not None for f in SPEED_FIELDS), (name, entry)
            assert entry["sentences"] == 20 and entry["tokens_per_s"] > 0 and entry["rss_mib"] > 0
        assert row["size_mb"] > 0 and row["params_nonzero"] <= row["params"]
        assert set(row["ratios"]) == {"speed_b32_greedy", "speed_b32_beam4", "speed_t1_b32_greedy",
                                      "speed_t1_b32_beam4", "size", "weights", "bleu_loss"}
        assert all(e["runs"] == 1 for e in row["speed"].values())

    anchor = rows["fairseq-fp32"]
    assert anchor["fidelity"] == 100 and anchor["ratios"]["speed_b32_greedy"] == 1
    # greedy CTranslate2 at float32 gives fairseq-generate's hypotheses: fidelity 100 both ways,
    # in the quality runs and in every speed run, and the same scores
    float32 = rows["ct2-float32"]
    assert float32["fidelity"] == 100, float32["test"]
    assert all(float32["test"][d]["fidelity"] == 100 for d in ("en-fr", "fr-en"))
    assert all(e["fidelity"] == 100 for e in float32["speed"].values())
    assert float32["bleu_mean"] == anchor["bleu_mean"]
    work = tmp_path / "work"
    for d, tgt in (("en-fr", "fr"), ("fr-en", "en")):
        ours = (work / "ct2-float32" / "measure" / f"quality.{d}.beam1.b32.{tgt}").read_text(encoding="utf-8")
        theirs = (work / "fairseq-fp32" / "measure" / f"quality.{d}.beam1.b32.{tgt}").read_text(encoding="utf-8")
        assert ours == theirs and len(ours.splitlines()) == 20
    # the CTranslate2 int8 model directory is smaller than the float32 one
    assert rows["ct2-int8"]["size_mb"] < float32["size_mb"]
    assert rows["ct2-int8"]["model_bin_mb"] < float32["model_bin_mb"]
    # int8_float16 stores in 16 bits every float parameter that int8 keeps in 32 (hand-counted
    # from the checkpoint: the two learned position tables without fairseq's padding offset, the
    # rows up to pad index 1, and every bias and layer norm): exactly 2 bytes each fewer in
    # model.bin; CTranslate2 computes it as int8 on this CPU (and says so in each decoding log),
    # so it decodes nearly as ct2-int8 does
    import torch

    weights = torch.load(work / "fairseq-fp32" / "model.pt", map_location="cpu", weights_only=False)["model"]
    floats = sum(weights[f"{side}.embed_positions.weight"][2:].numel() for side in ("encoder", "decoder")) + sum(
        v.numel() for k, v in weights.items() if v.dim() == 1 and v.is_floating_point() and not k.endswith(".version"))
    size = {v: (work / v / "model" / "model.bin").stat().st_size for v in ("ct2-int8", "ct2-int8_float16")}
    assert size["ct2-int8"] - size["ct2-int8_float16"] == 2 * floats, (size, floats)
    for log in (work / "ct2-int8_float16" / "measure").glob("*.log"):
        assert "converted to use the int8_float32 compute type" in log.read_text(encoding="utf-8"), log
    same = [a == b for d, t in (("en-fr", "fr"), ("fr-en", "en")) for a, b in zip(
        *[(work / v / "measure" / f"quality.{d}.beam1.b32.{t}").read_text(encoding="utf-8").splitlines()
          for v in ("ct2-int8", "ct2-int8_float16")])]
    assert len(same) == 40 and sum(same) >= 36, same
    # sizes: the weights file, and everything translating raw text needs (fairseq: the checkpoint
    # with the data's dict.txt and spm.model; CTranslate2: its whole model directory)
    def mb(*paths):
        return sum(p.stat().st_size for p in paths) / 1e6
    ckpt = work / "fairseq-fp32" / "model.pt"
    assert anchor["weights_mb"] == pytest.approx(mb(ckpt), abs=1e-4)
    assert anchor["size_mb"] == pytest.approx(mb(ckpt, tiny_data / "dict.txt", tiny_data / "spm.model"), abs=1e-3)
    ct2_dir = work / "ct2-int8" / "model"
    assert rows["ct2-int8"]["weights_mb"] == pytest.approx(mb(ct2_dir / "model.bin"), abs=1e-4)
    assert rows["ct2-int8"]["size_mb"] == pytest.approx(mb(*[p for p in ct2_dir.rglob("*") if p.is_file()]), abs=1e-4)
    assert {"spm.model", "model.bin"} <= {p.name for p in ct2_dir.iterdir()}
    ratios = rows["ct2-int8"]["ratios"]
    assert ratios["weights"] == round(anchor["weights_mb"] / rows["ct2-int8"]["weights_mb"], 3)
    assert ratios["size"] == round(anchor["size_mb"] / rows["ct2-int8"]["size_mb"], 3)
    assert all(rows[v]["params"] == anchor["params"] for v in VARIANTS)

    # the Pareto set from the figures: size (smaller), tokens/s at batch 32 greedy (higher), mean BLEU (higher)
    points = {n: (r["size_mb"], r["speed"]["t1.b32.beam1"]["tokens_per_s"], r["bleu_mean"]) for n, r in rows.items()}
    front = sorted(n for n, p in points.items() if not dominated(p, [q for m, q in points.items() if m != n]))
    assert record["figures"]["pareto"] == front
    assert "Pareto frontier" in result.stdout and ", ".join(front) in result.stdout
    targets = {t["target"]: t["status"] for t in record["figures"]["targets"]}
    # ct2-int8's four targets and ct2-int8_float16's, then pruning (2) and structured (1)
    assert len(targets) == 11 and set(targets.values()) <= {"met", "not met", "not measured", "measured"}
    assert [t for t in targets if t.startswith("ct2-")] == [
        f"{v} {goal}" for v in ("ct2-int8", "ct2-int8_float16") for goal in INT8_GOALS]
    # the speed target needs greedy and beam 4 at every thread count: beam 4 was not measured
    speed = next(t for t in record["figures"]["targets"] if t["target"].startswith("ct2-int8 >= 5x"))
    assert speed["status"] == "not measured" and "1 thread greedy" in speed["detail"], speed
    assert figure.stat().st_size > 0
    # the figure again, from the ledger alone (as docs/compression_pareto.png is drawn): the newest
    # record of each model, here this one and a copy made another model's
    again = tmp_path / "again.png"
    result = run([sys.executable, SCRIPT, "--plot-only", ledger, "--plot", again], cwd=REPO_ROOT)
    assert again.stat().st_size > 0 and str(again) in result.stdout
    assert result.stdout.count("record of ") == 1 and "smallcap_very_small: record of " in result.stdout
    two_models = tmp_path / "two_models.jsonl"
    other = {**record, "setup": {**record["setup"], "arch": "smallcap_small"}, "git_commit": "0123456789"}
    newer = {**record, "git_commit": "abcdef0123"}  # the very small model's newest record
    two_models.write_text("".join(json.dumps(r) + "\n" for r in (record, other, newer)), encoding="utf-8")
    result = run([sys.executable, SCRIPT, "--plot-only", two_models, "--plot", again], cwd=REPO_ROOT)
    assert result.stdout.count("record of ") == 2 and \
        f"smallcap_very_small: record of {record['date']}, abcdef0; smallcap_small: record of {record['date']}, " \
        "0123456" in result.stdout, result.stdout
    missing = run([sys.executable, SCRIPT, "--plot-only", tmp_path / "none.jsonl", "--plot", again],
                  cwd=REPO_ROOT, check=False)
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "--plot-only" in missing.stderr

    # two threads: CTranslate2 as two parallel one-thread batches (the default layout), then as one
    # batch on two threads; a measurement made with the other layout is made again, and either
    # layout gives fairseq-generate's greedy hypotheses
    common = [sys.executable, SCRIPT, "--work", work, "--checkpoint", checkpoint, "--data", tiny_data,
              "--variants", "fairseq-fp32,ct2-float32", "--speed-sentences", "20", "--test-lines", "20",
              "--threads", "1,2", "--batch-sizes", "32", "--beams", "1", "--quality-beam", "1", "--max-len-b", "30",
              "--min-speed-seconds", "0.5"]
    speed_log = work / "ct2-float32" / "measure" / "speed.t2.b32.beam1.log"
    for layout, flags in (("inter", "--threads 1 --inter-threads 2"), ("intra", "--threads 2 --input")):
        run(common + (["--ct2-layout", layout] if layout == "intra" else []), cwd=REPO_ROOT)
        record = json.loads((work / "record.json").read_text(encoding="utf-8"))
        assert record["setup"]["ct2_layout"] == layout
        rows = record["figures"]["variants"]
        entry = rows["ct2-float32"]["speed"]["t2.b32.beam1"]
        assert entry["layout"] == layout and entry["fidelity"] == 100, entry
        assert rows["ct2-float32"]["speed"]["t1.b32.beam1"]["layout"] == "intra"
        assert rows["fairseq-fp32"]["speed"]["t2.b32.beam1"]["layout"] == "intra"
        assert flags in speed_log.read_text(encoding="utf-8").splitlines()[0]
        # short runs repeated until 0.5 s of decoding in all (at most 10), the median run kept
        runs = entry["tokens_per_s_runs"]
        middle = {sorted(runs)[(len(runs) - 1) // 2], sorted(runs)[len(runs) // 2]}  # one of the two if even
        assert entry["runs"] == len(runs) >= 1 and entry["tokens_per_s"] in middle, (entry, runs)
        decoded = sum(entry["tokens"] / r for r in runs)
        assert decoded >= 0.5 * 0.99 or len(runs) == 10, (decoded, runs)
        assert len(runs) == 1 or sum(entry["tokens"] / r for r in runs[:-1]) < 0.5 * 1.01, runs
    # a speed run recorded before layouts were (no "layout") was one batch on all threads: kept
    # under --ct2-layout intra, not measured again
    t2_json = work / "ct2-float32" / "measure" / "speed.t2.b32.beam1.json"
    old = json.loads(t2_json.read_text(encoding="utf-8"))
    del old["layout"]
    t2_json.write_text(json.dumps(old), encoding="utf-8")
    before = speed_log.stat().st_mtime_ns
    run(common + ["--ct2-layout", "intra"], cwd=REPO_ROOT)
    assert speed_log.stat().st_mtime_ns == before


def test_structured_variant_fine_tuned_with_its_shapes(tiny_data, tmp_path):
    """--structured-train-flags: fairseq-train fine-tunes the structured-pruned checkpoint with the
    shapes compression.py reads from it (the train flags say 4 heads and 64 FFN neurons; the pruned
    model keeps 2 heads and 32 neurons), and the CTranslate2 model is exported from the fine-tuned
    checkpoint."""
    import torch

    train = [*TRAIN_FLAGS, "--encoder-attention-heads", "4", "--decoder-attention-heads", "4",
             "--lambda-dae", "1", "--lambda-bt", "0", "--disable-validation", "--max-update", "2"]
    run([tool("fairseq-train"), tiny_data, *train, "--save-dir", tmp_path / "four-heads"])
    checkpoint = tmp_path / "four-heads" / "checkpoint_last.pt"
    name, train = "structured-h2-f0.5", shlex.join(train)
    command = [sys.executable, SCRIPT, "--work", tmp_path / "work", "--checkpoint", checkpoint,
               "--data", tiny_data, "--variants", f"fairseq-fp32,{name}", "--speed-sentences", "8", "--test-lines", "8",
               "--threads", "1", "--batch-sizes", "32", "--beams", "1", "--quality-beam", "1", "--max-len-b", "20",
               "--min-speed-seconds", "0"]
    result = run([*command, "--structured-train-flags", train], cwd=REPO_ROOT)
    work = tmp_path / "work" / name
    record = json.loads((tmp_path / "work" / "record.json").read_text(encoding="utf-8"))
    row = record["figures"]["variants"][name]
    assert row["fine_tuned"] is True and record["setup"]["structured_train_flags"] == train
    load = lambda p: torch.load(p, map_location="cpu", weights_only=False)  # noqa: E731
    pruned, tuned = load(work / "pruned.pt"), load(work / "finetune" / "checkpoint_last.pt")
    assert pruned["model"]["encoder.layers.0.fc1.weight"].shape == (32, 32)
    assert {k: v.shape for k, v in tuned["model"].items()} == {k: v.shape for k, v in pruned["model"].items()}
    assert tuned["optimizer_history"][-1]["num_updates"] == 2
    assert any(not torch.equal(tuned["model"][k], v) for k, v in pruned["model"].items() if v.is_floating_point())
    assert pruned["model"]["decoder.layers.0.encoder_attn.q_proj.weight"].shape == (16, 32)  # 2 heads of 8
    assert (tuned["cfg"]["model"].encoder_ffn_embed_dim, tuned["cfg"]["model"].decoder_heads_kept) == (32, 2)
    assert str(work / "finetune" / "checkpoint_last.pt") in (work / "logs" / "export.log").read_text(encoding="utf-8")
    assert row["params"] < record["figures"]["variants"]["fairseq-fp32"]["params"]
    assert all(row["test"][d]["bleu"] is not None for d in ("en-fr", "fr-en")), result.stdout
    # the same --work with other fine-tuning flags (or none) would mix two models: refused in one line
    for flags in (["--structured-train-flags", train + " --lr 0.01"], [], ["--rebuild"]):
        other = run([*command, *flags], cwd=REPO_ROOT, check=False)
        errors = [line for line in other.stderr.splitlines() if line.startswith("compression.py: error:")]
        assert other.returncode == 2 and len(errors) == 1 and "fine-tuning flags" in errors[0], other.stderr


def test_dense_ft_control_is_the_checkpoint_fine_tuned_unpruned(tiny_data, trained_checkpoint, tmp_path):
    """dense-ft, the control of the pruned variants: the checkpoint fine-tuned with the pruning rounds'
    own --prune-train-flags and nothing pruned, and that fine-tuned model (not the checkpoint) is what
    fairseq-generate decodes; without fine-tuning flags it is skipped with its reason."""
    import torch

    checkpoint, _ = trained_checkpoint
    train = shlex.join([*map(str, TRAIN_FLAGS), "--lambda-dae", "1", "--lambda-bt", "0", "--disable-validation",
                        "--max-update", "2"])
    command = [sys.executable, SCRIPT, "--work", tmp_path / "work", "--checkpoint", checkpoint,
               "--data", tiny_data, "--variants", "fairseq-fp32,dense-ft", "--speed-sentences", "8", "--test-lines", "8",
               "--threads", "1", "--batch-sizes", "32", "--beams", "1", "--quality-beam", "1", "--max-len-b", "20",
               "--min-speed-seconds", "0"]
    result = run([*command, "--prune-train-flags", train], cwd=REPO_ROOT)
    record = json.loads((tmp_path / "work" / "record.json").read_text(encoding="utf-8"))
    rows = record["figures"]["variants"]
    assert list(rows) == ["fairseq-fp32", "dense-ft"] and not record["figures"]["skipped"]
    row = rows["dense-ft"]
    assert row["fine_tuned"] is True and row["engine"] == "fairseq-generate", row
    assert all(row["test"][d]["bleu"] is not None for d in ("en-fr", "fr-en")), result.stdout
    load = lambda p: torch.load(p, map_location="cpu", weights_only=False)  # noqa: E731
    work = tmp_path / "work" / "dense-ft"
    finetuned = load(work / "finetune" / "checkpoint_last.pt")
    anchor, decoded = (load(p)["model"] for p in (tmp_path / "work" / "fairseq-fp32" / "model.pt", work / "model.pt"))
    tuned = finetuned["model"]
    assert finetuned["optimizer_history"][-1]["num_updates"] == 2
    assert {k: v.shape for k, v in decoded.items()} == {k: v.shape for k, v in anchor.items()}
    assert all(torch.equal(decoded[k], tuned[k]) for k in anchor)  # the fine-tuned weights are decoded
    assert any(not torch.equal(decoded[k], v) for k, v in anchor.items() if v.is_floating_point())
    assert not [k for k in tuned if k.endswith("_mask") or k.endswith("_orig")]  # nothing pruned (no masks)
    assert "dense-ft" not in record["figures"]["pareto"]  # a control, not a compression
    # its flags: the pruning rounds', else the structured variants'; other flags are refused in one line
    other = train + " --lr 0.01"
    for flags, refused in ((["--prune-train-flags", train, "--structured-train-flags", other], False),
                           (["--structured-train-flags", train], False), (["--structured-train-flags", other], True),
                           (["--prune-train-flags", other, "--structured-train-flags", train], True)):
        again = run([*command, *flags], cwd=REPO_ROOT, check=False)
        errors = [line for line in again.stderr.splitlines() if line.startswith("compression.py: error:")]
        assert (again.returncode, len(errors)) == ((2, 1) if refused else (0, 0)), (flags, again.stderr)
    # no fine-tuning flags: nothing to control and nothing to prune with, each skipped with its
    # reason (the anchor still measured)
    run([a if a != "fairseq-fp32,dense-ft" else "fairseq-fp32,dense-ft,prune-0.5" for a in command], cwd=REPO_ROOT)
    record = json.loads((tmp_path / "work" / "record.json").read_text(encoding="utf-8"))
    assert list(record["figures"]["variants"]) == ["fairseq-fp32"]
    skipped = record["figures"]["skipped"]
    assert list(skipped) == ["dense-ft", "prune-0.5"], skipped
    assert "needs --prune-train-flags or --structured-train-flags" in skipped["dense-ft"]
    assert skipped["prune-0.5"] == "needs --prune-train-flags (it trains)"


def test_targets_compare_with_dense_ft_only_what_was_fine_tuned_once_with_its_flags():
    """The pruning and structured targets give the loss against dense-ft beside the loss against the
    checkpoint only where the control matches: the first pruning round (later rounds were fine-tuned
    more than once), and a structured variant fine-tuned with the same flags."""
    import argparse

    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    import compression

    def row(name, kind, bleu, flags="F", **more):
        speed = {"t1.b32.beam1": {"tokens_per_s": 100.0}}
        return {"variant": name, "kind": kind, "bleu_mean": bleu, "fine_tuned": flags is not None,
                "train_flags": flags, "ratios": {"bleu_loss": round(10.0 - bleu, 2)}, "speed": speed, **more}

    rows = {"fairseq-fp32": row("fairseq-fp32", "fairseq-fp32", 10.0, None),
            "ct2-int8": row("ct2-int8", "ct2-int8", 9.9, None, fidelity=92.0),
            "dense-ft": row("dense-ft", "dense-ft", 10.5),
            "prune-0.5": row("prune-0.5", "prune", 10.2, sparsity_target=0.5, round_dir="/w/prune-rounds/round1"),
            "prune-0.7": row("prune-0.7", "prune", 9.4, sparsity_target=0.7, round_dir="/w/prune-rounds/round2"),
            "structured-h0-f0.5": row("structured-h0-f0.5", "structured", 9.6),
            "structured-h1-f0.5": row("structured-h1-f0.5", "structured", 8.9, flags="G")}
    rows["ct2-int8"]["speed"]["t1.b32.beam1"]["tokens_per_s"] = 90.0
    rows["ct2-int8"]["ratios"].update(speed_t1_b32_greedy=5.0, speed_t1_b32_beam4=3.0, size=3.0, weights=3.2)
    goals = {g["target"]: g["detail"] for g in compression.targets(rows, argparse.Namespace(threads=[1], ct2_layout="inter"))}
    assert goals["50% magnitude pruning with rewinding within 0.5 BLEU"] == (
        "-0.20 BLEU lost; +0.30 against dense-ft (the checkpoint fine-tuned unpruned with the same flags, "
        "decoded in fp32)")
    assert goals["first sparsity losing 1 BLEU"] == "none of [0.5, 0.7]"
    rows["prune-0.5"]["round_dir"] = "/w/prune-rounds/round2"  # (--prune-sparsities 0.3,0.5: fine-tuned twice)
    again = {g["target"]: g["detail"] for g in compression.targets(rows, argparse.Namespace(threads=[1], ct2_layout="inter"))}
    assert again["50% magnitude pruning with rewinding within 0.5 BLEU"] == "-0.20 BLEU lost"
    rows["prune-0.5"]["round_dir"] = "/w/prune-rounds/round1"
    structured = next(d for t, d in goals.items() if t.startswith("a structured"))
    assert structured == ("met by structured-h0-f0.5; structured-h0-f0.5: 100.0 vs 90.0 tokens/s, +0.40 BLEU lost; "
                          "+0.90 against dense-ft (the checkpoint fine-tuned unpruned with the same flags, decoded in "
                          "fp32); structured-h1-f0.5: 100.0 vs 90.0 tokens/s, +1.10 BLEU lost")


def test_int8_targets_for_each_int8_variant_and_the_structured_one_against_ct2_int8():
    """ct2-int8's four targets are always given (not measured when it was not), ct2-int8_float16's
    only when it was measured; the structured target compares with ct2-int8's speed, whichever
    int8 variant comes last."""
    import argparse

    sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
    import compression

    def row(name, kind, tokens_per_s, **more):
        return {"variant": name, "kind": kind, "bleu_mean": 9.9, "fine_tuned": False, "fidelity": 92.0,
                "speed": {"t1.b32.beam1": {"tokens_per_s": tokens_per_s}},
                "ratios": {"bleu_loss": 0.1, "speed_t1_b32_greedy": 6.0, "speed_t1_b32_beam4": 5.5, "size": 3.6,
                           "weights": 3.8}, **more}

    def goals(rows):
        return {g["target"]: g for g in compression.targets(rows, argparse.Namespace(threads=[1], ct2_layout="inter"))}

    anchor = row("fairseq-fp32", "fairseq-fp32", 10.0)
    both = goals({"fairseq-fp32": anchor, "ct2-int8": row("ct2-int8", "ct2-int8", 90.0),
                  "ct2-int8_float16": row("ct2-int8_float16", "ct2-int8_float16", 200.0),
                  "structured-h0-f0.5": row("structured-h0-f0.5", "structured", 100.0)})
    int8_targets = [t for t in both if t.startswith("ct2-")]
    assert int8_targets == [f"{v} {goal}" for v in ("ct2-int8", "ct2-int8_float16") for goal in INT8_GOALS]
    assert all(both[t]["status"] == "met" for t in int8_targets)
    structured = both["a structured or low-rank model faster in CTranslate2 (int8, than ct2-int8) at <= 1 BLEU loss"]
    assert structured["status"] == "met" and "100.0 vs 90.0 tokens/s" in structured["detail"], structured
    alone = goals({"fairseq-fp32": anchor, "ct2-int8_float16": row("ct2-int8_float16", "ct2-int8_float16", 200.0)})
    assert [t for t in alone if t.startswith("ct2-int8 ")] == INT8_NOT_MEASURED
    assert all(alone[t]["status"] == "not measured" for t in alone if t.startswith("ct2-int8 "))
    assert sum(t.startswith("ct2-int8_float16 ") for t in alone) == 4
    neither = goals({"fairseq-fp32": anchor})
    assert [t for t in neither if t.startswith("ct2-")] == INT8_NOT_MEASURED

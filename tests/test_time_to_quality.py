"""benchmarks/time_to_quality.py end to end in tiny form: the anchor and two seeds of ours (on
their own, shorter budget) trained side by side for a few seconds of wall clock on the tiny
Multi30k slice, every kept checkpoint scored, one ledger record; then re-run on the same WORK
(training and scoring skipped) and the ratio's rule on made-up curves."""
import json
import sys

from conftest import REPO_ROOT, run

BENCHMARKS = REPO_ROOT / "benchmarks"
SCRIPT = BENCHMARKS / "time_to_quality.py"
TINY_MODEL = ("--encoder-embed-dim 32 --decoder-embed-dim 32 --encoder-ffn-embed-dim 64 "
              "--decoder-ffn-embed-dim 64 --decoder-layers 2 --num-workers 0")


def first_at_or_above(curve, level):
    return next((p["minutes"] for p in curve if p["bleu"] >= level), None)


def test_time_to_quality_end_to_end(tiny_data, tmp_path):
    work, ledger, plot = tmp_path / "work", tmp_path / "ttq.jsonl", tmp_path / "ttq.png"
    command = [sys.executable, SCRIPT, "--work", work, "--data", tiny_data, "--minutes", "0.3",
               "--checkpoint-minutes", "0.1", "--save-every-updates", "2", "--ours-save-every-updates", "1",
               "--max-tokens", "600",
               "--emb-dim", "32", "--extra", TINY_MODEL, "--threads", "2", "--side-by-side",
               "--ours-seeds", "1,2", "--ours-minutes", "0.2", "--ours-checkpoint-minutes", "0.05",
               "--valid-lines", "16", "--test-lines", "16", "--results-log", ledger]
    first = run([*command, "--plot", plot])
    assert "[anchor] kept" in first.stdout and "[ours-s1] kept" in first.stdout and "[ours-s2] kept" in first.stdout
    assert plot.stat().st_size > 0
    ours = ("ours-s1", "ours-s2")

    records = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert len(records) == 1
    record = records[0]
    assert record["benchmark"] == "time_to_quality" and record["recipe"] == "mass-fixed+emb128"
    for key in ("command", "git_commit", "machine", "omp_num_threads", "date"):
        assert key in record, key
    assert "cores" in record["machine"] and "time_to_quality.py" in record["command"]
    figures = record["figures"]
    curves = figures["curves"]
    assert set(curves) == {"anchor", *ours} and figures["ours_seeds"] == {"ours-s1": 1, "ours-s2": 2}
    assert figures["budget_minutes"] == 0.3 and figures["ours_budget_minutes"] == 0.2
    # each run of ours is on its own clock and budget, from its own embeddings: its clock starts at
    # 0 (checked below), and it ends after its 0.2 minutes: by how much depends on the machine's
    # load (fairseq's start-up of each stage is not on fairseq's clock), so the upper bound is
    # loose: the commands have no --max-update, and a stage that ignored its budget would not end
    ends = figures["end_minutes"]
    for system in ours:
        assert 0.2 <= ends[system] < 5, ends
    # ours-s2 trains after ours-s1: on its own clock its embeddings end before ours-s1's end (on one
    # clock for all they would end after it); how long the embeddings take is the machine's load
    assert 0 < figures["ours_stage_end_minutes"]["ours-s2"]["embeddings"] < ends["ours-s1"], figures
    commands = record["setup"]["commands"]
    assert "--seed 1 " in commands["ours-s1"]["mass"] and "--seed 2 " in commands["ours-s2"]["finetune"]
    # each system's checkpoint interval in updates: the anchor's, ours' own
    assert "--save-interval-updates 2 " in commands["anchor"]["train"]
    for stage in ("mass", "finetune"):
        assert "--save-interval-updates 1 " in commands["ours-s1"][stage], commands["ours-s1"][stage]
    # demo.sh's fine-tuning warm-up under 30 minutes, in place of common_flags' 200; MASS keeps 200
    assert commands["ours-s2"]["finetune"].count("--warmup-updates") == 1
    assert "--warmup-updates 50 " in commands["ours-s2"]["finetune"]
    assert "--warmup-updates 200 " in commands["ours-s2"]["mass"]
    # and its learning rate, both stages; the anchor keeps its own
    for stage in ("mass", "finetune"):
        words = commands["ours-s1"][stage].split()
        assert [words[i + 1] for i, w in enumerate(words) if w == "--lr"] == ["0.002"], words
    assert record["setup"]["ours_lr"] == 0.002 and "--lr 0.0005 " in commands["anchor"]["train"]
    for system in curves:
        curve = curves[system]
        assert curve, system
        minutes = [p["minutes"] for p in curve]
        assert minutes == sorted(minutes) and len(set(minutes)) == len(minutes), (system, minutes)
        assert minutes[0] > 0
        for p in curve:
            for key in ("en-fr", "fr-en", "bleu"):
                assert 0 <= p[key] <= 100, (system, p)
            assert abs(p["bleu"] - (p["en-fr"] + p["fr-en"]) / 2) <= 0.01
        for which in ("last", "best_valid"):
            test = figures["test"][system][which]
            for direction in ("en-fr", "fr-en"):
                assert 0 <= test[direction]["bleu"] <= 100 and 0 <= test[direction]["chrf"] <= 100
                assert test[direction]["bleu_signature"].startswith("nrefs:1")
                assert test[direction]["chrf_signature"].startswith("nrefs:1")
        assert figures["test"][system]["last"]["checkpoint"] == curve[-1]["checkpoint"]
    # ours' curves run through their stages in order: MASS, then DAE + BT
    for system in ours:
        stages = [p["stage"] for p in curves[system]]
        assert stages == sorted(stages, key=("mass", "finetune").index) and stages[-1] == "finetune"
        ends = figures["ours_stage_end_minutes"][system]
        assert 0 < ends["embeddings"] <= curves[system][0]["minutes"]
        assert ends["embeddings"] < ends["mass"] < ends["finetune"]
    assert {p["stage"] for p in curves["anchor"]} == {"train"}
    # ours' interval checkpoints are kept at most one per 0.05-minute mark (each stage's last one
    # is kept besides)
    for stage in ("mass", "finetune"):
        marks = [int((p["minutes"] + 1e-6) // 0.05) for p in curves["ours-s1"] if p["stage"] == stage][:-1]
        assert len(marks) == len(set(marks)), (stage, marks)

    # the level and the ratios, recomputed from the curves
    level = curves["anchor"][-1]["bleu"]
    assert figures["anchor_level"] == level
    anchor_min = first_at_or_above(curves["anchor"], level)
    reach = {system: first_at_or_above(curves[system], level) for system in ours}
    assert figures["minutes_to_level"] == {"anchor": anchor_min, **reach}
    expected = {s: None if reach[s] is None else anchor_min / reach[s] for s in ours}
    for system in ours:
        got = figures["ratios"][system]["ratio"]
        assert (got is None) if expected[system] is None else abs(got - expected[system]) < 1e-3, (system, got)
    if None in expected.values():
        assert figures["ratio_anchor_over_ours"] is None
    else:
        assert abs(figures["ratio_anchor_over_ours"] - min(expected.values())) < 1e-3

    # re-run on the same WORK: nothing is trained or scored again, the figures are the same
    second = run(command)
    assert "[anchor] trained (done.json): skipped" in second.stdout
    assert "[ours-s1] trained (done.json): skipped" in second.stdout
    assert "[ours-s2] trained (done.json): skipped" in second.stdout

    # the same WORK with other settings: refused, nothing trained
    other = run([*command[:command.index("--ours-minutes")], "--ours-minutes", "0.3",
                 *command[command.index("--ours-minutes") + 2:]], check=False)
    error = [line for line in other.stderr.splitlines() if "Please install tensorboardX" not in line]
    assert other.returncode == 2 and len(error) == 1, other.stderr
    assert error[0].startswith("time_to_quality.py: error: ") and "trained with other settings (budget_s " in error[0]
    assert error[0].endswith("now 18.0); use another --work") and "[ours-s1] mass" not in other.stdout
    assert "valid BLEU" not in second.stdout and "test BLEU" not in second.stdout  # (from the caches)
    records = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert len(records) == 2 and records[1]["figures"]["curves"] == curves

    # the plot again from the ledger alone; a ledger without a record: one line, exit status 2
    again = tmp_path / "again.png"
    run([sys.executable, SCRIPT, "--plot-only", ledger, "--plot", again])
    assert again.stat().st_size > 0
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    bad = run([sys.executable, SCRIPT, "--plot-only", empty, "--plot", tmp_path / "none.png"], check=False)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and str(empty) in bad.stderr
    assert not (tmp_path / "none.png").exists()


def test_ratio_rule():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from time_to_quality import time_to_quality
    finally:
        sys.path.remove(str(BENCHMARKS))

    def curve(*points):
        return [{"minutes": m, "bleu": b} for m, b in points]

    anchor = curve((10, 0.5), (20, 1.0), (30, 1.5), (40, 1.4))
    exact = time_to_quality({"anchor": anchor, "ours": curve((5, 0.2), (10, 1.5), (20, 3.0))})
    assert exact["anchor_level"] == 1.4 and exact["minutes_to_level"] == {"anchor": 30, "ours": 10}
    assert exact["ratio_anchor_over_ours"] == 3.0 and exact["ratio_kind"].startswith("exact")
    # the anchor first reached 1.4 after 20 min, ours after 5: between 20 / 10 and 30 / 5
    assert exact["ratio_range"] == [2.0, 6.0]
    lower = time_to_quality({"anchor": anchor, "ours": curve((5, 2.0), (10, 3.0))})
    assert lower["ratio_anchor_over_ours"] == 6.0 and lower["ratio_kind"].startswith("lower bound")
    assert lower["ratio_range"] == [4.0, None]  # (ours reached it at its first checkpoint: no upper bound)
    never = time_to_quality({"anchor": anchor, "ours": curve((5, 0.1), (50, 1.39))})
    assert never["ratio_anchor_over_ours"] is None and never["minutes_to_level"]["ours"] is None
    assert "never" in never["ratio_kind"]
    # three runs of ours: 30 / 10, 30 / 6, 30 / 5 -> the smallest is the figure; mean 4.667, std 1.528
    three = time_to_quality({"anchor": anchor, "ours-s1": curve((5, 0.2), (10, 1.5)),
                             "ours-s2": curve((3, 0.2), (6, 1.4)), "ours-s3": curve((5, 1.6))})
    assert three["minutes_to_level"] == {"anchor": 30, "ours-s1": 10, "ours-s2": 6, "ours-s3": 5}
    assert {k: v["ratio"] for k, v in three["ratios"].items()} == {"ours-s1": 3.0, "ours-s2": 5.0, "ours-s3": 6.0}
    assert three["ratio_anchor_over_ours"] == 3.0 and three["ratio_kind"].startswith("exact")
    assert three["ratios"]["ours-s3"]["kind"].startswith("lower bound")
    assert (three["ratio_mean"], three["ratio_std"]) == (4.667, 1.528)
    # 95% t interval, 2 degrees of freedom (4.3027): 4.667 -+ 4.3027 x 1.5275 / sqrt(3) = 3.7946
    assert three["ratio_ci95"] == [0.872, 8.461]
    one_never = time_to_quality({"anchor": anchor, "ours-s1": curve((5, 2.0)), "ours-s2": curve((5, 0.1))})
    assert one_never["ratio_anchor_over_ours"] is None and "ours-s2 never" in one_never["ratio_kind"]
    assert "ratio_mean" not in one_never


def test_ours_learning_rate():
    """Ours trains at demo.sh's rate (0.002 whatever the budget, as tests/test_demo_script.py checks
    in demo.sh), unless --extra gives one (the last wins)."""
    import argparse

    sys.path.insert(0, str(BENCHMARKS))
    try:
        import time_to_quality as ttq
    finally:
        sys.path.remove(str(BENCHMARKS))
    for extra, lr in (("", 0.002), ("--share-all-embeddings", 0.002), ("--lr 0.0007 --amp --lr 0.0009", 0.0009),
                      ("--lr=0.0005", 0.0005)):
        assert ttq.ours_lr(argparse.Namespace(extra=extra)) == lr, extra
    # (the default demo.sh sets, where it sets its defaults)
    demo_defaults = (BENCHMARKS.parent / "examples" / "multi30k" / "demo.sh").read_text().split("\nMINUTES=")[1]
    assert f" LR={ttq.DEMO_LR};" in demo_defaults.splitlines()[0]

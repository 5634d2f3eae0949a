"""examples/multi30k/demo.sh's own logic, with stand-ins for the commands it calls (so no training
runs): its argument and settings checks (one line on stderr, exit status 2), and its stages: a
failed stage leaves no "finished" marker, a finished stage is not run again, and a finished demo
re-run with another --beam only decodes."""
import stat
import sys
from pathlib import Path

from conftest import BIN, run

DEMO = Path(__file__).resolve().parent.parent / "examples" / "multi30k" / "demo.sh"
# Each stand-in logs its command line to $DEMO_CALLS; fairseq-train fails when $FAIL_TRAIN is set.
STUBS = {
    "smallcap-prepare": 'while [ $# -gt 0 ]; do [ "$1" == --dest ] && dest="$2"; shift; done\n'
                        'mkdir -p "$dest/raw"; for l in en fr; do printf "a b\\nc d\\n" > "$dest/raw/test.$l"; done\n',
    "smallcap-embeddings": 'echo "smallcap-embeddings $*" >> "$DEMO_CALLS"\n'
                           'while [ $# -gt 0 ]; do [ "$1" == --out ] && out="$2"; shift; done; echo x > "$out"\n',
    "fairseq-train": 'echo "fairseq-train $*" >> "$DEMO_CALLS"; [ -z "${FAIL_TRAIN:-}" ]\n',
    # hypotheses out of order, as fairseq-generate prints them: demo.sh sorts them by id
    "fairseq-generate": 'echo "fairseq-generate $*" >> "$DEMO_CALLS"; printf "D-1\\t-0.1\\tc d\\nD-0\\t-0.1\\ta b\\n"\n',
    "sacrebleu": 'echo "BLEU = 1.00"\n',
    # demo_record.py's command line is logged; every other python command runs
    "python": 'case "${1:-}" in *demo_record.py) echo "demo_record $*" >> "$DEMO_CALLS";; '
              '*) exec "$REAL_PYTHON" "$@";; esac\n',
}


def demo(tmp_path, *args, **env):
    stubs = tmp_path / "stubs"
    if not stubs.exists():
        stubs.mkdir()
        for name, body in STUBS.items():
            (stubs / name).write_text("#!/usr/bin/env bash\n" + body)
            (stubs / name).chmod((stubs / name).stat().st_mode | stat.S_IEXEC)
    environment = {"PATH": f"{stubs}:{BIN}:/usr/bin:/bin", "DEMO_CALLS": str(tmp_path / "calls"),
                   "REAL_PYTHON": sys.executable, **env}
    return run(["bash", DEMO, *map(str, args)], check=False, env=environment)


def calls(tmp_path):
    """The stand-ins' command lines since the last call, and forget them."""
    log = tmp_path / "calls"
    lines = log.read_text().splitlines() if log.exists() else []
    log.unlink(missing_ok=True)
    return lines


def one_line_error(result):
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and len(lines) == 1, (result.returncode, result.stderr)
    return lines[0]


def test_bad_arch_minutes_seed_beam_share_and_extra(tmp_path):
    work = tmp_path / "w"
    assert one_line_error(demo(tmp_path, "--work", work, "--seed", "x")) == "demo.sh: --seed x: expected a whole number"
    assert one_line_error(demo(tmp_path, "--work", work, "--beam", "0")) == \
        "demo.sh: --beam 0: expected a whole number above 0"
    assert one_line_error(demo(tmp_path, "--work", work, "--arch", "smallcap_tiny")) == (
        "demo.sh: --arch smallcap_tiny: expected one of smallcap_very_small smallcap_small smallcap_medium "
        "smallcap_large")
    for minutes in ("x", "0", "0.0", "-5", "1e3", ""):
        assert one_line_error(demo(tmp_path, "--work", work, "--minutes", minutes)) == \
            f"demo.sh: --minutes {minutes}: expected a number of minutes above 0"
    for share in ("0", "0.0", "1", "1.5", "x", "-0.3"):
        assert one_line_error(demo(tmp_path, "--work", work, "--mass-share", share)) == \
            f"demo.sh: --mass-share {share}: expected a number above 0 and below 1, like 0.3"
    assert one_line_error(demo(tmp_path, "--work", work, "--extra", "--amp --seed 3")) == \
        "demo.sh: --extra '--amp --seed 3': give the seed with --seed, not inside --extra"
    assert not work.exists() and calls(tmp_path) == []


def test_stages_run_once_and_a_rerun_with_another_beam_only_decodes(tmp_path):
    work = tmp_path / "demo"
    # the MASS stage fails: the script fails after it, with no marker, and nothing else runs
    assert demo(tmp_path, "--work", work, FAIL_TRAIN="1").returncode != 0
    (mass,) = calls(tmp_path)[1:]  # (the embeddings, then the failed MASS stage)
    assert mass.startswith("fairseq-train ") and "--lambda-mass 1 " in mass
    assert not list(work.glob("*.finished"))
    assert (work / "settings").read_text() == \
        "arch=smallcap_very_small minutes=14 seed=1 raw= extra= lr=0.002 mass_share=0.3 finetune_extra=\n"

    # run again: both stages, then the two decodings with the default beam 4
    result = demo(tmp_path, "--work", work)
    assert result.returncode == 0, result.stderr
    mass, finetune, *generate = calls(tmp_path)
    assert mass.startswith("fairseq-train ") and "--lambda-mass 1 " in mass and "--seed 1 " in mass
    assert finetune.startswith("fairseq-train ") and "--finetune-from-model " in finetune
    assert "--lr 0.002 " in mass and "--lr 0.002 " in finetune  # demo.sh's rate
    assert [g.split()[0] for g in generate] == ["fairseq-generate"] * 2 and all("--beam 4 " in g for g in generate)
    assert {p.name for p in work.glob("*.finished")} == {"mass.finished", "bt.finished"}
    assert (work / "test.en-fr.hyp").read_text() == "a b\nc d\n"  # in the order of the test set

    # a finished demo re-run with --beam 1 trains nothing and decodes greedily
    assert demo(tmp_path, "--work", work, "--beam", "1").returncode == 0
    generate = calls(tmp_path)
    assert len(generate) == 2 and all(g.startswith("fairseq-generate ") and "--beam 1 " in g for g in generate)

    # another seed on it is refused before anything runs; the settings stay
    line = one_line_error(demo(tmp_path, "--work", work, "--seed", "2"))
    assert line == (f"demo.sh: --work {work} was trained with 'arch=smallcap_very_small minutes=14 seed=1 raw= "
                    "extra= lr=0.002 mass_share=0.3 finetune_extra=', not 'arch=smallcap_very_small minutes=14 seed=2 "
                    "raw= extra= lr=0.002 mass_share=0.3 finetune_extra=': give those or another --work")
    assert calls(tmp_path) == [] and "seed=1 " in (work / "settings").read_text()


def test_training_from_before_the_settings_file_is_refused(tmp_path):
    work = tmp_path / "demo"
    (work / "mass").mkdir(parents=True)
    line = one_line_error(demo(tmp_path, "--work", work))
    assert line.startswith(f"demo.sh: --work {work} holds training from before demo.sh recorded its settings: "
                           f"write those it ran with to {work}/settings")
    assert not (work / "settings").exists() and calls(tmp_path) == []


def test_learning_rate_of_both_stages(tmp_path):
    """Both stages train at lr 0.002 whatever the budget, or at --lr's (one spelling in WORK/settings
    and the record), each given once; an --lr in --extra comes after demo.sh's, so fairseq-train
    keeps it. A rate that is not a number above 0 is one line, before anything runs."""
    for minutes, flags, rates in ((14, [], ["0.002"]), (86, [], ["0.002"]), (86, ["--lr", "1e-3"], ["0.001"]),
                                  (86, ["--extra", "--lr 0.0005"], ["0.002", "0.0005"])):
        work = tmp_path / f"demo-{minutes}-{len(flags)}{flags[-1] if flags else ''}"
        assert demo(tmp_path, "--work", work, "--minutes", minutes, *flags, "--results-log", tmp_path / "l").returncode == 0
        lines = calls(tmp_path)
        trainings = [c.split() for c in lines if c.startswith("fairseq-train ")]
        assert len(trainings) == 2
        for words in trainings:
            assert [words[i + 1] for i, w in enumerate(words) if w == "--lr"] == rates, (minutes, words)
        assert f" lr={rates[0]} " in (work / "settings").read_text()
        (record,) = [line for line in lines if line.startswith("demo_record ")]
        assert f" --lr {rates[0]} " in record, record
    for rate in ("0", "0.0", "-0.001", "x", "1e", ""):
        assert one_line_error(demo(tmp_path, "--work", tmp_path / "bad", "--lr", rate)) == \
            f"demo.sh: --lr {rate}: expected a learning rate above 0, like 0.002"
    assert calls(tmp_path) == [] and not (tmp_path / "bad").exists()


def test_extra_flags_replace_the_recipes_own(tmp_path):
    """--extra '--lambda-dae 0.3 --warmup-updates 100 --dropout 0.2': both command lines, as
    fairseq-train's own parser reads them, train with these (a DAE weight neither stage has of its
    own, so each stage shows the order), and the stages' budget and directories are demo.sh's."""
    from fairseq import options

    work = tmp_path / "demo"
    extra = "--lambda-dae 0.3 --warmup-updates 100 --dropout 0.2"
    assert demo(tmp_path, "--work", work, "--minutes", 86, "--extra", extra).returncode == 0
    mass, tune = [options.parse_args_and_arch(options.get_training_parser(), input_args=c.split()[1:])
                  for c in calls(tmp_path) if c.startswith("fairseq-train ")]
    assert (mass.lambda_mass, mass.lambda_dae, mass.warmup_updates, mass.dropout) == ("1", "0.3", 100, 0.2)
    assert (tune.lambda_bt, tune.lambda_dae, tune.warmup_updates, tune.dropout) == ("1", "0.3", 100, 0.2)
    assert (mass.save_dir, tune.save_dir) == (str(work / "mass"), str(work / "bt"))
    assert (mass.stop_time_hours, tune.stop_time_hours) == (round(86 * 0.3 / 60, 4), round(86 / 60, 4))


def test_finetune_extra_reaches_the_fine_tuning_stage_only(tmp_path):
    """--finetune-extra '--lambda-dae 0:1,400:0': fairseq-train's own parser reads the fine-tuning
    command line with that DAE schedule, after --extra's (which both stages have), and the MASS
    stage's with its own; it is part of WORK/settings and of the ledger record. A seed or a
    learning rate in it is refused (one rate for both stages: --lr), and so is another
    --finetune-extra on a --work trained without one. A --work from before the flag existed (no
    finetune_extra= in its settings) resumes without it."""
    from fairseq import options

    work, ledger = tmp_path / "demo", tmp_path / "ledger.jsonl"
    assert demo(tmp_path, "--work", work, "--minutes", 86, "--extra", "--lambda-dae 0.3 --dropout 0.2",
                "--finetune-extra", "--lambda-dae 0:1,400:0", "--results-log", ledger).returncode == 0
    lines = calls(tmp_path)
    mass, tune = [options.parse_args_and_arch(options.get_training_parser(), input_args=c.split()[1:])
                  for c in lines if c.startswith("fairseq-train ")]
    assert (mass.lambda_mass, mass.lambda_dae, mass.dropout) == ("1", "0.3", 0.2)
    assert (tune.lambda_bt, tune.lambda_dae, tune.dropout) == ("1", "0:1,400:0", 0.2)
    assert (work / "settings").read_text().endswith(" finetune_extra=--lambda-dae 0:1,400:0\n")
    (record,) = [line for line in lines if line.startswith("demo_record ")]
    assert " --finetune-extra=--lambda-dae 0:1,400:0 " in record, record
    assert one_line_error(demo(tmp_path, "--work", work, "--minutes", 86, "--extra", "--lambda-dae 0.3 --dropout 0.2")
                          ).endswith("finetune_extra=': give those or another --work")
    for flags, line in (("--seed 2", "give the seed with --seed, not inside --finetune-extra"),
                        ("--lr=0.003", "give the learning rate of both stages with --lr")):
        assert one_line_error(demo(tmp_path, "--work", tmp_path / "new", "--finetune-extra", flags)) == \
            f"demo.sh: --finetune-extra '{flags}': {line}"
    assert calls(tmp_path) == [] and not (tmp_path / "new").exists()
    old = tmp_path / "old"
    (old / "mass").mkdir(parents=True)
    (old / "settings").write_text("arch=smallcap_very_small minutes=86 seed=1 raw= extra= lr=0.001 mass_share=0.3\n")
    assert one_line_error(demo(tmp_path, "--work", old, "--minutes", 86, "--lr", "0.001", "--finetune-extra",
                               "--dropout 0.2")).endswith(
        "lr=0.001 mass_share=0.3 finetune_extra=', not 'arch=smallcap_very_small minutes=86 seed=1 raw= extra= "
        "lr=0.001 mass_share=0.3 finetune_extra=--dropout 0.2': give those or another --work")
    assert demo(tmp_path, "--work", old, "--minutes", 86, "--lr", "0.001").returncode == 0
    assert len([c for c in calls(tmp_path) if c.startswith("fairseq-train ")]) == 2


def test_settings_from_before_the_learning_rate_ran_at_0_001(tmp_path):
    """A settings file written before the rate was written has no lr=: its training ran at 0.001, so
    at demo.sh's 0.002 it is refused, and with --lr 0.001 it is resumed."""
    for minutes in (14, 40):
        work = tmp_path / f"old-{minutes}"
        (work / "mass").mkdir(parents=True)
        (work / "settings").write_text(f"arch=smallcap_very_small minutes={minutes} seed=1 raw= extra=\n")
        assert one_line_error(demo(tmp_path, "--work", work, "--minutes", minutes)).endswith(
            f"extra= lr=0.001 mass_share=0.3 finetune_extra=', not 'arch=smallcap_very_small minutes={minutes} "
            "seed=1 raw= extra= lr=0.002 mass_share=0.3 finetune_extra=': give those or another --work")
        assert calls(tmp_path) == []
        result = demo(tmp_path, "--work", work, "--minutes", minutes, "--lr", "0.001")
        assert result.returncode == 0, result.stderr
        assert sum(c.startswith("fairseq-train ") for c in calls(tmp_path)) == 2


def stop_hours(lines):
    """The --stop-time-hours of each fairseq-train command line, in order."""
    trainings = [line.split() for line in lines if line.startswith("fairseq-train ")]
    return [words[words.index("--stop-time-hours") + 1] for words in trainings]


def test_mass_share_splits_the_budget(tmp_path):
    """MASS trains for --mass-share of the budget (default 0.3) and fine-tuning until the whole
    budget: fairseq-train's --stop-time-hours, 86 minutes here; the share reaches the ledger record
    (demo_record.py's command line, with the learning rate). One share has one spelling in
    WORK/settings. A --work trained with the default before --mass-share existed (no mass_share= in
    its settings) resumes with the default only."""
    for share, written, mass_hours in ((None, "0.3", "0.43"), ("0.50", "0.5", "0.7167")):
        work = tmp_path / f"share-{share}"
        flags = ["--mass-share", share] if share else []
        assert demo(tmp_path, "--work", work, "--minutes", 86, *flags, "--extra", "--lr 0.002",
                    "--results-log", tmp_path / "ledger.jsonl").returncode == 0
        lines = calls(tmp_path)
        assert stop_hours(lines) == [mass_hours, "1.4333"], (share, lines)
        assert (work / "settings").read_text().endswith(f" lr=0.002 mass_share={written} finetune_extra=\n")
        (record,) = [line for line in lines if line.startswith("demo_record ")]
        assert f" --lr 0.002 --mass-share {written} --extra=--lr 0.002 " in record, record
    old = tmp_path / "old"
    (old / "mass").mkdir(parents=True)
    (old / "settings").write_text("arch=smallcap_very_small minutes=86 seed=1 raw= extra= lr=0.001\n")
    assert one_line_error(demo(tmp_path, "--work", old, "--minutes", 86, "--lr", "0.001", "--mass-share", "0.5")).endswith(
        "lr=0.001 mass_share=0.3 finetune_extra=', not 'arch=smallcap_very_small minutes=86 seed=1 raw= extra= "
        "lr=0.001 mass_share=0.5 finetune_extra=': give those or another --work")
    assert demo(tmp_path, "--work", old, "--minutes", 86, "--lr", "0.001", "--mass-share", ".30").returncode == 0
    assert stop_hours(calls(tmp_path)) == ["0.43", "1.4333"]
    assert (old / "settings").read_text() == "arch=smallcap_very_small minutes=86 seed=1 raw= extra= lr=0.001\n"


def test_a_share_that_leaves_a_stage_no_time_is_refused(tmp_path):
    """fairseq reads --stop-time-hours 0 as no limit: a share whose MASS time rounds to 0 h, or to
    the whole budget, is one line and status 2, before anything runs."""
    for share, hours in (("0.001", "0.0"), ("0.999", "0.0167")):
        work = tmp_path / f"share-{share}"
        line = one_line_error(demo(tmp_path, "--work", work, "--minutes", 1, "--mass-share", share))
        assert line == (f"demo.sh: --mass-share {share} of --minutes 1 gives MASS {hours} h of 0.0167 h: give a "
                        "share that leaves both stages time")
        assert calls(tmp_path) == [] and not work.exists()


def test_paired_with_a_finished_demo_of_the_same_seed(tmp_path):
    """--paired-with WORK2 reaches demo_record.py (which records the paired bootstrap); it needs
    --results-log, a finished WORK2 (its test translations and checkpoint), not --work itself, the
    same seed and the same test set, each else refused in one line before any training."""
    ledger, other, work = tmp_path / "ledger.jsonl", tmp_path / "other", tmp_path / "demo"
    line = one_line_error(demo(tmp_path, "--work", work, "--paired-with", other, "--results-log", ledger))
    assert line == f"demo.sh: --paired-with {other}: no {other}/test.en-fr.hyp there: give a finished demo's --work"
    assert calls(tmp_path) == [] and demo(tmp_path, "--work", other, "--extra", "--lr 0.001").returncode == 0
    assert calls(tmp_path)
    line = one_line_error(demo(tmp_path, "--work", work, "--paired-with", other, "--results-log", ledger))
    assert line == f"demo.sh: --paired-with {other}: no {other}/bt/checkpoint_best.pt there: give a finished demo's --work"
    (other / "bt").mkdir()
    (other / "bt" / "checkpoint_best.pt").write_text("x")  # (the stand-in fairseq-train saves none)
    assert one_line_error(demo(tmp_path, "--work", work, "--paired-with", other)) == \
        f"demo.sh: --paired-with {other}: the paired bootstrap is recorded in --results-log's ledger: give one"
    assert one_line_error(demo(tmp_path, "--work", other, "--paired-with", f"{tmp_path}/./other",
                               "--results-log", ledger)) == \
        f"demo.sh: --paired-with {tmp_path}/./other: that is --work itself: give another demo's --work"
    line = one_line_error(demo(tmp_path, "--work", work, "--seed", "2", "--paired-with", other, "--results-log", ledger))
    assert line == (f"demo.sh: --paired-with {other}: not trained with --seed 2 ({other}/settings: "
                    "'arch=smallcap_very_small minutes=14 seed=1 raw= extra=--lr 0.001 lr=0.002 mass_share=0.3 "
                    "finetune_extra=')")
    assert calls(tmp_path) == [] and not work.exists()
    # another test set (the stand-in smallcap-prepare writes "a b", "c d"): refused before the embeddings
    (other / "data" / "raw" / "test.fr").write_text("a b\nc e\n")
    line = one_line_error(demo(tmp_path, "--work", work, "--paired-with", other, "--results-log", ledger))
    assert line == f"demo.sh: --paired-with {other}: its test set {other}/data/raw/test.fr differs from {work}/data/raw/test.fr"
    assert calls(tmp_path) == []
    (other / "data" / "raw" / "test.fr").write_text("a b\nc d\n")
    assert demo(tmp_path, "--work", work, "--paired-with", other, "--results-log", ledger).returncode == 0
    (record,) = [c for c in calls(tmp_path) if c.startswith("demo_record ")]
    assert f" --paired-with {other} --command " in record, record

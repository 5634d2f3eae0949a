"""The curation ablation's ledger of finished runs: seeds measured in different sessions or on
different machines end up in one table with mean ± std."""
import json
import multiprocessing
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import curation_ablation  # noqa: E402


def run(seed, system, en_fr, fr_en, arch="smallcap_very_small"):
    return {"arch": arch, "seed": seed, "system": system, "en-fr": en_fr, "fr-en": fr_en,
            "mean": (en_fr + fr_en) / 2, "finetune_wall_s": 60.0, "valid_bleu": [[200, 1.0]]}


def test_ledger_keeps_other_runs_and_replaces_a_rerun(tmp_path, capsys):
    ledger = tmp_path / "results" / "ledger.jsonl"
    curation_ablation.merge_into_ledger(ledger, [run(1, "baseline", 4.0, 5.0), run(1, "all", 3.0, 4.0)])
    merged = curation_ablation.merge_into_ledger(ledger, [run(2, "baseline", 6.0, 7.0), run(1, "all", 5.0, 5.0)])
    assert [(r["seed"], r["system"], r["mean"]) for r in merged] == [(1, "baseline", 4.5), (1, "all", 5.0),
                                                                     (2, "baseline", 6.5)]
    records = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert records == merged and all("commit" in r["recorded"] and "machine" in r["recorded"] for r in records)
    curation_ablation.report(merged, tmp_path)
    table = capsys.readouterr().out
    assert "| mass-misaligned | smallcap_very_small | baseline | 2 | 5.50 ± 1.41 |" in table
    assert "| mass-misaligned | smallcap_very_small | 1 | all | 5.00 | 5.00 | 5.00 | +0.50 |" in table


def test_recipes_are_kept_apart_and_compared_by_seed(tmp_path, capsys):
    ledger = tmp_path / "ledger.jsonl"
    old = [run(1, "baseline", 4.0, 5.0), run(2, "baseline", 2.0, 3.0)]  # no recipe: before issue 20
    new = [{**run(1, "baseline", 6.0, 7.0), "recipe": "mass-fixed"}, {**run(2, "baseline", 5.0, 4.0), "recipe": "mass-fixed"}]
    curation_ablation.merge_into_ledger(ledger, old)
    merged = curation_ablation.merge_into_ledger(ledger, new)
    assert len(merged) == 4
    curation_ablation.report(merged, tmp_path)
    table = capsys.readouterr().out
    assert "| mass-fixed | smallcap_very_small | baseline | 2 | 5.50 ± 1.41 |" in table
    assert "| mass-misaligned | smallcap_very_small | baseline | 2 | 3.50 ± 1.41 |" in table
    # seed 1: 6.5 - 4.5 = +2, seed 2: 4.5 - 2.5 = +2: no spread, a zero-width interval
    assert ("| mass-fixed | smallcap_very_small | baseline | mass-misaligned baseline | "
            "+2.00 [+2.00, +2.00] (2 seeds: +2.00, +2.00) |") in table


def test_unchanged_rerun_keeps_its_first_record(tmp_path):
    ledger = tmp_path / "ledger.jsonl"
    first = curation_ablation.merge_into_ledger(ledger, [run(1, "baseline", 4.0, 5.0)])
    first[0]["recorded"]["date"] = "2000-01-01"
    ledger.write_text(json.dumps(first[0]) + "\n")
    again = curation_ablation.merge_into_ledger(ledger, [run(1, "baseline", 4.0, 5.0)])
    assert again[0]["recorded"]["date"] == "2000-01-01"
    # recorded again once the other recipe's run of the seed has finished: the pairing is added, the
    # first provenance kept; recorded once more without it: the pairing stays
    paired = {**run(1, "baseline", 4.0, 5.0), "paired_bs_vs_recipe": {"against": "r-other"}}
    for rows in ([paired], [run(1, "baseline", 4.0, 5.0)]):
        (record,) = curation_ablation.merge_into_ledger(ledger, rows)
        assert record["paired_bs_vs_recipe"] == {"against": "r-other"} and record["recorded"]["date"] == "2000-01-01"
    assert [json.loads(line) for line in ledger.read_text().splitlines()] == [record]


def _record_seed(ledger, seed):
    curation_ablation.merge_into_ledger(ledger, [run(seed, "baseline", 4.0, 5.0)])


def test_invocations_side_by_side_keep_each_others_runs(tmp_path):
    """Systems run in parallel lanes each record their run when they finish: none may be lost."""
    ledger = tmp_path / "ledger.jsonl"
    context = multiprocessing.get_context("fork")
    lanes = [context.Process(target=_record_seed, args=(ledger, seed)) for seed in range(1, 13)]
    for lane in lanes:
        lane.start()
    for lane in lanes:
        lane.join()
    assert all(lane.exitcode == 0 for lane in lanes)
    assert sorted(json.loads(line)["seed"] for line in ledger.read_text().splitlines()) == list(range(1, 13))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ledger.jsonl", "ledger.jsonl.lock"]


def test_corrupt_ledger_line_names_file_and_line(tmp_path):
    ledger = tmp_path / "ledger.jsonl"
    ledger.write_text(json.dumps(run(1, "baseline", 4.0, 5.0)) + "\n{not json\n")
    with pytest.raises(SystemExit, match=r"ledger\.jsonl:2: not a run record"):
        curation_ablation.merge_into_ledger(ledger, [])
    ledger.write_text(json.dumps(run(1, "baseline", 4.0, 5.0)) + "\n" + json.dumps(run(1, "oracle", 9.0, 9.0)) + "\n")
    with pytest.raises(SystemExit, match=r"ledger\.jsonl:2: unknown system 'oracle'"):
        curation_ablation.merge_into_ledger(ledger, [])


def test_project_ledger_is_well_formed():
    ledger = Path(curation_ablation.REPO) / "benchmarks" / "results" / "curation_ablation.jsonl"
    for line in ledger.read_text().splitlines():
        r = json.loads(line)
        assert r["system"] in curation_ablation.SYSTEMS and r["arch"].startswith("smallcap_")
        assert r["mean"] == pytest.approx((r["en-fr"] + r["fr-en"]) / 2)
        assert r["recorded"]["machine"]


def test_resumed_stage_keeps_the_validation_curve_of_its_first_part(tmp_path):
    """A stage killed and run again appends to its log (fairseq-train resumes from its checkpoint),
    so the validation points logged before the interruption stay in the run's curve, once each."""
    def validation(update, bleu):
        return f'print(\'2026-01-01 | INFO | valid | {{"valid_num_updates": "{update}", "valid_bleu": "{bleu}"}}\')'

    log = tmp_path / "train.1.log"
    curation_ablation.sh([sys.executable, "-c", f"{validation(200, 1.5)}; {validation(400, 2.0)}"], log=log)
    curation_ablation.sh([sys.executable, "-c", f"{validation(400, 2.5)}; {validation(600, 3.0)}"], log=log)
    assert log.read_text().count("==== ") == 2
    assert curation_ablation.valid_curve(tmp_path) == [(200, 1.5), (400, 2.5), (600, 3.0)]


def test_bad_input_is_one_line_and_exit_status_2(tmp_path):
    """Through the command line: a WORK trained with another recipe, and a ledger with a broken
    line, are each refused with one line naming the file (and line) and exit status 2, as the
    parser's own errors are; the ledger is left as it was, and a broken ledger given to a run that
    has everything to train is refused before the data is prepared."""
    work = ablation_work(tmp_path, "w", "r-one", hyps=REFS)
    shutil.copytree(work / "data", work / "data-static")
    for data in ("data", "data-static"):
        (work / data / "prepare.json").write_text("{}")  # prepared: --report-only trains nothing
    script = Path(curation_ablation.__file__)
    done = work / ARCH / "seed1" / "baseline" / "finetune.done.json"
    ledger = tmp_path / "ledger.jsonl"
    ledger.write_text('{"arch": "a"}\nnot json\n')
    for flags, line in (
            (["--recipe", "r-two"], f"{done}: trained with recipe 'r-one', not --recipe 'r-two'; use another --work"),
            (["--results-log", ledger], f"{ledger}:1: not a run record (no field 'seed')")):
        result = subprocess.run([sys.executable, script, "--work", work, "--report-only", "--cpu", *flags],
                                capture_output=True, text=True, cwd=tmp_path)
        assert (result.returncode, result.stderr.splitlines()) == (2, [f"curation_ablation.py: error: {line}"])
    assert ledger.read_text() == '{"arch": "a"}\nnot json\n'
    # a ledger line that is JSON but not a record, given to a run with everything still to train:
    # refused before anything is prepared (not hours later, when the first record is written)
    ledger.write_text("[]\n")
    fresh = tmp_path / "fresh"
    result = subprocess.run([sys.executable, script, "--work", fresh, "--raw-dir", tmp_path / "no-such-dir",
                             "--cpu", "--results-log", ledger], capture_output=True, text=True, cwd=tmp_path)
    assert (result.returncode, result.stderr.splitlines()) == (
        2, [f"curation_ablation.py: error: {ledger}:1: not a run record (a JSON list, not an object)"])
    assert not fresh.exists() and ledger.read_text() == "[]\n"


def test_a_stage_keeps_the_recipe_it_was_trained_with(tmp_path):
    done = tmp_path / "finetune.done.json"
    args = lambda recipe: type("Args", (), {"recipe": recipe})()  # noqa: E731
    assert curation_ablation.recorded_recipe(args(None), done, {"recipe": "mass-fixed+emb"}) == "mass-fixed+emb"
    assert curation_ablation.recorded_recipe(args("old"), done, {}) == "old"  # a run of an older release, named
    with pytest.raises(SystemExit, match="no recorded recipe .* name it with --recipe"):
        curation_ablation.recorded_recipe(args(None), done, {})
    with pytest.raises(SystemExit, match="trained with recipe 'mass-fixed', not --recipe 'other'"):
        curation_ablation.recorded_recipe(args("other"), done, {"recipe": "mass-fixed"})


ARCH = "smallcap_very_small"
REFS = ["a dog runs .", "two men talk .", "a girl sings .", "cats sleep ."]
SOURCES = ["un chien court .", "deux hommes parlent .", "une fille chante .", "les chats dorment ."]


def ablation_work(tmp_path, name, recipe=None, hyps=None, own_mass=True):
    """A curation_ablation WORK: data (dictionary, test references), a finished MASS stage of
    seed 1 (unless ``own_mass`` is false) and, given ``hyps``, a finished, scored baseline whose
    fr->en outputs are ``hyps`` (en->fr: the French sources, the same for every WORK)."""
    work = tmp_path / name
    (work / "data" / "raw").mkdir(parents=True)
    (work / "data" / "dict.txt").write_text("▁a 5\n▁dog 3\n")
    for lang, lines in (("en", REFS), ("fr", SOURCES)):
        (work / "data" / "raw" / f"test.{lang}").write_text("".join(x + "\n" for x in lines))
    if own_mass:
        (work / ARCH / "seed1" / "mass").mkdir(parents=True)
        (work / ARCH / "seed1" / "mass" / "done").write_text(json.dumps({"mass_wall_s": 5.0, "recipe": recipe}))
    if hyps:
        out = work / ARCH / "seed1" / "baseline"
        out.mkdir(parents=True)
        for pair in ("en-fr", "fr-en"):
            lines = hyps if pair == "fr-en" else SOURCES
            (out / f"generate.test.{pair}.log").write_text(
                "".join(f"D-{i}\t-0.5\t{h}\n" for i, h in enumerate(lines)) + "Translated 4 sentences\n")
            (out / f"test.{pair}.hyp").write_text("".join(h + "\n" for h in lines))
        (out / "finetune.done.json").write_text(json.dumps({"recipe": recipe, "finetune_wall_s": 1.0,
                                                            "valid_bleu": []}))
    return work


def test_mass_from_pairs_a_finetuning_recipe_with_the_same_checkpoint(tmp_path):
    """--mass-from WORK2: no MASS is trained, the run starts from WORK2's checkpoint of its seed,
    and its record carries sacreBLEU's paired bootstrap against WORK2's run of the same system."""
    arch, work_dir = ARCH, lambda *a, **k: ablation_work(tmp_path, *a, **k)  # noqa: E731
    base = work_dir("base", "r-base", hyps=["a cat runs .", "two men walk .", "a girl sings .", "dogs sleep ."])
    new = work_dir("new", hyps=REFS, own_mass=False)
    args = type("Args", (), {"recipe": "r-new", "mass_from": str(base), "cpu": True})()
    ckpt = curation_ablation.mass_pretrain(args, new, new / "data", arch, 1)
    assert ckpt == base.resolve() / arch / "seed1" / "mass" / "checkpoint_last.pt"
    assert curation_ablation.mass_pretrain(args, new, new / "data", arch, 1) == ckpt  # resumed: the same
    done = json.loads((new / arch / "seed1" / "mass" / "done").read_text())
    assert done["mass_from_recipe"] == "r-base" and done["mass_from_wall_s"] == 5.0
    assert curation_ablation.mass_wall_s(new, arch, 1) is None  # this WORK spent no time on MASS

    (row,) = curation_ablation.finished_rows(args, new, new / "data", new / "data")
    paired = row["paired_bs_vs_recipe"]
    assert paired["against"] == "r-base" and row["recipe"] == "r-new" and paired["same_mass_checkpoint"] is True
    # fr->en: this run wrote the references (BLEU 100), WORK2's run did not
    assert paired["fr-en"]["bleu"]["baseline"] < 100.0 == paired["fr-en"]["bleu"]["system"] == row["fr-en"]
    assert paired["en-fr"]["bleu"]["baseline"] == paired["en-fr"]["bleu"]["system"] == row["en-fr"]
    # a later --paired-with on this WORK would pair it with another WORK's runs: refused
    args.paired_with = str(work_dir("third-recipe", "r-3", hyps=REFS))
    with pytest.raises(SystemExit, match="fine-tuned from --mass-from's .*/base/.*, so its runs are paired"):
        curation_ablation.finished_rows(args, new, new / "data", new / "data")

    with pytest.raises(SystemExit, match="started from .*/base/.*; use another --work"):  # its own MASS
        curation_ablation.mass_pretrain(type("Args", (), {"recipe": "r-base", "mass_from": str(new)})(),
                                        base, base / "data", arch, 1)
    with pytest.raises(SystemExit, match="its MASS stage is itself .*/base/"):  # no chains
        curation_ablation.mass_pretrain(type("Args", (), {"recipe": "r-3", "mass_from": str(new)})(),
                                        work_dir("third", own_mass=False), tmp_path / "third" / "data", arch, 1)
    other = work_dir("other-data", own_mass=False)
    (other / "data" / "dict.txt").write_text("▁b 5\n")
    with pytest.raises(SystemExit, match="not the same data"):
        curation_ablation.mass_pretrain(args, other, other / "data", arch, 1)
    unnamed = work_dir("unnamed")
    with pytest.raises(SystemExit, match="no recorded recipe"):
        curation_ablation.mass_pretrain(type("Args", (), {"recipe": "x", "mass_from": str(unnamed)})(),
                                        work_dir("fresh", own_mass=False), tmp_path / "fresh" / "data", arch, 1)


def test_paired_with_pairs_recipes_that_trained_their_own_mass(tmp_path):
    """--paired-with WORK2: two recipes that each trained their own MASS (a learning rate of both
    stages, say) are paired by seed and system: a run's record carries sacreBLEU's paired bootstrap
    against WORK2's run, marked as not sharing the starting checkpoint."""
    def rows(work, work2):
        args = type("Args", (), {"recipe": None, "cpu": True, "paired_with": work2 and str(work2)})()
        return curation_ablation.finished_rows(args, work, work / "data", work / "data")

    lr1 = ablation_work(tmp_path, "lr1", "r-lr1", hyps=["a cat runs .", "two men walk .", "a girl sings .", "dogs sleep ."])
    lr2 = ablation_work(tmp_path, "lr2", "r-lr2", hyps=REFS)
    (row,) = rows(lr2, lr1)
    paired = row["paired_bs_vs_recipe"]
    assert row["recipe"] == "r-lr2" and paired["against"] == "r-lr1" and paired["same_mass_checkpoint"] is False
    # fr->en: this run wrote the references (BLEU 100), WORK2's run did not; en->fr: the same outputs
    assert paired["fr-en"]["bleu"]["baseline"] < 100.0 == paired["fr-en"]["bleu"]["system"] == row["fr-en"]
    assert paired["en-fr"]["bleu"]["baseline"] == paired["en-fr"]["bleu"]["system"] == row["en-fr"]
    (back,) = rows(lr1, lr2)  # and the other way round
    assert back["paired_bs_vs_recipe"]["against"] == "r-lr2"
    assert back["paired_bs_vs_recipe"]["fr-en"]["bleu"]["baseline"] == 100.0 > back["fr-en"]
    assert "paired_bs_vs_recipe" not in rows(lr2, None)[0]  # not asked
    assert "paired_bs_vs_recipe" not in rows(lr2, ablation_work(tmp_path, "unfinished", "r-x"))[0]  # no run there yet

    other = ablation_work(tmp_path, "other-data", "r-o", hyps=REFS)
    (other / "data" / "dict.txt").write_text("▁b 5\n")
    with pytest.raises(SystemExit, match="other-data/data/dict.txt is not .*: not the same data"):
        rows(lr2, other)
    with pytest.raises(SystemExit, match="its runs are of this WORK's recipe too \\('r-lr2'\\)"):
        rows(lr2, ablation_work(tmp_path, "same", "r-lr2", hyps=REFS))
    with pytest.raises(SystemExit, match="no recorded recipe, so the runs of --paired-with cannot be named"):
        rows(lr2, ablation_work(tmp_path, "unnamed", None, hyps=REFS))


def test_paired_with_and_mass_from_are_one_or_the_other(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        curation_ablation.main(["--work", str(tmp_path / "w"), "--paired-with", "a", "--mass-from", "b"])
    assert exit.value.code == 2 and not (tmp_path / "w").exists()
    assert "--paired-with: --mass-from already pairs each run with WORK2's" in capsys.readouterr().err


def test_finetune_extra_replaces_the_recipes_own_flags_in_fine_tuning_only(tmp_path, monkeypatch):
    """--finetune-extra '--lambda-dae 0.3 --warmup-updates 50': fairseq-train, reading the command
    the fine-tuning stage runs, trains with a DAE weight of 0.3 and warms up 50 updates; --extra's
    flags stay and are overridden; MASS's command has none of them (its DAE weight stays 0)."""
    from fairseq import options

    commands = []
    monkeypatch.setattr(curation_ablation, "sh", lambda command, log=None: commands.append(list(map(str, command))))
    args = curation_ablation.build_parser().parse_args([
        "--work", str(tmp_path), "--cpu", "--mass-updates", "3", "--updates", "5",
        "--extra", "--lambda-dae 0.5 --dropout 0.2", "--finetune-extra", "--lambda-dae 0.3 --warmup-updates 50"])
    (tmp_path / "data").mkdir()
    curation_ablation.mass_pretrain(args, tmp_path, tmp_path / "data", ARCH, 1)
    curation_ablation.finetune(args, tmp_path, tmp_path / "data", tmp_path / "data", ARCH, 1, "baseline",
                               tmp_path / "mass.pt")
    mass, tune = commands

    def read(command):  # what fairseq-train makes of the command line
        return options.parse_args_and_arch(options.get_training_parser(), input_args=command[1:])

    mass, tune = read(mass), read(tune)
    assert (tune.lambda_dae, tune.warmup_updates, tune.dropout, tune.max_update) == ("0.3", 50, 0.2, 5)
    assert (mass.lambda_dae, mass.warmup_updates, mass.dropout, mass.max_update) == ("0", 200, 0.2, 3)
    assert mass.lambda_mass == "1" and tune.lambda_bt == "1"


"""The curation ablation's ledger of finished runs: seeds measured in different sessions or on
different machines end up in one table with mean ± std."""
import json
import multiprocessing
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


def test_a_stage_keeps_the_recipe_it_was_trained_with(tmp_path):
    done = tmp_path / "finetune.done.json"
    args = lambda recipe: type("Args", (), {"recipe": recipe})()  # noqa: E731
    assert curation_ablation.recorded_recipe(args(None), done, {"recipe": "mass-fixed+emb"}) == "mass-fixed+emb"
    assert curation_ablation.recorded_recipe(args("old"), done, {}) == "old"  # a run of an older release, named
    with pytest.raises(SystemExit, match="no recorded recipe .* name it with --recipe"):
        curation_ablation.recorded_recipe(args(None), done, {})
    with pytest.raises(SystemExit, match="trained with recipe 'mass-fixed', not --recipe 'other'"):
        curation_ablation.recorded_recipe(args("other"), done, {"recipe": "mass-fixed"})

"""The documentation: README.md is a manual of at most 300 lines, its results table and
benchmarks/README.md are generated from the committed ledgers (benchmarks/report.py), and every
relative link in the docs points to a file that exists."""
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

REPO = Path(__file__).resolve().parent.parent
REPORT = REPO / "benchmarks" / "report.py"
LEDGER = REPO / "benchmarks" / "results" / "curation_ablation.jsonl"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def report(*args):
    return subprocess.run([sys.executable, str(REPORT), *map(str, args)], capture_output=True, text=True,
                          cwd=REPO)


def results_block(readme: Path) -> str:
    text = readme.read_text(encoding="utf-8")
    return text[text.index(BEGIN):text.index(END)]


def test_readme_is_a_manual_of_at_most_300_lines():
    lines = (REPO / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines; move details to docs/"


def test_committed_reports_are_generated_from_the_ledgers():
    result = report("--check")
    assert result.returncode == 0, result.stderr + result.stdout


def without_compression_block(text: str) -> str:
    """``text`` without the README's generated blocks besides the results table (their links are
    relative to where the README is)."""
    for name in ("compression", "time-to-quality"):
        text = re.sub(f"<!-- {name}:begin -->.*?<!-- {name}:end -->", "", text, flags=re.S)
    return text


def copied_reports(tmp_path):
    """The committed ledgers and README in ``tmp_path`` (a test writes its own ledger over the
    committed one): ``(results, readme, out)``, report.py's --results-dir, --readme and --out."""
    results = tmp_path / "results"
    results.mkdir()
    for ledger in LEDGER.parent.glob("*.jsonl"):  # every ledger: the README has more than one generated block
        shutil.copy(ledger, results / ledger.name)
    readme, out = tmp_path / "README.md", tmp_path / "BENCHMARKS.md"
    shutil.copy(REPO / "README.md", readme)
    return results, readme, out


def test_tables_come_from_the_ledger(tmp_path):
    results, readme, out = copied_reports(tmp_path)
    paths = ["--results-dir", results, "--readme", readme, "--out", out]

    assert report(*paths).returncode == 0
    before_readme, before_out = results_block(readme), out.read_text(encoding="utf-8")
    assert report(*paths, "--check").returncode == 0
    assert "test-only-recipe" not in before_readme + before_out
    # the MASS fix against MASS as first landed, though no paired bootstrap names it (the committed ledger)
    assert "\n- `mass-fixed` against `mass-misaligned`: " in before_readme

    test = {d: {"bleu": b, "chrf": 77.7, "bleu_signature": "sig-bleu", "chrf_signature": "sig-chrf",
                "distinct": 1.0, "copied": 0.0} for d, b in (("en-fr", 98.76), ("fr-en", 97.65))}
    fake = {"arch": "smallcap_very_small", "system": "baseline", "recipe": "test-only-recipe",
            "en-fr": 98.76, "fr-en": 97.65, "mean": (98.76 + 97.65) / 2, "test": test,
            "finetune_wall_s": 60.0, "valid_bleu": [[200, 50.0]], "command": "python reproduce-the-fake-run.py",
            "recorded": {"date": "2000-01-01", "commit": "0000000"}}
    # a higher mean on one seed only: listed after the recipes measured on 3 seeds
    anecdote = {**fake, "seed": 7, "recipe": "test-only-anecdote", "en-fr": 99.9, "fr-en": 99.9, "mean": 99.9,
                "command": "python reproduce-the-anecdote.py"}
    # the fake recipe paired with a fake base recipe of the same seeds, whose means are 90, 91, 93:
    # differences 8.205, 7.205, 5.205, mean 6.8717, sd 1.5275, 95% t (2 df, 4.3027) half width
    # 3.7946 by hand -> +6.87 [+3.08, +10.67]; the largest bootstrap p value is 0.004
    bootstrap = {"against": "test-only-base", **{d: {"bleu": {"p_value": p}, "chrf": {"p_value": 0.001}}
                                                 for d, p in (("en-fr", 0.002), ("fr-en", 0.004))}}
    base = [{**fake, "recipe": "test-only-base", "seed": seed, "en-fr": m, "fr-en": m, "mean": m,
             "command": "python reproduce-the-base.py"} for seed, m in ((7, 90.0), (8, 91.0), (9, 93.0))]
    # curation on the base recipe: `all` on its 3 seeds (91, 91, 94 against 90, 91, 93: differences
    # +1, 0, +1, mean 0.667, sd 0.5774, half width 4.3027 x 0.5774 / sqrt 3 = 1.434 by hand), `static`
    # on 2 seeds only (no line: fewer than 3)
    curated = [{**b, "system": "all", "en-fr": m, "fr-en": m, "mean": m} for b, m in zip(base, (91.0, 91.0, 94.0))]
    curated += [{**b, "system": "static", "en-fr": 99.0, "fr-en": 99.0, "mean": 99.0} for b in base[:2]]
    # curation on the fake recipe, above its baseline: the recipe's row shows it, and the recipe's step
    # against the base recipe is still measured on the baselines of both
    # (each seed with its paired bootstrap against that baseline: the largest p, 0.2, is the line's)
    against_baseline = {d: {"bleu": {"p_value": p}, "chrf": {"p_value": 0.01}} for d, p in (("en-fr", 0.2), ("fr-en", 0.03))}
    curated += [{**fake, "seed": s, "system": "all", "en-fr": 98.5, "fr-en": 98.5, "mean": 98.5,
                 "paired_bs_vs_baseline": against_baseline} for s in (7, 8, 9)]
    with open(results / LEDGER.name, "a", encoding="utf-8") as f:
        # where each pair started fine-tuning: one MASS checkpoint, each its own, not recorded
        starts = {7: {"same_mass_checkpoint": True}, 8: {"same_mass_checkpoint": False}, 9: {}}
        for record in (*({**fake, "seed": s, "paired_bs_vs_recipe": {**bootstrap, **starts[s]}} for s in (7, 8, 9)),
                       anecdote, *base, *curated):
            f.write(json.dumps(record) + "\n")

    stale = report(*paths, "--check")  # the committed files no longer match the ledger
    assert stale.returncode == 1
    assert len(stale.stderr.strip().splitlines()) == 1 and "report.py" in stale.stderr

    assert report(*paths).returncode == 0
    after_readme, after_out = results_block(readme), out.read_text(encoding="utf-8")
    assert after_readme != before_readme and after_out != before_out
    # the best recipe now is the fake one: its scores and its recorded command fill the README's table
    rows = [line for line in after_readme.splitlines() if line.startswith("| `")]
    assert rows[0] == ("| `test-only-recipe` | `smallcap_very_small` | all | 3 (seeds 7, 8, 9) | 98.50 ± 0.00 | "
                       "98.50 ± 0.00 | 98.50 ± 0.00 | 77.70 ± 0.00 | 77.70 ± 0.00 |"), rows
    assert any(r.startswith("| `test-only-anecdote` |") for r in rows[1:])
    assert "python reproduce-the-fake-run.py" in after_readme and "reproduce-the-anecdote" not in after_readme
    (step,) = [line for line in after_readme.splitlines() if line.startswith("- `test-only-recipe` against")]
    assert step.startswith("- `test-only-recipe` against `test-only-base`: +6.87 [+3.08, +10.67] (3 seeds: ") and \
        step.endswith("; paired bootstrap p ≤ 0.004"), step
    (curation,) = [line for line in after_readme.splitlines() if "(`test-only-base`" in line]
    assert curation.startswith("- curation `all` against `baseline` (`test-only-base`, `smallcap_very_small`): "
                               "+0.67 [-0.77, +2.10] (3 seeds: ") and curation.endswith(")"), curation
    (curation,) = [line for line in after_readme.splitlines() if "(`test-only-recipe`" in line]
    assert curation.endswith("(3 seeds: +0.29, +0.29, +0.29); paired bootstrap p ≤ 0.200"), curation
    assert "### Recipe `test-only-recipe`" in after_out and "98.76" in after_out
    for seed, start in ((7, "one MASS checkpoint"), (8, "each its own MASS"), (9, "not recorded")):
        assert (f"| `smallcap_very_small` | {seed} | baseline | test-only-base | {start} | "
                "0.002 | 0.004 | 0.001 | 0.001 |") in after_out, seed
    # the rest of the README is left as it was (the compression block is generated too: its links
    # are relative to where the README is)
    text = without_compression_block(readme.read_text(encoding="utf-8"))
    original = without_compression_block((REPO / "README.md").read_text(encoding="utf-8"))
    assert text[:text.index(BEGIN)] == original[:original.index(BEGIN)]
    assert text[text.index(END):] == original[original.index(END):]
    assert report(*paths, "--check").returncode == 0


def test_time_to_quality_tables_from_the_ledger(tmp_path):
    """A made-up 3-seed time-to-quality record fills the README's block and benchmarks/README.md:
    the ratios as time_to_quality.py wrote them, ours' test scores as mean ± std over the seeds."""
    results, readme, out = copied_reports(tmp_path)
    paths = ["--results-dir", results, "--readme", readme, "--out", out]

    def scores(en_fr, fr_en):
        return {d: {"bleu": b, "chrf": b * 3, "bleu_signature": "sig-bleu", "chrf_signature": "sig-chrf"}
                for d, b in (("en-fr", en_fr), ("fr-en", fr_en))}

    ours = ("ours-s1", "ours-s2", "ours-s3")
    # anchor reaches its level 1.20 at 80.2 min; ours at 6.1, 7.0, 8.4 -> 13.148, 11.457, 9.548;
    # mean 11.384, sample std 1.801 (by hand)
    record = {"benchmark": "time_to_quality", "recipe": "test-only-ttq", "command": "python reproduce-the-ttq.py",
              "git_commit": "0123456789", "date": "2000-01-02T00:00:00+00:00", "machine": "test machine",
              "omp_num_threads": "2", "setup": {"side_by_side": True, "threads_per_system": 1, "ours_lr": 0.002},
              "figures": {"budget_minutes": 86, "ours_budget_minutes": 10, "checkpoint_minutes": 5,
                          "ours_checkpoint_minutes": 1, "anchor_seed": 4,
                          "ours_seeds": {name: i + 1 for i, name in enumerate(ours)},
                          "curves": {"anchor": [{"minutes": 80.2, "bleu": 1.2}, {"minutes": 86.1, "bleu": 1.2}],
                                     **{name: [{"minutes": m, "bleu": 1.5}] for name, m in zip(ours, (6.1, 7.0, 8.4))}},
                          "anchor_level": 1.2,
                          "minutes_to_level": {"anchor": 80.217, "ours-s1": 6.1, "ours-s2": 7.0, "ours-s3": 8.4},
                          "ratios": {name: {"ratio": r, "kind": "exact (to the checkpoint interval)"}
                                     for name, r in zip(ours, (13.148, 11.457, 9.548))},
                          "ratio_anchor_over_ours": 9.548, "ratio_kind": "exact (to the checkpoint interval)",
                          "ratio_range": [8.95, 12.3],
                          "ratio_mean": 11.384, "ratio_std": 1.801, "ratio_ci95": [6.91, 15.858],
                          "test": {"anchor": {"last": scores(1.11, 1.22)},
                                   **{name: {"last": scores(b, b + 1)} for name, b in zip(ours, (5.0, 6.0, 7.0))}}}}
    (results / "time_to_quality.jsonl").write_text(json.dumps(record) + "\n", encoding="utf-8")

    result = report(*paths)
    assert result.returncode == 0, result.stderr
    text = readme.read_text(encoding="utf-8")
    block = text[text.index("<!-- time-to-quality:begin -->"):text.index("<!-- time-to-quality:end -->")]
    assert "| fairseq `online_backtranslation` | 86 | 1 (seed 4) | 80.2 | 1.11 | 1.22 | 3.33 | 3.66 |" in block
    assert ("| ours, `test-only-ttq`, lr 0.002 | 10 | 3 (seeds 1, 2, 3) | 6.1, 7.0, 8.4 | 6.00 ± 1.00 | 7.00 ± 1.00 | "
            "18.00 ± 3.00 | 21.00 ± 3.00 |") in block
    assert ("**9.55, the smallest of 3 seeds (between 8.95 and 12.30 within the checkpoint intervals); per seed "
            "13.15, 11.46, 9.55; mean 11.38 ± 1.80, 95% t interval [6.91, 15.86]**") in block
    assert "python reproduce-the-ttq.py" in block and "val BLEU 1.20" in block and "side by side, 1 thread each" in block
    bench = out.read_text(encoding="utf-8")
    assert ("| `test-only-ttq`, lr 0.002 | 86, 10 | 3 (seeds 1, 2, 3) | 1.20 | 80.2 | 6.1, 7.0, 8.4 | 9.55, the smallest of 3 "
            "seeds") in bench
    assert "checkpoints every 5 min (anchor) and 1 min (ours)" in bench
    assert "| 2000-01-02 | ours-s2 | 7.0: 1.50 |" in bench
    assert report(*paths, "--check").returncode == 0


def test_compression_block_has_the_newest_record_of_each_model(tmp_path):
    """The README's compression block: one row group per model, from that model's newest record
    (a record's model: setup.arch, or before that was kept, the ARCH/seedN directory of its
    checkpoint), the anchor, ct2-int8, the Pareto variants (✱) and the fine-tuned ones, speeds against the same
    record's fairseq-generate."""
    results, readme, out = copied_reports(tmp_path)

    committed = json.loads((LEDGER.parent / "compression.jsonl").read_text(encoding="utf-8").splitlines()[-1])

    def record(checkpoint, arch, fp32_speed, int8_speed, bleu, command):
        r = json.loads(json.dumps(committed))  # a real record's fields, these figures
        r.update(command=command, git_commit="0123456789", date="2000-01-02")
        r["setup"].update(checkpoint=checkpoint, threads=[1], ct2_layout="inter")
        r["setup"].pop("arch", None)
        if arch:
            r["setup"]["arch"] = arch
        r["figures"]["pareto"] = ["ct2-int8", "fairseq-fp32"]
        for name, v in r["figures"]["variants"].items():  # (none fine-tuned, whatever the newest record has)
            v.update(size_mb=4.0 if name == "ct2-int8" else 12.0, fidelity=100.0 if name == "fairseq-fp32" else 90.0,
                     fine_tuned=False)
            v["speed"]["t1.b32.beam1"]["tokens_per_s"] = {"fairseq-fp32": fp32_speed, "ct2-int8": int8_speed}.get(name, 1.0)
            v["test"]["en-fr"]["bleu"], v["test"]["fr-en"]["bleu"] = bleu, bleu + 1
        return r

    records = [record("/runs/x/smallcap_very_small/seed1/ckpt/checkpoint_best.pt", None, 100.0, 300.0, 5.0,
                      "python old-very-small"),  # no setup.arch: the model is read from the path
               record("/runs/small/bt/checkpoint_best.pt", "smallcap_small", 50.0, 400.0, 9.0, "python small"),
               record("/elsewhere/checkpoint_best.pt", "smallcap_very_small", 200.0, 1000.0, 7.0, "python new-very-small")]
    pruned = dict(json.loads(json.dumps(records[2]["figures"]["variants"]["fairseq-fp32"])), fine_tuned=True)
    pruned["speed"]["t1.b32.beam1"]["tokens_per_s"] = 190.0
    records[2]["figures"]["variants"]["prune-0.5"] = pruned  # not on the frontier, fine-tuned: shown
    records[2]["figures"]["pareto"] = ["fairseq-fp32"]  # ct2-int8 off the frontier: shown all the same
    (results / "compression.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    result = report("--results-dir", results, "--readme", readme, "--out", out)
    assert result.returncode == 0, result.stderr
    text = readme.read_text(encoding="utf-8")
    block = text[text.index("<!-- compression:begin -->"):text.index("<!-- compression:end -->")]
    rows = [line for line in block.splitlines() if line.startswith("| `")]
    assert rows == ["| `smallcap_very_small` | `fairseq-fp32 ✱` | 12.00 | 200 (1.00×) | 7.00 | 8.00 | 100.0 |",
                    "| `smallcap_very_small` | `ct2-int8` | 4.00 | 1,000 (5.00×) | 7.00 | 8.00 | 90.0 |",
                    "| `smallcap_very_small` | `prune-0.5 (fine-tuned)` | 12.00 | 190 (0.95×) | 7.00 | 8.00 | 100.0 |",
                    "| `smallcap_small` | `fairseq-fp32 ✱` | 12.00 | 50 (1.00×) | 9.00 | 10.00 | 100.0 |",
                    "| `smallcap_small` | `ct2-int8 ✱` | 4.00 | 400 (8.00×) | 9.00 | 10.00 | 90.0 |"], rows
    assert "python new-very-small\npython small\n```" in block and "old-very-small" not in block
    bench = out.read_text(encoding="utf-8")
    assert "### `smallcap_very_small`, 2000-01-02" in bench and "### `smallcap_small`, 2000-01-02" in bench


LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|!\[[^\]]*\]\(([^)\s]+)\)")


def relative_links(path: Path):
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # (code blocks hold no links)
    for match in LINK.finditer(text):
        target = match.group(1) or match.group(2)
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue  # a URL, or an anchor in the same file
        yield unquote(target.split("#", 1)[0])


def test_relative_links_point_to_existing_files():
    docs = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "benchmarks" / "README.md",
            *sorted((REPO / "examples").glob("*/README.md"))]
    broken = [f"{path.relative_to(REPO)}: {target}" for path in docs for target in relative_links(path)
              if not (path.parent / target).exists()]
    assert not broken, "broken links:\n" + "\n".join(broken)
    assert any(True for _ in relative_links(REPO / "README.md"))

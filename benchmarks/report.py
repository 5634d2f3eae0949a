"""The benchmark report: ``benchmarks/README.md`` and the results table of the top-level
``README.md``, generated from the committed ledgers ``benchmarks/results/*.jsonl``.

    python benchmarks/report.py            # rewrite both files
    python benchmarks/report.py --check    # exit 1 if either differs from what it would write

No figure in either file is typed by hand: every number comes from a ledger record. The README's
table sits between the lines ``<!-- results:begin -->`` and ``<!-- results:end -->``; the rest of
the README is left alone. ``--results-dir``, ``--readme`` and ``--out`` point the script at other
files (the tests run it on copies). Each file is written to a temporary file beside it and renamed.
"""
import argparse
import contextlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path

from curation_ablation import (DEFAULT_RECIPE, LEGACY_RECIPE, SYSTEMS, report_diagnostics,  # (beside this script)
                               report_paired, table_order)
from curation_ablation import recipe as recipe_of
from compression import newest_by_arch, record_arch
from demo_record import MASS_SHARE, RECIPE_LR, split_lr
from scoring import format_paired, mean_std, paired_differences

BENCHMARKS = Path(__file__).resolve().parent
REPO = BENCHMARKS.parent
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
COMPRESSION_BEGIN, COMPRESSION_END = "<!-- compression:begin -->", "<!-- compression:end -->"
TTQ_BEGIN, TTQ_END = "<!-- time-to-quality:begin -->", "<!-- time-to-quality:end -->"
TTQ_PLOT = REPO / "docs" / "time_to_quality.png"
TTQ_PLOT_COMMAND = ("`python benchmarks/time_to_quality.py --plot-only benchmarks/results/time_to_quality.jsonl "
                    "--plot docs/time_to_quality.png`")
PLOT = REPO / "docs" / "ablation_valid_bleu.png"
DIRECTIONS = (("en-fr", "en→fr"), ("fr-en", "fr→en"))
MIN_SEEDS = 3  # the README's best recipe is measured on at least this many seeds (issue 20)

# What each recipe of the curation ablation's ledger is (the ledger names it; records without a
# name are LEGACY_RECIPE's). A recipe not listed here is reported without a description.
RECIPES = {
    LEGACY_RECIPE: "MASS pretraining whose decoder input was misaligned (x[j-2] instead of x[j-1] at "
                   "span position j: the decoder never saw the previous token), the code before issue 20. "
                   "Superseded; kept only for comparison with the fixed recipes.",
    "mass-fixed": "MASS with a teacher-forced decoder (x[j-1] at span position j), then DAE + online "
                  "back-translation: the foundation recipe as it is now.",
    "mass-fixed+emb128": "`mass-fixed` with its embedding tables initialised from skip-gram subword "
                         "embeddings of both languages (`smallcap-embeddings --dim 128`, then "
                         "`--init-embeddings` for MASS and fine-tuning); `examples/multi30k/demo.sh` "
                         "follows it within a training-time budget.",
    "mass-fixed+emb128+shared": "`mass-fixed+emb128` with one embedding table for the encoder, the decoder "
                                "and the output projection (`--share-all-embeddings`, as in Lample et al. "
                                "2018b and the anchor run), in MASS and fine-tuning.",
    "mass-fixed+emb128+bt-top10": "`mass-fixed+emb128` fine-tuned with back-translations sampled from the 10 "
                                  "most likely tokens (`--bt-sampling-topk 10`, Edunov et al. 2018) instead of "
                                  "greedy ones, from the same MASS checkpoints (`curation_ablation.py "
                                  "--mass-from`).",
    "mass-fixed+emb128+shared-m900-lr0.001": "`mass-fixed+emb128+shared` at the updates the 86-minute demo "
                                             "reaches (900 MASS, 800 fine-tuning), lr 0.001 in both "
                                             "stages: the reference of the learning-rate comparison.",
    "mass-fixed+emb128+shared-m900-lr0.002": "`mass-fixed+emb128+shared-m900-lr0.001` at lr 0.002 in both "
                                             "stages (demo.sh's rate), each seed paired with "
                                             "that recipe's run of the seed (`curation_ablation.py "
                                             "--paired-with`; each trains its own MASS).",
}
M900_DATA = ("smallcap-prepare --multi30k --dest runs/m900-lr0.001/data --vocab-size 8000   # the script's data stage\n"
             "smallcap-embeddings runs/m900-lr0.001/data --dim 128 --threads 1 --out runs/emb128.vec\n")


def lr_recipe_command(rate: str) -> str:
    """curation_ablation.py's command for the recipe ``mass-fixed+emb128+shared-m900-lr{rate}``
    (a rate other than 0.001 paired with the runs at 0.001)."""
    paired = "" if rate == "0.001" else " --paired-with runs/m900-lr0.001"
    return (f"python benchmarks/curation_ablation.py --work runs/m900-lr{rate} --archs smallcap_very_small --seeds 1,2,3 \\\n"
            "    --mass-updates 900 --updates 800 --validate-every 200 --systems baseline --cpu \\\n"
            f"    --extra \"--validate-interval 1000000 --init-embeddings runs/emb128.vec --share-all-embeddings --lr {rate}\" \\\n"
            f"    --recipe mass-fixed+emb128+shared-m900-lr{rate}{paired} --results-log benchmarks/results/curation_ablation.jsonl")


# The command that reproduces each recipe, all its seeds at once: the README shows it;
# benchmarks/README.md shows the commands the records hold (these where a record holds none).
RECIPE_COMMANDS = {
    "mass-fixed": (
        "python benchmarks/curation_ablation.py --work runs/mass-fixed --archs smallcap_very_small --seeds 1 \\\n"
        "    --mass-updates 1752 --updates 800 --validate-every 200 --systems baseline --cpu \\\n"
        "    --extra \"--validate-interval 1000000\" --recipe mass-fixed \\\n"
        "    --results-log benchmarks/results/curation_ablation.jsonl"),
    "mass-fixed+emb128": (
        "smallcap-prepare --multi30k --dest runs/emb128/data --vocab-size 8000   # the script's data stage\n"
        "smallcap-embeddings runs/emb128/data --dim 128 --threads 1 --out runs/emb128.vec\n"
        "python benchmarks/curation_ablation.py --work runs/emb128 --archs smallcap_very_small --seeds 1,2,3 \\\n"
        "    --mass-updates 1752 --updates 800 --validate-every 200 --systems baseline --cpu \\\n"
        "    --extra \"--validate-interval 1000000 --init-embeddings runs/emb128.vec\" --recipe mass-fixed+emb128 \\\n"
        "    --results-log benchmarks/results/curation_ablation.jsonl"),
    "mass-fixed+emb128+shared": (
        "smallcap-prepare --multi30k --dest runs/shared/data --vocab-size 8000   # the script's data stage\n"
        "smallcap-embeddings runs/shared/data --dim 128 --threads 1 --out runs/emb128.vec\n"
        "python benchmarks/curation_ablation.py --work runs/shared --archs smallcap_very_small --seeds 1,2,3 \\\n"
        "    --mass-updates 1752 --updates 800 --validate-every 200 --systems baseline --cpu \\\n"
        "    --extra \"--validate-interval 1000000 --init-embeddings runs/emb128.vec --share-all-embeddings\" \\\n"
        "    --recipe mass-fixed+emb128+shared --results-log benchmarks/results/curation_ablation.jsonl"),
    "mass-fixed+emb128+shared-m900-lr0.001": M900_DATA + lr_recipe_command("0.001"),
    "mass-fixed+emb128+shared-m900-lr0.002": M900_DATA + lr_recipe_command("0.001") + "\n" + lr_recipe_command("0.002"),
}


class ReportError(Exception):
    """A ledger or file this script cannot use; reported in one line."""


# ---------------------------------------------------------------------------------------------
# reading


def read_ledger(path: Path):
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ReportError(f"{path}:{number}: not a JSON record ({error})")
    return records


def ablation_rows(path: Path):
    rows = read_ledger(path)
    for number, r in enumerate(rows, 1):
        missing = [k for k in ("arch", "seed", "system", "en-fr", "fr-en", "mean") if k not in r]
        if missing:
            raise ReportError(f"{path}: record {number} lacks {', '.join(missing)}")
        if r["system"] not in SYSTEMS:
            raise ReportError(f"{path}: record {number}: unknown system {r['system']!r} (known: {', '.join(SYSTEMS)})")
    return sorted(rows, key=table_order)


# ---------------------------------------------------------------------------------------------
# statistics


def groups_of(rows):
    """(recipe, arch, system) -> its runs, in first-seen order."""
    groups = {}
    for r in rows:
        groups.setdefault((recipe_of(r), r["arch"], r["system"]), []).append(r)
    return groups


def fmt(values) -> str:
    """``3.49 ± 1.37`` over several seeds, ``3.49`` for one."""
    s = mean_std(values)
    return f"{s['mean']:.2f}" + (f" ± {s['std']:.2f}" if s["std"] is not None else "")


def chrf_values(runs, direction):
    values = [r["test"][direction]["chrf"] for r in runs if r.get("test", {}).get(direction)]
    return values if len(values) == len(runs) else None


def seeds_text(runs) -> str:
    seeds = sorted(r["seed"] for r in runs)
    return f"{len(seeds)} (seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))})"


def group_mean(runs) -> float:
    return mean_std([r["mean"] for r in runs])["mean"]


def recipe_order(rows):
    """Recipes, the current ones first (best mean first), the legacy one last."""
    best = {}
    for (name, _arch, _system), runs in groups_of(rows).items():
        best[name] = max(best.get(name, float("-inf")), group_mean(runs))
    return sorted(best, key=lambda n: (n == LEGACY_RECIPE, -best[n], n))


def best_groups(rows):
    """Per recipe, its best (arch, system) by mean test BLEU over seeds; best first among those
    with at least MIN_SEEDS seeds, then the others, best first; the legacy recipe (MASS as first
    landed) last, as where the recipes started."""
    def rank(key, runs):  # a group measured on MIN_SEEDS seeds before a higher mean on fewer; the
        # legacy recipe's baseline, the starting point, before its curation systems
        return len(runs) >= MIN_SEEDS, key[0] == LEGACY_RECIPE and key[2] == "baseline", group_mean(runs)

    best = {}
    for key, runs in groups_of(rows).items():
        if key[0] not in best or rank(key, runs) > rank(*best[key[0]]):
            best[key[0]] = (key, runs)
    # recipes measured on MIN_SEEDS seeds first: a higher mean over fewer seeds is an anecdote
    return sorted(best.values(), key=lambda kv: (kv[0][0] == LEGACY_RECIPE, len(kv[1]) < MIN_SEEDS,
                                                 -group_mean(kv[1]), kv[0]))


def record_command(record):
    """The command a ledger record was made by (curation_ablation keeps it under ``recorded``)."""
    return record.get("command") or (record.get("recorded") or {}).get("command")


def commands_of(name, runs):
    """(lines, recorded): the distinct commands the runs' records hold, and the recipe's own command
    (RECIPE_COMMANDS, with the steps it needs first) for the seeds whose record holds none."""
    ordered = sorted(runs, key=lambda r: r["seed"])
    recorded = list(dict.fromkeys(record_command(r) for r in ordered if record_command(r)))
    missing = [str(r["seed"]) for r in ordered if not record_command(r)]
    lines = list(recorded)
    if missing and name in RECIPE_COMMANDS:
        if recorded:
            lines.append(f"# seed{'s' if len(missing) > 1 else ''} {', '.join(missing)}: no command in the "
                         "record; the recipe's:")
        lines.append(RECIPE_COMMANDS[name])
    return lines, bool(recorded)


def signatures(runs):
    for r in runs:
        test = r.get("test", {}).get("en-fr")
        if test:
            return test["bleu_signature"], test["chrf_signature"]
    return None


def signed(value: float) -> str:
    return "±0.00" if round(value, 2) == 0 else f"{value:+.2f}"


def against_recipe(run):
    """The recipe a run's record was compared with by sacreBLEU's paired bootstrap, if any."""
    return (run.get("paired_bs_vs_recipe") or {}).get("against")


def seed_means(rows, name, arch, system):
    """{seed: mean BLEU of both directions} of one recipe's runs of one size and system."""
    return {r["seed"]: r["mean"] for r in rows if (recipe_of(r), r["arch"], r["system"]) == (name, arch, system)}


def recipe_comparisons(rows):
    """Per-seed paired differences of each run group against the recipe its records name in
    ``paired_bs_vs_recipe`` (the legacy recipe is compared by curation_ablation.report_paired)."""
    lines = []
    for (name, arch, system), runs in groups_of(rows).items():
        for other in dict.fromkeys(filter(None, map(against_recipe, runs))):
            if other != LEGACY_RECIPE:
                paired = paired_differences(seed_means(rows, other, arch, system), seed_means(rows, name, arch, system))
                if paired["seeds"]:
                    lines.append(f"| {name} | {arch} | {system} | {other} {system} | {format_paired(paired)} |")
    return lines


# where the two runs of a pair started fine-tuning (curation_ablation.py's same_mass_checkpoint):
# from one MASS checkpoint (--mass-from), or each from its own (--paired-with); older records: unsaid
STARTS = {True: "one MASS checkpoint", False: "each its own MASS", None: "not recorded"}


def bootstrap_table(runs):
    """sacreBLEU paired bootstrap of runs against another recipe's run of the same seed, with
    where the pair started fine-tuning."""
    lines = []
    for r in runs:
        pbs = r.get("paired_bs_vs_recipe")
        if pbs and all(d in pbs for d, _ in DIRECTIONS):
            p = [f"{pbs[d][metric]['p_value']:.3f}" for metric in ("bleu", "chrf") for d, _ in DIRECTIONS]
            lines.append(f"| `{r['arch']}` | {r['seed']} | {r['system']} | {pbs['against']} | "
                         f"{STARTS[pbs.get('same_mass_checkpoint')]} | " + " | ".join(p) + " |")
    if not lines:
        return []
    return ["", "sacreBLEU paired bootstrap against another recipe's run of the same seed (p values):", "",
            "| model | seed | system | against | fine-tuned from | BLEU en→fr | BLEU fr→en | chrF en→fr | chrF fr→en |",
            "|---|---|---|---|---|---|---|---|---|", *lines]


def captured(function, *args) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        function(*args)
    return out.getvalue().strip()


def link(target: Path, start: Path) -> str:
    return Path(os.path.relpath(target, start)).as_posix()


# ---------------------------------------------------------------------------------------------
# the README's results table


def largest_p(tests) -> str:
    """``; paired bootstrap p ≤ P``: the largest sacreBLEU paired-bootstrap p value of ``tests``
    (direction -> metric -> test, one per seed) over their directions, BLEU and chrF ("" without any)."""
    p_values = [test[d][metric]["p_value"] for test in tests for d, _ in DIRECTIONS if d in test
                for metric in ("bleu", "chrf")]
    return f"; paired bootstrap p ≤ {max(p_values):.3f}" if p_values else ""


def comparison_lines(rows, name, arch, system, runs):
    """A recipe against each recipe its records were paired with (``paired_bs_vs_recipe``; the
    default recipe, whose MASS fix has no paired bootstrap, against the legacy one): the per-seed
    paired difference of the mean BLEU with its 95% interval, and the largest sacreBLEU
    paired-bootstrap p value over its seeds, directions and metrics."""
    lines = []
    others = [*filter(None, map(against_recipe, runs)), *([LEGACY_RECIPE] if name == DEFAULT_RECIPE else [])]
    for other in dict.fromkeys(others):
        paired = paired_differences(seed_means(rows, other, arch, system), seed_means(rows, name, arch, system))
        if not paired["seeds"]:
            continue
        bootstrap = largest_p([r["paired_bs_vs_recipe"] for r in runs if against_recipe(r) == other])
        lines.append(f"- `{name}` against `{other}`: {format_paired(paired)}{bootstrap}")
    return lines


def curation_lines(rows) -> list:
    """Each curation system against the baseline of its recipe and size, on the seeds both have
    (at least MIN_SEEDS): the per-seed difference of the mean BLEU with its 95% interval."""
    lines = []
    for (name, arch, system), runs in sorted(groups_of(rows).items()):
        if system == "baseline":
            continue
        paired = paired_differences(seed_means(rows, name, arch, "baseline"), seed_means(rows, name, arch, system))
        if len(paired["seeds"]) >= MIN_SEEDS:
            tests = [r.get("paired_bs_vs_baseline") or {} for r in runs if r["seed"] in paired["seeds"]]
            complete = all(d in t for t in tests for d, _ in DIRECTIONS)  # every seed's outputs kept, both sides
            bootstrap = largest_p(tests) if complete else ""
            lines.append(f"- curation `{system}` against `baseline` (`{name}`, `{arch}`): {format_paired(paired)}"
                         f"{bootstrap}")
    return lines


def readme_results(rows, ledger_link: str, bench_link: str) -> str:
    lines = ["<!-- generated by benchmarks/report.py from the ledger; do not edit by hand -->"]
    chosen = best_groups(rows)
    if not chosen:
        return "\n".join(lines + ["No run has been recorded in the ledger yet."])
    lines += ["| recipe | model | system | seeds | BLEU, mean of both ways | en→fr BLEU | fr→en BLEU | en→fr chrF "
              "| fr→en chrF |",
              "|---|---|---|---|---|---|---|---|---|"]
    for (name, arch, system), runs in chosen:
        cells = [fmt([r["mean"] for r in runs])] + [fmt([r[d] for r in runs]) for d, _ in DIRECTIONS]
        for d, _ in DIRECTIONS:
            values = chrf_values(runs, d)
            cells.append(fmt(values) if values else "–")
        lines.append(f"| `{name}` | `{arch}` | {system} | {seeds_text(runs)} | " + " | ".join(cells) + " |")
    (name, arch, system), runs = chosen[0]
    sig = signatures(runs)
    lines += ["", "Multi30k test_2016_flickr, unsupervised split; the checkpoint with the best validation "
              "BLEU, beam 4; mean ± std over seeds where there are several. "
              + (f"sacreBLEU `{sig[0]}`, chrF `{sig[1]}`. " if sig else "")
              + ("A single seed measures no spread between runs. " if any(len(g[1]) == 1 for g in chosen) else "")
              + (f"Recipes with fewer than {MIN_SEEDS} seeds come after those with {MIN_SEEDS} or more, "
                 "whatever their mean. " if any(len(g[1]) < MIN_SEEDS for g in chosen) else "")
              + f"One row per recipe, its best system (among those measured on {MIN_SEEDS} seeds or more, if "
              f"any); MASS as first landed (`{LEGACY_RECIPE}`, its baseline) last. Every run and recipe, with the "
              f"diagnostics: [benchmarks/README.md]({bench_link}); the records: [the ledger]({ledger_link})."]
    groups = groups_of(rows)
    baselines = [((recipe, size, "baseline"), groups.get((recipe, size, "baseline"), []))
                 for (recipe, size, _system), _runs in chosen]
    steps = [line for key, group in baselines if len(group) >= MIN_SEEDS  # each step of the recipe: a
             for line in comparison_lines(rows, *key, group)] + curation_lines(rows)  # recipe's baselines
    if steps:
        lines += ["", "Each step on the seeds both sides have (per-seed difference of the mean BLEU, 95% t interval; "
                  "the sacreBLEU paired bootstrap where both sides' outputs are kept: the largest p over seeds, "
                  "directions, BLEU and chrF):", "", *steps]
    if name in RECIPE_COMMANDS:
        commands, source = [RECIPE_COMMANDS[name]], ("every seed; the command each record was made by is in "
                                                     f"[benchmarks/README.md]({bench_link})")
    else:
        commands, _ = commands_of(name, runs)
        source = "the ledger records' command"
    if commands:
        lines += ["", f"Reproduce `{name}` ({source}):", "", "```bash", *commands, "```"]
    return "\n".join(lines)


def splice_readme(text: str, block: str, path: Path, begin: str = BEGIN, end: str = END) -> str:
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise ReportError(f"{path}: needs exactly one {begin} line followed by one {end} line")
    head, rest = text.split(begin, 1)
    _old, tail = rest.split(end, 1)
    return f"{head}{begin}\n{block}\n{end}{tail}"


def readme_compression(records, ledger_link: str, bench_link: str) -> str:
    """The README's compression block: the anchor, ct2-int8 (what ships), the Pareto frontier and
    every fine-tuned variant (pruned, structured, factorised, the dense-ft control) of the newest
    compression record of each model (in the order the models first appear in the ledger)."""
    lines = ["<!-- generated by benchmarks/report.py from the ledger; do not edit by hand -->"]
    if not records:
        return "\n".join(lines + ["No compression run recorded yet (`benchmarks/compression.py`)."])
    newest = newest_by_arch(records)
    threads = sorted({t for r in newest.values() for t in ((r.get("setup") or {}).get("threads") or [1])})
    described = [f"`{arch}` ({str(r.get('date', '–'))[:10]}, {(r.get('git_commit') or '–')[:7]}, "
                 f"`{(r.get('setup') or {}).get('checkpoint', '–')}`)" for arch, r in newest.items()]
    lines += [f"`ct2-int8`, the Pareto frontier (✱: size on disk, tokens/s at batch 32 greedy, mean BLEU) and the "
              f"fine-tuned variants of the newest [compression record]({ledger_link}) of each model, {', '.join(described)}, against "
              f"`fairseq-generate` fp32 in the same run (every variant and the speed grid: "
              f"[benchmarks/README.md]({bench_link})):", "",
              "| model | variant | MB | " + " | ".join(f"tokens/s, {t} thread{'s' if t > 1 else ''}" for t in threads)
              + " | BLEU en→fr | fr→en | fidelity |",
              "|---|---|---|" + "---|" * len(threads) + "---|---|---|"]
    for arch, r in newest.items():
        f = r.get("figures") or {}
        variants, pareto = f.get("variants") or {}, f.get("pareto") or []
        anchor = (variants.get("fairseq-fp32") or {}).get("speed") or {}

        def speed(v, t):
            value = ((v.get("speed") or {}).get(f"t{t}.b32.beam1") or {}).get("tokens_per_s")
            base = (anchor.get(f"t{t}.b32.beam1") or {}).get("tokens_per_s")
            return "–" if not value else f"{value:,.0f}" + (f" ({value / base:.2f}×)" if base else "")

        shown = [n for n, v in variants.items()
                 if n != "fairseq-fp32" and (n == "ct2-int8" or n in pareto or v.get("fine_tuned"))]
        for name in ["fairseq-fp32", *shown]:
            v = variants.get(name) or {}
            test = v.get("test") or {}
            bleu = [(test.get(d) or {}).get("bleu") for d in ("en-fr", "fr-en")]
            label = name + (" ✱" if name in pareto else "") + (" (fine-tuned)" if v.get("fine_tuned") else "")
            lines.append(f"| `{arch}` | `{label}` | {v.get('size_mb', 0):.2f} | "
                         + " | ".join(speed(v, t) for t in threads) + " | "
                         + " | ".join("–" if b is None else f"{b:.2f}" for b in bleu)
                         + " | " + ("–" if v.get("fidelity") is None else f"{v['fidelity']:.1f}") + " |")
    layouts = sorted({ct2_layout_text(r.get("setup") or {}) for r in newest.values()})
    lines += ["", f"MB: what translating raw text needs on disk (see benchmarks/README.md); "
              f"{'; '.join(layouts)}.", "", "```bash", *(r.get("command", "") for r in newest.values()), "```"]
    return "\n".join(lines)


def weights_mb(v):
    """A variant's weights file in MB; records made before weights_mb was kept had it as
    model_bin_mb (CTranslate2) or as size_mb (the checkpoint alone)."""
    return v.get("weights_mb") or v.get("model_bin_mb") or (v.get("size_mb") if v.get("engine") != "ct2" else None)


def weights_ratio(v, variants):
    base, mine = weights_mb(variants.get("fairseq-fp32") or {}), weights_mb(v)
    return round(base / mine, 3) if base and mine else None


def ct2_layout_text(setup) -> str:
    """How the compression record's CTranslate2 variants spent more than one thread."""
    if setup.get("ct2_layout") == "inter":
        return ("with T > 1 threads, CTranslate2 translates T batches in parallel, one thread each "
                "(`smallcap-translate --threads 1 --inter-threads T`)")
    return "with T > 1 threads, CTranslate2 runs one batch at a time on T threads (`smallcap-translate --threads T`)"


# ---------------------------------------------------------------------------------------------
# benchmarks/README.md

INTRO = """\
# Benchmarks

<!-- generated by benchmarks/report.py from benchmarks/results/*.jsonl; do not edit by hand:
     run `python benchmarks/report.py` (the test suite runs `python benchmarks/report.py --check`) -->

Every measured figure on this page is read from a committed ledger of finished runs in
[results/]({results}) by `benchmarks/report.py`, which also fills the results table of the
[top-level README]({readme}). A run's own files live in its `--work` directory, which need not
outlive a session; its ledger record (scores, validation curve, wall time, threads, date,
commit, machine, and a note where something about the run needs saying) is what stays. A
re-run replaces the record of the same recipe, size, seed and system; invocations running side by
side take turns on a lock file; a stage interrupted and run again appends to its log, so the
validation curve keeps the points from before the interruption.

## What each benchmark measures and how to run it

| script | measures | ledger |
|---|---|---|
| `curation_ablation.py` | the recipe (MASS pretraining, then DAE + online back-translation) against each curation component (`static`, `bt_filter`, `curriculum`, `back_parallel`) and all of them (`all`), per model size, seed and recipe, at equal updates; test BLEU/chrF both ways with diagnostics, validation curve, wall time | `results/curation_ablation.jsonl` (`--results-log`) |
| `kd_comparison.py` | a student alone, with word-level KD, with sequence-level KD and curated, with the teacher's cost counted; shares its stages and runs with `curation_ablation.py` (its `alone` and `curated` students are the ablation's `baseline` and `all`) | none: `WORK/kd_results.STUDENT.seedN.json` |
| `round_trip_selection.py` | whether round-trip BLEU on held-out monolingual text ranks checkpoints as parallel validation BLEU does (Spearman) | `results/round_trip_selection.jsonl` (`--results-log`) |
| `bt_speed.py` | DAE + online BT training throughput against fairseq's `online_backtranslation` on the same data, model and machine | none: `DATA/bt_speed.json` |
| `bt_profile.py` | where the time of a DAE + BT update goes: back-translation decoding (fairseq's `SequenceGenerator` against our greedy decoder) and the forward + backward passes | none (prints) |
| `fp16_cuda_check.sh` | fp16 on CUDA end to end: training with all three objectives, validation, a resume, `fairseq-generate --fp16` (needs a GPU; outside `make test`) | none (pass/fail) |
| `time_to_quality.py` | validation BLEU against wall-clock minutes for fairseq's `online_backtranslation` (the anchor) and our recipe, same machine, scored the same way; the ratio of minutes to reach the anchor's end level | `results/time_to_quality.jsonl` (`--results-log`) |
| `compression.py` | every compression variant of one checkpoint against `fairseq-generate` fp32 timed in the same run: parameters, size, peak memory, target tokens/s (threads × batch × beam), BLEU/chrF both ways, fidelity to the fp32 output, the Pareto set | `results/compression.jsonl` (`--results-log`) |
| `curation_speed.py` | `smallcap-curate`'s lines/s with the datatrove engine against the builtin process pool, same input, back to back | `results/curation_speed.jsonl` (`--results-log`) |

```bash
# the curation ablation: every stage resumes; one --work per recipe; runs are recorded in the ledger
python benchmarks/curation_ablation.py --work runs/ablation --archs smallcap_very_small --seeds 1,2,3 \\
    --mass-updates 1752 --updates 800 --validate-every 200 --systems baseline,all --cpu \\
    --results-log benchmarks/results/curation_ablation.jsonl [--recipe NAME --extra "FLAGS"]
# a recipe that changes fine-tuning only, from another WORK's MASS checkpoints (paired with its runs):
#   --mass-from runs/ablation [--finetune-extra "FLAGS"]; one that trains its own MASS, paired by seed:
#   --paired-with runs/ablation (also with --report-only, once both have finished)
python benchmarks/curation_ablation.py --work runs/ablation --report-only \\
    --results-log benchmarks/results/curation_ablation.jsonl     # tables and plot, no training
python benchmarks/kd_comparison.py --work runs/ablation --teacher-arch smallcap_small \\
    --student-arch smallcap_very_small --seed 1 --mass-updates 1752 --updates 800 --cpu
python benchmarks/round_trip_selection.py RUN_DIR --data DATA \\
    --results-log benchmarks/results/round_trip_selection.jsonl
python benchmarks/bt_speed.py --data DATA --updates 35 --skip 5 [--init-checkpoint CKPT]
python benchmarks/bt_profile.py --data DATA [--checkpoint CKPT]
bash benchmarks/fp16_cuda_check.sh DATA OUT
python benchmarks/report.py        # then this page and the README's table
```

Scores are sacreBLEU and chrF on detokenized text with their signatures (`scoring.py`), plus
two diagnostics of unsupervised MT's failure modes: the share of distinct outputs (a collapsed
model repeats itself) and the share of output words copied from the source."""

REFERENCES = """\
## Reference points (not measured here)

| system | test_2016_flickr en→fr | fr→en | source |
|---|---|---|---|
| fairseq `online_backtranslation` (DAE + BT, no pretraining; 1 + 6 layers, d = 128, 8k joint sentencepiece; 86 minutes on 2 CPU cores) | 1.55 | 1.43 | the project brief's anchor, sacreBLEU |
| Lample et al. 2018, *Unsupervised Machine Translation Using Monolingual Corpora Only* (full-size model) | 32.76 | 32.07 | the paper, Multi30k-Task1 |

The study's own WMT14 en–fr figures (Table 2) are printed next to a run's by
`examples/wmt14_enfr/run.sh`."""


def ablation_section(rows, ledger: Path, out_dir: Path) -> str:
    parts = [f"## Curation ablation and recipes: Multi30k, unsupervised split "
             f"([ledger]({link(ledger, out_dir)}), {len(rows)} runs)",
             "",
             "Test set test_2016_flickr both ways, beam 4, from the checkpoint with the best mean "
             "validation BLEU; ± is the sample standard deviation over seeds. The tables are grouped "
             "by recipe: runs of different recipes are never averaged together. Wall times are as "
             "recorded; a run that shared the machine or was interrupted and resumed says so in its "
             "record's `recorded.note`."]
    if PLOT.exists():
        parts += ["", f"Validation BLEU against updates, every run (one panel per model size; drawn by "
                      f"`curation_ablation.py --report-only`): [{PLOT.name}]({link(PLOT, out_dir)})."]
    for name in recipe_order(rows):
        runs = [r for r in rows if recipe_of(r) == name]
        parts += ["", f"### Recipe `{name}`", "", RECIPES.get(name, "(no description in benchmarks/report.py)")]
        parts += ["", "| model | system | seeds | en→fr BLEU | fr→en BLEU | mean BLEU | en→fr chrF | fr→en chrF |",
                  "|---|---|---|---|---|---|---|---|"]
        groups = groups_of(runs)
        for (_name, arch, system) in sorted(groups, key=lambda k: (k[1], SYSTEMS.index(k[2]))):
            group = groups[(_name, arch, system)]
            cells = [fmt([r[d] for r in group]) for d, _ in DIRECTIONS] + [fmt([r["mean"] for r in group])]
            for d, _ in DIRECTIONS:
                values = chrf_values(group, d)
                cells.append(fmt(values) if values else "–")
            parts.append(f"| `{arch}` | {system} | {seeds_text(group)} | " + " | ".join(cells) + " |")
        parts += ["", "Runs:", "",
                  "| model | seed | system | en→fr | fr→en | mean | Δ mean vs baseline | validation BLEU at update | "
                  "fine-tuning wall (min) | recorded |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        baseline = {(r["arch"], r["seed"]): r["mean"] for r in runs if r["system"] == "baseline"}
        for r in runs:
            key = (r["arch"], r["seed"])
            delta = signed(r["mean"] - baseline[key]) if r["system"] != "baseline" and key in baseline else ""
            curve = ", ".join(f"{u}: {b:.2f}" for u, b in r.get("valid_bleu") or [])
            wall = f"{r['finetune_wall_s'] / 60:.1f}" if r.get("finetune_wall_s") is not None else "–"
            rec = r.get("recorded") or {}
            when = ", ".join(str(rec[k]) for k in ("date", "commit") if rec.get(k)) or "–"
            parts.append(f"| `{r['arch']}` | {r['seed']} | {r['system']} | {r['en-fr']:.2f} | {r['fr-en']:.2f} | "
                         f"{r['mean']:.2f} | {delta} | {curve} | {wall} | {when} |")
        diagnostics = captured(report_diagnostics, runs)
        if diagnostics:
            parts += ["", "chrF and diagnostics (distinct: share of distinct outputs; copied: share of output "
                          "words found in the source; paired bootstrap p against the baseline where recorded):",
                      "", diagnostics.replace("\nsignatures:", "\nSignatures:")]
        else:
            parts += ["", "Signatures, chrF and diagnostics: not recorded for these runs."]
        parts += bootstrap_table(runs)
        commands, recorded = commands_of(name, runs)
        if commands:
            parts += ["", "Command" + ("s recorded in the ledger:" if recorded else
                                       " (not recorded in these ledger records; the recipe's command from "
                                       "benchmarks/report.py):"), "", "```bash", *commands, "```"]
    paired = "\n".join([captured(report_paired, rows), *recipe_comparisons(rows)]).strip()
    if paired:
        parts += ["", "### Paired by seed",
                  "",
                  "Each system against its recipe's baseline of the same size, and each current recipe's "
                  "system against the same system of the legacy recipe and of the recipe its records were compared with: the per-seed differences of the mean "
                  "BLEU, their mean and a 95% Student t interval (none with one seed).",
                  "", paired]
    return "\n".join(parts)


def round_trip_section(records, ledger: Path, out_dir: Path) -> str:
    parts = [f"## Round-trip model selection ([ledger]({link(ledger, out_dir)}), {len(records)} records)", "",
             "`benchmarks/round_trip_selection.py`: every checkpoint of one run scored on parallel validation "
             "BLEU and on round-trip BLEU of held-out monolingual sentences (greedy, mean of both "
             "languages); the rank correlation of the two, and the parallel BLEU of the checkpoint each "
             "one selects (what choosing without parallel data costs).", "",
             "| run | checkpoints | Spearman ρ (p) | selected by parallel BLEU | selected by round-trip BLEU | "
             "recorded | command |",
             "|---|---|---|---|---|---|---|"]
    for r in records:
        bleu = {c.get("checkpoint"): c.get("bleu") for c in r.get("checkpoints") or []}
        chosen = [f"{name} ({bleu[name]})" if name in bleu else str(name)
                  for name in (r.get("selected_by_parallel_bleu"), r.get("selected_by_round_trip_bleu"))]
        parts.append(f"| `{r.get('run_dir')}` | {r.get('n_checkpoints')} | {r.get('spearman_rho')} "
                     f"({r.get('spearman_p')}) | {chosen[0]} | {chosen[1]} | {r.get('date', '–')}, "
                     f"{r.get('commit', '–')} | `{r.get('command', '–')}` |")
    for r in records:
        if r.get("checkpoints"):
            parts += ["", f"`{r.get('run_dir')}`" + (f" ({r['note']})" if r.get("note") else "") + ":", "",
                      "| updates | parallel BLEU en→fr / fr→en (mean) | round-trip BLEU en / fr (mean) |",
                      "|---|---|---|"]
            for c in r["checkpoints"]:
                parts.append(f"| {c.get('num_updates')} | {c.get('bleu_en_fr')} / {c.get('bleu_fr_en')} "
                             f"({c.get('bleu')}) | {c.get('round_trip_bleu_en')} / {c.get('round_trip_bleu_fr')} "
                             f"({c.get('round_trip_bleu')}) |")
    return "\n".join(parts)


def curation_speed_section(records, ledger: Path, out_dir: Path) -> str:
    parts = [f"## Curation engines ([ledger]({link(ledger, out_dir)}), {len(records)} records)", "",
             "`smallcap-curate` on the same input with the datatrove engine (`--executor local`) and the "
             "builtin process pool, run back to back by `benchmarks/curation_speed.py`; the ratio is "
             "datatrove's lines/s over builtin's.", "",
             "| lines | workers | tasks | builtin lines/s | datatrove lines/s | ratio | same outputs | "
             "recorded | command |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        f = r.get("figures") or {}
        commit = (r.get("git_commit") or "–")[:7] + (" + uncommitted changes" if r.get("git_uncommitted") else "")
        machine = r.get("machine")
        if isinstance(machine, dict):
            machine = f"{machine.get('arch')}, {machine.get('cpus')} cores, load {(machine.get('load_avg_before') or ['?'])[0]}"
        parts.append(f"| {f.get('lines'):,} | {f.get('workers')} | {f.get('tasks')} | {f.get('builtin_lines_per_s')} | "
                     f"{f.get('local_lines_per_s')} | {f.get('ratio_datatrove_to_builtin')} | {f.get('same_outputs')} | "
                     f"{str(r.get('date', '–'))[:10]}, {commit}, {machine} | `{r.get('command', '–')}` |")
    return "\n".join(parts)


def demo_section(records, ledger: Path, out_dir: Path) -> str:
    parts = [f"## `make demo` ([ledger]({link(ledger, out_dir)}), {len(records)} records)", "",
             "`examples/multi30k/demo.sh --results-log benchmarks/results/demo.jsonl` (its recipe within a "
             "training-time budget, with embeddings of the arch's width; records made before the recipe "
             "was recorded ran `mass-fixed+emb128`, those before the seed and beam were recorded seed 1 and "
             "beam 4, those before the learning rate was recorded 0.001 unless their `--extra` gave one, those "
             "before the MASS share was recorded 0.3; a `--mass-share` other than 0.3 is written beside `--extra`'s "
             "and `--finetune-extra`'s flags), scored by "
             "`benchmarks/demo_record.py`: test_2016_flickr sacreBLEU / chrF and the share of distinct "
             "hypotheses and of copied words, each direction. Target: at least 95% distinct both ways. "
             "A finished demo re-run with another `--beam` decodes the same checkpoint again (wall: "
             "\"decoding only\"); re-run with `--paired-with` another demo's `--work` of the same seed, "
             "its record also holds sacreBLEU's paired bootstrap against that demo's translations (the "
             "largest p over the seeds is given beside the comparisons of two settings).", "",
             "| recipe | arch | minutes | seed | beam | updates (MASS + fine-tuning, decoded) | en→fr BLEU / chrF | "
             "distinct / copied | fr→en BLEU / chrF | distinct / copied | ≥ 95% distinct | wall | recorded | command |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        f = r.get("figures") or {}
        cells = []
        for pair, _ in DIRECTIONS:
            d = f.get(pair) or {}
            cells += [f"{d.get('bleu')} / {d.get('chrf')}",
                      f"{100 * d.get('distinct', 0):.1f}% / {100 * d.get('copied', 0):.1f}%"]
        wall = f"{r.get('wall_s', 0) / 60:.1f} min" + (" (decoding only)" if r.get("decoded_only") else
                                                       " (resumed)" if r.get("resumed") else "")
        parts.append(f"| {recipe_text(r)} | {r.get('arch')} | {r.get('minutes')} | "
                     f"{r.get('seed', 1)} | {r.get('beam', 4)} | {r.get('mass_updates')} + "
                     f"{r.get('finetune_updates')} ({r.get('finetune_best_updates')}) | {' | '.join(cells)} | "
                     f"{'met' if r.get('distinct_target_met') else 'not met'} | {wall} | "
                     f"{r.get('date', '–')}, {r.get('commit', '–')}, {demo_machine(r)} | "
                     f"`{r.get('command', '–')}` |")
    parts += demo_decoding_lines(records)
    parts += demo_example_lines(records)
    signatures = sorted({(f.get("bleu_signature"), f.get("chrf_signature"))
                         for r in records for f in (r.get("figures") or {}).values()} - {(None, None)})
    parts += ["", *(f"Signatures: `{b}`, `{c}`" for b, c in signatures)]
    return "\n".join(parts)


def demo_machine(record) -> str:
    """The machine a demo ran on, with its OMP_NUM_THREADS where one was set: a time budget buys a
    different number of updates on another machine or thread count (unset and the machine's core
    count are kept apart, as recorded)."""
    threads = record.get("omp_num_threads")
    return f"{record.get('machine', '–')}" + (f", OMP_NUM_THREADS={threads}" if threads else "")


def demo_example_lines(records) -> list:
    """The examples demo.sh printed (the first test sentences of each direction) of the newest beam-4
    record (demo.sh's default) of each arch and budget that holds them, longest budget first; its
    heading names its setting. A record of demo.sh's own flags (no ``--mass-share`` other than 0.3, no
    ``--extra`` but a rate, no ``--finetune-extra``) is shown before any newer one of a variant: the
    examples are what the demo gives, not the latest experiment's."""
    newest, newest_own = {}, {}
    for r in records:
        if r.get("examples") and r.get("beam", 4) == 4:
            newest[(r.get("arch"), r.get("minutes"))] = r
            if not demo_setting(r)[2]:
                newest_own[(r.get("arch"), r.get("minutes"))] = r
    newest.update(newest_own)
    lines = []
    for (arch, minutes), r in sorted(newest.items(), key=lambda item: (-(item[0][1] or 0), str(item[0][0]))):
        lines += ["", f"Examples of {arch}, {minutes} minutes ({recipe_text(r)}, seed {r.get('seed', 1)}, beam "
                      f"{r.get('beam', 4)}, {r.get('date', '–')}, {r.get('commit', '–')}, {demo_machine(r)}): the "
                      "first test sentences, as demo.sh prints them:", "",
                  "| direction | source | output | reference |", "|---|---|---|---|"]
        for pair, name in DIRECTIONS:
            for source, hypothesis, reference in r["examples"].get(pair, []):
                lines.append(f"| {name} | {cell(source)} | {cell(hypothesis)} | {cell(reference)} |")
    return lines


def cell(text: str) -> str:
    """One line of text as a markdown table cell, shown as written: ``|`` and a backslash escaped,
    ``<`` and ``>`` as entities (a hypothesis's ``<unk>`` would otherwise be dropped as a tag)."""
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def demo_setting(record) -> tuple:
    """A demo record's setting: its recipe, the learning rate both stages trained with, and its other
    flags: demo.sh's ``--mass-share`` where it is not the default 0.3, then ``--extra``'s, then its
    ``--finetune-extra``. An ``--lr`` in ``--extra`` is the same training as demo.sh giving that rate
    itself, so such records group with those; records from before the rate was recorded ran demo.sh's
    0.001 unless their ``--extra`` set one, and those from before --mass-share its 0.3."""
    extra_lr, rest = split_lr(record.get("extra"))
    lr = record.get("lr", extra_lr)
    share = record.get("mass_share", MASS_SHARE)
    rest = ([f"--mass-share {share}"] if share != MASS_SHARE else []) + rest
    if record.get("finetune_extra"):
        rest.append(f'--finetune-extra "{" ".join(record["finetune_extra"].split())}"')  # (split as demo.sh does)
    return record.get("recipe", "mass-fixed+emb128"), RECIPE_LR if lr is None else lr, " ".join(rest)


def setting_text(recipe, lr, rest) -> str:
    """A demo setting as the tables write it (without the rate when ``lr`` is None)."""
    lr_text = "" if lr is None else f", lr {format(lr, 'g') if isinstance(lr, float) else lr}"  # (a schedule: as written)
    return f"`{recipe}`{lr_text}" + (f" + `{rest}`" if rest else "")


def recipe_text(record) -> str:
    """A demo record's setting as the tables write it."""
    return setting_text(*demo_setting(record))


def demo_decoding_lines(records) -> list:
    """For each setting (recipe, learning rate, MASS share, other --extra and --finetune-extra flags,
    arch, minutes, machine and threads: a time budget buys a different number of updates on another
    machine or thread count) with records of two seeds or more: each beam size over the seeds (mean
    ± std), then each other beam size against beam 4 on the same checkpoints; each other learning
    rate against 0.001, and each setting with other flags (``--mass-share``, ``--extra``,
    ``--finetune-extra``) against demo.sh's own at its rate, at beam 4 on the same seeds (each
    trained both ways): per-seed differences with their 95% t interval of BLEU, chrF and distinct
    (percentage points). A seed's checkpoint is the one (``checkpoint_sha1``) of its latest record
    in the ledger; decodings of its earlier checkpoints are left out, and so are records without a hash."""
    groups = {}
    for r in records:
        if r.get("checkpoint_sha1"):
            groups.setdefault((*demo_setting(r), r.get("arch"), r.get("minutes"), demo_machine(r)), []).append(r)
    lines, by_setting = [], {}
    for key, group in groups.items():
        checkpoint = {r.get("seed", 1): r["checkpoint_sha1"] for r in group}  # the latest one of each seed
        decoded = {}  # seed -> beam -> its latest record of that seed's checkpoint
        for r in group:
            if r["checkpoint_sha1"] == checkpoint[r.get("seed", 1)]:
                decoded.setdefault(r.get("seed", 1), {})[r.get("beam", 4)] = r
        by_setting[key] = decoded
        if len(decoded) < 2:
            continue
        recipe, lr, rest, arch, minutes, machine = key
        setting = f"{setting_text(recipe, lr, rest)}, {arch}, {minutes} minutes on {machine}"
        beams = sorted({b for by_beam in decoded.values() for b in by_beam}, key=lambda b: (b != 4, b))
        for beam in beams:
            runs = [by_beam[beam] for _, by_beam in sorted(decoded.items()) if beam in by_beam]
            if len(runs) >= 2:
                cells = [f"{name} BLEU {fmt_known([demo_value(r, pair, 'bleu') for r in runs])}, distinct "
                         f"{fmt_known([demo_value(r, pair, 'distinct') for r in runs])}%" for pair, name in DIRECTIONS]
                lines += ["", f"{setting}, beam {beam}, seeds {', '.join(str(r.get('seed', 1)) for r in runs)} "
                              f"(mean ± std): " + "; ".join(cells) + "."]
        for beam in (b for b in beams if b != 4):
            lines += paired_demo_lines(
                f"{setting}, beam {beam}{' (greedy)' if beam == 1 else ''} minus beam 4, the same checkpoints",
                at_beam(decoded, 4), at_beam(decoded, beam))
    for (recipe, lr, rest, arch, minutes, machine), decoded in by_setting.items():
        reference = by_setting.get((recipe, RECIPE_LR, rest, arch, minutes, machine))
        if lr != RECIPE_LR and reference is not None:
            setting = f"{setting_text(recipe, None, rest)}, {arch}, {minutes} minutes on {machine}, beam 4"
            lines += paired_demo_lines(f"{setting}: lr {lr} minus lr {RECIPE_LR}, the same seeds",
                                       at_beam(reference, 4), at_beam(decoded, 4))
        plain = by_setting.get((recipe, lr, "", arch, minutes, machine))
        if rest and plain is not None:
            setting = f"{setting_text(recipe, lr, '')}, {arch}, {minutes} minutes on {machine}, beam 4"
            lines += paired_demo_lines(f"{setting}: `{rest}` minus demo.sh's own flags, the same seeds",
                                       at_beam(plain, 4), at_beam(decoded, 4))
    return lines


def at_beam(decoded, beam) -> dict:
    """seed -> its record at ``beam``, of ``decoded`` (seed -> beam -> record), for the seeds with one."""
    return {s: by_beam[beam] for s, by_beam in decoded.items() if beam in by_beam}


def paired_demo_lines(title, base, other) -> list:
    """``other`` minus ``base`` (seed -> demo record), per seed they share: BLEU, chrF and distinct of
    each direction with the 95% t interval, and the largest sacreBLEU paired-bootstrap p value over
    the seeds whose records hold one of the two decodings against the other (``demo.sh
    --paired-with``); nothing when they share no seed."""
    seeds = sorted(set(base) & set(other))
    if not seeds:
        return []
    tests = {}  # seed -> the test, held by either side (two-sided: its p is the same either way round)
    for s in seeds:
        test = bootstrap_between(other[s], base[s]) or bootstrap_between(base[s], other[s])
        if test:
            tests[s] = test
    lines = ["", f"{title} (per-seed difference, 95% t interval):", ""]
    for pair, name in DIRECTIONS:
        cells = []
        for metric in ("bleu", "chrf", "distinct"):
            values = [(s, demo_value(base[s], pair, metric), demo_value(other[s], pair, metric)) for s in seeds]
            known = [(s, b, o) for s, b, o in values if b is not None and o is not None]
            paired = paired_differences({s: b for s, b, _ in known}, {s: o for s, _, o in known})
            cells.append(f"{metric if metric != 'distinct' else 'distinct (points)'} {format_paired(paired)}")
        bootstrap = largest_p([{pair: t[pair]} for t in tests.values() if pair in t])
        if bootstrap:
            bootstrap += f" (BLEU and chrF, seed{'s' if len(tests) > 1 else ''} {', '.join(map(str, tests))})"
        lines.append(f"- {name}: " + "; ".join(cells) + bootstrap)
    return lines


def bootstrap_between(record, base):
    """The sacreBLEU paired bootstrap a demo record holds against ``base``'s decoding (the checkpoint,
    ``checkpoint_sha1``, and the beam ``base`` records), None when it holds none."""
    pbs = record.get("paired_bs_vs") or {}
    same = bool(base.get("checkpoint_sha1")) and pbs.get("checkpoint_sha1") == base.get("checkpoint_sha1") \
        and pbs.get("beam") == base.get("beam", 4)
    return pbs if same else None


def demo_value(record, pair, metric):
    """A demo record's figure (distinct in percent), None when it lacks it."""
    value = ((record.get("figures") or {}).get(pair) or {}).get(metric)
    return None if value is None else 100 * value if metric == "distinct" else value


def fmt_known(values) -> str:
    known = [v for v in values if v is not None]
    return fmt(known) + (f" (of {len(known)})" if len(known) < len(values) else "") if known else "–"


def ttq_summary(record) -> dict:
    """The figures of one time-to-quality record, for the tables: the runs of ours (one per seed;
    records before --ours-seeds have one, ``ours``), minutes to the anchor's level, the ratios and
    their bounds, the test scores of each system's last checkpoint, how the systems shared the
    machine."""
    f = record.get("figures") or {}
    setup = record.get("setup") or {}
    curves = f.get("curves") or {}
    ours = [name for name in curves if name != "anchor"]
    seeds = f.get("ours_seeds") or {}
    reach = f.get("minutes_to_level") or {}
    ratios = f.get("ratios") or {name: {"ratio": f.get("ratio_anchor_over_ours"), "kind": f.get("ratio_kind", ""),
                                        "range": f.get("ratio_range")} for name in ours}
    test = f.get("test") or {}

    def last(system, direction, metric):
        return (((test.get(system) or {}).get("last") or {}).get(direction) or {}).get(metric)

    def over(systems, direction, metric):
        """mean ± std over the systems (one: its value)"""
        values = [last(name, direction, metric) for name in systems]
        return fmt(values) if values and None not in values else "–"

    def minutes(value):
        return "never" if value is None else f"{value:.1f}"

    ratio = f.get("ratio_anchor_over_ours")
    kinds = {r.get("kind", "").split(":")[0] for r in ratios.values() if r.get("ratio") is not None}
    if ratio is None:
        ratio_text = "never reached by " + ", ".join(n for n, r in ratios.items() if r.get("ratio") is None)
    else:
        ratio_text = f"{ratio:.2f}" + (f", the smallest of {len(ours)} seeds" if len(ours) > 1 else "")
        low, high = f.get("ratio_range") or (None, None)
        if (low, high) != (None, None):
            ratio_text += (f" (between {'–' if low is None else format(low, '.2f')} and "
                           f"{'∞' if high is None else format(high, '.2f')} within the checkpoint intervals)")
    if len(ours) > 1:
        ratio_text += "; per seed " + ", ".join("never" if r.get("ratio") is None else f"{r['ratio']:.2f}"
                                                for r in ratios.values())
        if "ratio_mean" in f:
            ratio_text += f"; mean {f['ratio_mean']:.2f} ± {f['ratio_std']:.2f}"
            if f.get("ratio_ci95"):
                ratio_text += f", 95% t interval [{f['ratio_ci95'][0]:.2f}, {f['ratio_ci95'][1]:.2f}]"
    threads = setup.get("threads_per_system")
    sharing = ((f"side by side, {threads} thread{'s' if threads != 1 else ''} each" if setup.get("side_by_side")
                else f"one after the other, {threads} thread{'s' if threads != 1 else ''}") if threads else "–")
    listed = [str(seeds[name]) for name in ours if seeds.get(name) is not None]
    return {
        "anchor_budget": f.get("budget_minutes"), "ours_budget": f.get("ours_budget_minutes", f.get("budget_minutes")),
        "runs": f"{len(ours)}" + (f" (seed{'s' if len(listed) > 1 else ''} {', '.join(listed)})" if listed else ""),
        "anchor_runs": "1" + (f" (seed {f['anchor_seed']})" if f.get("anchor_seed") is not None else ""),
        "level": f.get("anchor_level"), "anchor_minutes": minutes(reach.get("anchor")),
        "ours_minutes": ", ".join(minutes(reach.get(name)) for name in ours),
        "ratio_text": ratio_text, "ratio_kinds": ", ".join(sorted(kinds)) or "–", "sharing": sharing,
        "checkpoints": (f"checkpoints every {f.get('checkpoint_minutes', '–'):g} min (anchor) and "
                        f"{f.get('ours_checkpoint_minutes', f.get('checkpoint_minutes')):g} min (ours)"
                        if f.get("checkpoint_minutes") else "–"),
        **{metric: {"anchor": [over(["anchor"], d, metric) for d, _ in DIRECTIONS],
                    "ours": [over(ours, d, metric) for d, _ in DIRECTIONS]} for metric in ("bleu", "chrf")},
        "ours": ours,
    }


TTQ_INTRO = ("`benchmarks/time_to_quality.py` trains the anchor (fairseq's `online_backtranslation`, the brief's "
             "recipe) and ours (skip-gram embeddings, MASS, DAE + online BT; `--ours-minutes`: on its own budget, "
             "its schedule scaled to it; `--ours-seeds`: one run per seed) on the same machine and data, and "
             "scores every kept checkpoint the same way: Multi30k val both ways, greedy decoding, sacreBLEU. "
             "Minutes are wall-clock since the system's training began (ours: the embeddings and MASS included). "
             "The level is the anchor's validation BLEU (mean of both directions) at the end of its budget; the "
             "ratio is the anchor's minutes to first reach it over ours' (above 1: ours is faster), each taken at "
             "the first checkpoint at or above the level; its bounds let either system have reached the level just "
             "after its previous checkpoint. Test: test_2016_flickr, each system's last checkpoint, greedy; ours "
             "mean ± std over seeds.")


def ttq_recipe(record) -> str:
    """Ours' recipe in a time-to-quality record, with its learning rate (records from before it was
    recorded trained at 0.001)."""
    return f"`{record.get('recipe', '–')}`, lr {(record.get('setup') or {}).get('ours_lr', RECIPE_LR):g}"


def time_to_quality_section(records, ledger: Path, out_dir: Path) -> str:
    parts = [f"## Time to quality against fairseq's `online_backtranslation` ([ledger]({link(ledger, out_dir)}), "
             f"{len(records)} records)", "", TTQ_INTRO, "",
             "| recipe | budget (min): anchor, ours | runs of ours | anchor's level | anchor: min to level | "
             "ours: min to level | ratio anchor / ours | test BLEU anchor en→fr, fr→en | test BLEU ours en→fr, fr→en | "
             "test chrF anchor en→fr, fr→en | test chrF ours en→fr, fr→en | recorded | command |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    curves, signatures = [], []
    for r in records:
        t = ttq_summary(r)
        test = (r.get("figures") or {}).get("test") or {}
        signatures += [(((test.get(name) or {}).get("last") or {}).get("en-fr") or {}) for name in t["ours"]]
        setup = r.get("setup") or {}
        lines = f" (first {setup['valid_lines']} val sentences)" if setup.get("valid_lines") else ""
        level = "–" if t["level"] is None else f"{t['level']:.2f}"
        parts.append(f"| {ttq_recipe(r)} | {t['anchor_budget']:g}, {t['ours_budget']:g} | {t['runs']} | "
                     f"{level}{lines} | {t['anchor_minutes']} | {t['ours_minutes']} | {t['ratio_text']}; "
                     f"{t['ratio_kinds']} | {', '.join(t['bleu']['anchor'])} | {', '.join(t['bleu']['ours'])} | "
                     f"{', '.join(t['chrf']['anchor'])} | {', '.join(t['chrf']['ours'])} | "
                     f"{str(r.get('date', '–'))[:10]}, {(r.get('git_commit') or '–')[:7]}, {r.get('machine', '–')}, "
                     f"{t['sharing']}, {t['checkpoints']}{'; ' + r['note'] if r.get('note') else ''} | "
                     f"`{r.get('command', '–')}` |")
        for system, points in ((r.get("figures") or {}).get("curves") or {}).items():
            curves.append(f"| {str(r.get('date', '–'))[:10]} | {system} | "
                          + ", ".join(f"{p['minutes']:.1f}: {p['bleu']:.2f}" for p in points) + " |")
    parts += ["", "Validation BLEU (mean of both directions) at minute:", "", "| recorded | system | minute: BLEU |",
              "|---|---|---|", *curves]
    signatures = [s for s in signatures if s.get("bleu_signature")]
    if signatures:
        parts += ["", f"Signatures: BLEU `{signatures[-1]['bleu_signature']}`; chrF `{signatures[-1]['chrf_signature']}`."]
    if TTQ_PLOT.exists():
        parts += ["", f"Plot of the newest record ({TTQ_PLOT_COMMAND}): [{TTQ_PLOT.name}]({link(TTQ_PLOT, out_dir)})."]
    return "\n".join(parts)


def readme_time_to_quality(records, ledger_link: str, bench_link: str, plot_link: str) -> str:
    """The README's time-to-quality block: the newest record against the anchor."""
    lines = ["<!-- generated by benchmarks/report.py from the ledger; do not edit by hand -->"]
    if not records:
        return "\n".join(lines + ["No time-to-quality run recorded yet (`benchmarks/time_to_quality.py`)."])
    r = records[-1]
    t = ttq_summary(r)
    plot = f"; [plot]({plot_link})" if TTQ_PLOT.exists() else ""
    lines += [f"Time to quality against fairseq's `online_backtranslation` (the brief's anchor recipe), the newest "
              f"[record]({ledger_link}) ({str(r.get('date', '–'))[:10]}, {(r.get('git_commit') or '–')[:7]}, "
              f"{t['sharing']}; Multi30k val, greedy; test: each run's last checkpoint; every checkpoint: "
              f"[benchmarks/README.md]({bench_link}){plot}):", "",
              "| system | budget (min) | runs | min to the anchor's end level (val BLEU "
              f"{'–' if t['level'] is None else format(t['level'], '.2f')}) | test BLEU en→fr | fr→en | chrF en→fr | fr→en |",
              "|---|---|---|---|---|---|---|---|",
              f"| fairseq `online_backtranslation` | {t['anchor_budget']:g} | {t['anchor_runs']} | {t['anchor_minutes']} | "
              + " | ".join([*t["bleu"]["anchor"], *t["chrf"]["anchor"]]) + " |",
              f"| ours, {ttq_recipe(r)} | {t['ours_budget']:g} | {t['runs']} | {t['ours_minutes']} | "
              + " | ".join([*t["bleu"]["ours"], *t["chrf"]["ours"]]) + " |",
              "", f"Minutes to the anchor's level, anchor / ours: **{t['ratio_text']}**.",
              "", "```bash", r.get("command", ""), "```"]
    return "\n".join(lines)


def compression_section(records, ledger: Path, out_dir: Path) -> str:
    """The compression benchmark's records (``benchmarks/compression.py``): per record, every
    variant's figures, the ratios to the anchor, the Pareto frontier and issue 22's targets."""
    parts = [f"## Compression: smaller and faster after training ([ledger]({link(ledger, out_dir)}), "
             f"{len(records)} records)", "",
             "`benchmarks/compression.py` measures every variant of one trained checkpoint against "
             "`fairseq-generate` fp32 timed in the same invocation. Parameters: the floating-point tensors of "
             "the model (non-zero: after pruning); MB: what translating raw text needs on disk, the checkpoint "
             "without optimizer state with the data's dict.txt and spm.model, or the whole CTranslate2 model "
             "directory (records before weights MB was kept: the checkpoint alone); weights MB: the checkpoint, or "
             "CTranslate2's model.bin; RSS: the largest resident set of a decoding process (MiB); tokens/s: "
             "sentencepiece pieces of the output per second of the tool's own decoding loop, en→fr on the first "
             "test sentences; BLEU/chrF: test_2016_flickr both ways; fidelity: BLEU of the output against the fp32 "
             "model's own output with the same decoding settings (mean of both ways). ✱: on the Pareto frontier "
             "(size, tokens/s at batch 32 greedy, mean BLEU)."]
    for r in records:
        f = r.get("figures") or {}
        setup = r.get("setup") or {}
        variants = f.get("variants") or {}
        threads = max(setup.get("threads") or [1])
        commit = (r.get("git_commit") or r.get("commit") or "–")[:7] + (
            " + uncommitted changes" if r.get("worktree_modified") else "")
        load = r.get("load_avg_before")
        parts += ["", f"### `{record_arch(r)}`, {str(r.get('date', '–'))[:10]}, {commit}: "
                  f"`{Path(str(setup.get('checkpoint', '–'))).name}`",
                  "", f"{r.get('machine', '–')}, load {round(load[0], 2) if load else '?'} before, OMP_NUM_THREADS="
                  f"{r.get('omp_num_threads')}; quality: beam {setup.get('quality_beam')}, "
                  f"{'first ' + str(setup['test_lines']) + ' sentences' if setup.get('test_lines') else 'all sentences'}; "
                  f"speed: {setup.get('speed_sentences')} sentences {setup.get('speed_direction')}, {threads} threads "
                  f"in the ratios; {ct2_layout_text(setup)}.", "",
                  "| variant | params | non-zero | MB | weights MB | RSS MiB | BLEU en→fr | fr→en | chrF en→fr | fr→en | fidelity | "
                  "tok/s b1 greedy | tok/s b32 greedy | tok/s b32 beam 4 | × speed b32 greedy | × speed b32 beam 4 | "
                  "× smaller | × smaller weights | BLEU loss |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

        def tps(v, batch, beam):
            entry = (v.get("speed") or {}).get(f"t{threads}.b{batch}.beam{beam}")
            return f"{entry['tokens_per_s']:,.0f}" if entry and entry.get("tokens_per_s") else "–"

        def num(x, spec="{:.2f}"):
            return "–" if x is None else spec.format(x)

        for name, v in variants.items():
            t, q = v.get("test") or {}, v.get("ratios") or {}
            label = f"{name} ✱" if name in (f.get("pareto") or []) else name
            if v.get("fine_tuned"):
                label += " (fine-tuned)"
            parts.append(" | ".join([
                f"| `{label}`", f"{v.get('params', 0):,}", f"{v.get('params_nonzero', 0):,}", num(v.get("size_mb")),
                num(weights_mb(v)), num(v.get("peak_rss_mib"), "{:.0f}"),
                *(num((t.get(d) or {}).get(m)) for m in ("bleu",) for d, _ in DIRECTIONS),
                *(num((t.get(d) or {}).get("chrf")) for d, _ in DIRECTIONS), num(v.get("fidelity")),
                tps(v, 1, 1), tps(v, 32, 1), tps(v, 32, 4), num(q.get("speed_b32_greedy")),
                num(q.get("speed_b32_beam4")), num(q.get("size")),
                num(q.get("weights") or weights_ratio(v, variants)),
                num(q.get("bleu_loss"), "{:+.2f}")]) + " |")
        parts += ["", "Pareto frontier: " + (", ".join(f"`{n}`" for n in f.get("pareto") or []) or "–") + "."]
        grid = sorted({key for v in variants.values() for key in (v.get("speed") or {})},
                      key=lambda k: [int("".join(c for c in part if c.isdigit())) for part in k.split(".")])
        anchor = variants.get("fairseq-fp32") or {}
        if grid:
            parts += ["", "Every cell of the speed grid, target tokens/s (× `fairseq-generate` fp32 in the same cell); "
                      "t: threads, b: batch, beam 1 = greedy:", "",
                      "| variant | " + " | ".join(grid) + " |", "|---|" + "---|" * len(grid)]
            for name, v in variants.items():
                cells = []
                for key in grid:
                    entry = (v.get("speed") or {}).get(key) or {}
                    base = ((anchor.get("speed") or {}).get(key) or {}).get("tokens_per_s")
                    value = entry.get("tokens_per_s")
                    cells.append("–" if not value else f"{value:,.0f}" + (f" ({value / base:.2f}×)" if base else ""))
                parts.append(f"| `{name}` | " + " | ".join(cells) + " |")
        goals = f.get("targets") or []
        if goals:
            parts += ["", "| target (issue 22) | status | measured |", "|---|---|---|"]
            parts += [f"| {g['target']} | {g['status']} | {g['detail']} |" for g in goals]
        for name, why in (f.get("skipped") or {}).items():
            parts.append(f"\nSkipped `{name}`: {why}.")
        test = next((v.get("test", {}).get("en-fr") for v in variants.values() if v.get("test")), None)
        if test:
            parts += ["", f"Signatures: BLEU `{test['bleu_signature']}`; chrF `{test['chrf_signature']}`."]
        parts += ["", f"Command: `{r.get('command', '–')}`"]
    return "\n".join(parts)


def benchmarks_readme(results_dir: Path, out: Path, readme: Path) -> str:
    out_dir = out.resolve().parent
    parts = [INTRO.format(results=link(results_dir.resolve(), out_dir), readme=link(readme.resolve(), out_dir))]
    ledgers = sorted(results_dir.glob("*.jsonl"))
    ablation = results_dir / "curation_ablation.jsonl"
    if ablation.exists():
        parts.append(ablation_section(ablation_rows(ablation), ablation.resolve(), out_dir))
    # each ledger with a section of its own, in this order; the text shown while it has no records
    sections = [
        ("round_trip_selection.jsonl", round_trip_section,
         "## Round-trip model selection\n\nNo runs recorded yet (`round_trip_selection.py "
         "--results-log benchmarks/results/round_trip_selection.jsonl`)."),
        ("demo.jsonl", demo_section,
         "## `make demo`\n\nNo runs recorded yet (`make demo DEMO_ARGS=\"--results-log "
         "benchmarks/results/demo.jsonl\"`)."),
        ("curation_speed.jsonl", curation_speed_section, None),
        ("time_to_quality.jsonl", time_to_quality_section,
         "## Time to quality against fairseq's `online_backtranslation`\n\nNo runs recorded yet "
         "(`python benchmarks/time_to_quality.py --work runs/ttq --minutes 86 --checkpoint-minutes 5 "
         "--results-log benchmarks/results/time_to_quality.jsonl --plot runs/ttq/time_to_quality.png`)."),
        ("compression.jsonl", compression_section,
         "## Compression: smaller and faster after training\n\nNo runs recorded yet "
         "(`python benchmarks/compression.py --work runs/compression --checkpoint CKPT --data DATA "
         "--results-log benchmarks/results/compression.jsonl --plot runs/compression/pareto.png`)."),
    ]
    for name, section, empty in sections:
        ledger = results_dir / name
        if ledger.exists():
            parts.append(section(read_ledger(ledger), ledger.resolve(), out_dir))
        elif empty:
            parts.append(empty)
    others = [p for p in ledgers if p.name not in {ablation.name, *(name for name, _, _ in sections)}]
    if others:
        parts.append("## Other ledgers\n\n" + "\n".join(
            f"- [{p.name}]({link(p.resolve(), out_dir)}): {len(read_ledger(p))} records (no section in "
            "benchmarks/report.py yet)" for p in others))
    parts.append(REFERENCES)
    return "\n\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------------------


def generate(results_dir: Path, readme: Path, out: Path):
    """{path: the text report.py would write there}."""
    if not results_dir.is_dir():
        raise ReportError(f"--results-dir {results_dir}: no such directory")
    ablation = results_dir / "curation_ablation.jsonl"
    rows = ablation_rows(ablation) if ablation.exists() else []
    if not readme.exists():
        raise ReportError(f"--readme {readme}: no such file")
    readme_dir = readme.resolve().parent
    block = readme_results(rows, link(ablation.resolve(), readme_dir), link(out.resolve(), readme_dir))
    text = splice_readme(readme.read_text(encoding="utf-8"), block, readme)
    compression = results_dir / "compression.jsonl"
    if COMPRESSION_BEGIN in text:
        records = read_ledger(compression) if compression.exists() else []
        text = splice_readme(text, readme_compression(records, link(compression.resolve(), readme_dir),
                                                      link(out.resolve(), readme_dir)),
                             readme, COMPRESSION_BEGIN, COMPRESSION_END)
    ttq = results_dir / "time_to_quality.jsonl"
    if TTQ_BEGIN in text:
        records = read_ledger(ttq) if ttq.exists() else []
        text = splice_readme(text, readme_time_to_quality(records, link(ttq.resolve(), readme_dir),
                                                          link(out.resolve(), readme_dir),
                                                          link(TTQ_PLOT, readme_dir)),
                             readme, TTQ_BEGIN, TTQ_END)
    return {readme: text,
            out: benchmarks_readme(results_dir, out, readme)}


def write(path: Path, text: str):
    fd, tmp = tempfile.mkstemp(dir=path.resolve().parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)
        else:
            os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results-dir", type=Path, default=BENCHMARKS / "results",
                        help="the ledgers, *.jsonl (default: benchmarks/results)")
    parser.add_argument("--readme", type=Path, default=REPO / "README.md",
                        help=f"the README whose table between {BEGIN} and {END} is filled (default: README.md)")
    parser.add_argument("--out", type=Path, default=BENCHMARKS / "README.md",
                        help="the benchmark report (default: benchmarks/README.md)")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if either file differs from what would be written")
    args = parser.parse_args(argv)
    try:
        texts = generate(args.results_dir, args.readme, args.out)
        if args.check:
            stale = [str(p) for p, text in texts.items()
                     if not p.exists() or p.read_text(encoding="utf-8") != text]
            if stale:
                print(f"report.py --check: {' and '.join(stale)} differ from the ledgers in {args.results_dir}; "
                      "run python benchmarks/report.py", file=sys.stderr)
                return 1
            return 0
        for path, text in texts.items():
            write(path, text)
    except (ReportError, OSError) as error:
        print(f"report.py: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

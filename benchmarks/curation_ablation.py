"""Ablation of the data-driven curation on Multi30k (unsupervised split): the foundation recipe
(baseline) against each curation component and all of them, per model size and seed, at the
same number of updates.

    python benchmarks/curation_ablation.py --work runs/ablation --archs smallcap_very_small \
        --seeds 1,2,3 --mass-updates 1500 --updates 1500 --systems baseline,all

Stages (each skipped when its output exists, so an interrupted run resumes):
1. data: ``smallcap-prepare --multi30k`` (joint sentencepiece, 8k) and, for the static
   curation, ``smallcap-curate`` on each language's half, binarized with the same sentencepiece
   model and dictionary;
2. MASS pretraining per size and seed (shared by every system of that size and seed), or, with
   ``--mass-from WORK2``, WORK2's checkpoint of that size and seed: a recipe that changes only
   fine-tuning is then paired with WORK2's runs on the same starting checkpoint (a recipe that
   changes MASS too trains its own and is paired with WORK2's runs of the same seed by
   ``--paired-with WORK2``);
3. DAE + online BT fine-tuning per system, ``--updates`` updates, validating every
   ``--validate-every`` updates (sacreBLEU of both directions; the best checkpoint by it is kept);
   ``--extra`` flags go to every stage, ``--finetune-extra`` flags to this one, after its own;
4. ``fairseq-generate`` (beam 4) on test_2016_flickr both ways, scored with sacreBLEU.

Systems: ``baseline``; ``static`` (curated monolingual corpora); ``bt_filter`` (online pair
scoring, keep 70% after the first 10% of updates); ``curriculum`` (rarity, competence 1 at half
of the updates); ``back_parallel`` (at half of the updates, one round of curated back-parallel
pairs, then ``--lambda-bp 1``); ``all``. Prints a Markdown table (test BLEU both ways, their
mean, the gain over the baseline, fine-tuning wall time), mean +- std over seeds, and plots
validation BLEU against updates (``WORK/valid_bleu.png``), over every finished run in WORK, also
those of earlier invocations (so systems can be run one at a time). Results: ``WORK/results.json``.
With ``--results-log FILE`` (the project keeps ``benchmarks/results/curation_ablation.jsonl``) each
finished run is also recorded in a JSON-lines ledger with its date, commit and machine, and the
tables and plot cover every run recorded there: seeds run on other machines or in other sessions
(whose WORK is gone) count towards mean +- std.
"""
import argparse
import datetime
import fcntl
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import scoring  # (benchmarks/scoring.py, beside this script)

REPO = Path(__file__).resolve().parent.parent
USER_DIR = REPO / "fairseq_smallcap"
BIN = Path(sys.executable).parent
SYSTEMS = ("baseline", "static", "bt_filter", "curriculum", "back_parallel", "all")
# The recipe a run was trained with: the ledger keeps recipes apart. Records without one were made
# before issue 20, whose MASS pretraining fed the decoder a misaligned input.
LEGACY_RECIPE = "mass-misaligned"
DEFAULT_RECIPE = "mass-fixed"  # what a run of the current code is called unless --recipe names it


class Refused(SystemExit):
    """Bad input (a flag, a WORK, a ledger line): exit status 2, as for argparse's errors; the
    exception's text is the message."""

    def __init__(self, message: str):
        super().__init__(message)
        self.code = 2


def refuse(message: str):
    """Write ``message`` as one line on stderr and exit with status 2, naming the script (as
    argparse's ``parser.error`` does). A caller or test that catches the exit reads the message in
    ``str(exception)``."""
    print(f"{Path(sys.argv[0]).name or 'curation_ablation.py'}: error: {message}", file=sys.stderr, flush=True)
    raise Refused(message)


def run_recipe(args) -> str:
    """The recipe name this invocation trains with (and writes into each stage's done file)."""
    return args.recipe or DEFAULT_RECIPE


def recorded_recipe(args, done: Path, record: dict) -> str:
    """The recipe a finished stage was trained with: the one its done file records, else (a run
    of a release before recipes were recorded) the one --recipe names, else an error."""
    if record.get("recipe"):
        if args.recipe and record["recipe"] != args.recipe:
            refuse(f"{done}: trained with recipe {record['recipe']!r}, not --recipe {args.recipe!r}; "
                   "use another --work")
        return record["recipe"]
    if not args.recipe:
        refuse(f"{done}: no recorded recipe (a run of an older release): name it with --recipe")
    return args.recipe


SCORES = "dual_xent,length_ratio,copy_rate,repeated_ngrams"


def sh(command, log=None, **kwargs):
    command = [str(c) for c in command]
    shown = " ".join(command)
    print(f"$ {shown}" + (f"  > {log}" if log else ""), flush=True)
    if log:
        # append: a resumed stage (fairseq-train restarts from checkpoint_last.pt) keeps the log,
        # and so the validation curve, of the part that ran before the interruption
        with open(log, "a") as f:
            f.write(f"==== {time.strftime('%Y-%m-%d %H:%M:%S')} $ {shown}\n")
            f.flush()
            result = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, text=True, **kwargs)
        if result.returncode != 0:
            sys.exit(f"failed ({result.returncode}), see {log}:\n" + Path(log).read_text()[-3000:])
        return Path(log).read_text()
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        sys.exit(f"failed ({result.returncode}):\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    return result.stdout


def prepare_data(args, work: Path):
    base = work / "data"
    if not (base / "prepare.json").exists():
        sh([BIN / "smallcap-prepare", "--multi30k", "--dest", base, "--vocab-size", "8000",
            *(["--raw-dir", args.raw_dir] if args.raw_dir else [])], log=work / "prepare.log")
    static = work / "data-static"
    if not (static / "prepare.json").exists():
        curated = work / "curated"
        curated.mkdir(exist_ok=True)
        for lang in ("en", "fr"):
            sh([BIN / "smallcap-curate", "--lang", lang, "--input", base / "raw" / f"train.{lang}",
                "--output", curated / f"train.{lang}", "--rejects", curated / f"rejects.{lang}.tsv",
                "--workers", "2"], log=curated / f"curate.{lang}.log")
        sh([BIN / "smallcap-prepare", "--dest", static, "--langs", "en,fr", "--spm-model", base / "spm.model",
            "--mono", f"en={curated / 'train.en'}", "--mono", f"fr={curated / 'train.fr'}",
            "--valid", f"en={base / 'raw' / 'valid.en'}", "--valid", f"fr={base / 'raw' / 'valid.fr'}",
            "--test", f"en={base / 'raw' / 'test.en'}", "--test", f"fr={base / 'raw' / 'test.fr'}"],
           log=work / "prepare-static.log")
    if [line.split()[0] for line in open(base / "dict.txt")] != [line.split()[0] for line in open(static / "dict.txt")]:
        refuse(f"{static}/dict.txt differs from {base}/dict.txt: the systems could not share a MASS checkpoint")
    return base, static


def common_flags(args, arch, seed):
    return ["--user-dir", USER_DIR, "--task", "unsupervised_translation", "--arch", arch,
            "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
            "--optimizer", "adam", "--adam-betas", "(0.9,0.98)", "--lr", "0.001",
            "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "200", "--clip-norm", "1.0",
            "--max-tokens", str(args.max_tokens), "--seed", str(seed), "--log-format", "json",
            "--log-interval", "25", "--num-workers", "1", "--no-epoch-checkpoints",
            *(["--cpu"] if args.cpu else []), *args.extra.split()]


def system_flags(system, updates):
    flags = []
    if system in ("bt_filter", "all"):
        warm = max(updates // 10, 1)  # keep every pair while the model still babbles
        flags += ["--bt-filter-scores", SCORES, "--bt-filter-keep", f"0:1,{warm}:1,{warm + 1}:0.7"]
    if system in ("curriculum", "all"):
        flags += ["--curriculum-by", "rarity", "--curriculum-updates", str(updates // 2)]
    return flags


def system_data(system, base, static):
    """The binarized data a system trains on: the statically curated corpora or the plain ones."""
    return static if system in ("static", "all") else base


def finetune(args, work, base, static, arch, seed, system, mass_ckpt, extra_flags=(), name=None):
    """DAE + BT fine-tuning of one system from the MASS checkpoint into ``WORK/arch/seedN/name``
    (``name`` defaults to the system; ``extra_flags`` are added to every fairseq-train call)."""
    out = work / arch / f"seed{seed}" / (name or system)
    out.mkdir(parents=True, exist_ok=True)
    done = out / "finetune.done.json"
    if done.exists():
        return json.loads(done.read_text())
    data = system_data(system, base, static)
    flags = [data, *common_flags(args, arch, seed), "--save-dir", out / "ckpt",
             "--lambda-mass", "0", "--lambda-dae", "0:1,2000:0.1", "--lambda-bt", "1",
             "--validate-interval-updates", str(args.validate_every), "--save-interval-updates",
             str(args.validate_every), "--keep-interval-updates", "1", "--eval-bleu",
             "--best-checkpoint-metric", "bleu", "--maximize-best-checkpoint-metric",
             "--bt-show-samples-interval", "0", *system_flags(system, args.updates),
             *getattr(args, "finetune_extra", "").split(), *extra_flags]
    start = time.time()
    if system in ("back_parallel", "all"):
        half = args.updates // 2
        bp_dir = out / "bp1"
        if not (bp_dir / "summary.json").exists():  # the first half and the round run once
            sh([BIN / "fairseq-train", *flags, "--finetune-from-model", mass_ckpt, "--max-update", half],
               log=out / "train.1.log")
            sh([BIN / "smallcap-back-parallel", data, "--path", out / "ckpt" / "checkpoint_last.pt",
                "--dest", bp_dir, "--keep", "0.5", *(["--cpu"] if args.cpu else [])], log=out / "back_parallel.log")
        sh([BIN / "fairseq-train", *flags, "--max-update", args.updates, "--lambda-bp", "1",
            "--back-parallel-data", bp_dir], log=out / "train.2.log")
    else:
        sh([BIN / "fairseq-train", *flags, "--finetune-from-model", mass_ckpt, "--max-update", args.updates],
           log=out / "train.1.log")
    # the threads this run trained with (provenance()'s are those of the invocation that records it)
    result = {"recipe": run_recipe(args), "mass_checkpoint": str(Path(mass_ckpt).resolve()),
              "finetune_wall_s": round(time.time() - start, 1),
              "valid_bleu": valid_curve(out),
              "finetune_omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "finetune_device": device_name(args)}
    done.write_text(json.dumps(result))
    return result


def device_name(args):
    """What a run trained on: "cpu", or the name of CUDA device 0 as this process sees it (the one
    fairseq-train, started with the same environment, trains on by default)."""
    if args.cpu:
        return "cpu"
    import torch  # (here only: a --cpu run needs no torch in this script)
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def valid_curve(out: Path):
    curve = {}  # update -> BLEU; a validation repeated after a resume counts once (the last)
    for log in sorted(out.glob("train.*.log")):
        for line in log.read_text().splitlines():
            if "| valid |" in line and not line.startswith("==== "):  # (not sh()'s command line)
                entry = json.loads(line.split("| valid |", 1)[1])
                if "valid_bleu" in entry:
                    curve[int(entry["valid_num_updates"])] = float(entry["valid_bleu"])
    return sorted(curve.items())


def test_bleu(args, work, data, arch, seed, system):
    """sacreBLEU on test_2016_flickr both ways of ``WORK/arch/seedN/system/ckpt/checkpoint_best.pt``,
    and under ``test`` each direction's BLEU, chrF, signatures and diagnostics (:mod:`scoring`)."""
    out = work / arch / f"seed{seed}" / system
    scores = {"test": {}}
    for src, tgt in (("en", "fr"), ("fr", "en")):
        log = out / f"generate.test.{src}-{tgt}.log"
        if not (log.exists() and "Translated " in log.read_text()):  # absent, or left by a failed run
            log.unlink(missing_ok=True)
            sh([BIN / "fairseq-generate", data, "--user-dir", USER_DIR, "--task", "unsupervised_translation",
                "-s", src, "-t", tgt, "--gen-subset", "test", "--path", out / "ckpt" / "checkpoint_best.pt",
                "--beam", "4", "--max-len-a", "1.3", "--max-len-b", "5", "--batch-size", "128",
                "--post-process", "sentencepiece", *(["--cpu"] if args.cpu else [])], log=log)
        hyps = sorted((int(line.split("\t")[0][2:]), line.rstrip("\n").split("\t")[2])
                      for line in open(log) if line.startswith("D-"))
        references = (data / "raw" / f"test.{tgt}").read_text().count("\n")
        if len(hyps) != references:
            refuse(f"{log}: {len(hyps)} translations for {references} references; delete it to re-run")
        hyp_file = out / f"test.{src}-{tgt}.hyp"
        hyp_file.write_text("".join(h + "\n" for _, h in hyps))
        scores["test"][f"{src}-{tgt}"] = scoring.translation_scores(
            [h for _, h in hyps], scoring.read_lines(data / "raw" / f"test.{tgt}"),
            scoring.read_lines(data / "raw" / f"test.{src}"))
        scores[f"{src}-{tgt}"] = scores["test"][f"{src}-{tgt}"]["bleu"]  # sacreBLEU, 2 decimals
    return scores


def paired_bootstrap_against_baseline(work, data, row):
    """``sacrebleu --paired-bs`` of a run against the baseline of its size and seed, both ways,
    when both runs' test hypotheses are in WORK (else None)."""
    seed_dir = work / row["arch"] / f"seed{row['seed']}"
    return paired_bootstrap(data, seed_dir / "baseline", seed_dir / row["system"])


def paired_bootstrap(data, base_dir: Path, run_dir: Path):
    """``sacrebleu --paired-bs`` of the run in ``run_dir`` against the one in ``base_dir``, both
    ways, when both runs' test hypotheses exist (else None)."""
    tests = {}
    for pair in ("en-fr", "fr-en"):
        hyp, base = run_dir / f"test.{pair}.hyp", base_dir / f"test.{pair}.hyp"
        if not (hyp.exists() and base.exists()):
            return None
        refs = scoring.read_lines(data / "raw" / f"test.{pair.split('-')[1]}")
        tests[pair] = scoring.paired_bootstrap(refs, scoring.read_lines(base), scoring.read_lines(hyp))
    return tests


def require_same_data(flag: str, work2, base: Path):
    """Exit with one line unless WORK2 (given by ``flag``) holds ``base``'s dictionary."""
    theirs = Path(work2) / "data" / "dict.txt"
    if not theirs.exists() or theirs.read_bytes() != (base / "dict.txt").read_bytes():
        refuse(f"{flag} {work2}: {theirs} is not {base / 'dict.txt'}: not the same data")


def shared_mass(args, base, arch, seed, out: Path) -> Path:
    """--mass-from: the MASS checkpoint of WORK2's run of this size and seed, after checking that
    WORK2 trained on the same dictionary with a named recipe; ``out/done`` records where it came
    from and that recipe (the one this run's records are paired with)."""
    source = Path(args.mass_from).resolve() / arch / f"seed{seed}" / "mass"
    if not (source / "done").exists():
        refuse(f"--mass-from {args.mass_from}: no finished MASS stage at {source} (no done file)")
    require_same_data("--mass-from", args.mass_from, base)
    text = (source / "done").read_text().strip()
    record = json.loads(text) if text else {}
    if not record.get("recipe"):
        refuse(f"{source / 'done'}: no recorded recipe, so the runs of --mass-from cannot be named")
    if record.get("mass_from"):
        refuse(f"--mass-from {args.mass_from}: its MASS stage is itself {record['mass_from']}; name that WORK")
    (out / "done").write_text(json.dumps({"mass_wall_s": None, "mass_from_wall_s": record.get("mass_wall_s"),
                                          "recipe": run_recipe(args), "mass_from": str(source),
                                          "mass_from_recipe": record["recipe"]}))
    return source / "checkpoint_last.pt"


def mass_source(work, arch, seed):
    """(the MASS stage directory a run of WORK fine-tuned from, the recipe of the runs to pair it
    with): WORK's own and None, or those --mass-from named."""
    text = (work / arch / f"seed{seed}" / "mass" / "done").read_text().strip()
    record = json.loads(text) if text else {}
    if record.get("mass_from"):
        return Path(record["mass_from"]), record["mass_from_recipe"]
    return work / arch / f"seed{seed}" / "mass", None


def mass_pretrain(args, work, base, arch, seed):
    out = work / arch / f"seed{seed}" / "mass"
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint_last.pt"
    if args.mass_from and not (out / "done").exists():
        return shared_mass(args, base, arch, seed, out)
    if (out / "done").exists():
        text = (out / "done").read_text().strip()
        recorded_recipe(args, out / "done", json.loads(text) if text else {})  # refuse another recipe's
        source, _ = mass_source(work, arch, seed)
        if args.mass_from and source != Path(args.mass_from).resolve() / arch / f"seed{seed}" / "mass":
            refuse(f"--mass-from {args.mass_from}: {out} started from {source}; use another --work")
        ckpt = source / "checkpoint_last.pt"
    else:
        start = time.time()
        sh([BIN / "fairseq-train", base, *common_flags(args, arch, seed), "--save-dir", out,
            "--lambda-mass", "1", "--lambda-dae", "0", "--lambda-bt", "0", "--max-update", args.mass_updates,
            "--save-interval-updates", "200", "--keep-interval-updates", "1", "--disable-validation"],
           log=out.parent / "mass.log")
        (out / "done").write_text(json.dumps({"mass_wall_s": round(time.time() - start, 1),
                                              "recipe": run_recipe(args)}))
    return ckpt


def mass_wall_s(work, arch, seed):
    """Wall time of a MASS pretraining run of this script (None for a run it did not time)."""
    text = (work / arch / f"seed{seed}" / "mass" / "done").read_text().strip()
    return json.loads(text)["mass_wall_s"] if text else None


def recipe(run) -> str:
    return run.get("recipe", LEGACY_RECIPE)


def report(rows, work: Path):
    print("\n| recipe | arch | seed | system | en→fr | fr→en | mean | Δ mean vs baseline | fine-tuning wall (min) |")
    print("|---|---|---|---|---|---|---|---|---|")
    baseline = {(recipe(r), r["arch"], r["seed"]): r["mean"] for r in rows if r["system"] == "baseline"}
    for r in rows:
        key = (recipe(r), r["arch"], r["seed"])
        delta = r["mean"] - baseline[key] if key in baseline else float("nan")
        print(f"| {recipe(r)} | {r['arch']} | {r['seed']} | {r['system']} | {r['en-fr']:.2f} | {r['fr-en']:.2f} | "
              f"{r['mean']:.2f} | {delta:+.2f} | {r['finetune_wall_s'] / 60:.1f} |")
    groups = {}
    for r in rows:
        groups.setdefault((recipe(r), r["arch"], r["system"]), []).append(r["mean"])
    print("\n| recipe | arch | system | seeds | mean BLEU (both directions) |\n|---|---|---|---|---|")
    for (name, arch, system), values in groups.items():
        spread = f" ± {statistics.stdev(values):.2f}" if len(values) > 1 else ""
        print(f"| {name} | {arch} | {system} | {len(values)} | {statistics.mean(values):.2f}{spread} |")
    report_paired(rows)
    report_diagnostics(rows)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib not installed: no plot)")
        return
    # one panel per model size; colour = system, line style = seed
    # (the order of fairseq_smallcap's TABLE1_SIZES; importing the plugin here would also install
    # its registrations and excepthook in this script, for four names the paper fixes)
    sizes = ("smallcap_very_small", "smallcap_small", "smallcap_medium", "smallcap_large")
    archs = sorted({r["arch"] for r in rows}, key=lambda a: (sizes.index(a) if a in sizes else len(sizes), a))
    panels = max(len(archs), 1)
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.5), sharey=True, squeeze=False)
    styles = ("-", "--", ":", "-.")
    series = sorted({(recipe(r), r["system"]) for r in rows},
                    key=lambda k: (k[0] != LEGACY_RECIPE, k[0], SYSTEMS.index(k[1])))
    label = lambda r: r["system"] if recipe(r) == LEGACY_RECIPE else f"{recipe(r)}: {r['system']}"  # noqa: E731
    for ax, arch in zip(axes[0], archs):
        for r in rows:
            if r["arch"] == arch and r["valid_bleu"]:
                x, y = zip(*r["valid_bleu"])
                ax.plot(x, y, marker="o", markersize=3, color=f"C{series.index((recipe(r), r['system'])) % 10}",
                        linestyle=styles[(r["seed"] - 1) % len(styles)], label=f"{label(r)} s{r['seed']}")
        ax.set_title(arch)
        ax.set_xlabel("fine-tuning updates (DAE + BT after MASS)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("validation BLEU (mean of en→fr, fr→en)")
    fig.tight_layout()
    fig.savefig(work / "valid_bleu.png", dpi=120)
    print(f"\nplot: {work / 'valid_bleu.png'}")


def report_paired(rows):
    """Paired by seed, the per-seed differences of the mean BLEU, their mean and 95% interval:
    each system against its recipe's baseline of the same size, and each recipe's system against
    the same system of the legacy recipe."""
    def means(name, arch, system):
        return {r["seed"]: r["mean"] for r in rows
                if (recipe(r), r["arch"], r["system"]) == (name, arch, system)}

    lines = []
    for name, arch, system in dict.fromkeys((recipe(r), r["arch"], r["system"]) for r in rows):
        comparisons = []
        if system != "baseline":
            comparisons.append((f"{name} baseline", means(name, arch, "baseline")))
        if name != LEGACY_RECIPE:
            comparisons.append((f"{LEGACY_RECIPE} {system}", means(LEGACY_RECIPE, arch, system)))
        for against, reference in comparisons:
            paired = scoring.paired_differences(reference, means(name, arch, system))
            if paired["seeds"]:
                lines.append(f"| {name} | {arch} | {system} | {against} | {scoring.format_paired(paired)} |")
    if lines:
        print("\n| recipe | arch | system | against | paired Δ mean BLEU, 95% interval |\n|---|---|---|---|---|")
        print("\n".join(lines))


def report_diagnostics(rows):
    """chrF and the collapse/copy diagnostics of the runs that recorded them."""
    scored = [r for r in rows if r.get("test")]
    if not scored:
        return
    print("\n| recipe | arch | seed | system | chrF en→fr | chrF fr→en | distinct en→fr | distinct fr→en "
          "| copied en→fr | copied fr→en | paired-bs p (BLEU) en→fr, fr→en vs baseline |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in scored:
        t = r["test"]
        pbs = r.get("paired_bs_vs_baseline")
        p = ", ".join(f"{pbs[d]['bleu']['p_value']:.3f}" for d in ("en-fr", "fr-en")) if pbs else "–"
        print(f"| {recipe(r)} | {r['arch']} | {r['seed']} | {r['system']} | {t['en-fr']['chrf']:.2f} | {t['fr-en']['chrf']:.2f} "
              f"| {t['en-fr']['distinct']:.1%} | {t['fr-en']['distinct']:.1%} | {t['en-fr']['copied']:.1%} "
              f"| {t['fr-en']['copied']:.1%} | {p} |")
    signature = scored[-1]["test"]["en-fr"]
    print(f"\nsignatures: BLEU {signature['bleu_signature']}; chrF {signature['chrf_signature']}")


def add_run_args(parser, systems):
    """The flags every Multi30k benchmark of this directory shares (data, recipe, systems)."""
    parser.add_argument("--raw-dir", default=None, help="Multi30k raw files (default: smallcap-prepare's)")
    parser.add_argument("--systems", default=",".join(systems), help=f"comma-separated, from {', '.join(systems)}")
    parser.add_argument("--mass-updates", type=int, default=1500, help="MASS pretraining updates (every model)")
    parser.add_argument("--updates", type=int, default=1500, help="DAE + BT fine-tuning updates per run")
    parser.add_argument("--validate-every", type=int, default=250, help="validation interval (updates)")
    parser.add_argument("--max-tokens", type=int, default=2000)
    parser.add_argument("--cpu", action="store_true", help="train on CPU even where CUDA is available")
    parser.add_argument("--extra", default="", help="more fairseq-train flags for every run, e.g. '--fp16'")
    parser.add_argument("--finetune-extra", default="",
                        help="more fairseq-train flags for the fine-tuning runs only, after the recipe's own "
                             "(so they replace them), e.g. '--lambda-dae 0'; with --mass-from, a fine-tuning "
                             "recipe paired with WORK2's runs from the same checkpoints")
    parser.add_argument("--mass-from", default=None, metavar="WORK2",
                        help="train no MASS: fine-tune from the finished MASS checkpoints of another WORK of "
                             "this script (the same data; its WORK2/ARCH/seedN/mass), so that a recipe that "
                             "changes fine-tuning only is paired with WORK2's runs on the same starting "
                             "checkpoint; each record gets sacreBLEU's paired bootstrap against WORK2's run "
                             "of the same system and seed (paired_bs_vs_recipe)")
    parser.add_argument("--recipe", default=None,
                        help=f"name of the training recipe (code and --extra flags; default {DEFAULT_RECIPE}), "
                             "written into each stage's done file and the ledger, which keeps recipes "
                             f"apart (records from before issue 20: {LEGACY_RECIPE}); a WORK trained with "
                             "another recipe is refused")


def parse_systems(parser, value, choices):
    systems = [s for s in value.split(",") if s]
    unknown = [s for s in systems if s not in choices]
    if unknown:
        parser.error(f"--systems: unknown {', '.join(unknown)} (choose from {', '.join(choices)})")
    return systems


def build_parser():
    """The command-line parser of this script."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", required=True, help="output directory (re-running resumes)")
    parser.add_argument("--archs", default="smallcap_very_small", help="comma-separated Table 1 sizes")
    parser.add_argument("--seeds", default="1", help="comma-separated seeds")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing: table and plot of the runs already finished in WORK (and in --results-log)")
    parser.add_argument("--results-log", default=None,
                        help="JSON-lines ledger of finished runs (e.g. benchmarks/results/curation_ablation.jsonl): "
                             "this invocation's runs are recorded in it, replacing earlier records of the same "
                             "arch, seed and system, and the tables and plot cover every run it holds")
    parser.add_argument("--paired-with", default=None, metavar="WORK2",
                        help="pair each run with WORK2's run of the same size, seed and system (another recipe "
                             "that trained its own MASS on the same data): its record gets sacreBLEU's paired "
                             "bootstrap against that run (paired_bs_vs_recipe); --mass-from pairs by itself")
    add_run_args(parser, SYSTEMS)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.paired_with and args.mass_from:
        parser.error("--paired-with: --mass-from already pairs each run with WORK2's, from the same checkpoint")
    systems = parse_systems(parser, args.systems, SYSTEMS)
    if args.results_log:
        read_ledger(Path(args.results_log))  # (a broken line refused now, not after the training)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    base, static = prepare_data(args, work)
    for arch in [] if args.report_only else args.archs.split(","):
        for seed in [int(s) for s in args.seeds.split(",")]:
            mass_ckpt = mass_pretrain(args, work, base, arch, seed)
            for system in systems:
                finetune(args, work, base, static, arch, seed, system, mass_ckpt)
    rows = finished_rows(args, work, base, static)  # (test BLEU of each, this invocation's runs included)
    if args.results_log:
        rows = merge_into_ledger(Path(args.results_log), rows)
    (work / "results.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    report(rows, work)


def finished_rows(args, work, base, static):
    """One row per finished run under WORK — this invocation's and earlier ones' — so that runs
    made one system at a time end up in one table and one plot."""
    rows = []
    for done in sorted(work.glob("*/seed*/*/finetune.done.json")):
        system, seed, arch = done.parent.name, int(done.parent.parent.name[4:]), done.parent.parent.parent.name
        if system not in SYSTEMS:
            continue  # (another benchmark's run sharing this WORK, e.g. kd_comparison's)
        record = json.loads(done.read_text())
        record["recipe"] = recorded_recipe(args, done, record)
        bleu = test_bleu(args, work, system_data(system, base, static), arch, seed, system)
        rows.append({"arch": arch, "seed": seed, "system": system, **bleu,
                     "mean": (bleu["en-fr"] + bleu["fr-en"]) / 2, **record})
    for row in rows:
        data = system_data(row["system"], base, static)
        if row["system"] != "baseline":
            paired = paired_bootstrap_against_baseline(work, data, row)
            if paired:
                row["paired_bs_vs_baseline"] = paired
        source, against = mass_source(work, row["arch"], row["seed"])
        other, shared = source.parent / row["system"], True  # --mass-from: WORK2's run, same checkpoint
        if getattr(args, "paired_with", None):
            if against:
                refuse(f"--paired-with {args.paired_with}: {work} fine-tuned from --mass-from's {source}, so "
                       "its runs are paired with that WORK's, from the same checkpoint")
            (other, against), shared = paired_with_run(args, base, row), False
        if against:
            paired = paired_bootstrap(data, other, work / row["arch"] / f"seed{row['seed']}" / row["system"])
            if paired:
                row["paired_bs_vs_recipe"] = {"against": against, "same_mass_checkpoint": shared, **paired}
    rows.sort(key=table_order)
    return rows


def paired_with_run(args, base, row):
    """--paired-with WORK2: (the directory of WORK2's run of ``row``'s size, seed and system, its
    recipe), or (None, None) while WORK2 has not finished that run. WORK2 must hold the same data
    and runs of another, named recipe; each trained its own MASS, so the pair shares the seed and
    the data, not the starting checkpoint."""
    work2 = Path(args.paired_with)
    require_same_data("--paired-with", args.paired_with, base)
    other = work2 / row["arch"] / f"seed{row['seed']}" / row["system"]
    done = other / "finetune.done.json"
    if not done.exists():
        return None, None
    against = json.loads(done.read_text()).get("recipe")
    if not against:
        refuse(f"{done}: no recorded recipe, so the runs of --paired-with cannot be named")
    if against == row["recipe"]:
        refuse(f"--paired-with {args.paired_with}: its runs are of this WORK's recipe too ({against!r})")
    return other, against


def table_order(run):
    """Runs in table order: by size, seed, recipe (the legacy one first), then system as listed
    in SYSTEMS."""
    return run["arch"], run["seed"], recipe(run) != LEGACY_RECIPE, recipe(run), SYSTEMS.index(run["system"])


def provenance():
    """When, from which commit, by which command and on what machine a run was recorded."""
    try:
        commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    cpu = platform.processor()
    if Path("/proc/cpuinfo").exists():
        cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), cpu)
    command = " ".join(shlex.quote(a) for a in ["python", os.path.relpath(sys.argv[0], REPO), *sys.argv[1:]])
    return {"date": datetime.date.today().isoformat(), "commit": commit, "command": command,
            "machine": f"{cpu}, {os.cpu_count()} cores", "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}


def merge_into_ledger(ledger: Path, rows):
    """Record ``rows`` (runs finished in WORK) in the JSON-lines ``ledger``, replacing older records
    of the same (arch, seed, system), and return every run the ledger then holds. Invocations
    running side by side (one system each) take turns on a lock file, and the ledger is replaced
    in one step, so a reader never sees half of it and no invocation drops another's records."""
    ledger.parent.mkdir(parents=True, exist_ok=True)
    with open(ledger.with_name(ledger.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _merge_into_ledger(ledger, rows)


def ledger_key(run) -> tuple:
    """What one ledger record stands for: a later record of the same key replaces it."""
    return recipe(run), run["arch"], run["seed"], run["system"]


def read_ledger(ledger: Path) -> dict:
    """The ledger's records by ``ledger_key``; a line that is not a run record is refused, naming it
    (main reads the ledger before training too, so a broken line is found before hours of it)."""
    recorded = {}
    for number, line in enumerate(ledger.read_text().splitlines() if ledger.exists() else [], 1):
        if line.strip():
            try:
                entry = json.loads(line)
                if not isinstance(entry, dict):
                    raise TypeError(f"a JSON {type(entry).__name__}, not an object")
                recorded[ledger_key(entry)] = entry
            except KeyError as error:
                refuse(f"{ledger}:{number}: not a run record (no field {error})")
            except (json.JSONDecodeError, TypeError) as error:
                refuse(f"{ledger}:{number}: not a run record ({error})")
            if entry["system"] not in SYSTEMS:
                refuse(f"{ledger}:{number}: unknown system {entry['system']!r} (known: {', '.join(SYSTEMS)})")
    return recorded


def _merge_into_ledger(ledger: Path, rows):
    recorded = read_ledger(ledger)
    stamp = provenance()
    for r in rows:
        previous = recorded.get(ledger_key(r))
        same = previous and all(previous.get(k) == r[k] for k in ("en-fr", "fr-en", "finetune_wall_s"))
        # the same run again keeps its first record's provenance (and notes), and gains what this
        # invocation adds to it (a pairing that WORK2 had not finished for before)
        recorded[ledger_key(r)] = {**previous, **r, "recorded": previous["recorded"]} if same else {**r, "recorded": stamp}
    merged = sorted(recorded.values(), key=table_order)
    partial = ledger.with_name(ledger.name + ".partial")
    partial.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in merged))
    os.replace(partial, ledger)
    print(f"ledger: {ledger} ({len(merged)} runs)")
    return merged


if __name__ == "__main__":
    main()

"""Training throughput of the DAE + online back-translation loop: fairseq's own
``online_backtranslation`` task against ``unsupervised_translation``, measured in one run on the
same data, model (``--arch``), batch size (``--max-tokens``) and machine.

    python benchmarks/bt_speed.py --data runs/multi30k-data --updates 40 --skip 5 \
        [--init-checkpoint runs/demo/bt/checkpoint_best.pt]

Each system trains ``--updates`` updates with the same seed and flags; the first ``--skip``
updates (start-up, allocator warm-up) are left out. Throughput comes from fairseq's own
per-update log (``wpb`` target tokens per update, ``wps`` target tokens per second): updates/s =
n / sum(wpb_i / wps_i). ``--init-checkpoint`` starts every system from the same trained weights,
so that back-translations have realistic lengths (an untrained model babbles up to the length
cap). Prints a table of updates/s, target tokens/s and the ratio to fairseq's task, and writes
it as JSON next to the data (``--output``).
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
USER_DIR = REPO / "fairseq_smallcap"
BIN = Path(sys.executable).parent


def train_command(system: str, args) -> list:
    common = [
        str(BIN / "fairseq-train"), args.data, "--user-dir", str(USER_DIR), "--arch", args.arch,
        "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
        "--optimizer", "adam", "--lr", "0.0005", "--lr-scheduler", "inverse_sqrt",
        "--warmup-updates", "4000", "--max-tokens", str(args.max_tokens),
        "--max-update", str(args.updates), "--cpu", "--seed", "1", "--no-save",
        "--disable-validation", "--log-format", "json", "--log-interval", "1",
        "--num-workers", str(args.num_workers),
    ]
    if args.init_checkpoint:
        common += ["--restore-file", args.init_checkpoint, "--reset-optimizer", "--reset-dataloader",
                   "--reset-meters", "--reset-lr-scheduler"]
    if system == "fairseq online_backtranslation":
        return common + ["--task", "online_backtranslation", "--mono-langs", "en,fr",
                         "--valid-lang-pairs", "en-fr", "--dataset-impl", "mmap",
                         "--lambda-dae", "1", "--lambda-bt", "1"]
    ours = common + ["--task", "unsupervised_translation", "--lambda-dae", "1", "--lambda-bt", "1",
                     "--bt-show-samples-interval", "0"]
    return ours + (["--amp"] if system.endswith("--amp") else [])


def measure(system: str, args) -> dict:
    command = train_command(system, args)
    print(f"\n### {system}\n$ {' '.join(map(str, command))}", flush=True)
    start = time.time()
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{system} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    entries = []
    for line in result.stdout.splitlines():
        if "| train_inner |" in line:
            entries.append(json.loads(line.split("| train_inner |", 1)[1]))
    measured = [e for e in entries if int(e["num_updates"]) > args.skip]
    if not measured:
        sys.exit(f"{system}: no updates after --skip {args.skip} in the log")
    tokens = sum(float(e["wpb"]) for e in measured)
    seconds = sum(float(e["wpb"]) / float(e["wps"]) for e in measured)
    row = {
        "system": system, "updates": len(measured), "seconds": round(seconds, 2),
        "updates_per_s": len(measured) / seconds, "target_tokens_per_s": tokens / seconds,
        "target_tokens_per_update": tokens / len(measured), "wall_s": round(time.time() - start, 1),
    }
    print(f"{row['updates_per_s']:.3f} updates/s, {row['target_tokens_per_s']:.0f} target tokens/s", flush=True)
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="a smallcap-prepare output directory")
    parser.add_argument("--arch", default="smallcap_very_small")
    parser.add_argument("--max-tokens", type=int, default=2000)
    parser.add_argument("--updates", type=int, default=40)
    parser.add_argument("--skip", type=int, default=5, help="leading updates left out of the measure")
    parser.add_argument("--num-workers", type=int, default=1)
    parser.add_argument("--init-checkpoint", default=None, help="start every system from these weights")
    parser.add_argument("--systems", default="fairseq online_backtranslation,unsupervised_translation,"
                        "unsupervised_translation --amp", help="comma-separated systems to run")
    parser.add_argument("--output", default=None, help="JSON results file (default: DATA/bt_speed.json)")
    args = parser.parse_args(argv)
    if not os.path.isfile(os.path.join(args.data, "dict.txt")):
        parser.error(f"--data {args.data}: no dict.txt (run smallcap-prepare first)")
    if not 0 <= args.skip < args.updates:
        parser.error(f"--skip {args.skip}: leaves no update of --updates {args.updates} to measure")

    rows = [measure(system, args) for system in args.systems.split(",")]
    base = rows[0]["updates_per_s"]
    print(f"\nDAE+BT training throughput, {args.arch}, --max-tokens {args.max_tokens}, "
          f"{args.updates - args.skip} measured updates, {os.cpu_count()} CPU cores"
          + (f", from {args.init_checkpoint}" if args.init_checkpoint else ", from scratch"))
    print("| system | updates/s | target tokens/s | tokens/update | ratio (updates/s) |")
    print("|---|---|---|---|---|")
    for row in rows:
        row["ratio"] = row["updates_per_s"] / base
        print(f"| {row['system']} | {row['updates_per_s']:.3f} | {row['target_tokens_per_s']:.0f} | "
              f"{row['target_tokens_per_update']:.0f} | {row['ratio']:.2f}x |")
    output = args.output or os.path.join(args.data, "bt_speed.json")
    with open(output, "w") as f:
        json.dump({"args": vars(args), "rows": rows}, f, indent=2)
    print(f"\nwritten to {output}")


if __name__ == "__main__":
    main()

"""Lines per second of ``smallcap-curate``: the datatrove pipeline (``--executor local``) against
the built-in process pool (``--executor builtin``), back to back on the same input and machine.

    python benchmarks/curation_speed.py [--lines 200000] [--workers 2] [--tasks 2] \\
        [--source ../shared/data/multi30k/train.en.gz] [--output benchmarks/results/curation_speed.jsonl]

The input is ``--lines`` lines of ``--source`` (gzip or plain), repeated as often as needed, so
most copies after the first are ``duplicate`` rejects (every line still goes through every other
rule: deduplication comes last). Both engines run the default rules with the same ``--workers``;
their outputs must be identical (checked). Two figures per engine: ``lines_per_s`` (input lines
over the engine's own ``seconds`` in its summary: the curation, without the interpreter's start
and imports) and ``wall_lines_per_s`` (over the whole command). Appends one JSON line to
``--output``: figures, commands, git commit (and the engine files changed since it), machine (``uname -m``, CPU count, load averages
before the runs) and date.
"""
import argparse
import datetime
import filecmp
import gzip
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def make_input(source: Path, lines: int, path: Path) -> None:
    opener = gzip.open if source.suffix == ".gz" else open
    with opener(source, "rb") as f:
        base = [line.rstrip(b"\n") for line in f]
    with open(path, "wb") as out:
        out.writelines(line + b"\n" for line in itertools.islice(itertools.cycle(base), lines))


def curate(engine: str, corpus: Path, work: Path, args) -> dict:
    out, rej = work / f"{engine}.out", work / f"{engine}.rejects.tsv"
    command = [str(BIN / "smallcap-curate"), "--lang", args.lang, "--input", str(corpus), "--output", str(out),
               "--rejects", str(rej), "--workers", str(args.workers), "--executor", engine]
    if engine != "builtin":
        command += ["--tasks", str(args.tasks or args.workers)]
    start = time.time()
    result = subprocess.run(command, capture_output=True, text=True)
    wall = time.time() - start
    if result.returncode != 0:
        sys.exit(f"{engine} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    summary = json.loads(Path(str(out) + ".summary.json").read_text())
    return {"command": " ".join(command), "out": out, "rejects": rej, "wall_s": round(wall, 2),
            "seconds": summary["seconds"], "kept": summary["kept"], "rejected_total": summary["rejected_total"],
            "lines_per_s": round(args.lines / summary["seconds"], 1), "wall_lines_per_s": round(args.lines / wall, 1)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--source", type=Path, default=REPO.parent / "shared" / "data" / "multi30k" / "train.en.gz")
    parser.add_argument("--lang", default="en")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=None, help="datatrove tasks (default --workers)")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "curation_speed.jsonl")
    args = parser.parse_args(argv)

    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    # the engines' files that differ from that commit (the measured code is then not the commit's)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "fairseq_smallcap/curation", "benchmarks/curation_speed.py"],
                           cwd=REPO, capture_output=True, text=True).stdout.split("\n")
    load = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="curation_speed_") as tmp:
        work = Path(tmp)
        corpus = work / f"input.{args.lang}"
        make_input(args.source, args.lines, corpus)
        runs = {engine: curate(engine, corpus, work, args) for engine in ("builtin", "local")}
        same = all(filecmp.cmp(runs["builtin"][k], runs["local"][k], shallow=False) for k in ("out", "rejects"))
    if not same:
        sys.exit("the two engines' outputs differ")
    figures = {
        "lines": args.lines, "source": str(args.source.name), "workers": args.workers,
        "tasks": args.tasks or args.workers, "same_outputs": same,
        **{f"{engine}_{k}": runs[engine][k] for engine in ("builtin", "local")
           for k in ("lines_per_s", "wall_lines_per_s", "seconds", "wall_s", "kept", "rejected_total")},
        "ratio_datatrove_to_builtin": round(runs["local"]["lines_per_s"] / runs["builtin"]["lines_per_s"], 3),
        "wall_ratio_datatrove_to_builtin": round(runs["local"]["wall_lines_per_s"] / runs["builtin"]["wall_lines_per_s"], 3),
    }
    record = {
        "figures": figures,
        "command": "python benchmarks/curation_speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "engine_commands": {engine: runs[engine]["command"] for engine in runs},
        "git_commit": commit,
        "git_uncommitted": sorted(line[3:] for line in dirty if line.strip()),
        "machine": {"arch": platform.machine(), "cpus": os.cpu_count(), "load_avg_before": load},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    with open(args.output, "a") as f:
        f.write(json.dumps(record) + "\n")
    for engine in ("builtin", "local"):
        r = runs[engine]
        print(f"{engine:>8}: {r['lines_per_s']:>9,.0f} lines/s ({r['seconds']} s curating), "
              f"{r['wall_lines_per_s']:>9,.0f} lines/s wall ({r['wall_s']} s)")
    print(f"datatrove / builtin: {figures['ratio_datatrove_to_builtin']} "
          f"(wall {figures['wall_ratio_datatrove_to_builtin']}); appended to {args.output}")


if __name__ == "__main__":
    main()

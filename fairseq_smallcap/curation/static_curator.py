"""``smallcap-curate``: static curation of a monolingual corpus, before binarization.

    smallcap-curate --lang en --input news.en --output news.clean.en --rejects news.rejects.tsv \
        [--rules length,url,...,langid,duplicate] [--workers 4] [--tasks 16] [--num-shards 8 --shard-id 3] \
        [--executor local|slurm|ray|builtin]

Streams the input line by line (bytes, so that invalid UTF-8 is a reject with a reason, not a
crash), applies the registered line rules of :mod:`fairseq_smallcap.curation.line_rules` in the
order given (the first rule that rejects a line is its reason), then drops duplicates after
normalization (Unicode NFKC, case folding, runs of spaces collapsed: lines that differ only in
case or spacing are duplicates; the first copy is kept). Rejected lines go to ``--rejects`` as
TSV ``line<TAB>rule<TAB>detail<TAB>text`` (text escaped: ``\\t``, ``\\\\``, undecodable bytes as
``\\xNN``); the summary (``--summary``, JSON, and a table on stdout) counts each rule, and
kept + rejected = input always holds (it is checked).

Engines: by default (``--executor local``) the curation runs as a datatrove pipeline
(:mod:`.datatrove_pipeline`: the rules as its filters, its exclusion writers for the rejects,
its exact deduplication across tasks): the input is split into ``--tasks`` byte ranges (default
``--workers``), ``--workers`` of them run at once, and ``--executor slurm`` or ``ray`` runs the
same stages on a cluster. ``--executor builtin`` is this module's own process pool (no
datatrove; what follows). Both give the same outputs, byte for byte.

Scaling (builtin): ``--workers`` processes check lines in parallel (order is kept); ``--num-shards N
--shard-id I`` processes the lines whose normalized text hashes to I modulo N, so the shards of
one corpus can run on separate machines (e.g. a SLURM array) and deduplication stays exact
across shards (every copy of a line falls in the same shard). Outputs are written to
``PATH.partial`` and renamed when complete: an interrupted run leaves no truncated output, and
running it again starts over.
"""
import argparse
import collections
import json
import logging
import multiprocessing
import os
import re
import sys
import time
import unicodedata
from typing import Dict, List, Optional, Sequence, Tuple

import xxhash

from ..errors import SmallcapError
from ..cli import configure_logging, error_exit_status
from . import line_rules  # noqa: F401  (registers the built-in rules)
from .registry import LINE_RULES, CurationConfigError, import_plugins

logger = logging.getLogger("fairseq_smallcap.curate")
PROG = "smallcap-curate"
DEFAULT_RULES = "length,long_word,email,url,markup,non_printable,alpha_ratio,repetition,langid,duplicate"
UNDECODABLE = re.compile("[\udc80-\udcff]")
ALWAYS_CHECKED = ("invalid_utf8", "empty")  # reasons that no --rules list can switch off


class CurateError(SmallcapError):
    """Bad input file, flag or rule."""


def normalize_for_dedup(text: str) -> str:
    """The text duplicates are compared on: NFKC, case-folded, whitespace runs collapsed."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def dedup_key(text: str) -> int:
    return xxhash.xxh64_intdigest(normalize_for_dedup(text).encode("utf-8"))


def escape_field(text: str) -> str:
    """One TSV field: backslash, tab, CR, LF escaped; undecodable bytes (surrogate-escaped) as \\xNN."""
    text = text.replace("\\", "\\\\").replace("\t", "\\t").replace("\r", "\\r").replace("\n", "\\n")
    return UNDECODABLE.sub(lambda m: f"\\x{ord(m.group(0)) - 0xDC00:02x}", text)


class LineChecker:
    """The per-line rules (everything but ``duplicate``, which needs the whole stream)."""

    def __init__(self, lang: str, rule_names: Sequence[str], args):
        classes = LINE_RULES.resolve([n for n in rule_names if n != "duplicate"], "--rules")
        self.rules = [cls(lang, args) for cls in classes]

    def check(self, text: str) -> Optional[Tuple[str, str]]:
        """``None`` to keep the line, else ``(rule, detail)``."""
        if not text.strip():
            return "empty", "blank line"
        for rule in self.rules:
            detail = rule.reject(text)
            if detail is not None:
                return rule.name, detail
        return None


    def check_all(self, texts: List[Optional[str]]) -> List[Optional[Tuple[str, str]]]:
        """:meth:`check` for each text; ``None`` texts (undecodable lines) are skipped."""
        return [None if text is None else self.check(text) for text in texts]


# The checker of the main process; forked workers inherit it (rules and models built once).
_CHECKER: Optional[LineChecker] = None


def _check_in_worker(texts: List[Optional[str]]):
    return _CHECKER.check_all(texts)


class StaticCurator:
    """Curates one monolingual file; see the module docstring."""

    def __init__(self, lang: str, rule_names: Sequence[str], args, workers: int = 1,
                 chunk_lines: int = 2000, log_interval: int = 100_000):
        self.lang, self.rule_names, self.args = lang, list(rule_names), args
        self.dedup = "duplicate" in self.rule_names
        self.workers, self.chunk_lines, self.log_interval = workers, chunk_lines, log_interval
        self.checker = LineChecker(lang, self.rule_names, args)

    def _chunks(self, stream, num_shards: int, shard_id: int, counts):
        """Yields lists of ``(line_no, text or None, key, decode_error)`` of this shard."""
        chunk = []
        for line_no, raw in enumerate(stream, 1):
            counts["read"] += 1
            raw = raw.rstrip(b"\n").rstrip(b"\r")
            try:
                text, error = raw.decode("utf-8"), None
                key = dedup_key(text)
                shard = key % num_shards
            except UnicodeDecodeError as e:
                text, key, shard = raw.decode("utf-8", "surrogateescape"), None, line_no % num_shards
                error = f"byte 0x{raw[e.start]:02x} at byte {e.start + 1}: {e.reason}"
            if shard != shard_id:
                counts["other_shards"] += 1
                continue
            chunk.append((line_no, text, key, error))
            if len(chunk) >= self.chunk_lines:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    def _checked_chunks(self, chunks):
        """Pairs every chunk with its rule decisions, in order, ``workers`` chunks in flight."""
        texts = lambda chunk: [None if error else text for _, text, _, error in chunk]  # noqa: E731
        if self.workers <= 1:
            for chunk in chunks:
                yield chunk, self.checker.check_all(texts(chunk))
            return
        global _CHECKER
        _CHECKER = self.checker
        pending = collections.deque()
        with multiprocessing.get_context("fork").Pool(self.workers) as pool:
            for chunk in chunks:
                pending.append((chunk, pool.apply_async(_check_in_worker, (texts(chunk),))))
                if len(pending) >= 2 * self.workers:
                    chunk, result = pending.popleft()
                    yield chunk, result.get()
            while pending:
                chunk, result = pending.popleft()
                yield chunk, result.get()

    def run(self, input_path: str, output_path: str, rejects_path: str,
            num_shards: int = 1, shard_id: int = 0) -> Dict:
        counts = collections.Counter()
        rejected = collections.Counter({reason: 0 for reason in ALWAYS_CHECKED + tuple(self.rule_names)})
        first_copy: Dict[int, int] = {}
        kept = 0
        start, next_log = time.time(), self.log_interval
        partial_out, partial_rej = output_path + ".partial", rejects_path + ".partial"
        with open(input_path, "rb") as stream, \
                open(partial_out, "w", encoding="utf-8", newline="\n") as out, \
                open(partial_rej, "w", encoding="utf-8", newline="\n") as rej:
            chunks = self._chunks(stream, num_shards, shard_id, counts)
            for chunk, decisions in self._checked_chunks(chunks):
                for (line_no, text, key, error), decision in zip(chunk, decisions):
                    if error is not None:
                        decision = ("invalid_utf8", error)
                    elif decision is None and self.dedup:
                        if key in first_copy:
                            decision = ("duplicate", f"of line {first_copy[key]}")
                        else:
                            first_copy[key] = line_no
                    if decision is None:
                        out.write(text + "\n")
                        kept += 1
                    else:
                        rejected[decision[0]] += 1
                        rej.write(f"{line_no}\t{decision[0]}\t{escape_field(decision[1])}\t{escape_field(text)}\n")
                if self.log_interval and counts["read"] >= next_log:
                    next_log += self.log_interval
                    done = kept + sum(rejected.values())
                    logger.info(f"read {counts['read']:,} lines, {done:,} in this shard, kept {kept:,} "
                                f"({kept / max(done, 1):.1%}), {counts['read'] / (time.time() - start):,.0f} lines/s")
        in_shard = counts["read"] - counts["other_shards"]
        if kept + sum(rejected.values()) != in_shard:  # the invariant users rely on
            raise RuntimeError(f"curation lost lines: kept {kept} + rejected {sum(rejected.values())} != {in_shard}")
        os.replace(partial_out, output_path)
        os.replace(partial_rej, rejects_path)
        return {
            "input": os.path.abspath(input_path), "output": os.path.abspath(output_path),
            "rejects": os.path.abspath(rejects_path), "lang": self.lang,
            "shard": {"id": shard_id, "num_shards": num_shards},
            "rules": self.rule_names, "lines_read": counts["read"],
            "lines_in_other_shards": counts["other_shards"], "lines_in_shard": in_shard,
            "kept": kept, "rejected": dict(rejected), "rejected_total": sum(rejected.values()),
            "seconds": round(time.time() - start, 2),
        }


def build_parser(argv) -> argparse.ArgumentParser:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--curation-plugins", default="")
    known, _ = pre.parse_known_args(argv)
    import_plugins(known.curation_plugins.split(","))

    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0].split(": ", 1)[1],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--lang", required=True, help="language of the corpus (ISO 639-1, e.g. en)")
    parser.add_argument("--input", required=True, help="monolingual text, one sentence per line")
    parser.add_argument("--output", required=True, help="kept lines")
    parser.add_argument("--rejects", required=True, help="rejected lines, TSV: line, rule, detail, text")
    parser.add_argument("--summary", default=None, help="JSON summary (default: OUTPUT.summary.json)")
    parser.add_argument("--rules", default=DEFAULT_RULES,
                        help="comma-separated rules, applied in this order; 'duplicate' is the "
                             f"normalized deduplication. Registered: {', '.join(sorted(LINE_RULES.entries))}, "
                             "duplicate. Empty lines and invalid UTF-8 are always rejected")
    parser.add_argument("--executor", choices=["local", "slurm", "ray", "builtin"], default="local",
                        help="local, slurm, ray: a datatrove pipeline on this machine or a cluster "
                             "(needs datatrove: pip install 'fairseq_smallcap[datatrove]'); builtin: "
                             "this command's own process pool, no datatrove")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes at once: datatrove tasks run at once (default 1 locally, no "
                             "limit on slurm/ray), or builtin's processes checking lines (default 1)")
    parser.add_argument("--tasks", type=int, default=None,
                        help="datatrove: byte ranges the input is split into (default --workers, 1); "
                             "required with slurm and ray")
    parser.add_argument("--work-dir", default=None,
                        help="datatrove: intermediate files and datatrove's logs (default OUTPUT.work); "
                             "on a shared filesystem for slurm/ray")
    parser.add_argument("--keep-work", action="store_true",
                        help="datatrove: keep the intermediate files (its logs and stats are kept anyway)")
    parser.add_argument("--slurm-partition", default=None, help="--executor slurm: the partition (required)")
    parser.add_argument("--slurm-time", default="24:00:00", help="--executor slurm: time limit of each job")
    parser.add_argument("--slurm-mem-per-cpu-gb", type=int, default=4, help="--executor slurm: memory a task")
    parser.add_argument("--num-shards", type=int, default=1, help="split the corpus by normalized-text hash")
    parser.add_argument("--shard-id", type=int, default=0, help="the shard this run processes (0-based)")
    parser.add_argument("--chunk-lines", type=int, default=2000, help="builtin: lines sent to a worker at once")
    parser.add_argument("--log-interval", type=int, default=100_000, help="log progress every N lines")
    parser.add_argument("--curation-plugins", default="",
                        help="comma-separated modules (names or .py paths) that register more rules")
    for cls in LINE_RULES.entries.values():
        if hasattr(cls, "add_args"):
            cls.add_args(parser)
    return parser


def check_args(args, rules: List[str]) -> None:
    if not os.path.isfile(args.input):
        raise CurateError(f"--input {args.input}: no such file")
    if args.num_shards < 1 or not 0 <= args.shard_id < args.num_shards:
        raise CurateError(f"--shard-id {args.shard_id} must be in [0, --num-shards {args.num_shards})")
    if args.workers is not None and args.workers < 1:
        raise CurateError(f"--workers {args.workers}: must be at least 1")
    if args.executor == "builtin":
        if args.tasks is not None:
            raise CurateError("--tasks: only for the datatrove executors (local, slurm, ray), not builtin")
    else:
        if args.tasks is None:
            if args.executor != "local":
                raise CurateError(f"--executor {args.executor}: give --tasks (byte ranges of the input)")
            args.tasks = args.workers or 1
        if args.tasks < 1:
            raise CurateError(f"--tasks {args.tasks}: must be at least 1")
        if args.executor == "slurm" and not args.slurm_partition:
            raise CurateError("--executor slurm: give --slurm-partition")
    paths = [os.path.abspath(p) for p in (args.input, args.output, args.rejects)]
    if len(set(paths)) != 3:
        raise CurateError("--input, --output and --rejects must be three different files")
    if len(set(rules)) != len(rules):
        raise CurateError(f"--rules {args.rules}: a rule is listed twice")
    for path in (args.output, args.rejects, args.summary):
        if path and os.path.dirname(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)


def print_summary(summary: Dict) -> None:
    print(f"\n{summary['input']} ({summary['lang']}, shard {summary['shard']['id']}/"
          f"{summary['shard']['num_shards']}): {summary['lines_in_shard']:,} lines")
    print(f"| {'rule':<14} | {'lines':>10} | {'share':>7} |\n|{'-' * 16}|{'-' * 12}|{'-' * 9}|")
    total = max(summary["lines_in_shard"], 1)
    for rule, count in summary["rejected"].items():
        print(f"| {rule:<14} | {count:>10,} | {count / total:>7.2%} |")
    print(f"| {'kept':<14} | {summary['kept']:>10,} | {summary['kept'] / total:>7.2%} |")


def run_datatrove(args, rules: List[str], summary_path: str) -> Optional[Dict]:
    """The datatrove engine (imported here only: nothing else of the package imports datatrove)."""
    try:
        from . import datatrove_pipeline
    except ImportError as e:
        raise CurateError(f"--executor {args.executor} needs datatrove ({e}): pip install "
                          f"'fairseq_smallcap[datatrove]', or use --executor builtin") from e
    plugins = [p for p in args.curation_plugins.split(",") if p.strip()]
    return datatrove_pipeline.run(args, rules, plugins, summary_path)


def cli_main(argv: Optional[Sequence[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    configure_logging()
    try:
        args = build_parser(argv).parse_args(argv)
        rules = [n.strip() for n in args.rules.split(",") if n.strip()]
        check_args(args, rules)
        summary_path = args.summary or args.output + ".summary.json"
        if args.executor == "builtin":
            curator = StaticCurator(args.lang, rules, args, workers=args.workers or 1,
                                    chunk_lines=args.chunk_lines, log_interval=args.log_interval)
            summary = curator.run(args.input, args.output, args.rejects, args.num_shards, args.shard_id)
            summary["engine"] = {"executor": "builtin", "workers": args.workers or 1}
            with open(summary_path, "w") as f:
                json.dump(summary, f, indent=2)
        else:
            summary = run_datatrove(args, rules, summary_path)
    except (CurateError, CurationConfigError) as e:
        return error_exit_status(PROG, e)
    except OSError as e:
        return error_exit_status(PROG, f"{e.filename or ''}: {e.strerror or e}")
    if summary is None:
        print(f"submitted the datatrove stages to SLURM (--executor slurm); their logs: "
              f"{os.path.abspath(args.work_dir or args.output + '.work')}/logs; the last job writes "
              f"{args.output}, {args.rejects} and the summary {summary_path}")
        return 0
    print_summary(summary)
    print(f"kept {summary['kept']:,} + rejected {summary['rejected_total']:,} = {summary['lines_in_shard']:,} "
          f"lines in {summary['seconds']:.1f} s; summary: {summary_path}")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())

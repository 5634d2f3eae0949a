"""``smallcap-curate`` as a datatrove pipeline (Penedo et al., HuggingFace datatrove), for corpora
past one machine (News Crawl: hundreds of millions of lines).

Imported only by ``smallcap-curate`` when ``--executor`` is ``local``, ``slurm`` or ``ray``:
loading the user dir, the task or :mod:`fairseq_smallcap.curation` never imports datatrove.

The input is split into ``--tasks`` byte ranges (a line belongs to the range holding its first
byte), and the work runs as five datatrove stages, each an executor that depends on the one
before (``WORK`` is ``--work-dir``, default ``OUTPUT.work``)::

    count    (tasks)  lines in each range -> WORK/data/counts; gives every line its number in the file
    rules    (tasks)  LineRangeReader -> invalid_utf8, empty, then one BaseFilter per --rules rule,
                      each with an exclusion writer (RejectsWriter: line, rule, detail, text)
                      -> KeptLinesWriter -> ExactDedupSignature (with 'duplicate')
    find     (tasks)  ExactFindDedups over the signatures of every task, one hash bucket per task
    dedup    (tasks)  the kept lines -> the duplicate filter (exclusion writer: 'of line N') -> kept
    merge    (1)      per-task kept lines concatenated in order; per-task rejects merged by line
                      number; kept + rejected = input checked; OUTPUT, REJECTS, summary renamed
                      from ``*.partial``; WORK/data removed (datatrove's logs and stats stay in
                      WORK/logs)

So the outputs are those of the built-in engine (``--executor builtin``, the process pool of
:mod:`.static_curator`), byte for byte, for any number of tasks: same kept lines in the same
order, same rejects file (rows in line order), same summary counts. Lines rejected by a rule are
never deduplicated, as before.

Deduplication is exact across tasks, with the same meaning as before: lines compare equal when
their normalized text (NFKC, case-folded, spaces collapsed) has the same 64-bit xxhash -- the
built-in engine compares the same 64-bit keys, so both are exact up to a hash collision
(probability about n^2 / 2^65: 1e-3 for 200M distinct lines). datatrove's exact dedup keeps,
of each group of equal hashes, the signature that sorts first on (hash, -priority, doc id), and
its stage 2 records only which documents are duplicates, not of which document. Two changes
keep the built-in engine's output: the signature's doc id is the line's number in the whole file
(not its index in the task), so the copy kept is the first in the file whichever task holds it;
and the finder (a subclass of ExactFindDedups) writes each duplicate with the line it repeats,
for the rejects' ``of line N``. Line numbers are datatrove's 32-bit doc ids: at most
4,294,967,295 lines per input file (more is refused, not wrapped). Each task of the rules stage
holds its signatures in memory until it writes them (datatrove's design): about 150 bytes a
kept line, so use enough tasks (10M lines a task is ~1.5 GB).

What is datatrove's and what is ours: the executors, the pipeline steps and their statistics
(``WORK/logs/STAGE/stats.json``), BaseFilter with exclusion writers, DiskWriter, and exact
dedup's signature stage (ExactDedupSignature, its hash-bucket files) and its signature reader
(``read_sigs``) are datatrove's. The reader is ours: datatrove's readers shard by file (task i
reads files i, i+N, ...) and yield JSON/Parquet documents, where ours splits one text file by
bytes and numbers its lines. Our filters and writers keep datatrove's statistics per batch of
256 lines and per task instead of per line: its per-document bookkeeping (a timer and three
counters per line and filter, a dozen filters) cost as much as the rules themselves. Importing
``datatrove.pipeline.dedup`` needs ``tokenizers`` (its package imports exact-substring dedup,
which imports it), although only exact dedup is used here.

``--num-shards N --shard-id I`` still selects the lines whose normalized text hashes to I mod
N, before any rule (lines of other shards are counted, not rejected).

Executors: ``local`` (datatrove's LocalPipelineExecutor, ``--workers`` tasks at once, forked
processes: works offline, no network), ``slurm`` (SlurmPipelineExecutor: one job array a stage,
chained with afterok dependencies; needs ``sbatch``, and the input and ``--work-dir`` on a
filesystem the nodes share; the command returns once submitted and the last job writes the
outputs and the summary) and ``ray`` (RayPipelineExecutor; needs the ``ray`` package). A missing
dependency is one error line, exit status 2. A run starts over: an existing work dir of an earlier
run is emptied first (a directory that is not one is refused).
"""
import glob
import heapq
import json
import os
import shutil
import struct
import sys
import time
from argparse import Namespace
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np
from datatrove.data import Document
from datatrove.executor.local import LocalPipelineExecutor
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.dedup.exact_dedup import ExactDedupConfig, ExactDedupSignature, ExactFindDedups, read_sigs
from datatrove.pipeline.filters.base_filter import BaseFilter
from datatrove.pipeline.writers.disk_base import DiskWriter
from datatrove.utils.batching import batched
from datatrove.utils.hashing import HashConfig
from datatrove.utils.logging import logger
from datatrove.utils.typeshelper import ExtensionHelperSD, StatHints

from .static_curator import ALWAYS_CHECKED, CurateError, escape_field, dedup_key, normalize_for_dedup

WORK_MARKER = ".smallcap-curate-work"
MAX_LINES = np.iinfo(np.uint32).max  # datatrove's doc ids are 32-bit
PAIR = np.dtype([("dup", "<u4"), ("orig", "<u4")])
PAIR_SUFFIX = ".dup_pairs"
BLOCK = 1 << 24


# ---------------------------------------------------------------------------------- byte ranges
def byte_range(size: int, rank: int, world_size: int):
    """Task ``rank``'s bytes ``[start, end)``; a line belongs to the range holding its first byte."""
    return size * rank // world_size, size * (rank + 1) // world_size


def _count_newlines(f, lo: int, hi: int) -> int:
    f.seek(lo)
    count, left = 0, hi - lo
    while left > 0:
        block = f.read(min(BLOCK, left))
        if not block:
            break
        count += block.count(b"\n")
        left -= len(block)
    return count


def lines_starting_in(f, start: int, end: int) -> int:
    """Lines whose first byte lies in ``[start, end)``: a line starts at 0 and after each newline
    that is not the file's last byte (so ``[start, end)`` has those after newlines at
    ``start - 1 .. end - 2``)."""
    if end <= start:
        return 0
    if start == 0:
        return 1 + _count_newlines(f, 0, end - 1)
    return _count_newlines(f, start - 1, end - 1)


def iter_range(f, start: int, end: int) -> Iterator[bytes]:
    """The raw lines (newline included) that start in ``[start, end)``."""
    if end <= start:
        return
    if start > 0:
        f.seek(start - 1)
        f.readline()  # the rest of the line that started before ``start``
    else:
        f.seek(0)
    position = f.tell()
    while position < end:
        raw = f.readline()
        if not raw:
            return
        position += len(raw)
        yield raw


def decode_line(raw: bytes):
    """``(text, error)`` as the built-in engine decodes a line (undecodable bytes surrogate-escaped)."""
    raw = raw.rstrip(b"\n").rstrip(b"\r")
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as e:
        return raw.decode("utf-8", "surrogateescape"), f"byte 0x{raw[e.start]:02x} at byte {e.start + 1}: {e.reason}"


class WorkDir:
    """The paths of one run's intermediate files."""

    def __init__(self, root: str):
        self.root = os.path.abspath(root)
        self.data = os.path.join(self.root, "data")
        for name in ("counts", "tasks", "rejects", "numbered", "kept", "sigs", "dups"):
            setattr(self, name, os.path.join(self.data, name))

    def logs(self, stage: str) -> str:
        return os.path.join(self.root, "logs", stage)

    def prepare(self) -> None:
        """An empty work dir (an earlier run's is emptied; any other non-empty directory is refused)."""
        if os.path.isdir(self.root) and os.listdir(self.root):
            if not os.path.exists(os.path.join(self.root, WORK_MARKER)):
                raise CurateError(f"--work-dir {self.root}: exists and is not a smallcap-curate work dir")
            shutil.rmtree(self.root)
        os.makedirs(self.data, exist_ok=True)
        open(os.path.join(self.root, WORK_MARKER), "w").close()


# ------------------------------------------------------------------------------------ the steps
class CountLines(PipelineStep):
    """Stage ``count``: the number of lines in this task's byte range."""

    name = "🔢 count lines"
    type = "📖 - READER"

    def __init__(self, input_path: str, work: WorkDir):
        super().__init__()
        self.input_path, self.work = input_path, work

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        with self.track_time(), open(self.input_path, "rb") as f:
            start, end = byte_range(os.fstat(f.fileno()).st_size, rank, world_size)
            count = lines_starting_in(f, start, end)
        self.stat_update("lines", value=count)
        os.makedirs(self.work.counts, exist_ok=True)
        with open(os.path.join(self.work.counts, f"{rank:05d}"), "w") as f:
            f.write(f"{count}\n")
        return iter(())


def read_counts(work: WorkDir, world_size: int) -> List[int]:
    counts = []
    for rank in range(world_size):
        with open(os.path.join(work.counts, f"{rank:05d}")) as f:
            counts.append(int(f.read()))
    return counts


class LineRangeReader(PipelineStep):
    """Stage ``rules``: this task's lines as documents numbered as in the whole file (metadata
    ``line``, and ``decode_error`` for invalid UTF-8), those of this ``--shard-id`` only."""

    name = "📖 lines of a byte range"
    type = "📖 - READER"

    def __init__(self, input_path: str, work: WorkDir, num_shards: int = 1, shard_id: int = 0,
                 log_interval: int = 100_000):
        super().__init__()
        self.input_path, self.work = input_path, work
        self.num_shards, self.shard_id, self.log_interval = num_shards, shard_id, log_interval

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        counts = read_counts(self.work, world_size)
        first = 1 + sum(counts[:rank])
        if first + counts[rank] - 1 > MAX_LINES:
            raise CurateError(f"{self.input_path}: more than {MAX_LINES:,} lines (datatrove's 32-bit doc ids)")
        line_no, other, start_time = first - 1, 0, time.time()
        with open(self.input_path, "rb") as f:
            start, end = byte_range(os.fstat(f.fileno()).st_size, rank, world_size)
            for raw in iter_range(f, start, end):
                line_no += 1
                text, error = decode_line(raw)
                if self.num_shards > 1:
                    shard = (line_no if error else dedup_key(text)) % self.num_shards
                    if shard != self.shard_id:
                        other += 1
                        continue
                if self.log_interval and (line_no - first + 1) % self.log_interval == 0:
                    logger.info(f"task {rank}: read {line_no - first + 1:,} of {counts[rank]:,} lines, "
                                f"{(line_no - first + 1) / (time.time() - start_time):,.0f} lines/s")
                yield Document(text=text, id=str(line_no), metadata={"line": line_no, "decode_error": error})
        lines = line_no - first + 1
        self.stat_update(StatHints.total, value=lines - other)
        self.stat_update("other_shards", value=other)
        if lines != counts[rank]:
            raise RuntimeError(f"{self.input_path} changed during the run: task {rank} read {lines} lines, "
                               f"counted {counts[rank]}")
        os.makedirs(self.work.tasks, exist_ok=True)
        with open(os.path.join(self.work.tasks, f"{rank:05d}.json"), "w") as f:
            json.dump({"rank": rank, "first_line": first, "lines": lines, "other_shards": other}, f)


class LinesWriter(DiskWriter):
    """Writes one text line a document, ``${rank}`` files, bytes as the built-in engine writes them."""

    type = "💽 - WRITER"

    def __init__(self, folder: str, suffix: str):
        super().__init__(folder, output_filename="${rank}" + suffix, compression=None, mode="wb")
        self.suffix = suffix

    def row(self, document: Document) -> str:
        raise NotImplementedError

    def _write(self, document, file_handler, filename):
        file_handler.write(self.row(document).encode("utf-8"))

    def write(self, document: Document, rank: int = 0, **kwargs):  # no per-line templating or statistics
        self._write(document, self.output_mg.get_file(f"{rank:05d}{self.suffix}"), None)

    def run(self, data, rank: int = 0, world_size: int = 1):
        """DiskWriter.run with statistics per task, not per line (they cost more than the writing)."""
        written, seconds = 0, 0.0
        with self:
            self.output_mg.get_file(f"{rank:05d}{self.suffix}")  # the file exists even when no line comes
            try:
                for document in data:
                    start = time.perf_counter()
                    self.write(document, rank)
                    seconds += time.perf_counter() - start
                    written += 1
                    yield document
            finally:
                self.stat_update(StatHints.total, value=written)
                self.stats.time_stats.update(seconds)


class RejectsWriter(LinesWriter):
    """The exclusion writer of every filter: ``line<TAB>rule<TAB>detail<TAB>text``, escaped."""

    name = "🗑 rejects (TSV)"

    def __init__(self, folder: str):
        super().__init__(folder, ".tsv")

    def row(self, document):
        meta = document.metadata
        return f"{meta['line']}\t{meta['filter_reason']}\t{escape_field(meta['detail'])}\t{escape_field(document.text)}\n"


class KeptLinesWriter(LinesWriter):
    """The kept lines; ``numbered`` prefixes each with its line number (for the dedup stage)."""

    name = "💾 kept lines"

    def __init__(self, folder: str, numbered: bool):
        super().__init__(folder, ".tsv" if numbered else ".txt")
        self.numbered = numbered

    def row(self, document):
        return f"{document.metadata['line']}\t{document.text}\n" if self.numbered else document.text + "\n"


class RejectFilter(BaseFilter):
    """A filter whose drops go to this reason's rejects (``WORK/data/rejects/REASON/RANK.tsv``)."""

    reason = ""

    def __init__(self, rejects_dir: str, reason: Optional[str] = None, batch_size: int = 256):
        self.reason = reason or self.reason
        self.name = f"🔻 {self.reason}"
        super().__init__(exclusion_writer=RejectsWriter(os.path.join(rejects_dir, self.reason)))
        self.batch_size = batch_size

    def reject(self, doc: Document, detail: str):
        doc.metadata["detail"] = detail
        return False, self.reason

    def run(self, data, rank: int = 0, world_size: int = 1):
        """BaseFilter.run (filter, exclusion writer with the reason, statistics) with its
        statistics and timing per batch of lines, not per line: datatrove's per-document
        bookkeeping, for each of a dozen filters, cost as much as the rules themselves."""
        with self.exclusion_writer as writer:
            for batch in batched(data, self.batch_size):
                start = time.perf_counter()
                results = self.filter_batch(batch)
                self.stats.time_stats.update(time.perf_counter() - start)
                dropped = 0
                for doc, result in zip(batch, results):
                    if result is True:
                        yield doc
                    else:
                        dropped += 1
                        doc.metadata["filter_reason"] = self.reason
                        writer.write(doc, rank)
                self.stat_update(StatHints.total, value=len(batch))
                self.stat_update(StatHints.forwarded, value=len(batch) - dropped)
                if dropped:
                    self.stat_update(StatHints.dropped, f"dropped_{self.reason}", value=dropped)



class InvalidUtf8Filter(RejectFilter):
    reason = "invalid_utf8"

    def filter(self, doc):
        error = doc.metadata["decode_error"]
        return True if error is None else self.reject(doc, error)


class EmptyLineFilter(RejectFilter):
    reason = "empty"

    def filter(self, doc):
        return True if doc.text.strip() else self.reject(doc, "blank line")


_BUILT_RULES: Dict[tuple, object] = {}


def build_rule(name: str, lang: str, args: Namespace, plugins: Sequence[str]):
    """One registered rule, built once per process (forked workers inherit the parent's)."""
    key = (name, lang, tuple(sorted((k, repr(v)) for k, v in vars(args).items())), tuple(plugins))
    if key not in _BUILT_RULES:
        from . import line_rules  # noqa: F401  (registers the built-in rules)
        from .registry import LINE_RULES, import_plugins

        import_plugins(plugins)
        (cls,) = LINE_RULES.resolve([name], "--rules")
        _BUILT_RULES[key] = cls(lang, args)
    return _BUILT_RULES[key]


class LineRuleFilter(RejectFilter):
    """One registered line rule (:mod:`.line_rules` or a plugin's) as a datatrove filter."""

    def __init__(self, rule_name: str, lang: str, args: Namespace, plugins: Sequence[str], rejects_dir: str):
        super().__init__(rejects_dir, rule_name)
        self.lang, self.args, self.plugins = lang, args, list(plugins)
        self._rule = None

    def __getstate__(self):  # the built rule (models) is not shipped to workers: each builds its own
        state = self.__dict__.copy()
        state["_rule"] = None
        return state

    def filter(self, doc):
        if self._rule is None:
            self._rule = build_rule(self.reason, self.lang, self.args, self.plugins)
        detail = self._rule.reject(doc.text)
        return True if detail is None else self.reject(doc, detail)


def dedup_content(doc: Document) -> bytes:
    """What lines are compared on: the built-in engine's normalized text."""
    return normalize_for_dedup(doc.text).encode("utf-8")


DEDUP_CONFIG = ExactDedupConfig(content_getter=dedup_content, hash_config=HashConfig(precision=64, hash_fc="xxhash"))


class LineDedupSignature(ExactDedupSignature):
    """datatrove's stage 1, the doc id being the line number in the whole file (so that the copy
    kept is the first in the file, whichever task holds it)."""

    def get_hashes(self, doc, doc_idx):
        return [(self.hash_fc(self.config.content_getter(doc)), 1, doc.metadata["line"])]


class LineDedupFind(ExactFindDedups):
    """datatrove's stage 2, that also records which line each duplicate repeats: it writes
    ``(duplicate line, first line)`` pairs (``<u4,<u4``) to ``RANK/SIGNATURE_TASK.dup_pairs``."""

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        with self.stats.time_stats:
            if world_size == 1:
                sig_files = self.data_folder.list_files(glob_pattern="*/*" + ExtensionHelperSD.stage_1_signature)
            else:
                sig_files = self.data_folder.list_files(subdirectory=f"{rank:04d}",
                                                        glob_pattern=ExtensionHelperSD.stage_1_signature)
            readers = [read_sigs(file, i, self.config.hash_config, lines_to_buffer=self.lines_to_buffer)
                       for i, file in enumerate(self.data_folder.open_files(sig_files))]
            queue = [sig for sig in (next(reader, None) for reader in readers) if sig]
            heapq.heapify(queue)
            pair = struct.Struct("<II")
            output = self.output_folder.get_output_file_manager(mode="wb")
            first = None
            try:
                while queue:
                    sig = heapq.heappop(queue)
                    if first is not None and first.hash_value == sig.hash_value:
                        output.write(f"{rank:05d}/{sig.file_stem}{PAIR_SUFFIX}", pair.pack(sig.doc_id, first.doc_id))
                        self.stat_update("duplicates")
                    else:
                        first = sig
                    following = next(readers[sig.file_id], None)
                    if following:
                        heapq.heappush(queue, following)
            finally:
                output.close()


class LineDedupFilter(RejectFilter):
    """datatrove's stage 3 for numbered lines: drops the duplicates found for this task, with
    the line each repeats as the detail."""

    reason = "duplicate"

    def __init__(self, dups_dir: str, rejects_dir: str):
        super().__init__(rejects_dir)
        self.dups_dir = dups_dir

    def run(self, data, rank: int = 0, world_size: int = 1):
        files = sorted(glob.glob(os.path.join(self.dups_dir, "*", f"{rank:05d}{PAIR_SUFFIX}")))
        pairs = np.concatenate([np.fromfile(path, dtype=PAIR) for path in files] or [np.empty(0, PAIR)])
        pairs.sort(order="dup")
        self._dups, self._origs, self._next = pairs["dup"].tolist(), pairs["orig"].tolist(), 0
        yield from super().run(data, rank, world_size)
        if self._next != len(self._dups):
            raise RuntimeError(f"task {rank}: {len(self._dups) - self._next} duplicates not found in its kept lines")

    def filter(self, doc):
        if self._next < len(self._dups) and self._dups[self._next] == doc.metadata["line"]:
            self._next += 1
            return self.reject(doc, f"of line {self._origs[self._next - 1]}")
        return True


class NumberedLinesReader(PipelineStep):
    """Stage ``dedup``: the lines this task kept in stage ``rules``, with their line numbers."""

    name = "📖 kept lines"
    type = "📖 - READER"

    def __init__(self, work: WorkDir):
        super().__init__()
        self.work = work

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        with open(os.path.join(self.work.numbered, f"{rank:05d}.tsv"), "rb") as f:
            for raw in f:
                number, _, text = raw[:-1].partition(b"\t")
                yield Document(text=text.decode("utf-8"), id=number.decode(), metadata={"line": int(number)})


class MergeOutputs(PipelineStep):
    """Stage ``merge`` (one task): the outputs, the invariant and the summary."""

    name = "🧩 merge"
    type = "💽 - WRITER"

    def __init__(self, work: WorkDir, tasks: int, reasons: Sequence[str], output: str, rejects: str,
                 summary_path: str, summary: Dict, start_time: float, keep_work: bool = False):
        super().__init__()
        self.work, self.tasks, self.reasons = work, tasks, list(reasons)
        self.output, self.rejects, self.summary_path = output, rejects, summary_path
        self.summary, self.start_time, self.keep_work = summary, start_time, keep_work

    @staticmethod
    def _rows(path: str, counter: Dict[str, int], reason: str):
        with open(path, "rb") as f:
            for row in f:
                counter[reason] += 1
                yield row

    def run(self, data=None, rank: int = 0, world_size: int = 1):
        tasks = []
        for task in range(self.tasks):
            with open(os.path.join(self.work.tasks, f"{task:05d}.json")) as f:
                tasks.append(json.load(f))
        kept = 0
        rejected = {reason: 0 for reason in self.reasons}
        partial_out, partial_rej = self.output + ".partial", self.rejects + ".partial"
        with self.track_time(), open(partial_out, "wb") as out, open(partial_rej, "wb") as rej:
            for task in range(self.tasks):
                with open(os.path.join(self.work.kept, f"{task:05d}.txt"), "rb") as f:
                    while block := f.read(BLOCK):
                        out.write(block)
                        kept += block.count(b"\n")
                streams = [self._rows(path, rejected, reason) for reason in self.reasons
                           if os.path.exists(path := os.path.join(self.work.rejects, reason, f"{task:05d}.tsv"))]
                rej.writelines(heapq.merge(*streams, key=lambda row: int(row[:row.index(b"\t")])))
        read = sum(t["lines"] for t in tasks)
        other = sum(t["other_shards"] for t in tasks)
        in_shard, rejected_total = read - other, sum(rejected.values())
        if kept + rejected_total != in_shard:  # the invariant users rely on
            raise RuntimeError(f"curation lost lines: kept {kept} + rejected {rejected_total} != {in_shard}")
        os.replace(partial_out, self.output)
        os.replace(partial_rej, self.rejects)
        summary = dict(self.summary, lines_read=read, lines_in_other_shards=other, lines_in_shard=in_shard,
                       kept=kept, rejected=rejected, rejected_total=rejected_total,
                       seconds=round(time.time() - self.start_time, 2))
        summary["engine"]["tasks"] = [{k: t[k] for k in ("first_line", "lines")} for t in tasks]
        with open(self.summary_path, "w") as f:
            json.dump(summary, f, indent=2)
        self.stat_update("kept", value=kept)
        if not self.keep_work:
            shutil.rmtree(self.work.data, ignore_errors=True)
        return iter(())


# --------------------------------------------------------------------------------- the pipeline
def build_stages(args, rules: Sequence[str], plugins: Sequence[str], work: WorkDir, tasks: int,
                 summary_path: str, start_time: float):
    """``[(stage name, pipeline, tasks)]`` in order; see the module docstring."""
    dedup = "duplicate" in rules
    rule_names = [name for name in rules if name != "duplicate"]
    filters = [InvalidUtf8Filter(work.rejects), EmptyLineFilter(work.rejects)]
    filters += [LineRuleFilter(name, args.lang, args, plugins, work.rejects) for name in rule_names]
    rules_stage = [LineRangeReader(args.input, work, args.num_shards, args.shard_id, args.log_interval), *filters]
    stages = [("count", [CountLines(args.input, work)], tasks)]
    if dedup:
        rules_stage += [KeptLinesWriter(work.numbered, numbered=True),
                        LineDedupSignature(work.sigs, DEDUP_CONFIG, finder_workers=tasks)]
        stages += [("rules", rules_stage, tasks),
                   ("find", [LineDedupFind(work.sigs, work.dups, DEDUP_CONFIG)], tasks),
                   ("dedup", [NumberedLinesReader(work), LineDedupFilter(work.dups, work.rejects),
                              KeptLinesWriter(work.kept, numbered=False)], tasks)]
    else:
        stages += [("rules", rules_stage + [KeptLinesWriter(work.kept, numbered=False)], tasks)]
    summary = {
        "input": os.path.abspath(args.input), "output": os.path.abspath(args.output),
        "rejects": os.path.abspath(args.rejects), "lang": args.lang,
        "shard": {"id": args.shard_id, "num_shards": args.num_shards}, "rules": list(rules),
        "engine": {"executor": args.executor, "work_dir": work.root},
    }
    reasons = list(ALWAYS_CHECKED) + list(rules)
    stages.append(("merge", [MergeOutputs(work, tasks, reasons, os.path.abspath(args.output),
                                          os.path.abspath(args.rejects), os.path.abspath(summary_path),
                                          summary, start_time, keep_work=args.keep_work)], 1))
    return stages


def check_executor(kind: str) -> None:
    """One clear error when the executor's own dependency is missing."""
    if kind == "slurm" and shutil.which("sbatch") is None:
        raise CurateError("--executor slurm: sbatch not found on PATH (run from a SLURM login node)")
    if kind == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise CurateError("--executor ray: the ray package is not installed (pip install 'datatrove[ray]')")


def build_executor(kind: str, stages, work: WorkDir, workers: Optional[int], slurm: Optional[Dict] = None):
    """The executor of the last stage, each stage depending on the one before (datatrove runs or
    submits the chain from the last one)."""
    executor = None
    for name, pipeline, tasks in stages:
        common = dict(pipeline=pipeline, tasks=tasks, logging_dir=work.logs(name), depends=executor)
        if kind == "local":
            executor = LocalPipelineExecutor(**common, workers=min(workers or 1, tasks),
                                             start_method="fork" if sys.platform == "linux" else "forkserver")
        elif kind == "slurm":
            from datatrove.executor.slurm import SlurmPipelineExecutor

            slurm = slurm or {}
            venv = sys.prefix if sys.prefix != sys.base_prefix else None
            executor = SlurmPipelineExecutor(**common, workers=workers or -1, time=slurm.get("time", "24:00:00"),
                                             partition=slurm["partition"], job_name=f"smallcap-curate-{name}",
                                             mem_per_cpu_gb=slurm.get("mem_per_cpu_gb", 4), venv_path=venv,
                                             slurm_logs_folder=os.path.join(work.root, "slurm_logs", name))
        elif kind == "ray":
            from datatrove.executor.ray import RayPipelineExecutor

            executor = RayPipelineExecutor(**common, workers=workers or -1)
        else:
            raise CurateError(f"--executor {kind}: unknown")
    return executor


def run(args, rules: Sequence[str], plugins: Sequence[str], summary_path: str) -> Optional[Dict]:
    """Runs (local, ray) or submits (slurm) the pipeline; returns the summary once it is written
    (``None`` for slurm)."""
    check_executor(args.executor)
    for name in rules:  # a bad rule or option is reported here, not in a task
        if name != "duplicate":
            build_rule(name, args.lang, args, plugins)
    work = WorkDir(args.work_dir or args.output + ".work")
    work.prepare()
    tasks = args.tasks
    stages = build_stages(args, rules, plugins, work, tasks, summary_path, time.time())
    slurm = {"partition": args.slurm_partition, "time": args.slurm_time, "mem_per_cpu_gb": args.slurm_mem_per_cpu_gb}
    executor = build_executor(args.executor, stages, work, args.workers, slurm)
    executor.run()
    if args.executor == "slurm":
        return None
    with open(summary_path) as f:
        return json.load(f)

"""smallcap-prepare: raw text -> data layout of fairseq's ``online_backtranslation`` task.

The pipeline is

1. read and check the inputs (plain text or ``.gz``, strict UTF-8, no empty lines in the
   parallel files; empty monolingual lines are an error unless ``--drop-empty``);
2. train ONE joint sentencepiece model (Kudo & Richardson 2018, "SentencePiece: A simple and
   language independent subword tokenizer and detokenizer for Neural Text Processing",
   EMNLP demo) on the monolingual training text of all languages, or reuse ``--spm-model``;
3. encode every file into space-separated pieces and write the joint fairseq ``dict.txt``;
4. binarize with fairseq's own ``fairseq_cli.preprocess`` (run as subprocesses) and check from
   the ``.idx`` files that every kept line became exactly one sentence of the expected length.

The layout written under ``DEST`` (src, tgt = the first two languages, e.g. en, fr)::

    dict.txt                              joint fairseq dictionary (spm pieces except <unk>)
    spm.model, spm.vocab                  the joint sentencepiece model
    {lang}/train.bin, {lang}/train.idx    monolingual training data, one directory per language
    {lang}/dict.txt, {lang}/preprocess.log   written there by fairseq-preprocess
    {lang}/valid.bin, {lang}/valid.idx    held-out monolingual sentences (--heldout-mono), never
                                          trained on: round-trip BLEU model selection
                                          (``--eval-round-trip``, Lample et al. 2018, Sec. 4.4)
    valid.{src}-{tgt}.{src|tgt}.bin/.idx  parallel validation data
    test.{src}-{tgt}.{src|tgt}.bin/.idx   parallel test data (when test files are given)
    dict.{src}.txt, dict.{tgt}.txt        copies of dict.txt written by fairseq-preprocess (they
                                          let the plain ``translation`` task read the same dir)
    preprocess.log                        fairseq-preprocess log of the parallel data
    raw/train.{lang}                      the raw monolingual training text that was used
    raw/valid.{lang}, raw/test.{lang}     the raw valid/test text (sacreBLEU references)
    raw/valid_mono.{lang}                 the raw held-out monolingual text
    rejects.tsv                           with --drop-empty: file<TAB>line<TAB>reason per dropped line
    prepare.json                          summary: inputs, line counts, vocabulary, options
    tmp/                                  the encoded (piece) text; deleted unless --keep-tmp

``--multi30k`` applies the unsupervised split of Lample et al. 2018 ("Unsupervised Machine
Translation Using Monolingual Corpora Only", ICLR 2018) to the Multi30k training data:
English is the first half of ``train.en`` (lines 1-14,500), French the second half of
``train.fr`` (lines 14,501-29,000), so the model never sees an aligned training pair.

``--heldout-mono N`` sets aside the last N lines of each language's monolingual training text
(after ``--max-train-lines``; for ``--multi30k`` the end of each language's half, so the split
is kept) *before* the sentencepiece model is trained: they are never trained on, and serve the
unsupervised model selection of Lample et al. 2018 (Sec. 4.4), round-trip BLEU x -> y -> x.
Default (CLI): min(500, a tenth of the lines) per language; 0: none.
"""

import argparse
import gzip
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
import zlib
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .errors import SmallcapError
from .cli import configure_logging, error_exit_status

logger = logging.getLogger("fairseq_smallcap.prepare")

PROG = "smallcap-prepare"
FORMAT_VERSION = 1
DEFAULT_VOCAB_SIZE = 8000
DEFAULT_SPM_INPUT_SENTENCE_SIZE = 1_000_000
SPM_MODEL_TYPES = ("unigram", "bpe", "char", "word")
# fairseq.data.Dictionary puts these four symbols first; dict.txt must not repeat them.
FAIRSEQ_SPECIAL_SYMBOLS = ("<s>", "<pad>", "</s>", "<unk>")
FAIRSEQ_UNK = "<unk>"
ENCODE_BATCH_LINES = 10_000
DEFAULT_HELDOUT_MONO = 500  # the CLI default: at most this many, and at most a tenth of the lines
HELDOUT_SPLIT = "valid_mono"  # raw/valid_mono.{lang}, tmp/valid_mono.{lang} -> {lang}/valid.bin
MULTI30K_LANGS = ("en", "fr")
MULTI30K_NAMES = {"train": "train", "valid": "val", "test": "test_2016_flickr"}
_WHITESPACE = re.compile(r"\s+")  # what fairseq's tokenize_line splits on
_LANG_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")

PathLike = Union[str, os.PathLike]


class PrepareError(SmallcapError):
    """A problem with the inputs or options; the CLI prints it and exits with status 2."""


@dataclass(frozen=True)
class TextSource:
    """A line range of one input file.

    ``flag`` says where the file came from (e.g. ``--mono en``) for error messages.
    ``first_line`` is 1-based; ``max_lines`` = None reads to the end of the file.
    """

    path: str
    flag: str
    first_line: int = 1
    max_lines: Optional[int] = None

    def describe(self) -> str:
        if self.first_line == 1 and self.max_lines is None:
            return self.path
        last = "end" if self.max_lines is None else str(self.first_line + self.max_lines - 1)
        return f"{self.path} (lines {self.first_line}-{last})"


@dataclass
class SourceStats:
    """Line counts of one input source."""

    source: TextSource
    split: str
    lang: str
    lines_read: int = 0
    lines_kept: int = 0
    empty_dropped: int = 0

    def to_json(self) -> dict:
        return {
            "split": self.split,
            "lang": self.lang,
            "flag": self.source.flag,
            "path": self.source.path,
            "first_line": self.source.first_line,
            "max_lines": self.source.max_lines,
            "lines_read": self.lines_read,
            "lines_kept": self.lines_kept,
            "empty_dropped": self.empty_dropped,
        }


@dataclass
class EncodedFile:
    """What encoding one raw file produced: per-line sizes (pieces + eos) and unk count."""

    sizes: array = field(default_factory=lambda: array("i"))
    unk: int = 0
    no_pieces: int = 0


# --------------------------------------------------------------------------------------
# reading inputs
# --------------------------------------------------------------------------------------


def _open_binary(path: str):
    """Open a plain or gzip (by ``.gz`` suffix) file for binary reading."""
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def _check_exists(source: TextSource) -> None:
    if not os.path.isfile(source.path):
        what = "is not a file" if os.path.exists(source.path) else "not found"
        raise PrepareError(f"input file {what}: {source.path} (from {source.flag})")


def iter_source_lines(source: TextSource) -> Iterator[Tuple[int, str]]:
    """Yield ``(line_number, text)`` for the line range of ``source``, strictly decoded.

    Lines are split on ``\\n`` only; a trailing ``\\r`` (CRLF files) and a UTF-8 byte order
    mark at the start of the file are removed. Invalid UTF-8 and a carriage return inside a
    line (which would break line alignment downstream) raise :class:`PrepareError`.
    """
    _check_exists(source)
    last = None if source.max_lines is None else source.first_line + source.max_lines - 1
    lineno = 0
    try:
        with _open_binary(source.path) as f:
            for lineno, raw in enumerate(f, 1):
                if lineno < source.first_line:
                    continue
                if last is not None and lineno > last:
                    break
                yield lineno, _decode_line(raw, lineno, source)
    except (OSError, EOFError, zlib.error) as e:
        raise PrepareError(
            f"cannot read {source.path} (from {source.flag}) near line {lineno + 1}: {e}"
        ) from None


def _decode_line(raw: bytes, lineno: int, source: TextSource) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise PrepareError(
            f"{source.path}: line {lineno}: invalid UTF-8 (bytes {raw[e.start:e.end]!r} at "
            f"byte {e.start + 1} of the line; from {source.flag}); "
            "the inputs must be UTF-8 text"
        ) from None
    if text.endswith("\n"):
        text = text[:-1]
    if text.endswith("\r"):
        text = text[:-1]
    if lineno == 1 and text.startswith("\ufeff"):
        text = text[1:]
    if "\r" in text:
        raise PrepareError(
            f"{source.path}: line {lineno}: carriage return (\\r) inside the line "
            f"(from {source.flag}); convert the file to \\n line endings"
        )
    return text


def count_lines(source: TextSource) -> int:
    """Number of lines of the whole file of ``source`` (a last line without ``\\n`` counts)."""
    _check_exists(source)
    try:
        with _open_binary(source.path) as f:
            return sum(1 for _ in f)
    except (OSError, EOFError, zlib.error) as e:
        raise PrepareError(f"cannot read {source.path} (from {source.flag}): {e}") from None


def is_empty(text: str) -> bool:
    """Empty or whitespace-only (Unicode whitespace, as ``str.strip`` sees it)."""
    return not text.strip()


def copy_mono_sources(
    sources: Sequence[TextSource],
    lang: str,
    out_path: Path,
    drop_empty: bool,
    rejects,
) -> List[SourceStats]:
    """Concatenate the monolingual ``sources`` of ``lang`` into ``out_path``.

    Empty lines raise :class:`PrepareError`, or with ``drop_empty`` are dropped and written
    to ``rejects`` (a text file object, or None) as ``file<TAB>line<TAB>empty``.
    """
    all_stats = []
    with open(out_path, "w", encoding="utf-8", newline="\n") as out:
        for source in sources:
            stats = SourceStats(source, "train", lang)
            for lineno, text in iter_source_lines(source):
                stats.lines_read += 1
                if is_empty(text):
                    if not drop_empty:
                        raise PrepareError(
                            f"{source.path}: line {lineno}: empty line in a monolingual "
                            f"training file (from {source.flag}); pass --drop-empty to drop "
                            "empty lines"
                        )
                    stats.empty_dropped += 1
                    rejects.write(f"{source.path}\t{lineno}\tempty\n")
                    continue
                out.write(text + "\n")
                stats.lines_kept += 1
            assert stats.lines_kept + stats.empty_dropped == stats.lines_read
            logger.info(
                f"[{lang}] train: {source.describe()}: {stats.lines_read} lines read, "
                f"{stats.lines_kept} kept, {stats.empty_dropped} empty lines dropped"
            )
            all_stats.append(stats)
    if sum(s.lines_kept for s in all_stats) == 0:
        raise PrepareError(f"no monolingual training lines left for language {lang!r}")
    return all_stats


def copy_parallel_sources(
    split: str, src_source: TextSource, tgt_source: TextSource, pair: Tuple[str, str], raw_dir: Path
) -> List[SourceStats]:
    """Copy the parallel ``split`` files to ``raw_dir/{split}.{lang}`` after checking them.

    Both files must be non-empty, free of empty lines and have the same number of lines.
    """
    all_stats = []
    for lang, source in zip(pair, (src_source, tgt_source)):
        stats = SourceStats(source, split, lang)
        with open(raw_dir / f"{split}.{lang}", "w", encoding="utf-8", newline="\n") as out:
            for lineno, text in iter_source_lines(source):
                stats.lines_read += 1
                if is_empty(text):
                    raise PrepareError(
                        f"{source.path}: line {lineno}: empty line in a parallel {split} file "
                        f"(from {source.flag}); parallel files must have a sentence on every line"
                    )
                out.write(text + "\n")
        stats.lines_kept = stats.lines_read
        if stats.lines_read == 0:
            raise PrepareError(f"parallel {split} file is empty: {source.path} (from {source.flag})")
        all_stats.append(stats)
    a, b = all_stats
    if a.lines_read != b.lines_read:
        raise PrepareError(
            f"parallel {split} files differ in length: {a.source.path} has {a.lines_read} "
            f"lines ({a.source.flag}), {b.source.path} has {b.lines_read} lines ({b.source.flag})"
        )
    logger.info(f"[{pair[0]}-{pair[1]}] {split}: {a.lines_read} sentence pairs")
    return all_stats


def heldout_count(requested: Optional[int], lines: int, lang: str) -> int:
    """How many of ``lines`` monolingual ``lang`` lines to hold out: ``requested`` exactly, or
    for ``None`` (the CLI default) min(500, a tenth of the lines, at least 1)."""
    if requested is None:
        if lines < 2:
            raise PrepareError(f"{lang}: {lines} monolingual line(s), too few to hold any out "
                               "for round-trip validation; pass --heldout-mono 0")
        return min(DEFAULT_HELDOUT_MONO, max(1, lines // 10))
    if requested < 0:
        raise PrepareError(f"--heldout-mono must be at least 0 (got {requested})")
    if requested and requested >= lines:
        raise PrepareError(f"--heldout-mono {requested} leaves no training lines for {lang!r} "
                           f"({lines} monolingual lines); pass a smaller --heldout-mono")
    return requested


def hold_out_mono(raw_dir: Path, lang: str, lines: int, count: int) -> None:
    """Move the last ``count`` of the ``lines`` lines of ``raw_dir/train.{lang}`` to
    ``raw_dir/valid_mono.{lang}`` (streamed; the train file is rewritten without them)."""
    train, heldout = raw_dir / f"train.{lang}", raw_dir / f"{HELDOUT_SPLIT}.{lang}"
    tmp = raw_dir / f"train.{lang}.tmp"
    keep = lines - count
    with open(tmp, "w", encoding="utf-8", newline="\n") as out_train, \
            open(heldout, "w", encoding="utf-8", newline="\n") as out_heldout:
        for i, text in enumerate(_iter_text_file(train)):
            (out_train if i < keep else out_heldout).write(text + "\n")
    os.replace(tmp, train)
    logger.info(f"[{lang}] held out the last {count} of {lines} monolingual lines "
                f"({raw_dir / f'{HELDOUT_SPLIT}.{lang}'}); {keep} left for training")


# --------------------------------------------------------------------------------------
# sentencepiece
# --------------------------------------------------------------------------------------


def normalize_spaces(text: str) -> str:
    """Map every run of (Unicode) whitespace to one space, as fairseq's tokenizer would see it."""
    return _WHITESPACE.sub(" ", text).strip()


def _iter_text_file(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8", newline="\n") as f:
        for line in f:
            yield line[:-1] if line.endswith("\n") else line


def train_sentencepiece(
    train_files: Sequence[Path],
    model_prefix: Path,
    vocab_size: int,
    model_type: str,
    input_sentence_size: int,
    soft_vocab_limit: bool,
    seed: int,
    num_threads: int,
) -> None:
    """Train the joint sentencepiece model on all ``train_files`` -> ``model_prefix``.model/.vocab.

    <unk> is id 0; bos, eos and pad are disabled (fairseq adds its own). Training is
    deterministic for a fixed ``seed`` and ``num_threads``.
    """
    import sentencepiece as spm

    def sentences() -> Iterator[str]:
        for path in train_files:
            for text in _iter_text_file(path):
                yield normalize_spaces(text)

    spm.set_random_generator_seed(seed)
    logger.info(
        f"training the joint sentencepiece model: {model_type}, vocab size {vocab_size}, "
        f"on {', '.join(str(p) for p in train_files)}"
    )
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=sentences(),
            model_prefix=str(model_prefix),
            vocab_size=vocab_size,
            model_type=model_type,
            character_coverage=1.0,
            input_sentence_size=input_sentence_size,
            shuffle_input_sentence=True,
            unk_id=0,
            bos_id=-1,
            eos_id=-1,
            pad_id=-1,
            hard_vocab_limit=not soft_vocab_limit,
            num_threads=num_threads,
            minloglevel=1,
        )
    except RuntimeError as e:
        hint = ""
        if "vocab" in str(e).lower():
            hint = " (lower --vocab-size, or pass --soft-vocab-limit)"
        raise PrepareError(f"sentencepiece training failed: {e}{hint}") from None


def install_spm_model(spm_model: str, dest: Path) -> None:
    """Copy an existing sentencepiece model to ``dest/spm.model`` (+ ``spm.vocab``)."""
    import sentencepiece as spm

    src_model = Path(spm_model)
    dst_model = dest / "spm.model"
    if src_model.resolve() != dst_model.resolve():
        shutil.copyfile(src_model, dst_model)
    src_vocab = src_model.with_suffix(".vocab")
    dst_vocab = dest / "spm.vocab"
    if src_vocab.is_file():
        if src_vocab.resolve() != dst_vocab.resolve():
            shutil.copyfile(src_vocab, dst_vocab)
        return
    sp = spm.SentencePieceProcessor(model_file=str(dst_model))
    with open(dst_vocab, "w", encoding="utf-8", newline="\n") as f:
        for i in range(sp.get_piece_size()):
            f.write(f"{sp.id_to_piece(i)}\t{sp.get_score(i):g}\n")


def load_spm(model_path: Path):
    """Load a sentencepiece model, raising :class:`PrepareError` if it is not one."""
    import sentencepiece as spm

    try:
        return spm.SentencePieceProcessor(model_file=str(model_path))
    except (OSError, RuntimeError) as e:
        raise PrepareError(f"cannot load sentencepiece model {model_path}: {e}") from None


def dictionary_piece_ids(sp) -> List[int]:
    """The spm ids that go into dict.txt: every piece except unknown and control pieces.

    Raises :class:`PrepareError` for a piece a fairseq dictionary cannot hold (one containing
    whitespace, or one of fairseq's own special symbols).
    """
    ids = []
    for i in range(sp.get_piece_size()):
        if sp.is_unknown(i) or sp.is_control(i):
            continue
        piece = sp.id_to_piece(i)
        if not piece or _WHITESPACE.search(piece):
            raise PrepareError(f"sentencepiece piece {piece!r} (id {i}) contains whitespace")
        if piece in FAIRSEQ_SPECIAL_SYMBOLS:
            raise PrepareError(
                f"sentencepiece piece {piece!r} (id {i}) collides with a fairseq special symbol"
            )
        ids.append(i)
    return ids


def encode_file(sp, id_to_token: Sequence[str], in_path: Path, out_path: Path, counts) -> EncodedFile:
    """Encode ``in_path`` into space-separated pieces in ``out_path``, one line per line.

    Unknown pieces are written as ``<unk>``. If ``counts`` (a numpy int64 array, one slot per
    spm id) is given, the piece frequencies are added to it.
    """
    result = EncodedFile()
    unk_id = sp.unk_id()

    def flush(batch: List[str], out) -> None:
        batch_ids = sp.encode([normalize_spaces(t) for t in batch], out_type=int)
        out.write("".join(" ".join(id_to_token[i] for i in ids) + "\n" for ids in batch_ids))
        result.sizes.extend(len(ids) + 1 for ids in batch_ids)  # fairseq appends </s>
        result.no_pieces += sum(1 for ids in batch_ids if not ids)
        flat = np.fromiter(itertools.chain.from_iterable(batch_ids), dtype=np.int64)
        result.unk += int(np.count_nonzero(flat == unk_id))
        if counts is not None:
            np.add(counts, np.bincount(flat, minlength=len(counts))[: len(counts)], out=counts)

    with open(out_path, "w", encoding="utf-8", newline="\n") as out:
        batch: List[str] = []
        for text in _iter_text_file(in_path):
            batch.append(text)
            if len(batch) >= ENCODE_BATCH_LINES:
                flush(batch, out)
                batch = []
        if batch:
            flush(batch, out)
    return result


def write_fairseq_dict(sp, piece_ids: Sequence[int], counts: np.ndarray, path: Path) -> None:
    """Write ``piece count`` lines in spm vocabulary order (fairseq's dict.txt format)."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for i in piece_ids:
            f.write(f"{sp.id_to_piece(i)} {int(counts[i])}\n")


# --------------------------------------------------------------------------------------
# fairseq-preprocess
# --------------------------------------------------------------------------------------


def run_fairseq_preprocess(args: Sequence[str], what: str) -> None:
    """Run ``python -m fairseq_cli.preprocess ARGS``; raise :class:`PrepareError` on failure."""
    cmd = [sys.executable, "-m", "fairseq_cli.preprocess", *args]
    logger.info(f"binarizing {what}: fairseq-preprocess {' '.join(args)}")
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr.strip() or proc.stdout.strip()).splitlines()[-15:])
        raise PrepareError(
            f"fairseq-preprocess failed for {what} (exit status {proc.returncode}); "
            f"command: {' '.join(cmd)}\n{tail}"
        )
    for line in (proc.stdout + proc.stderr).splitlines():
        m = re.search(r"(\[[^\]]*\] .*: \d+ sents, .*)$", line)
        if m:
            logger.info(f"fairseq-preprocess: {m.group(1)}")


def read_mmap_sizes(prefix: Path) -> np.ndarray:
    """Sentence sizes of the fairseq mmap dataset ``prefix``, read with fairseq's own reader."""
    from fairseq.data.indexed_dataset import MMapIndexedDataset

    if not MMapIndexedDataset.exists(str(prefix)):
        raise PrepareError(f"fairseq-preprocess did not write {prefix}.idx and {prefix}.bin")
    dataset = MMapIndexedDataset(str(prefix))
    sizes = np.array(dataset.sizes, copy=True)  # a copy: the sizes live in the dataset's mmap
    bin_path = Path(f"{prefix}.bin")
    expected_bytes = int(sizes.sum(dtype=np.int64)) * np.dtype(dataset._index.dtype).itemsize
    if bin_path.stat().st_size != expected_bytes:
        raise PrepareError(f"{bin_path}: {bin_path.stat().st_size} bytes, the index says {expected_bytes}")
    return sizes


def verify_binarized(prefix: Path, encoded: EncodedFile, raw_path: Path) -> dict:
    """Check that ``prefix``.idx holds one sentence per line of ``raw_path``, of the right size."""
    sizes = read_mmap_sizes(prefix)
    expected = np.frombuffer(encoded.sizes.tobytes(), dtype=np.int32)
    if len(sizes) != len(expected):
        raise PrepareError(
            f"{prefix}.idx has {len(sizes)} sentences but {raw_path} has {len(expected)} lines"
        )
    if not np.array_equal(sizes, expected):
        line = int(np.nonzero(sizes != expected)[0][0]) + 1
        raise PrepareError(
            f"{prefix}.idx: sentence {line} has {sizes[line - 1]} tokens, expected "
            f"{expected[line - 1]} (line {line} of {raw_path})"
        )
    return {"sentences": int(len(sizes)), "tokens": int(sizes.sum(dtype=np.int64)), "unk": encoded.unk}


# --------------------------------------------------------------------------------------
# bookkeeping: fingerprint, outputs, cleanup
# --------------------------------------------------------------------------------------


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _source_fingerprint(split: str, lang: str, source: TextSource) -> dict:
    _check_exists(source)
    return {
        "split": split,
        "lang": lang,
        "path": source.path,
        "first_line": source.first_line,
        "max_lines": source.max_lines,
        "bytes": os.path.getsize(source.path),
        "sha256": file_sha256(source.path),
    }


def expected_outputs(langs: Sequence[str], has_test: bool, drop_empty: bool,
                     heldout: bool = False) -> List[str]:
    """Relative paths of the files a run writes (tmp/ excluded)."""
    src, tgt = langs[0], langs[1]
    out = ["dict.txt", "spm.model", "spm.vocab", "preprocess.log", f"dict.{src}.txt", f"dict.{tgt}.txt"]
    for lang in langs:
        out += [f"{lang}/train.bin", f"{lang}/train.idx", f"{lang}/dict.txt", f"{lang}/preprocess.log"]
        out.append(f"raw/train.{lang}")
        if heldout:
            out += [f"{lang}/valid.bin", f"{lang}/valid.idx", f"raw/{HELDOUT_SPLIT}.{lang}"]
    for split in ["valid"] + (["test"] if has_test else []):
        for lang in (src, tgt):
            out += [f"{split}.{src}-{tgt}.{lang}.bin", f"{split}.{src}-{tgt}.{lang}.idx"]
            out.append(f"raw/{split}.{lang}")
    if drop_empty:
        out.append("rejects.tsv")
    out.append("prepare.json")
    return out


def _load_previous(dest: Path) -> Optional[dict]:
    try:
        with open(dest / "prepare.json", encoding="utf-8") as f:
            previous = json.load(f)
    except (OSError, ValueError):
        return None
    return previous if isinstance(previous, dict) and "fingerprint" in previous else None


def _remove_outputs(dest: Path, relpaths: Iterable[str], tmp_files: Iterable[str]) -> None:
    """Delete the given files under ``dest`` (and directories left empty); nothing else."""
    relpaths = list(relpaths) + [f"tmp/{name}" for name in tmp_files]
    for rel in relpaths:
        path = dest / rel
        if path.is_file() or path.is_symlink():
            path.unlink()
    for sub in sorted({str(Path(rel).parent) for rel in relpaths}, reverse=True):
        path = dest / sub
        if sub != "." and path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def _tmp_names(langs: Sequence[str]) -> List[str]:
    return [f"{split}.{lang}" for split in ("train", "valid", "test", HELDOUT_SPLIT) for lang in langs]


# --------------------------------------------------------------------------------------
# the pipeline
# --------------------------------------------------------------------------------------

SourceArg = Union[PathLike, TextSource]


def _to_source(item: SourceArg, flag: str) -> TextSource:
    if isinstance(item, TextSource):
        return item
    return TextSource(path=os.fspath(item), flag=flag)


def _normalize_langs(langs: Union[str, Sequence[str]]) -> List[str]:
    if isinstance(langs, str):
        langs = [lang.strip() for lang in langs.split(",")]
    langs = list(langs)
    if len(langs) < 2:
        raise PrepareError(
            f"need at least two languages (got {','.join(langs) or 'none'}), e.g. --langs en,fr")
    for lang in langs:
        if not _LANG_RE.match(lang):
            raise PrepareError(f"bad language code {lang!r}: use letters, digits and '_' (e.g. en)")
    if len(set(langs)) != len(langs):
        raise PrepareError(f"language listed twice in {','.join(langs)}")
    return langs


def _check_sources(
    langs: List[str],
    mono: Mapping[str, Union[SourceArg, Sequence[SourceArg]]],
    valid: Mapping[str, SourceArg],
    test: Optional[Mapping[str, SourceArg]],
) -> Tuple[Dict[str, List[TextSource]], Dict[str, Dict[str, TextSource]]]:
    """Turn the user's mappings into TextSources and check they cover the right languages."""
    pair = langs[:2]
    mono_sources: Dict[str, List[TextSource]] = {}
    for lang, items in mono.items():
        if lang not in langs:
            raise PrepareError(f"--mono {lang}: language {lang!r} is not in --langs {','.join(langs)}")
        if isinstance(items, (str, os.PathLike, TextSource)):
            items = [items]
        mono_sources[lang] = [_to_source(item, f"--mono {lang}") for item in items]
    for lang in langs:
        if not mono_sources.get(lang):
            raise PrepareError(f"no monolingual training data for {lang!r}: pass --mono {lang}=PATH")
    parallel: Dict[str, Dict[str, TextSource]] = {}
    for split, mapping in (("valid", valid), ("test", test)):
        if mapping is None or (split == "test" and not mapping):
            continue
        flag = f"--{split}"
        for lang in mapping:
            if lang not in pair:
                raise PrepareError(
                    f"{flag} {lang}: parallel {split} data is only for the first two "
                    f"--langs ({pair[0]} and {pair[1]})"
                )
        for lang in pair:
            if lang not in mapping:
                raise PrepareError(f"missing {split} file for {lang!r}: pass {flag} {lang}=PATH")
        parallel[split] = {lang: _to_source(mapping[lang], f"{flag} {lang}") for lang in pair}
    if "valid" not in parallel:
        raise PrepareError("parallel validation data is required: pass --valid LANG=PATH for both languages")
    return mono_sources, parallel


@dataclass(frozen=True)
class SpmOptions:
    """How to get the joint sentencepiece model: train one, or reuse ``model``."""

    vocab_size: int = DEFAULT_VOCAB_SIZE
    model_type: str = "unigram"
    input_sentence_size: int = DEFAULT_SPM_INPUT_SENTENCE_SIZE
    soft_vocab_limit: bool = False
    seed: int = 1
    threads: int = 1
    model: Optional[str] = None

    def check(self) -> None:
        if self.model is not None:
            _check_exists(TextSource(self.model, "--spm-model"))
            return
        if self.model_type not in SPM_MODEL_TYPES:
            raise PrepareError(f"unknown sentencepiece model type {self.model_type!r}")
        if self.vocab_size < 2:
            raise PrepareError(f"--vocab-size must be at least 2 (got {self.vocab_size})")
        if self.threads < 1:
            raise PrepareError(f"--spm-threads must be at least 1 (got {self.threads})")

    def fingerprint(self) -> dict:
        """The options the model depends on (only the model's hash when reusing one)."""
        if self.model is not None:
            return {"spm_model_sha256": file_sha256(self.model)}
        return {
            "vocab_size": self.vocab_size, "spm_model_type": self.model_type,
            "spm_input_sentence_size": self.input_sentence_size,
            "soft_vocab_limit": self.soft_vocab_limit, "seed": self.seed, "spm_threads": self.threads,
        }


def prepare(
    dest: PathLike,
    langs: Union[str, Sequence[str]],
    mono: Mapping[str, Union[SourceArg, Sequence[SourceArg]]],
    valid: Mapping[str, SourceArg],
    test: Optional[Mapping[str, SourceArg]] = None,
    *,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    spm_model_type: str = "unigram",
    spm_input_sentence_size: int = DEFAULT_SPM_INPUT_SENTENCE_SIZE,
    spm_model: Optional[PathLike] = None,
    spm_threads: int = 1,
    soft_vocab_limit: bool = False,
    seed: int = 1,
    workers: int = 1,
    drop_empty: bool = False,
    force: bool = False,
    keep_tmp: bool = False,
    mode: str = "generic",
    extra_summary: Optional[dict] = None,
    heldout_mono: Optional[int] = 0,
) -> dict:
    """Prepare ``dest`` for fairseq's online_backtranslation task; return the summary dict.

    ``mono`` maps each language of ``langs`` to one or more files (paths or
    :class:`TextSource`), concatenated in order; ``valid`` and ``test`` map the first two
    languages (src, tgt) to line-aligned files. If ``dest/prepare.json`` records the same
    inputs and options and all outputs exist, nothing is done (unless ``force``).
    ``heldout_mono``: the last N monolingual lines of each language are held out of training
    (``{lang}/valid.bin``, ``raw/valid_mono.{lang}``); None: min(500, a tenth of the lines).
    Raises :class:`PrepareError` for bad inputs or options.
    """
    langs = _normalize_langs(langs)
    mono_sources, parallel = _check_sources(langs, mono, valid, test)
    spm_options = SpmOptions(
        vocab_size=vocab_size, model_type=spm_model_type, input_sentence_size=spm_input_sentence_size,
        soft_vocab_limit=soft_vocab_limit, seed=seed, threads=spm_threads,
        model=None if spm_model is None else os.fspath(spm_model),
    )
    spm_options.check()
    if workers < 1:
        raise PrepareError(f"--workers must be at least 1 (got {workers})")
    dest = Path(dest).absolute()
    if dest.exists() and not dest.is_dir():
        raise PrepareError(f"--dest {dest} exists and is not a directory")

    if heldout_mono is not None and heldout_mono < 0:
        raise PrepareError(f"--heldout-mono must be at least 0 (got {heldout_mono})")
    fingerprint = _fingerprint(langs, mono_sources, parallel, spm_options, drop_empty, heldout_mono)
    outputs = expected_outputs(langs, "test" in parallel, drop_empty, heldout=heldout_mono != 0)
    previous = _previous_if_up_to_date(dest, fingerprint, outputs, force)
    if previous is not None:
        return previous
    _clean_dest(dest, langs, outputs)

    started = time.time()
    for d in [dest, dest / "raw", dest / "tmp"] + [dest / lang for lang in langs]:
        d.mkdir(parents=True, exist_ok=True)
    stats = read_inputs(dest, langs, mono_sources, parallel, drop_empty)
    lines = _line_counts(stats)
    heldout: Dict[str, int] = {}
    if heldout_mono != 0:  # before sentencepiece training: the held-out lines are never seen
        for lang in langs:
            kept = lines["train"][lang]["lines_kept"]
            heldout[lang] = heldout_count(heldout_mono, kept, lang)
            hold_out_mono(dest / "raw", lang, kept, heldout[lang])
            lines["train"][lang]["lines_kept"] = kept - heldout[lang]
            lines["train"][lang]["heldout_mono"] = heldout[lang]
            lines.setdefault(HELDOUT_SPLIT, {})[lang] = {
                "lines_read": heldout[lang], "lines_kept": heldout[lang], "empty_dropped": 0}
    sp = make_sentencepiece(dest, langs, spm_options)
    piece_ids, encoded = encode_all(sp, dest, langs, list(parallel), heldout_langs=list(heldout))
    binarized = binarize_all(dest, langs, list(parallel), encoded, workers, heldout_langs=list(heldout))
    if not keep_tmp:
        _remove_outputs(dest, [], _tmp_names(langs))

    dropped = sum(s.empty_dropped for s in stats)
    summary = {
        "format_version": FORMAT_VERSION,
        "tool": PROG,
        "mode": mode,
        "dest": str(dest),
        "langs": langs,
        "src": langs[0],
        "tgt": langs[1],
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "seconds": round(time.time() - started, 1),
        "fingerprint": fingerprint,
        "inputs": [s.to_json() for s in stats],
        "lines": lines,
        "heldout_mono": {
            "requested": "auto" if heldout_mono is None else heldout_mono,
            "lines": heldout,
            "files": {lang: [f"{lang}/valid.bin", f"raw/{HELDOUT_SPLIT}.{lang}"] for lang in heldout},
        },
        "empty_lines_dropped": dropped,
        "vocab": {
            "sentencepiece_pieces": sp.get_piece_size(),
            "dict_txt_entries": len(piece_ids),
            "fairseq_dictionary_size": len(piece_ids) + len(FAIRSEQ_SPECIAL_SYMBOLS),
            "spm_model": spm_options.model,
            **({} if spm_options.model else {"requested_vocab_size": vocab_size}),
        },
        "binarized": binarized,
        "outputs": outputs,
        **(extra_summary or {}),
    }
    with open(dest / "prepare.json.tmp", "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, ensure_ascii=False)
        f.write("\n")
    os.replace(dest / "prepare.json.tmp", dest / "prepare.json")
    logger.info(f"prepared {dest} in {summary['seconds']} s ({dropped} empty lines dropped); "
                f"summary in {dest / 'prepare.json'}")
    return summary


def _previous_if_up_to_date(
    dest: Path, fingerprint: dict, outputs: Sequence[str], force: bool
) -> Optional[dict]:
    """The earlier summary if ``dest`` holds a finished run with the same fingerprint."""
    previous = _load_previous(dest)
    if previous is None:
        return None
    if force:
        logger.info(f"--force: redoing {dest}")
        return None
    if previous["fingerprint"] != fingerprint:
        logger.info(f"{dest} was prepared with other inputs or options: redoing it")
        return None
    missing = [rel for rel in outputs if not (dest / rel).is_file()]
    if missing:
        logger.info(f"{dest} was prepared before but {missing[0]} is missing: redoing it")
        return None
    logger.info(f"{dest} is already prepared with the same inputs and options; nothing to do "
                "(pass --force to redo)")
    return previous


def _clean_dest(dest: Path, langs: Sequence[str], outputs: Sequence[str]) -> None:
    """Remove what an earlier run wrote: only files this tool writes, prepare.json first, so
    that an interrupted run is never taken for a finished one."""
    if not dest.is_dir():
        return
    previous = _load_previous(dest) or {}
    (dest / "prepare.json").unlink(missing_ok=True)
    (dest / "prepare.json.tmp").unlink(missing_ok=True)
    old_langs = [lang for lang in previous.get("langs", []) if _LANG_RE.match(str(lang))]
    old_outputs = [rel for rel in previous.get("outputs", [])
                   if isinstance(rel, str) and not Path(rel).is_absolute() and ".." not in Path(rel).parts]
    _remove_outputs(dest, set(old_outputs) | set(outputs), _tmp_names(old_langs + list(langs)))


def read_inputs(
    dest: Path,
    langs: Sequence[str],
    mono_sources: Mapping[str, Sequence[TextSource]],
    parallel: Mapping[str, Mapping[str, TextSource]],
    drop_empty: bool,
) -> List[SourceStats]:
    """Step 1: check every input and copy the raw text to ``dest/raw/{split}.{lang}``."""
    src, tgt = langs[0], langs[1]
    raw_dir = dest / "raw"
    stats: List[SourceStats] = []
    for split, files in parallel.items():
        stats += copy_parallel_sources(split, files[src], files[tgt], (src, tgt), raw_dir)
    rejects = open(dest / "rejects.tsv", "w", encoding="utf-8", newline="\n") if drop_empty else None
    try:
        for lang in langs:
            stats += copy_mono_sources(
                mono_sources[lang], lang, raw_dir / f"train.{lang}", drop_empty, rejects)
    finally:
        if rejects is not None:
            rejects.close()
    if drop_empty:
        dropped = sum(s.empty_dropped for s in stats)
        logger.info(f"dropped {dropped} empty monolingual lines (listed in {dest / 'rejects.tsv'})")
    return stats


def make_sentencepiece(dest: Path, langs: Sequence[str], options: SpmOptions):
    """Step 2: train the joint model on ``dest/raw/train.*`` (or install ``options.model``)."""
    if options.model is not None:
        logger.info(f"using the existing sentencepiece model {options.model}")
        install_spm_model(options.model, dest)
    else:
        train_sentencepiece(
            [dest / "raw" / f"train.{lang}" for lang in langs], dest / "spm", options.vocab_size,
            options.model_type, options.input_sentence_size, options.soft_vocab_limit,
            options.seed, options.threads,
        )
    return load_spm(dest / "spm.model")


def encode_all(sp, dest: Path, langs: Sequence[str], splits: Sequence[str],
               heldout_langs: Sequence[str] = ()):
    """Step 3: encode all raw text into ``dest/tmp/`` and write ``dest/dict.txt``.

    Returns the spm ids in dict.txt and ``{(split, lang): EncodedFile}``.
    """
    src, tgt = langs[0], langs[1]
    piece_ids = dictionary_piece_ids(sp)
    id_to_token = [FAIRSEQ_UNK if sp.is_unknown(i) else sp.id_to_piece(i) for i in range(sp.get_piece_size())]
    counts = np.zeros(sp.get_piece_size(), dtype=np.int64)
    jobs = [("train", lang, counts) for lang in langs]
    jobs += [(split, lang, None) for split in splits for lang in (src, tgt)]
    jobs += [(HELDOUT_SPLIT, lang, None) for lang in heldout_langs]
    encoded: Dict[Tuple[str, str], EncodedFile] = {}
    for split, lang, count_into in jobs:
        name = f"{split}.{lang}"
        enc = encode_file(sp, id_to_token, dest / "raw" / name, dest / "tmp" / name, count_into)
        if enc.no_pieces:
            logger.warning(f"[{lang}] {split}: {enc.no_pieces} lines encode to no pieces "
                           "(kept as empty sentences)")
        encoded[split, lang] = enc
    write_fairseq_dict(sp, piece_ids, counts, dest / "dict.txt")
    logger.info(f"wrote {dest / 'dict.txt'}: {len(piece_ids)} pieces "
                f"(sentencepiece vocabulary {sp.get_piece_size()})")
    return piece_ids, encoded


def binarize_all(
    dest: Path,
    langs: Sequence[str],
    splits: Sequence[str],
    encoded: Mapping[Tuple[str, str], EncodedFile],
    workers: int,
    heldout_langs: Sequence[str] = (),
) -> dict:
    """Step 4: binarize with fairseq-preprocess, then check every .idx against the input lines.

    Monolingual data: one ``--only-source`` run per language into ``dest/{lang}/`` (with the
    held-out sentences of ``heldout_langs`` as its ``valid`` split).
    Parallel data: one ``-s SRC -t TGT`` run with --validpref/--testpref only; no --trainpref
    is needed because both dictionaries are given (--srcdict and --tgtdict = dict.txt).
    """
    src, tgt = langs[0], langs[1]
    tmp_dir, dict_txt = dest / "tmp", str(dest / "dict.txt")
    common = ["--dataset-impl", "mmap", "--workers", str(workers)]
    binarized = {}
    for lang in langs:
        heldout_args = (["--validpref", str(tmp_dir / f"{HELDOUT_SPLIT}.{lang}")]
                        if lang in heldout_langs else [])
        run_fairseq_preprocess(
            ["--only-source", "--trainpref", str(tmp_dir / f"train.{lang}"), *heldout_args,
             "--destdir", str(dest / lang), "--srcdict", dict_txt, *common],
            f"{lang} monolingual training data" + (" and held-out sentences" if heldout_args else ""),
        )
        binarized[f"{lang}/train"] = verify_binarized(
            dest / lang / "train", encoded["train", lang], dest / "raw" / f"train.{lang}")
        if heldout_args:
            binarized[f"{lang}/valid"] = verify_binarized(
                dest / lang / "valid", encoded[HELDOUT_SPLIT, lang],
                dest / "raw" / f"{HELDOUT_SPLIT}.{lang}")
    args = ["-s", src, "-t", tgt, "--destdir", str(dest), "--srcdict", dict_txt, "--tgtdict", dict_txt]
    for split in splits:
        args += [f"--{split}pref", str(tmp_dir / split)]
    run_fairseq_preprocess(args + common, f"{src}-{tgt} {'/'.join(splits)} data")
    for split in splits:
        for lang in (src, tgt):
            name = f"{split}.{src}-{tgt}.{lang}"
            binarized[name] = verify_binarized(
                dest / name, encoded[split, lang], dest / "raw" / f"{split}.{lang}")
    for name, info in binarized.items():
        logger.info(f"checked {name}: {info['sentences']} sentences (= input lines), "
                    f"{info['tokens']} tokens with </s>, {info['unk']} <unk>")
    return binarized


def _fingerprint(langs, mono_sources, parallel, spm_options: SpmOptions, drop_empty: bool,
                 heldout_mono: Optional[int] = 0) -> dict:
    """What determines the outputs: the inputs (with hashes) and the options that matter."""
    inputs = []
    for lang in langs:
        inputs += [_source_fingerprint("train", lang, s) for s in mono_sources[lang]]
    for split, files in parallel.items():
        inputs += [_source_fingerprint(split, lang, s) for lang, s in files.items()]
    options = {"langs": list(langs), "drop_empty": drop_empty, "format_version": FORMAT_VERSION,
               "heldout_mono": "auto" if heldout_mono is None else heldout_mono,
               **spm_options.fingerprint()}
    # round-trip through JSON so it compares equal to what prepare.json stores
    return json.loads(json.dumps({"inputs": inputs, "options": options}))


def _line_counts(stats: Sequence[SourceStats]) -> dict:
    """{split: {lang: {lines_read, lines_kept, empty_dropped}}} summed over files."""
    out: dict = {}
    for s in stats:
        entry = out.setdefault(s.split, {}).setdefault(
            s.lang, {"lines_read": 0, "lines_kept": 0, "empty_dropped": 0})
        entry["lines_read"] += s.lines_read
        entry["lines_kept"] += s.lines_kept
        entry["empty_dropped"] += s.empty_dropped
    return out


# --------------------------------------------------------------------------------------
# Multi30k
# --------------------------------------------------------------------------------------


def default_multi30k_dir() -> Path:
    """``$SMALLCAP_DATA/multi30k``, else ``../shared/data/multi30k`` from the current
    directory, else from the repository root (the parent of the package directory)."""
    env = os.environ.get("SMALLCAP_DATA")
    if env:
        candidates = [Path(env) / "multi30k"]
    else:
        rel = Path("..") / "shared" / "data" / "multi30k"
        repo_root = Path(__file__).resolve().parent.parent
        candidates = [Path.cwd() / rel, repo_root / rel]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    raise PrepareError(
        "Multi30k raw directory not found (looked in: "
        + ", ".join(str(c) for c in candidates)
        + "); pass --raw-dir DIR (a directory with train.en.gz, train.fr.gz, val.*, "
        "test_2016_flickr.*)"
    )


def _multi30k_file(raw_dir: Path, split: str, lang: str) -> str:
    name = f"{MULTI30K_NAMES[split]}.{lang}"
    for candidate in (raw_dir / f"{name}.gz", raw_dir / name):
        if candidate.is_file():
            return str(candidate)
    raise PrepareError(f"Multi30k file not found: {raw_dir / name}.gz (or {name}) (from --raw-dir {raw_dir})")


def multi30k_sources(
    raw_dir: Optional[PathLike] = None, max_train_lines: Optional[int] = None
) -> Tuple[Dict[str, List[TextSource]], Dict[str, TextSource], Dict[str, TextSource], dict]:
    """The unsupervised Multi30k split of Lample et al. 2018 as (mono, valid, test, info).

    English = first half of ``train.en``, French = second half of ``train.fr`` (the two
    files must have the same number of lines); ``max_train_lines`` keeps only the first N
    lines of each half. valid = ``val.*``, test = ``test_2016_flickr.*``.
    """
    if raw_dir is None:
        raw_dir = default_multi30k_dir()
    raw_dir = Path(raw_dir).absolute()
    if not raw_dir.is_dir():
        raise PrepareError(f"Multi30k raw directory not found: {raw_dir}; pass --raw-dir DIR")
    if max_train_lines is not None and max_train_lines < 1:
        raise PrepareError(f"--max-train-lines must be at least 1 (got {max_train_lines})")
    en, fr = MULTI30K_LANGS
    files = {(split, lang): TextSource(_multi30k_file(raw_dir, split, lang),
                                       f"--raw-dir ({MULTI30K_NAMES[split]}.{lang})")
             for split in MULTI30K_NAMES for lang in MULTI30K_LANGS}
    train = {lang: files["train", lang] for lang in MULTI30K_LANGS}
    n_en, n_fr = count_lines(train[en]), count_lines(train[fr])
    if n_en != n_fr:
        raise PrepareError(
            f"Multi30k training files differ in length: {train[en].path} has {n_en} lines, "
            f"{train[fr].path} has {n_fr}; the unsupervised split needs line-aligned files"
        )
    if n_en < 2:
        raise PrepareError(f"Multi30k training files have {n_en} lines; need at least 2")
    half = n_en // 2
    en_lines, fr_lines = half, n_en - half
    if max_train_lines is not None:
        en_lines, fr_lines = min(en_lines, max_train_lines), min(fr_lines, max_train_lines)
    mono = {
        en: [TextSource(train[en].path, train[en].flag, first_line=1, max_lines=en_lines)],
        fr: [TextSource(train[fr].path, train[fr].flag, first_line=half + 1, max_lines=fr_lines)],
    }
    valid = {lang: files["valid", lang] for lang in MULTI30K_LANGS}
    test = {lang: files["test", lang] for lang in MULTI30K_LANGS}
    info = {
        "raw_dir": str(raw_dir),
        "train_file_lines": n_en,
        "split": {
            en: f"lines 1-{en_lines} of {Path(train[en].path).name}",
            fr: f"lines {half + 1}-{half + fr_lines} of {Path(train[fr].path).name}",
        },
        "max_train_lines": max_train_lines,
        "reference": "Lample et al. 2018, Unsupervised Machine Translation Using Monolingual Corpora Only",
    }
    logger.info(f"Multi30k unsupervised split (Lample et al. 2018) from {raw_dir}: "
                f"en = {info['split'][en]}, fr = {info['split'][fr]}")
    return mono, valid, test, info


def prepare_multi30k(
    dest: PathLike,
    raw_dir: Optional[PathLike] = None,
    *,
    langs: Union[str, Sequence[str]] = MULTI30K_LANGS,
    max_train_lines: Optional[int] = None,
    **kwargs,
) -> dict:
    """:func:`prepare` on the unsupervised Multi30k split; ``langs`` may be en,fr or fr,en."""
    langs = _normalize_langs(langs)
    if sorted(langs) != sorted(MULTI30K_LANGS):
        raise PrepareError(f"--multi30k works with --langs en,fr or fr,en (got {','.join(langs)})")
    mono, valid, test, info = multi30k_sources(raw_dir, max_train_lines)
    return prepare(dest, langs, mono, valid, test, mode="multi30k",
                   extra_summary={"multi30k": info}, **kwargs)


# --------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------


def _lang_path(value: str) -> Tuple[str, str]:
    lang, sep, path = value.partition("=")
    if not sep or not lang.strip() or not path:
        raise argparse.ArgumentTypeError(f"expected LANG=PATH, got {value!r}")
    return lang.strip(), path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Turn raw monolingual text plus parallel valid/test files into the data directory\n"
            "of fairseq's online_backtranslation task: one joint sentencepiece model and\n"
            "dict.txt, DEST/{lang}/train.bin/.idx per language, DEST/valid.SRC-TGT.*.bin/.idx\n"
            "and DEST/test.SRC-TGT.*.bin/.idx (binarized by fairseq-preprocess), the raw\n"
            "valid/test text under DEST/raw/ for sacreBLEU, and DEST/prepare.json."
        ),
        epilog=(
            "examples:\n"
            f"  {PROG} --dest data-bin/m30k --langs en,fr --mono en=mono.en.gz --mono fr=mono.fr.gz \\\n"
            "      --valid en=valid.en --valid fr=valid.fr --test en=test.en --test fr=test.fr\n"
            f"  {PROG} --multi30k --dest data-bin/multi30k-enfr   # Lample et al. 2018 split\n"
            "\n"
            "Inputs are UTF-8 text, gzip-compressed if the name ends in .gz. An empty line is an\n"
            "error (in monolingual files unless --drop-empty). Errors are printed as\n"
            f"'{PROG}: error: ...' and the exit status is 2."
        ),
    )
    parser.add_argument("--dest", required=True, metavar="DIR", help="output directory")
    parser.add_argument("--langs", metavar="L1,L2[,...]",
                        help="languages, comma-separated; the first two are the valid/test "
                             "pair SRC-TGT (required in generic mode; --multi30k: en,fr or fr,en, "
                             "default en,fr)")

    generic = parser.add_argument_group("generic mode")
    generic.add_argument("--mono", metavar="LANG=PATH", type=_lang_path, action="append", default=[],
                         help="monolingual training text of LANG; repeat for every language, and "
                              "repeat for the same LANG to concatenate several files")
    generic.add_argument("--valid", metavar="LANG=PATH", type=_lang_path, action="append", default=[],
                         help="parallel validation text (required, for both SRC and TGT)")
    generic.add_argument("--test", metavar="LANG=PATH", type=_lang_path, action="append", default=[],
                         help="parallel test text (optional; if given, for both SRC and TGT)")

    parser.add_argument("--heldout-mono", type=int, metavar="N", default=None,
                        help="hold out the last N lines of each language's monolingual training "
                             "text (after --max-train-lines; for --multi30k from each language's "
                             "half) before sentencepiece training: never trained on, binarized as "
                             "DEST/{lang}/valid.bin/.idx and written to DEST/raw/valid_mono.{lang}, "
                             "for round-trip BLEU model selection (--eval-round-trip, Lample et al. "
                             f"2018); default: min({DEFAULT_HELDOUT_MONO}, a tenth of the lines); "
                             "0: none")

    m30k = parser.add_argument_group("Multi30k mode")
    m30k.add_argument("--multi30k", action="store_true",
                      help="prepare Multi30k en-fr with the unsupervised split of Lample et al. "
                           "2018: English = first half of train.en, French = second half of "
                           "train.fr; valid = val.*, test = test_2016_flickr.*")
    m30k.add_argument("--raw-dir", metavar="DIR",
                      help="directory with train.{en,fr}[.gz], val.{en,fr}[.gz], "
                           "test_2016_flickr.{en,fr}[.gz] (default: $SMALLCAP_DATA/multi30k if "
                           "SMALLCAP_DATA is set, else ../shared/data/multi30k from the current "
                           "directory or from the repository root)")
    m30k.add_argument("--max-train-lines", type=int, metavar="N",
                      help="use only the first N lines of each language's half (quick tests)")

    spm_group = parser.add_argument_group("sentencepiece")
    spm_group.add_argument("--vocab-size", type=int, default=DEFAULT_VOCAB_SIZE, metavar="N",
                           help=f"joint sentencepiece vocabulary size (default {DEFAULT_VOCAB_SIZE})")
    spm_group.add_argument("--spm-model-type", choices=SPM_MODEL_TYPES, default="unigram",
                           help="sentencepiece model type (default unigram)")
    spm_group.add_argument("--spm-input-sentence-size", type=int, default=DEFAULT_SPM_INPUT_SENTENCE_SIZE,
                           metavar="N", help="train sentencepiece on at most N randomly sampled "
                                             "sentences (default 1,000,000; 0 = all)")
    spm_group.add_argument("--soft-vocab-limit", action="store_true",
                           help="treat --vocab-size as an upper bound (sentencepiece "
                                "hard_vocab_limit=false), for corpora too small for it")
    spm_group.add_argument("--spm-model", metavar="PATH",
                           help="reuse this sentencepiece model instead of training one "
                                "(the --vocab-size and other sentencepiece options are ignored)")
    spm_group.add_argument("--spm-threads", type=int, default=1, metavar="N",
                           help="sentencepiece training threads (default 1; the model depends "
                                "on it, so it is fixed for reproducibility)")
    spm_group.add_argument("--seed", type=int, default=1, help="sentencepiece random seed (default 1)")

    other = parser.add_argument_group("other")
    other.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), metavar="N",
                       help="fairseq-preprocess worker processes (default: min(2, CPUs))")
    other.add_argument("--drop-empty", action="store_true",
                       help="drop empty/whitespace-only lines of the monolingual training files "
                            "(listed in DEST/rejects.tsv) instead of stopping with an error")
    other.add_argument("--force", action="store_true",
                       help="redo everything even if DEST/prepare.json matches the inputs and options")
    other.add_argument("--keep-tmp", action="store_true",
                       help="keep the sentencepiece-encoded text in DEST/tmp/")
    return parser


def _group_pairs(pairs: Sequence[Tuple[str, str]], flag: str, repeat_ok: bool) -> Dict[str, List[str]]:
    grouped: Dict[str, List[str]] = {}
    for lang, path in pairs:
        if lang in grouped and not repeat_ok:
            raise PrepareError(f"{flag} {lang} given twice")
        grouped.setdefault(lang, []).append(path)
    return grouped


def check_args(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Reject flag combinations that do not fit the mode (argparse-style error, exit 2)."""
    if args.multi30k:
        if args.mono or args.valid or args.test:
            parser.error("--multi30k takes its files from --raw-dir; do not pass --mono/--valid/--test")
        return
    if args.raw_dir is not None or args.max_train_lines is not None:
        parser.error("--raw-dir and --max-train-lines are only for --multi30k")
    if not args.langs:
        parser.error("--langs is required (e.g. --langs en,fr), or use --multi30k")
    if not args.valid:
        parser.error("--valid LANG=PATH is required (for both languages of the pair)")


def run_from_args(args: argparse.Namespace) -> dict:
    """Dispatch checked arguments to :func:`prepare` or :func:`prepare_multi30k`."""
    common = dict(
        vocab_size=args.vocab_size, spm_model_type=args.spm_model_type,
        spm_input_sentence_size=args.spm_input_sentence_size, spm_model=args.spm_model,
        spm_threads=args.spm_threads, soft_vocab_limit=args.soft_vocab_limit, seed=args.seed,
        workers=args.workers, drop_empty=args.drop_empty, force=args.force, keep_tmp=args.keep_tmp,
        heldout_mono=args.heldout_mono,
    )
    if args.multi30k:
        return prepare_multi30k(args.dest, args.raw_dir, langs=args.langs or MULTI30K_LANGS,
                                max_train_lines=args.max_train_lines, **common)
    mono = _group_pairs(args.mono, "--mono", repeat_ok=True)
    valid = {lang: paths[0] for lang, paths in _group_pairs(args.valid, "--valid", False).items()}
    test = {lang: paths[0] for lang, paths in _group_pairs(args.test, "--test", False).items()}
    return prepare(args.dest, args.langs, mono, valid, test or None, **common)


def cli_main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of ``smallcap-prepare``: returns 0, or exits with status 2 after printing
    ``smallcap-prepare: error: MESSAGE`` to stderr (no traceback) for bad inputs or flags."""
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(args, parser)
    configure_logging()
    try:
        run_from_args(args)
    except (PrepareError, OSError) as e:
        raise SystemExit(error_exit_status(PROG, e)) from None
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())

"""Step 1: read and check the input text, copy it to ``DEST/raw/``, count its lines."""
import gzip
import os
import re
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from .common import HELDOUT_SPLIT, PathLike, PrepareError, logger

_LANG_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


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


SourceArg = Union[PathLike, TextSource]


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


def _iter_text_file(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8", newline="\n") as f:
        for line in f:
            yield line[:-1] if line.endswith("\n") else line


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


def heldout_count(requested: int, lines: int, lang: str) -> int:
    """How many of ``lines`` monolingual ``lang`` lines to hold out: ``requested``, checked."""
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

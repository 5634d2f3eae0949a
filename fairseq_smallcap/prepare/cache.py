"""The fingerprint of a run (kept in ``prepare.json``): reusing a finished run, removing an old one."""
import json
import os
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

from .common import FORMAT_VERSION, HELDOUT_SPLIT, file_sha256, logger
from .inputs import _LANG_RE, TextSource, _check_exists
from .spm import SpmOptions


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


def _fingerprint(langs, mono_sources, parallel, spm_options: SpmOptions, drop_empty: bool,
                 heldout_mono: int = 0) -> dict:
    """What determines the outputs: the inputs (with hashes) and the options that matter."""
    inputs = []
    for lang in langs:
        inputs += [_source_fingerprint("train", lang, s) for s in mono_sources[lang]]
    for split, files in parallel.items():
        inputs += [_source_fingerprint(split, lang, s) for lang, s in files.items()]
    options = {"langs": list(langs), "drop_empty": drop_empty, "format_version": FORMAT_VERSION,
               "heldout_mono": heldout_mono,
               **spm_options.fingerprint()}
    # round-trip through JSON so it compares equal to what prepare.json stores
    return json.loads(json.dumps({"inputs": inputs, "options": options}))


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

"""``--multi30k``: the unsupervised Multi30k split of Lample et al. 2018, and :func:`prepare_multi30k`."""
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

from .common import PathLike, PrepareError, logger
from .inputs import TextSource, _normalize_langs, count_lines
from .pipeline import prepare

MULTI30K_LANGS = ("en", "fr")
MULTI30K_NAMES = {"train": "train", "valid": "val", "test": "test_2016_flickr"}


def default_multi30k_dir() -> Path:
    """``$SMALLCAP_DATA/multi30k``, else ``../shared/data/multi30k`` from the current
    directory, else from the repository root (the parent of the package directory)."""
    env = os.environ.get("SMALLCAP_DATA")
    if env:
        candidates = [Path(env) / "multi30k"]
    else:
        rel = Path("..") / "shared" / "data" / "multi30k"
        repo_root = Path(__file__).resolve().parents[2]  # above fairseq_smallcap/prepare/
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

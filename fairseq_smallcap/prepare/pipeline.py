""":func:`prepare`: runs the steps of the other modules and writes ``prepare.json``."""
import json
import os
import time
from pathlib import Path
from typing import Dict, Mapping, Optional, Sequence, Union

from .binarize import binarize_all
from .cache import (_clean_dest, _fingerprint, _previous_if_up_to_date, _remove_outputs, _tmp_names,
                    expected_outputs)
from .common import FORMAT_VERSION, HELDOUT_SPLIT, PROG, PathLike, PrepareError, logger
from .dictionary import FAIRSEQ_SPECIAL_SYMBOLS, encode_all
from .inputs import (SourceArg, _check_sources, _line_counts, _normalize_langs, heldout_count, hold_out_mono,
                     read_inputs)
from .spm import DEFAULT_SPM_INPUT_SENTENCE_SIZE, DEFAULT_VOCAB_SIZE, SpmOptions, make_sentencepiece


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
    heldout_mono: int = 0,
) -> dict:
    """Prepare ``dest`` for fairseq's online_backtranslation task; return the summary dict.

    ``mono`` maps each language of ``langs`` to one or more files (paths or
    :class:`TextSource`), concatenated in order; ``valid`` and ``test`` map the first two
    languages (src, tgt) to line-aligned files. If ``dest/prepare.json`` records the same
    inputs and options and all outputs exist, nothing is done (unless ``force``).
    ``heldout_mono``: the last N monolingual lines of each language are held out of training
    (``{lang}/valid.bin``, ``raw/valid_mono.{lang}``).
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

    if heldout_mono < 0:
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
            "requested": heldout_mono,
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

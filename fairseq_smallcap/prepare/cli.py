"""The ``smallcap-prepare`` command line: argument parser, flag checks and :func:`cli_main`."""
import argparse
import os
from typing import Dict, List, Optional, Sequence, Tuple

from ..cli import configure_logging, error_exit_status
from .common import PROG, PrepareError
from .multi30k import MULTI30K_LANGS, prepare_multi30k
from .pipeline import prepare
from .spm import DEFAULT_SPM_INPUT_SENTENCE_SIZE, DEFAULT_VOCAB_SIZE, SPM_MODEL_TYPES


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

    parser.add_argument("--heldout-mono", type=int, metavar="N", default=0,
                        help="hold out the last N lines of each language's monolingual training "
                             "text (after --max-train-lines; for --multi30k from each language's "
                             "half) before sentencepiece training: never trained on, binarized as "
                             "DEST/{lang}/valid.bin/.idx and written to DEST/raw/valid_mono.{lang}, "
                             "for round-trip BLEU model selection (--eval-round-trip, Lample et al. "
                             "2018); 0 (the default): none, every line is trained on")

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

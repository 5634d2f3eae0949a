"""``smallcap-seqkd``: sequence-level knowledge distillation data, translated by a teacher.

    smallcap-seqkd DATA --path teacher/checkpoint_best.pt --dest DATA/seqkd --beam 5

Sequence-level KD (Kim & Rush 2016, "Sequence-Level Knowledge Distillation") trains the student
on the teacher's beam-search translations instead of the references: beam search approximates
the mode of the teacher's distribution over whole sentences, and the student learns that one
sequence with the ordinary cross-entropy. This command writes such a training set:

* from a smallcap-prepare directory (the unsupervised setting): every monolingual sentence of
  each language (``DATA/{lang}/{subset}``) is translated into each other language, and the pairs
  are (real sentence -> teacher translation): ``train.en-fr`` is real en -> teacher fr and
  ``train.fr-en`` real fr -> teacher en. Train a student on them with
  ``fairseq-train DATA --task unsupervised_translation --back-parallel-data DEST --lambda-bp 1``;
* from parallel binarized data, where there is no monolingual ``{subset}``: the source side of
  ``DATA/{subset}.{src}-{tgt}.{src}`` (``--task translation`` layout, or the unsupervised task's
  ``valid``/``test`` sets) is translated and the references are ignored. With a ``--task
  translation`` teacher, train with ``fairseq-train DEST --task translation -s SRC -t TGT``.

Output, whatever the input: ``DEST/train.{src}-{tgt}.{src|tgt}.bin/idx`` binarized with the
teacher's dictionaries (copied to ``DEST`` as fairseq-preprocess names them), the same pairs as
text in ``DEST/text/train.{src}-{tgt}.{src|tgt}`` (one sentence a line, in corpus order, with
``--post-process`` applied), every sentence not written with its reason in ``DEST/rejects.tsv``
(an empty translation, or a source longer than the teacher's positions) and the counts per
direction in ``DEST/summary.json`` (kept + rejected = input). Files are written as ``*.partial``
and renamed once every direction is done, by :mod:`fairseq_smallcap.pseudo_parallel` (as
``smallcap-back-parallel``'s data). Every other flag is a fairseq-generate flag (``--user-dir``,
``--unkpen``, ``--min-len``, ``--no-repeat-ngram-size``, ...).
"""
import logging
import os
import sys
import time
from typing import Optional, Sequence

import numpy as np
import torch

from .. import pseudo_parallel
from ..errors import SmallcapError
from ..cli import configure_logging, error_exit_status
from ..pseudo_parallel import KEPT, Pair

logger = logging.getLogger("fairseq_smallcap.distillation.sequence_kd")
PROG = "smallcap-seqkd"
REASONS = ("empty translation", "source longer than the teacher's max positions")
Outputs = pseudo_parallel.PseudoParallelWriter  # DEST's files, written as *.partial


class SequenceKDError(SmallcapError):
    """Bad data directory, checkpoint or flag."""


def build_parser():
    """fairseq-generate's parser (DATA, ``-s/-t``, ``--beam`` 5, ``--lenpen`` 1, ``--max-len-a`` 0,
    ``--max-len-b`` 200, ``--batch-size``, ``--cpu``, ``--fp16``, ...) with ``--max-tokens`` 4000,
    ``--post-process sentencepiece`` and ``--log-interval`` 10 by default, and the flags below."""
    parser, group = pseudo_parallel.build_parser(
        PROG, "sequence-level knowledge distillation data (Kim & Rush 2016): a corpus translated by a "
        "teacher with beam search", generation=True, title="Sequence-level KD",
        path_help="teacher checkpoint (several, separated by ':', translate as an ensemble)",
        dest_help="output directory",
        max_sentences_help="translate only the first N sentences of each direction (None: all)")
    group.add_argument("--subset", default="train", help="split to translate: monolingual "
                       "DATA/{lang}/SUBSET if there is one, else the source side of DATA/SUBSET.{src}-{tgt}")
    return parser


def check_args(args) -> None:
    if not os.path.isdir(args.data):
        raise SequenceKDError(f"{args.data}: no such data directory")
    if not any(name.startswith("dict.") and name.endswith(".txt") for name in os.listdir(args.data)):
        raise SequenceKDError(f"{args.data}: no dict.txt (run smallcap-prepare or fairseq-preprocess first)")
    for path in args.path.split(":"):
        if not os.path.isfile(path):
            raise SequenceKDError(f"--path {path}: no such checkpoint")
    for flag, value, minimum in (("--beam", args.beam, 1), ("--max-tokens", args.max_tokens, 1),
                                 ("--batch-size", args.batch_size, 1), ("--max-sentences", args.max_sentences, 1),
                                 ("--max-len-b", args.max_len_b, 1), ("--log-interval", args.log_interval, 1)):
        if value is not None and value < minimum:
            raise SequenceKDError(f"{flag} {value}: must be at least {minimum}")
    if args.max_len_a < 0:
        raise SequenceKDError(f"--max-len-a {args.max_len_a}: must not be negative")
    if args.fp16 and (args.cpu or not torch.cuda.is_available()):
        raise SequenceKDError("--fp16 needs a CUDA GPU (and no --cpu)")
    if os.path.abspath(args.dest) == os.path.abspath(args.data):
        raise SequenceKDError(f"--dest {args.dest}: must not be the data directory")


def plan_directions(args, task):
    """``[(src, tgt, prefix of the source sentences, kind)]``: monolingual ``DATA/{src}/{subset}``
    if it exists (unsupervised task), else parallel ``DATA/{subset}.{src}-{tgt}.{src}``."""
    langs = getattr(task, "langs", None)
    if langs:  # unsupervised_translation: every ordered pair of its languages
        pairs = [(s, t) for s in langs for t in langs if s != t
                 and args.source_lang in (None, s) and args.target_lang in (None, t)]
    else:  # a translation task: the pair it was set up with (its own, or -s/-t)
        pairs = [(task.cfg.source_lang, task.cfg.target_lang)]
    directions, missing = [], []
    for src, tgt in pairs:
        candidates = [(os.path.join(args.data, src, args.subset), "monolingual")] if langs else []
        candidates += [(os.path.join(args.data, f"{args.subset}.{a}-{b}.{src}"), "parallel")
                       for a, b in ((src, tgt), (tgt, src))]
        found = [(prefix, kind) for prefix, kind in candidates
                 if os.path.isfile(prefix + ".bin") and os.path.isfile(prefix + ".idx")]
        if found:
            directions.append((src, tgt, *found[0]))
        else:
            missing.append(f"{src}->{tgt} ({' or '.join(p + '.bin' for p, _ in candidates)})")
    if missing and (not directions or args.source_lang or args.target_lang):
        raise SequenceKDError(f"no {args.subset} data to translate for {'; '.join(missing)}")
    for direction in missing:
        logger.warning(f"skipped, no {args.subset} data: {direction}")
    return directions


def first_sentences(dataset, n: Optional[int]):
    """The first ``n`` sentences of ``dataset`` (all of them if ``n`` is None)."""
    from fairseq.data import ListDataset

    if n is None or n >= len(dataset):
        return dataset
    return ListDataset([dataset[i] for i in range(n)], np.asarray(dataset.sizes[:n]))


def translate(task, decoder, source, src: str, tgt: str) -> dict:
    """``{sentence id: best beam-search translation}`` (token tensors ending with eos, without
    the symbols fairseq-generate strips from its output). Sentences longer than the teacher's
    positions are skipped, so they have no entry."""
    translations = {}
    for sample, hypos, _ in decoder.batches(pseudo_parallel.inference_dataset(task, source, src, tgt), src, tgt):
        translations.update(zip(sample["id"].tolist(), (tokens.cpu() for tokens in hypos)))
    return translations


def write_direction(args, task, outputs, rejects, source, translations, src: str, tgt: str) -> dict:
    """Binarize and write as text the kept pairs of one direction (in corpus order); list the
    others in ``rejects``. Returns the direction's counts."""
    pairs = []
    for sentence_id in range(len(source)):
        tokens = translations.get(sentence_id)
        reason = REASONS[1] if tokens is None else REASONS[0] if len(tokens) <= 1 else KEPT
        pairs.append(Pair(sentence_id, source[sentence_id], tokens, reason))
    counts = outputs.write_pairs(src, tgt, pairs, {src: task.source_dictionary, tgt: task.target_dictionary},
                                 rejects, post_process=args.post_process, text=True, tsv_kept=False,
                                 tsv_direction=True)
    return {"input": len(source), "kept": counts[KEPT], "rejected": len(source) - counts[KEPT],
            "reasons": {reason: counts[reason] for reason in REASONS}}


def make_dataset(args) -> dict:
    from fairseq.data import data_utils

    models, task = pseudo_parallel.load_checkpoint(args)
    directions = plan_directions(args, task)
    decoder = pseudo_parallel.Decoder(args, task, models, "beam")
    outputs = Outputs(args.dest)
    summary = {"checkpoint": [os.path.abspath(p) for p in args.path.split(":")],
               "data": os.path.abspath(args.data), "subset": args.subset,
               "generation": {"beam": args.beam, "lenpen": float(args.lenpen), "max_len_a": float(args.max_len_a),
                              "max_len_b": args.max_len_b},
               "max_sentences": args.max_sentences, "directions": {}}
    start = time.time()
    with outputs.open_tsv("rejects.tsv", ["direction", "id", "reason", "source", "translation"]) as rejects:
        for src, tgt, prefix, kind in directions:
            source = data_utils.load_indexed_dataset(prefix, task.source_dictionary)
            source = first_sentences(source, args.max_sentences)
            logger.info(f"{src}->{tgt}: translating {len(source)} {kind} sentences of {prefix}")
            translations = translate(task, decoder, source, src, tgt)
            counts = write_direction(args, task, outputs, rejects, source, translations, src, tgt)
            summary["directions"][f"{src}-{tgt}"] = {"source": os.path.abspath(prefix), "kind": kind, **counts}
    dict_names = ["dict.txt"] if hasattr(task, "langs") else sorted({f"dict.{lang}.txt" for d in directions
                                                                      for lang in d[:2]})
    summary["seconds"] = round(time.time() - start, 1)
    outputs.finish(summary, args.data, dict_names)
    return summary


def cli_main(argv: Optional[Sequence[str]] = None) -> int:
    configure_logging()
    args = pseudo_parallel.parse_args(build_parser(), argv)
    try:
        check_args(args)
        summary = make_dataset(args)
    except SmallcapError as e:
        return error_exit_status(PROG, e)
    for direction, counts in summary["directions"].items():
        print(f"{direction}: {counts['kept']:,} kept + {counts['rejected']:,} rejected "
              f"= {counts['input']:,} sentences")
    print(f"written to {args.dest} in {summary['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())

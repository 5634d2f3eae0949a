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
and renamed once every direction is done.
"""
import argparse
import json
import logging
import os
import shutil
import sys
import time
from typing import Optional, Sequence

import numpy as np
import torch

from ..errors import SmallcapError
from ..cli import configure_logging, error_exit_status

logger = logging.getLogger("fairseq_smallcap.distillation.sequence_kd")
PROG = "smallcap-seqkd"
REASONS = ("empty translation", "source longer than the teacher's max positions")


class SequenceKDError(SmallcapError):
    """Bad data directory, checkpoint or flag."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="sequence-level knowledge distillation data "
                                     "(Kim & Rush 2016): a corpus translated by a teacher with beam search",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("data", help="binarized data: a smallcap-prepare directory, or parallel data in "
                        "fairseq-preprocess's translation layout")
    parser.add_argument("--path", required=True, help="teacher checkpoint (several, separated by ':', "
                        "translate as an ensemble)")
    parser.add_argument("--dest", required=True, help="output directory")
    parser.add_argument("--subset", default="train", help="split to translate: monolingual "
                        "DATA/{lang}/SUBSET if there is one, else the source side of DATA/SUBSET.{src}-{tgt}")
    parser.add_argument("-s", "--source-lang", default=None, help="translate only from this language "
                        "(None: every language of the teacher's task)")
    parser.add_argument("-t", "--target-lang", default=None, help="translate only into this language")
    parser.add_argument("--beam", type=int, default=5, help="beam size")
    parser.add_argument("--lenpen", type=float, default=1.0, help="length penalty (> 1 favours longer "
                        "translations)")
    parser.add_argument("--max-len-a", type=float, default=0.0,
                        help="translations stop after a * source length + b tokens")
    parser.add_argument("--max-len-b", type=int, default=200, help="see --max-len-a")
    parser.add_argument("--max-tokens", type=int, default=4000, help="source tokens per batch")
    parser.add_argument("--batch-size", type=int, default=None, help="sentences per batch (None: "
                        "as many as --max-tokens allows)")
    parser.add_argument("--max-sentences", type=int, default=None,
                        help="translate only the first N sentences of each direction (None: all)")
    parser.add_argument("--post-process", default="sentencepiece", help="subword marker removed in the "
                        "text files (as fairseq-generate's --post-process; 'none' keeps the pieces)")
    parser.add_argument("--log-interval", type=int, default=10, help="log progress every N batches")
    parser.add_argument("--cpu", action="store_true", help="translate on CPU even if CUDA is there")
    parser.add_argument("--fp16", action="store_true", help="translate in float16 (CUDA only)")
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


def load_teacher(args):
    """The teacher models (in eval mode, prepared for beam search as fairseq-generate does) and
    its task, set up on ``args.data``."""
    from fairseq import checkpoint_utils

    import fairseq_smallcap  # noqa: F401  (task, model, checkpoint loading)

    overrides = {"data": args.data, "bt_filter_scores": ""}
    overrides.update({k: getattr(args, k) for k in ("source_lang", "target_lang") if getattr(args, k)})
    models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task(args.path.split(":"),
                                                                       arg_overrides=overrides)
    for model in models:
        if args.fp16:
            model.half()
        if torch.cuda.is_available() and not args.cpu:
            model.cuda()
        model.eval()
        model.make_generation_fast_(beamable_mm_beam_size=args.beam, need_attn=False)
    return models, task


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


def inference_dataset(task, source, src: str, tgt: str):
    """Batches of ``source`` sentences as the teacher's task feeds them to fairseq-generate."""
    from fairseq.data import LanguagePairDataset, PrependTokenDataset

    if hasattr(task, "lang_idx"):  # unsupervised_translation: language tokens; the decoder's
        # first token (the target side here is a placeholder) says which language to produce
        return task._lang_pair(PrependTokenDataset(source, task.lang_idx[src]), source, tgt)
    return LanguagePairDataset(source, source.sizes, task.source_dictionary, tgt_dict=task.target_dictionary,
                               left_pad_source=task.cfg.left_pad_source,
                               left_pad_target=task.cfg.left_pad_target)


def first_sentences(dataset, n: Optional[int]):
    """The first ``n`` sentences of ``dataset`` (all of them if ``n`` is None)."""
    from fairseq.data import ListDataset

    if n is None or n >= len(dataset):
        return dataset
    return ListDataset([dataset[i] for i in range(n)], np.asarray(dataset.sizes[:n]))


def translate(args, task, models, generator, source, src: str, tgt: str) -> dict:
    """``{sentence id: best beam-search translation}`` (token tensors ending with eos, without
    the symbols fairseq-generate strips from its output). Sentences longer than the teacher's
    positions are skipped, so they have no entry."""
    from fairseq import utils

    use_cuda = torch.cuda.is_available() and not args.cpu
    max_positions = utils.resolve_max_positions(task.max_positions(), *[m.max_positions() for m in models])
    iterator = task.get_batch_iterator(
        inference_dataset(task, source, src, tgt), max_tokens=args.max_tokens, max_sentences=args.batch_size,
        max_positions=max_positions, ignore_invalid_inputs=True, seed=1, disable_iterator_cache=True,
    ).next_epoch_itr(shuffle=False)
    strip = sorted(generator.symbols_to_strip_from_output - {task.target_dictionary.eos()})
    strip = torch.tensor(strip, dtype=torch.long)
    translations, start = {}, time.time()
    for i, sample in enumerate(iterator, 1):
        sample = utils.move_to_cuda(sample) if use_cuda else sample
        hypos = task.inference_step(generator, models, sample)
        for sentence_id, nbest in zip(sample["id"].tolist(), hypos):
            tokens = nbest[0]["tokens"].cpu()
            translations[sentence_id] = tokens[~torch.isin(tokens, strip)]
        if i % args.log_interval == 0 or i == len(iterator):
            logger.info(f"translating {src} into {tgt}: {len(translations)}/{len(source)} sentences "
                        f"({time.time() - start:.0f} s)")
    return translations


class Outputs:
    """Output files written as ``*.partial`` and renamed by :meth:`commit`."""

    def __init__(self, dest: str):
        self.dest, self.partial = dest, []

    def path(self, name: str) -> str:
        path = os.path.join(self.dest, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.partial.append(path)
        return path + ".partial"

    def commit(self) -> None:
        for path in self.partial:
            os.replace(path + ".partial", path)


def write_direction(args, task, outputs, rejects, source, translations, src: str, tgt: str) -> dict:
    """Binarize and write as text the kept pairs of one direction (in corpus order); list the
    others in ``rejects``. Returns the direction's counts."""
    from fairseq.data import indexed_dataset

    post_process = None if args.post_process == "none" else args.post_process
    dictionaries = {src: task.source_dictionary, tgt: task.target_dictionary}
    text = lambda lang, tokens: dictionaries[lang].string(tokens, post_process).replace("\t", " ")  # noqa: E731
    base = f"train.{src}-{tgt}"
    builders = {lang: indexed_dataset.make_builder(outputs.path(f"{base}.{lang}.bin"), impl="mmap",
                                                   vocab_size=len(dictionaries[lang])) for lang in (src, tgt)}
    text_files = {lang: open(outputs.path(os.path.join("text", f"{base}.{lang}")), "w", encoding="utf-8")
                  for lang in (src, tgt)}
    counts = {"input": len(source), "kept": 0, "rejected": 0, "reasons": dict.fromkeys(REASONS, 0)}
    for sentence_id in range(len(source)):
        tokens = translations.get(sentence_id)
        reason = REASONS[1] if tokens is None else REASONS[0] if len(tokens) <= 1 else None
        if reason is not None:
            counts["rejected"] += 1
            counts["reasons"][reason] += 1
            translated = "" if tokens is None else text(tgt, tokens)
            rejects.write("\t".join([f"{src}-{tgt}", str(sentence_id), reason, text(src, source[sentence_id]),
                                     translated]) + "\n")
            continue
        counts["kept"] += 1
        for lang, item in ((src, source[sentence_id]), (tgt, tokens)):
            builders[lang].add_item(item.to(torch.int32))
            text_files[lang].write(text(lang, item) + "\n")
    for lang in (src, tgt):
        builders[lang].finalize(outputs.path(f"{base}.{lang}.idx"))
        text_files[lang].close()
    assert counts["kept"] + counts["rejected"] == counts["input"], "sequence-KD pairs lost"
    logger.info(f"pairs {src} (real) -> {tgt} (teacher): kept {counts['kept']} of {counts['input']} "
                f"-> {os.path.join(args.dest, base)}.*")
    return counts


def make_dataset(args) -> dict:
    from argparse import Namespace

    from fairseq.data import data_utils

    models, task = load_teacher(args)
    directions = plan_directions(args, task)
    generator = task.build_generator(models, Namespace(beam=args.beam, lenpen=args.lenpen,
                                                       max_len_a=args.max_len_a, max_len_b=args.max_len_b))
    os.makedirs(args.dest, exist_ok=True)
    outputs = Outputs(args.dest)
    summary = {"checkpoint": [os.path.abspath(p) for p in args.path.split(":")],
               "data": os.path.abspath(args.data), "subset": args.subset,
               "generation": {"beam": args.beam, "lenpen": args.lenpen, "max_len_a": args.max_len_a,
                              "max_len_b": args.max_len_b},
               "max_sentences": args.max_sentences, "directions": {}}
    start = time.time()
    with open(outputs.path("rejects.tsv"), "w", encoding="utf-8") as rejects:
        rejects.write("direction\tid\treason\tsource\ttranslation\n")
        for src, tgt, prefix, kind in directions:
            source = data_utils.load_indexed_dataset(prefix, task.source_dictionary)
            source = first_sentences(source, args.max_sentences)
            logger.info(f"{src}->{tgt}: translating {len(source)} {kind} sentences of {prefix}")
            translations = translate(args, task, models, generator, source, src, tgt)
            counts = write_direction(args, task, outputs, rejects, source, translations, src, tgt)
            summary["directions"][f"{src}-{tgt}"] = {"source": os.path.abspath(prefix), "kind": kind, **counts}
    dict_names = ["dict.txt"] if hasattr(task, "langs") else sorted({f"dict.{lang}.txt" for d in directions
                                                                      for lang in d[:2]})
    for name in dict_names:
        shutil.copyfile(os.path.join(args.data, name), outputs.path(name))
    summary["seconds"] = round(time.time() - start, 1)
    with open(outputs.path("summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    outputs.commit()
    return summary


def cli_main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()
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

"""One writer of pseudo-parallel data: a corpus translated by a checkpoint, judged, binarized.

``smallcap-back-parallel`` (back-translation, Sennrich et al. 2016, of the monolingual corpora by
the current model: MASS's "back-parallel" data, Song et al. 2019, curated) and ``smallcap-seqkd``
(sequence-level KD, Kim & Rush 2016: a teacher's beam-search translations) both go through it:

* :func:`build_parser`, :func:`parse_args`: fairseq's parser plus ``--path``, ``--dest`` and
  ``--max-sentences`` (a number of sentences here, not fairseq's alias of ``--batch-size``);
* :func:`load_checkpoint`: the checkpoint's models and task, set up on DATA;
* :class:`Decoder`: a corpus translated batch by batch, greedily as online back-translation
  (``task.backtranslate``) or by beam search as fairseq-generate;
* :class:`PseudoParallelWriter`: each direction's kept pairs binarized as
  ``DEST/train.{src}-{tgt}.{src|tgt}.bin/idx``, the pairs with their decision in a TSV, the
  dictionaries and ``DEST/summary.json`` (kept + rejected = input), all written as ``*.partial``
  and renamed once every file is done.
"""
import json
import logging
import os
import shutil
import time
from collections import Counter
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import torch

logger = logging.getLogger("fairseq_smallcap.pseudo_parallel")
KEPT = "kept"


def build_parser(prog: str, description: str, *, generation: bool, title: str, path_help: str,
                 dest_help: str, max_sentences_help: str):
    """fairseq's parser (``--generation``: fairseq-generate's, with ``--beam``, ``--lenpen``, ...)
    and an argument group with the shared flags, for the tool's own. Returns both."""
    from fairseq import options

    if generation:
        parser = options.get_generation_parser()
    else:
        parser = options.get_parser(title, default_task="translation")
        options.add_dataset_args(parser, gen=True)
        options.add_common_eval_args(parser.add_argument_group("Evaluation"))
    parser.prog, parser.description = prog, description
    parser.set_defaults(max_tokens=4000, post_process="sentencepiece", log_interval=10)
    # Later flags replace earlier ones: ours take over fairseq's optional --path and its
    # --max-sentences (an alias of --batch-size), and a task's (--task) take over ours.
    parser.conflict_handler = "resolve"
    group = parser.add_argument_group(title)
    group.add_argument("--path", required=True, help=path_help)
    group.add_argument("--dest", required=True, help=dest_help)
    group.add_argument("--max-sentences", type=int, default=None, help=max_sentences_help)
    return parser, group


def parse_args(parser, argv: Optional[Sequence[str]] = None):
    """``argv`` parsed as fairseq's tools do (the positional DATA is the task's)."""
    from fairseq import options

    return options.parse_args_and_arch(parser, None if argv is None else [str(a) for a in argv])


def use_cuda(args) -> bool:
    return torch.cuda.is_available() and not args.cpu


def load_checkpoint(args):
    """The models of ``--path`` (several, separated by ':', are an ensemble) in eval mode, on the
    GPU unless ``--cpu``, in float16 with ``--fp16``; and their task set up on ``args.data``
    (with ``-s/-t`` if given; online curation off)."""
    from fairseq import checkpoint_utils

    overrides = {"data": args.data, "bt_filter_scores": ""}
    overrides.update({k: getattr(args, k) for k in ("source_lang", "target_lang") if getattr(args, k, None)})
    models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task(args.path.split(":"),
                                                                       arg_overrides=overrides)
    for model in models:
        if args.fp16:
            model.half()
        if use_cuda(args):
            model.cuda()
        model.eval()
    return models, task


def inference_dataset(task, source, src: str, decoder_lang: str):
    """Batches of ``source`` sentences (language ``src``) as the task feeds them to its models.
    ``unsupervised_translation``: ``[__src__] x </s>``, the target side (``source`` again) starting
    with ``decoder_lang``'s token: the language beam search produces, or for a back-translation
    batch the real sentence's own language."""
    from fairseq.data import LanguagePairDataset, PrependTokenDataset

    if hasattr(task, "lang_idx"):
        return task.lang_pair_dataset(PrependTokenDataset(source, task.lang_idx[src]), source, decoder_lang)
    return LanguagePairDataset(source, source.sizes, task.source_dictionary, tgt_dict=task.target_dictionary,
                               left_pad_source=task.cfg.left_pad_source,
                               left_pad_target=task.cfg.left_pad_target)


class Decoder:
    """Translates batches with the checkpoint. ``search="beam"``: fairseq's beam search with every
    model of the ensemble and the generation flags (``--beam``, ``--lenpen``, ``--max-len-a/b``, ...),
    as fairseq-generate; ``search="greedy"``: the first model's greedy decoding, exactly as online
    back-translation (``task.backtranslate``, with the checkpoint's ``--bt-max-len-a/b``).
    ``skip_too_long``: sentences longer than the models' positions are not translated."""

    def __init__(self, args, task, models, search: str, skip_too_long: bool = True):
        from fairseq import utils

        if search not in ("beam", "greedy"):
            raise ValueError(f"search {search!r}: beam or greedy")
        self.args, self.task, self.models, self.search = args, task, models, search
        self.max_positions = None
        if skip_too_long:
            self.max_positions = utils.resolve_max_positions(task.max_positions(),
                                                             *[m.max_positions() for m in models])
        if search == "beam":
            for model in models:
                model.make_generation_fast_(beamable_mm_beam_size=args.beam, need_attn=False)
            self.generator = task.build_generator(models, args)
            strip = self.generator.symbols_to_strip_from_output - {task.target_dictionary.eos()}
            self.strip = torch.tensor(sorted(strip), dtype=torch.long)

    def translate(self, sample, lang: str) -> Tuple[List[torch.Tensor], Optional[Dict]]:
        """The translations of a batch of ``lang`` sentences (token tensors ending with eos, on the
        batch's device), and for greedy search the back-translation batch (translation ->
        real sentence) as online back-translation trains on it."""
        if self.search == "greedy":
            translated, _ = self.task.backtranslate(sample, self.models[0], lang)
            pad = self.task.source_dictionary.pad()
            return [row[row.ne(pad)][1:] for row in translated["net_input"]["src_tokens"]], translated
        hypos = self.task.inference_step(self.generator, self.models, sample)
        best = [nbest[0]["tokens"] for nbest in hypos]
        return [tokens[~torch.isin(tokens, self.strip.to(tokens.device))] for tokens in best], None

    def batches(self, dataset, lang: str, into: str, limit: Optional[int] = None) -> Iterator[tuple]:
        """``(sample, translations, back-translation batch or None)`` for each batch of
        ``dataset`` (see :func:`inference_dataset`) in batch order; with ``limit``, no batch
        after ``limit`` sentences."""
        from fairseq import utils

        iterator = self.task.get_batch_iterator(
            dataset, max_tokens=self.args.max_tokens, max_sentences=self.args.batch_size,
            max_positions=self.max_positions, ignore_invalid_inputs=True, seed=self.args.seed,
            disable_iterator_cache=True,
        ).next_epoch_itr(shuffle=False)
        done, total, start = 0, len(dataset) if limit is None else min(limit, len(dataset)), time.time()
        for i, sample in enumerate(iterator, 1):
            if limit is not None and done >= limit:
                break
            sample = utils.move_to_cuda(sample) if use_cuda(self.args) else sample
            translations, translated = self.translate(sample, lang)
            done += len(translations)
            if i % self.args.log_interval == 0 or i == len(iterator) or (limit is not None and done >= limit):
                logger.info(f"translating {lang} into {into}: {min(done, total)}/{total} sentences "
                            f"({time.time() - start:.0f} s)")
            yield sample, translations, translated


class Pair(NamedTuple):
    """A sentence pair: ``source`` in language src, ``target`` in tgt (None: no translation);
    its ``decision``, :data:`KEPT` or why not; more TSV ``columns`` (scores)."""
    id: int
    source: Optional[torch.Tensor]
    target: Optional[torch.Tensor]
    decision: str = KEPT
    columns: Sequence[str] = ()


class PseudoParallelWriter:
    """The files of ``dest``, written as ``*.partial`` and renamed by :meth:`commit`."""

    def __init__(self, dest: str):
        self.dest, self.partial = dest, []

    def path(self, name: str) -> str:
        path = os.path.join(self.dest, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.partial.append(path)
        return path + ".partial"

    def open_tsv(self, name: str, header: Sequence[str]):
        tsv = open(self.path(name), "w", encoding="utf-8")
        tsv.write("\t".join(header) + "\n")
        return tsv

    def commit(self) -> None:
        for path in dict.fromkeys(self.partial):
            os.replace(path + ".partial", path)

    def write_pairs(self, src: str, tgt: str, pairs: Sequence[Pair], dictionaries: Dict, tsv, *,
                    post_process: Optional[str] = "sentencepiece", text: bool = False,
                    tsv_kept: bool = True, tsv_direction: bool = False) -> Counter:
        """Binarize the kept ``pairs`` in their order as ``train.{src}-{tgt}.{src|tgt}`` (with
        ``text``, also one sentence a line in ``text/``, ``post_process`` applied) and write a
        row ``[src-tgt,] id, decision, *columns, src text, tgt text`` per pair to ``tsv`` (only
        the rejected ones unless ``tsv_kept``). Returns the number of pairs of each decision."""
        from fairseq.data import indexed_dataset

        post_process = None if post_process == "none" else post_process

        def as_text(lang, tokens):
            return "" if tokens is None else dictionaries[lang].string(tokens, post_process).replace("\t", " ")

        base = f"train.{src}-{tgt}"
        builders = {lang: indexed_dataset.make_builder(self.path(f"{base}.{lang}.bin"), impl="mmap",
                                                       vocab_size=len(dictionaries[lang])) for lang in (src, tgt)}
        text_files = {lang: open(self.path(os.path.join("text", f"{base}.{lang}")), "w", encoding="utf-8")
                      for lang in (src, tgt)} if text else {}
        counts, written = Counter(), 0
        for pair in pairs:
            counts[pair.decision] += 1
            if pair.decision == KEPT:
                for lang, tokens in ((src, pair.source), (tgt, pair.target)):
                    builders[lang].add_item(tokens.to(torch.int32))
                    if text:
                        text_files[lang].write(as_text(lang, tokens) + "\n")
                written += 1
            if pair.decision != KEPT or tsv_kept:
                tsv.write("\t".join([*([f"{src}-{tgt}"] if tsv_direction else []), str(pair.id), pair.decision,
                                     *pair.columns, as_text(src, pair.source), as_text(tgt, pair.target)]) + "\n")
                written += pair.decision != KEPT
        for lang in (src, tgt):
            builders[lang].finalize(self.path(f"{base}.{lang}.idx"))
            if text:
                text_files[lang].close()
        if written != len(pairs):  # every pair binarized or listed as rejected: kept + rejected = input
            raise RuntimeError(f"{src}-{tgt}: pseudo-parallel pairs lost")
        logger.info(f"{src}-{tgt}: kept {counts[KEPT]} of {len(pairs)} pairs -> {os.path.join(self.dest, base)}.*")
        return counts

    def finish(self, summary: dict, data: str, dictionaries: Sequence[str]) -> None:
        """Copy the dictionaries from ``data``, write ``summary.json`` and rename every file."""
        for name in dictionaries:
            shutil.copyfile(os.path.join(data, name), self.path(name))
        with open(self.path("summary.json"), "w") as f:
            json.dump(summary, f, indent=2)
        self.commit()

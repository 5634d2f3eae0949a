"""``smallcap-back-parallel``: one round of curated pseudo-parallel ("back-parallel") data.

    smallcap-back-parallel DATA --path round1/checkpoint_best.pt --dest DATA/bp1 \
        --scores dual_xent,length_ratio,copy_rate,repeated_ngrams --keep 0.5

MASS's toolkit (Song et al. 2019) follows its unsupervised steps with supervised training on
"back-parallel" data: the monolingual corpora translated by the current model. This command
makes that data curated: it translates every monolingual training sentence of each language
(``DATA/{lang}/train``) with the checkpoint (batched greedy decoding, as online
back-translation does), scores every (translation -> real sentence) pair with the registered
pair scores (:mod:`fairseq_smallcap.curation.pair_scores`), keeps the best ``--keep`` fraction
per direction (and those under ``--max-score``), and binarizes the kept pairs as
``DEST/train.{src}-{tgt}.{src|tgt}.bin/idx`` with the data's dictionary. Train on them with
``--back-parallel-data DEST --lambda-bp 1`` (the supervised objective), then run the next round
from the new checkpoint. Every pair, kept or not, is listed with its scores in
``DEST/pairs.{src}-{tgt}.tsv`` and counted in ``DEST/summary.json`` (kept + rejected = input).
"""
import argparse
import json
import logging
import os
import shutil
import sys
import time
from typing import Optional, Sequence

import torch

from .errors import SmallcapError
from .cli import configure_logging, error_exit_status

logger = logging.getLogger("fairseq_smallcap.back_parallel")
PROG = "smallcap-back-parallel"


class BackParallelError(SmallcapError):
    """Bad data directory, checkpoint or flag."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0].split(": ", 1)[1],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("data", help="the smallcap-prepare directory the checkpoint was trained on")
    parser.add_argument("--path", required=True, help="checkpoint that translates")
    parser.add_argument("--dest", required=True, help="output directory (--back-parallel-data)")
    parser.add_argument("--scores", default="dual_xent,length_ratio,copy_rate,repeated_ngrams",
                        help="comma-separated registered pair scores")
    parser.add_argument("--weights", default="", help="weights of --scores (default 1 each)")
    parser.add_argument("--keep", type=float, default=0.5, help="fraction of pairs kept per direction")
    parser.add_argument("--max-score", type=float, default=None, help="also drop pairs scoring above this")
    parser.add_argument("--max-tokens", type=int, default=4000, help="tokens per translation batch")
    parser.add_argument("--max-sentences", type=int, default=None,
                        help="translate at most this many sentences per language (default: all)")
    parser.add_argument("--curation-plugins", default="", help="modules registering more pair scores")
    parser.add_argument("--cpu", action="store_true", help="translate on CPU even if CUDA is there")
    parser.add_argument("--fp16", action="store_true", help="translate in float16 (CUDA)")
    return parser


def check_args(args) -> None:
    if not os.path.isfile(os.path.join(args.data, "dict.txt")):
        raise BackParallelError(f"{args.data}: no dict.txt (run smallcap-prepare first)")
    if not os.path.isfile(args.path):
        raise BackParallelError(f"--path {args.path}: no such checkpoint")
    if not 0 < args.keep <= 1:
        raise BackParallelError(f"--keep {args.keep}: must be in (0, 1]")


def make_round(args) -> dict:
    from fairseq import checkpoint_utils, utils
    from fairseq.data import PrependTokenDataset, data_utils, indexed_dataset

    import fairseq_smallcap  # noqa: F401  (task, model, checkpoint loading)
    from .curation import import_plugins
    from .curation.bt_filter import BackTranslationFilter
    from .curation.pair_scores import BackTranslatedPairs

    import_plugins(args.curation_plugins.split(","))
    scorer = BackTranslationFilter(None, args.scores, args.weights, "1", None)  # validates names
    use_cuda = torch.cuda.is_available() and not args.cpu
    models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [args.path], arg_overrides={"data": args.data, "bt_filter_scores": ""})
    model = models[0]
    if args.fp16:
        model.half()
    if use_cuda:
        model.cuda()
    model.eval()
    d = task.dictionary
    os.makedirs(args.dest, exist_ok=True)
    summary = {"checkpoint": os.path.abspath(args.path), "data": os.path.abspath(args.data),
               "scores": scorer.names, "weights": scorer.weights, "keep": args.keep,
               "max_score": args.max_score, "directions": {}}
    start = time.time()
    for lang in task.langs:
        prefix = os.path.join(args.data, lang, "train")
        mono = data_utils.load_indexed_dataset(prefix, d, "mmap")
        if mono is None:
            raise BackParallelError(f"no monolingual training data for {lang}: expected {prefix}.bin/.idx")
        other = task.other_lang(lang)
        dataset = task._lang_pair(PrependTokenDataset(mono, task.lang_idx[lang]), mono, lang)
        iterator = task.get_batch_iterator(dataset, max_tokens=args.max_tokens, seed=1,
                                           ignore_invalid_inputs=False, disable_iterator_cache=True)
        records = []  # (sentence id, translation, original, combined, [scores])
        for sample in iterator.next_epoch_itr(shuffle=False):
            if args.max_sentences is not None and len(records) >= args.max_sentences:
                break
            sample = utils.move_to_cuda(sample) if use_cuda else sample
            bt_sample, _ = task.backtranslate(sample, model, lang)
            translations = list(_translations(bt_sample, d.pad()))
            originals = [utils.strip_pad(t, d.pad()) for t in sample["target"]]
            pairs = BackTranslatedPairs(model=model, task=task, source_lang=other, target_lang=lang,
                                        translations=translations, originals=originals,
                                        sample=bt_sample, mono_sample=sample)
            columns, combined = scorer.score(pairs)
            for i, sentence_id in enumerate(sample["id"].tolist()):
                records.append((sentence_id, translations[i].cpu(), originals[i].cpu(),
                                float(combined[i]), [float(c[i]) for c in columns]))
            logger.info(f"translating {lang} into {other}: {len(records)}/{len(mono)} sentences "
                        f"({time.time() - start:.0f} s)")
        records = records[: args.max_sentences] if args.max_sentences is not None else records
        if records:  # one ranking over the whole corpus: scores standardised over all its pairs
            combined = scorer.combine([torch.tensor([r[4][k] for r in records]) for k in range(len(scorer.names))])
            records = [(*r[:3], float(c), r[4]) for r, c in zip(records, combined)]
        summary["directions"][f"{other}-{lang}"] = write_direction(args, d, indexed_dataset, other, lang,
                                                                    records, scorer.names)
    summary["seconds"] = round(time.time() - start, 1)
    shutil.copyfile(os.path.join(args.data, "dict.txt"), os.path.join(args.dest, "dict.txt"))
    with open(os.path.join(args.dest, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    return summary


def _translations(bt_sample, pad):
    """The translated sentences (without the language token, ending with eos) of a BT batch."""
    for row in bt_sample["net_input"]["src_tokens"]:
        yield row[row.ne(pad)][1:]


def write_direction(args, d, indexed_dataset, src, tgt, records, score_names):
    n_keep = max(1, round(args.keep * len(records))) if records else 0
    ranked = sorted(range(len(records)), key=lambda i: records[i][3])
    top = set(ranked[:n_keep])
    kept = top if args.max_score is None else {i for i in top if records[i][3] <= args.max_score}
    text = lambda tokens: d.string(tokens, "sentencepiece").replace("\t", " ")  # noqa: E731
    base = os.path.join(args.dest, f"train.{src}-{tgt}")
    builders = {lang: indexed_dataset.make_builder(f"{base}.{lang}.bin", impl="mmap", vocab_size=len(d))
                for lang in (src, tgt)}
    reasons = {"kept": 0, "below keep fraction": 0, "above --max-score": 0}
    with open(os.path.join(args.dest, f"pairs.{src}-{tgt}.tsv"), "w", encoding="utf-8") as tsv:
        tsv.write("\t".join(["id", "decision", "combined", *score_names, f"{src} (model)", f"{tgt} (real)"]) + "\n")
        for i, (sentence_id, translation, original, combined, scores) in enumerate(records):
            if i in kept:
                decision = "kept"
                builders[src].add_item(translation.to(torch.int32))
                builders[tgt].add_item(original.to(torch.int32))
            else:
                decision = "below keep fraction" if i not in top else "above --max-score"
            reasons[decision] += 1
            tsv.write("\t".join([str(sentence_id), decision, f"{combined:.4f}", *(f"{s:.4f}" for s in scores),
                                 text(translation), text(original)]) + "\n")
    for lang, builder in builders.items():
        builder.finalize(f"{base}.{lang}.idx")
    if reasons["kept"] + reasons["below keep fraction"] + reasons["above --max-score"] != len(records):
        raise RuntimeError("back-parallel pairs lost")
    logger.info(f"pairs {src} (model) -> {tgt} (real): kept {reasons['kept']} of {len(records)} -> {base}.*")
    return {"pairs": len(records), **reasons}


def cli_main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()
    try:
        check_args(args)
        summary = make_round(args)
    except SmallcapError as e:
        return error_exit_status(PROG, e)
    for direction, counts in summary["directions"].items():
        print(f"{direction}: {counts['kept']:,} kept + {counts['pairs'] - counts['kept']:,} rejected "
              f"= {counts['pairs']:,} pairs")
    print(f"written to {args.dest} in {summary['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())

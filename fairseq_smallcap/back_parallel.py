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
Written by :mod:`fairseq_smallcap.pseudo_parallel`, as ``smallcap-seqkd``'s data; every other flag
is a fairseq flag (``--user-dir``, ``--batch-size``, ``--seed``, ...).
"""
import logging
import os
import sys
import time
from typing import Optional, Sequence

import torch

from . import pseudo_parallel
from .errors import SmallcapError
from .cli import configure_logging, error_exit_status
from .pseudo_parallel import KEPT, Pair

logger = logging.getLogger("fairseq_smallcap.back_parallel")
PROG = "smallcap-back-parallel"
BELOW, ABOVE = "below keep fraction", "above --max-score"


class BackParallelError(SmallcapError):
    """Bad data directory, checkpoint or flag."""


def build_parser():
    parser, group = pseudo_parallel.build_parser(
        PROG, __doc__.split("\n\n")[0].split(": ", 1)[1], generation=False, title="Back-parallel",
        path_help="checkpoint that translates", dest_help="output directory (--back-parallel-data)",
        max_sentences_help="translate at most this many sentences per language (default: all)")
    group.add_argument("--scores", default="dual_xent,length_ratio,copy_rate,repeated_ngrams",
                       help="comma-separated registered pair scores")
    group.add_argument("--weights", default="", help="weights of --scores (default 1 each), applied to "
                       "each score standardised over the direction's pairs for the ranking")
    group.add_argument("--keep", type=float, default=0.5, help="fraction of pairs kept per direction")
    group.add_argument("--max-score", type=float, default=None,
                       help="also drop pairs whose raw weighted score sum is above this")
    group.add_argument("--curation-plugins", default="", help="modules registering more pair scores")
    return parser


def check_args(args) -> None:
    if not os.path.isfile(os.path.join(args.data, "dict.txt")):
        raise BackParallelError(f"{args.data}: no dict.txt (run smallcap-prepare first)")
    if not os.path.isfile(args.path):
        raise BackParallelError(f"--path {args.path}: no such checkpoint")
    if not 0 < args.keep <= 1:
        raise BackParallelError(f"--keep {args.keep}: must be in (0, 1]")


def make_round(args) -> dict:
    from fairseq import utils
    from fairseq.data import data_utils

    from .curation import import_plugins
    from .curation.bt_filter import BackTranslationFilter
    from .curation.pair_scores import BackTranslatedPairs

    import_plugins(args.curation_plugins.split(","))
    scorer = BackTranslationFilter(None, args.scores, args.weights, "1", None)  # validates names
    models, task = pseudo_parallel.load_checkpoint(args)
    # as online back-translation: greedy, and every sentence translated (none skipped as too long)
    decoder = pseudo_parallel.Decoder(args, task, models, "greedy", skip_too_long=False)
    writer = pseudo_parallel.PseudoParallelWriter(args.dest)
    d = task.dictionary
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
        # the batches of online back-translation: the real sentence is the target
        dataset = pseudo_parallel.inference_dataset(task, mono, lang, lang)
        records = []  # (sentence id, translation, original, combined, [scores])
        for sample, translations, bt_sample in decoder.batches(dataset, lang, other, limit=args.max_sentences):
            originals = [utils.strip_pad(t, d.pad()) for t in sample["target"]]
            pairs = BackTranslatedPairs(model=models[0], task=task, source_lang=other, target_lang=lang,
                                        translations=translations, originals=originals,
                                        sample=bt_sample, mono_sample=sample)
            columns, combined = scorer.score(pairs)
            for i, sentence_id in enumerate(sample["id"].tolist()):
                records.append((sentence_id, translations[i].cpu(), originals[i].cpu(),
                                float(combined[i]), [float(c[i]) for c in columns]))
        records = records[: args.max_sentences] if args.max_sentences is not None else records
        if records:  # one ranking over the whole corpus: scores standardised over all its pairs
            columns = [torch.tensor([r[4][k] for r in records]) for k in range(len(scorer.names))]
            ranking, raw = scorer.combine(columns), scorer.combine(columns, normalize=False)
            records = [(*r[:3], float(c), r[4], float(w)) for r, c, w in zip(records, ranking, raw)]
        summary["directions"][f"{other}-{lang}"] = write_direction(args, writer, d, other, lang, records,
                                                                    scorer.names)
    summary["seconds"] = round(time.time() - start, 1)
    writer.finish(summary, args.data, ["dict.txt"])
    return summary


def write_direction(args, writer, d, src, tgt, records, score_names) -> dict:
    """Keep the best ``--keep`` fraction of ``records`` (translation in ``src`` -> real sentence in
    ``tgt``) under ``--max-score``; write them with every pair's decision in ``pairs.{src}-{tgt}.tsv``."""
    n_keep = max(1, round(args.keep * len(records))) if records else 0
    ranked = sorted(range(len(records)), key=lambda i: records[i][3])
    top = set(ranked[:n_keep])
    kept = top if args.max_score is None else {i for i in top if records[i][5] <= args.max_score}
    pairs = [Pair(sentence_id, translation, original, KEPT if i in kept else BELOW if i not in top else ABOVE,
                  (f"{combined:.4f}", *(f"{s:.4f}" for s in scores)))
             for i, (sentence_id, translation, original, combined, scores, _raw) in enumerate(records)]
    header = ["id", "decision", "combined", *score_names, f"{src} (model)", f"{tgt} (real)"]
    with writer.open_tsv(f"pairs.{src}-{tgt}.tsv", header) as tsv:
        counts = writer.write_pairs(src, tgt, pairs, {src: d, tgt: d}, tsv, post_process=args.post_process)
    return {"pairs": len(records), **{decision: counts[decision] for decision in (KEPT, BELOW, ABOVE)}}


def cli_main(argv: Optional[Sequence[str]] = None) -> int:
    configure_logging()
    args = pseudo_parallel.parse_args(build_parser(), argv)
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

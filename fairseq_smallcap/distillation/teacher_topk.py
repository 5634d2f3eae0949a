"""``smallcap-teacher-topk``: a teacher's top-k next-token distributions, computed once.

    smallcap-teacher-topk DATA --path teacher.pt --task translation -s en -t fr \\
        --subset train --topk 8 --dest DIR [--max-tokens 4000] [--cpu]

Runs the teacher checkpoint once, with teacher forcing, over every sentence of a binarized
dataset split (loaded by the task exactly as fairseq-train loads it) and stores, for every target
token, the teacher's k most likely tokens and their log-probabilities at temperature 1 in
``DIR/{subset}/`` (format: :mod:`fairseq_smallcap.distillation.topk_store`). Train the student
with ``--criterion knowledge_distillation --teacher-topk-data DIR`` (any ``--kd-temperature``,
``--kd-topk`` up to k) instead of running the teacher at every step. Write the validation subset
too (``--subset valid``) to keep the KD term in the validation loss.

Only for tasks whose samples are fixed (e.g. ``translation``): in ``unsupervised_translation``
noise and back-translation change a sentence's source at every step. Every other flag is a
fairseq flag (``--user-dir``, task flags, ``--batch-size``, ``--fp16``, ``--num-workers``, ...).
Sentences longer than the teacher's (or task's) maximum positions are not scored; the criterion
leaves them out of the KD term.
"""
import logging
import os
import sys
import time
from typing import Optional, Sequence

import torch

from ..errors import SmallcapError
from ..cli import configure_logging, error_exit_status

logger = logging.getLogger("fairseq_smallcap.teacher_topk")
PROG = "smallcap-teacher-topk"


class TeacherTopkError(SmallcapError):
    """Bad data directory, checkpoint or flag."""


def build_parser():
    from fairseq import options

    parser = options.get_parser("Teacher top-k", default_task="translation")
    parser.prog = PROG
    parser.description = __doc__.split("\n\n")[0].split(": ", 1)[1]
    options.add_dataset_args(parser, gen=True)
    options.add_common_eval_args(parser.add_argument_group("Evaluation"))
    group = parser.add_argument_group("Teacher top-k")
    group.add_argument("--subset", default="train", help="dataset split to score (train, valid, ...)")
    group.add_argument("--topk", type=int, default=8, help="number of most likely tokens stored per target token")
    group.add_argument("--dest", required=True, help="output directory (--teacher-topk-data); "
                       "the data goes to DEST/SUBSET/")
    return parser


def write_topk(args) -> dict:
    from fairseq import tasks, utils
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    import fairseq_smallcap  # noqa: F401  (task, model, checkpoint loading)
    from ..criterions.knowledge_distillation import load_teacher
    from ..tasks.unsupervised_translation import UnsupervisedTranslationTask
    from .topk_store import TopKWriter, target_lengths_and_checksum

    cfg = convert_namespace_to_omegaconf(args)
    if not cfg.common_eval.path:
        raise TeacherTopkError("--path: which teacher checkpoint? (required)")
    if args.topk < 1:
        raise TeacherTopkError(f"--topk {args.topk}: must be at least 1")
    task = tasks.setup_task(cfg.task)
    if isinstance(task, UnsupervisedTranslationTask):
        raise TeacherTopkError("--task unsupervised_translation: its samples change at every step (noise, "
                               "back-translation); use --teacher-path in training instead")
    dictionary = task.target_dictionary
    if args.topk > len(dictionary):
        raise TeacherTopkError(f"--topk {args.topk}: larger than the dictionary ({len(dictionary)} symbols)")
    teacher = load_teacher(cfg.common_eval.path, task, flag="--path")
    use_cuda = torch.cuda.is_available() and not cfg.common.cpu
    if cfg.common.fp16:
        teacher.half()
    if use_cuda:
        teacher.cuda()
    try:
        task.load_dataset(args.subset, combine=args.subset == cfg.dataset.train_subset, epoch=1)
    except FileNotFoundError as e:
        raise TeacherTopkError(f"--subset {args.subset}: {e}")
    dataset = task.dataset(args.subset)
    lengths, checksum = target_lengths_and_checksum(dataset)
    start = time.time()
    writer = TopKWriter(args.dest, args.subset, lengths, args.topk)
    iterator = task.get_batch_iterator(
        dataset=dataset, max_tokens=cfg.dataset.max_tokens or (None if cfg.dataset.batch_size else 4000),
        max_sentences=cfg.dataset.batch_size,
        max_positions=utils.resolve_max_positions(task.max_positions(), teacher.max_positions()),
        ignore_invalid_inputs=True, required_batch_size_multiple=1, seed=cfg.common.seed,
        num_workers=cfg.dataset.num_workers, disable_iterator_cache=True,
    ).next_epoch_itr(shuffle=False)
    done, last_log = 0, start
    for sample in iterator:
        sample = utils.move_to_cuda(sample) if use_cuda else sample
        with torch.no_grad():
            logp = teacher.get_normalized_probs(teacher(**sample["net_input"]), log_probs=True)
            values, ids = logp.float().topk(args.topk, dim=-1)
        values, ids, target = values.half().cpu().numpy(), ids.int().cpu().numpy(), sample["target"].cpu()
        for row, sentence_id in enumerate(sample["id"].tolist()):
            tokens = target[row].ne(dictionary.pad()).numpy()
            writer.add(sentence_id, ids[row][tokens], values[row][tokens])
        done += len(sample["id"])
        if time.time() - last_log > 10:
            last_log = time.time()
            logger.info(f"{args.subset}: {done:,}/{len(dataset):,} sentences ({last_log - start:.0f} s)")
    path = writer.finish({
        "dictionary_size": len(dictionary), "target_checksum": checksum, "temperature": 1.0,
        "teacher": os.path.abspath(cfg.common_eval.path), "data": cfg.task.data, "task": cfg.task._name,
        "seconds": round(time.time() - start, 1),
    })
    unscored = len(dataset) - done
    if unscored:
        logger.warning(f"{unscored:,} sentences longer than the teacher's maximum positions were not scored")
    logger.info(f"{args.subset}: {done:,}/{len(dataset):,} sentences, top-{args.topk} written to {path}")
    return {"path": path, "sentences": len(dataset), "scored": done, "tokens": int(lengths.sum()),
            "seconds": round(time.time() - start, 1)}


def cli_main(argv: Optional[Sequence[str]] = None) -> int:
    from fairseq import options

    configure_logging()
    args = options.parse_args_and_arch(build_parser(), None if argv is None else list(argv))
    try:
        summary = write_topk(args)
    except SmallcapError as e:
        return error_exit_status(PROG, e)
    print(f"top-{args.topk} teacher distributions of {summary['scored']:,}/{summary['sentences']:,} sentences "
          f"({summary['tokens']:,} target tokens) written to {summary['path']} in {summary['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())

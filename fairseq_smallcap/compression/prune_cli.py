"""``smallcap-prune-rounds`` and ``smallcap-prune-finalize``: the command line of magnitude pruning.

    smallcap-prune-rounds --sparsities 0.5,0.7,0.8 --init dense.pt --save-dir prune/ --finalize \\
        -- DATA <the usual fairseq-train flags>
    smallcap-prune-finalize CKPT --out CKPT2
    python -m fairseq_smallcap.compression.prune_cli {rounds,finalize} ...

The pruning itself (model options, schedule, masks, the rounds driver, finalize) is in
:mod:`fairseq_smallcap.compression.pruning` (see its docstring).
"""
import argparse
import sys
from typing import Optional, Sequence

from ..cli import configure_logging, error_exit_status
from ..errors import SmallcapError
from .pruning import RoundFailed, finalize, rounds


def rounds_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smallcap-prune-rounds", usage="%(prog)s --sparsities S1,S2,... --save-dir DIR [--init CKPT] "
        "[--finalize] -- DATA FAIRSEQ_TRAIN_FLAGS",
        description="iterative magnitude pruning with learning-rate rewinding: one fairseq-train run per "
                    "sparsity, each fine-tuned from the previous one with its learning-rate schedule "
                    "restarted (Renda et al. 2020)")
    parser.add_argument("--sparsities", required=True, help="comma-separated increasing sparsities, one per round")
    parser.add_argument("--save-dir", required=True, help="directory of the rounds (DIR/round1, DIR/round2, ...)")
    parser.add_argument("--init", default=None, help="checkpoint the first round starts from (a trained dense "
                        "model); without it, the first round trains from scratch")
    parser.add_argument("--round-checkpoint", choices=("last", "best"), default="last",
                        help="checkpoint of a round the next one starts from")
    parser.add_argument("--finalize", action="store_true",
                        help="make the last round's pruning permanent in DIR/checkpoint_pruned.pt")
    return parser


def rounds_main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = "smallcap-prune-rounds"
    if "--" in argv:
        split = argv.index("--")
        own, train_flags = argv[:split], argv[split + 1:]
    else:
        own, train_flags = argv, []
    args = rounds_parser().parse_args(own)
    configure_logging()
    try:
        done = rounds(args, train_flags)
    except RoundFailed as e:
        error_exit_status(prog, e)
        return e.status
    except SmallcapError as e:
        return error_exit_status(prog, e)
    for info in done:
        print(f"round {info['round']}: sparsity {info['sparsity']:.4f} (target {info['target']}) {info['checkpoint']}")
    if done and "finalized" in done[-1]:
        print(f"finalized: {done[-1]['finalized']}")
    return 0


def finalize_main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="smallcap-prune-finalize",
                                     description="make magnitude pruning permanent: a plain checkpoint")
    parser.add_argument("checkpoint", help="checkpoint trained with --prune-sparsity (weight_orig/weight_mask)")
    parser.add_argument("--out", required=True, help="checkpoint to write")
    args = parser.parse_args(argv)
    configure_logging(sys.stderr)
    try:
        result = finalize(args.checkpoint, args.out)
    except SmallcapError as e:
        return error_exit_status("smallcap-prune-finalize", e)
    print(f"wrote {args.out}: sparsity {result['sparsity']:.4f} over {result['tensors']} pruned matrices")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m fairseq_smallcap.compression.prune_cli {rounds,finalize} ...``"""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"rounds": rounds_main, "finalize": finalize_main}
    if not argv or argv[0] not in commands:
        print("usage: python -m fairseq_smallcap.compression.prune_cli {rounds,finalize} ...", file=sys.stderr)
        return 2
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())

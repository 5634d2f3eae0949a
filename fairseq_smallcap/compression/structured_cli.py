"""``smallcap-prune-structured``: the command line of structured pruning (remove attention heads
and FFN neurons of a ``smallcap_transformer`` checkpoint).

    smallcap-prune-structured CKPT --data DIR --prune-heads 1 --ffn-keep 0.5 --out small.pt

The pruning itself (importance scores, shrinking, the build-time hook) is in
:mod:`fairseq_smallcap.compression.structured` (see its docstring).
"""
import argparse
import sys
from typing import Optional, Sequence

from ..cli import configure_logging, error_exit_status
from ..errors import SmallcapError
from .structured import prune_structured

PROG = "smallcap-prune-structured"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="structured pruning: remove attention heads "
                                     "and FFN neurons of a smallcap_transformer checkpoint (smaller matrices)")
    parser.add_argument("checkpoint", help="a smallcap_transformer checkpoint")
    parser.add_argument("--data", required=True, help="the data directory the model was trained with")
    parser.add_argument("--out", required=True, help="the smaller checkpoint to write")
    parser.add_argument("--prune-heads", type=int, default=None, metavar="N",
                        help="remove the N least important heads of every attention module")
    parser.add_argument("--encoder-prune-heads", type=int, default=None, metavar="N",
                        help="heads removed per encoder layer (default --prune-heads)")
    parser.add_argument("--decoder-prune-heads", type=int, default=None, metavar="N",
                        help="heads removed per decoder self- and cross-attention (default --prune-heads)")
    parser.add_argument("--ffn-keep", type=float, default=None, metavar="F",
                        help="fraction in (0, 1] of the FFN neurons kept in every layer")
    parser.add_argument("--importance", choices=("gradient", "weight"), default="gradient",
                        help="gradient: Michel et al. 2019 head-gate gradients on --subset; weight: L2 norms")
    parser.add_argument("--subset", default="valid", help="split of --data scored for --importance gradient")
    parser.add_argument("--max-tokens", type=int, default=4000, help="tokens per batch when scoring")
    parser.add_argument("--max-batches", type=int, default=100, help="batches scored at most")
    parser.add_argument("--masked-out", default=None, metavar="CKPT",
                        help="also write the unshrunk model with the removed heads and neurons zeroed")
    return parser


def cli_main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(sys.stderr)
    try:
        result = prune_structured(args)
    except SmallcapError as e:
        return error_exit_status(PROG, e)
    for side, p in result["plan"].items():
        print(f"{side}: {p['heads_kept']} of {p['heads']} heads, {p['ffn_kept']} of {p['ffn']} FFN neurons per layer")
    print(f"wrote {args.out}: {result['params_after']:,} parameters (was {result['params_before']:,})")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())

"""``smallcap-lowrank``: the command line of low-rank (SVD) factorisation -- factorise a trained
``smallcap_transformer`` checkpoint, or merge a factorised one back into plain layers.

    smallcap-lowrank CKPT --out CKPT2 --layers 'encoder.layers.*.fc1|decoder.layers.*.fc[12]' --rank 16
    smallcap-lowrank CKPT --out CKPT2 --layers '.*' --energy 0.9 --embeddings 64
    smallcap-lowrank --merge CKPT2 --out CKPT3     # plain Linear layers again (for export)

The modules, the SVD and the model options are in :mod:`fairseq_smallcap.compression.lowrank`
(see its docstring); this module loads and writes checkpoints with them.
"""
import argparse
import os
import sys
from typing import Optional, Sequence

import torch.nn as nn

from .. import checkpoints
from ..cli import configure_logging, error_exit_status
from ..errors import SmallcapError
from .lowrank import (OPTIONS, LowRankEmbedding, LowRankError, _record, check_energy, choose_ranks, factorise_,
                      format_ranks, linear_layers, merge_, n_params, recorded_ranks)

PROG = "smallcap-lowrank"


# ---------------------------------------------------------------------------- checkpoints
class _Task:
    """What fairseq's Transformer needs of a task to be built: dictionaries of the right size."""

    def __init__(self, size: int):
        from fairseq.data import Dictionary

        dictionary = Dictionary()
        while len(dictionary) < size:
            dictionary.add_symbol(f"madeupword{len(dictionary):06d}")
        self.source_dictionary = self.target_dictionary = dictionary


def load_model(path: str, flag: str):
    """The checkpoint's state and its ``smallcap_transformer`` model, weights loaded, built
    without the data directory (dictionaries of the checkpoint's vocabulary size)."""
    from fairseq import checkpoint_utils
    from fairseq.models import ARCH_MODEL_REGISTRY, build_model
    from omegaconf import OmegaConf

    import fairseq_smallcap  # noqa: F401  (architectures, checkpoint loading)
    from ..models.smallcap_transformer import SmallcapTransformerModel

    if not os.path.isfile(path):
        raise LowRankError(f"{flag} {path}: no such checkpoint")
    try:
        state = checkpoint_utils.load_checkpoint_to_cpu(path)
    except SmallcapError:
        raise
    except Exception as e:
        raise LowRankError(f"{flag} {path}: cannot read it as a fairseq checkpoint ({e})") from None
    if state.get("cfg") is None or "model" not in state or state["cfg"].get("model") is None:
        raise LowRankError(f"{flag} {path}: not a fairseq checkpoint with a model config and weights")
    model_cfg = state["cfg"].model
    arch = getattr(model_cfg, "arch", None) or getattr(model_cfg, "_name", None)
    model_cls = ARCH_MODEL_REGISTRY.get(arch)
    if model_cls is None or not issubclass(model_cls, SmallcapTransformerModel):
        raise LowRankError(f"{flag} {path}: a checkpoint of arch {arch!r}; only smallcap_transformer "
                           "architectures (smallcap_very_small ...) can be factorised")
    table = state["model"].get("encoder.embed_tokens.weight")
    if table is None:
        table = state["model"].get("encoder.embed_tokens.down.weight")
    if table is None:
        raise LowRankError(f"{flag} {path}: no encoder.embed_tokens weights")
    if isinstance(model_cfg, argparse.Namespace):
        cfg = argparse.Namespace(**vars(model_cfg))
    else:
        cfg = OmegaConf.create(OmegaConf.to_container(model_cfg, resolve=True))
    _record(cfg, init_embeddings=None)
    model = build_model(cfg, _Task(table.shape[0]))
    try:
        model.load_state_dict(state["model"], strict=True, model_cfg=cfg)
    except SmallcapError:
        raise
    except Exception as e:
        raise LowRankError(f"{flag} {path}: its weights do not fit its config ({str(e).splitlines()[0]})") from None
    model.eval()
    return state, model


def save_checkpoint(state: dict, model: nn.Module, options: dict, out: str, extra: dict) -> None:
    """Write ``model``'s weights with ``options`` set in the model config, as a fresh
    checkpoint (no optimizer state, 0 updates), to a temporary file renamed to ``out``."""
    _record(state["cfg"].model, **options)
    state["model"] = model.state_dict()
    checkpoints.fresh_training_state(state, low_rank=extra)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    checkpoints.save_checkpoint(state, out)


def factorise_checkpoint(path: str, out: str, layers: Optional[str], rank: Optional[int] = None,
                         energy: Optional[float] = None, embeddings: Optional[int] = None) -> dict:
    if energy is not None:
        check_energy(energy)
    if rank is not None and rank < 1:
        raise LowRankError(f"--rank {rank}: a rank is at least 1")
    if embeddings is not None and embeddings < 1:
        raise LowRankError(f"--embeddings {embeddings}: a rank is at least 1")
    if layers is None and not embeddings:
        raise LowRankError("say what to factorise: --layers REGEX with --rank R or --energy E, and/or --embeddings R")
    if layers is not None and (rank is None) == (energy is None):
        raise LowRankError("--layers: give one of --rank R and --energy E")
    if os.path.abspath(out) == os.path.abspath(path):
        raise LowRankError(f"--out {out}: would overwrite the input checkpoint")
    state, model = load_model(path, "CKPT")
    if recorded_ranks(model) or any(isinstance(m, LowRankEmbedding) for m in model.modules()):
        raise LowRankError(f"CKPT {path}: already factorised; merge it first (smallcap-lowrank --merge)")
    before = n_params(model)
    ranks = choose_ranks(model, layers, rank, energy) if layers is not None else {}
    shapes = {name: tuple(m.weight.shape) for name, m in linear_layers(model).items() if name in ranks}
    factorise_(model, ranks, embeddings, exact=True, flag="--rank")
    after = n_params(model)
    extra = {"factorised_from": os.path.abspath(path), "ranks": ranks, "embeddings": embeddings,
             "energy": energy, "params_before": before, "params_after": after}
    save_checkpoint(state, model, {"low_rank_ranks": format_ranks(ranks), "low_rank_embeddings": embeddings,
                                   "low_rank_layers": None, "low_rank_rank": None, "low_rank_energy": None},
                    out, extra)
    return {"ranks": ranks, "shapes": shapes, "before": before, "after": after, "embeddings": embeddings}


def merge_checkpoint(path: str, out: str) -> dict:
    if os.path.abspath(out) == os.path.abspath(path):
        raise LowRankError(f"--out {out}: would overwrite the input checkpoint")
    state, model = load_model(path, "--merge")
    ranks = recorded_ranks(model)
    if not ranks and not any(isinstance(m, LowRankEmbedding) for m in model.modules()):
        raise LowRankError(f"--merge {path}: no factorised layers to merge")
    before = n_params(model)
    merge_(model)
    after = n_params(model)
    save_checkpoint(state, model, {key: None for key in OPTIONS}, out,
                    {"merged_from": os.path.abspath(path), "ranks": ranks, "params_before": before,
                     "params_after": after})
    return {"ranks": ranks, "before": before, "after": after}


# ---------------------------------------------------------------------------- command line
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="low-rank (SVD) factorisation of a trained "
                                     "smallcap_transformer checkpoint, or merging the factors back")
    parser.add_argument("ckpt", nargs="?", metavar="CKPT", help="checkpoint to factorise")
    parser.add_argument("--out", required=True, help="checkpoint to write")
    parser.add_argument("--layers", metavar="REGEX", default=None,
                        help="Linear layers to factorise: a regular expression matching whole module "
                             "names, e.g. 'encoder.layers.*.fc1|decoder.layers.*.self_attn.out_proj'")
    parser.add_argument("--rank", type=int, default=None, help="rank of every chosen layer")
    parser.add_argument("--energy", type=float, default=None,
                        help="per layer, the smallest rank keeping this share (0, 1] of the squared "
                             "Frobenius norm")
    parser.add_argument("--embeddings", type=int, metavar="R", default=None,
                        help="also factorise the token embedding tables (and tied output) at rank R")
    parser.add_argument("--merge", metavar="CKPT2", default=None,
                        help="instead: multiply the factors of a factorised checkpoint back into plain layers")
    return parser


def cli_main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(sys.stderr)
    try:
        if (args.merge is None) == (args.ckpt is None):
            raise LowRankError("give a checkpoint to factorise, or --merge CKPT2 (not both)")
        if args.merge is not None:
            if any(v is not None for v in (args.layers, args.rank, args.energy, args.embeddings)):
                raise LowRankError("--merge takes no --layers/--rank/--energy/--embeddings")
            result = merge_checkpoint(args.merge, args.out)
            print(f"merged {len(result['ranks'])} factorised layers: {result['before']:,} -> "
                  f"{result['after']:,} parameters; wrote {args.out}")
            return 0
        result = factorise_checkpoint(args.ckpt, args.out, args.layers, args.rank, args.energy, args.embeddings)
    except SmallcapError as e:
        return error_exit_status(PROG, e)
    for name, rank in result["ranks"].items():
        rows, cols = result["shapes"][name]
        print(f"{name}: {rows}x{cols} -> rank {rank}")
    if result["embeddings"]:
        print(f"embeddings: rank {result['embeddings']}")
    print(f"wrote {args.out}: {result['after']:,} parameters (was {result['before']:,})")
    print("fine-tune it with fairseq-train DATA <the training flags> and:")
    print(f"--finetune-from-model {args.out} --low-rank-ranks {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())

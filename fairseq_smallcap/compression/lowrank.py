"""``smallcap-lowrank``: low-rank (SVD) factorisation of a trained model, and merging it back.

    smallcap-lowrank CKPT --out CKPT2 --layers 'encoder.layers.*.fc1|decoder.layers.*.fc[12]' --rank 16
    smallcap-lowrank CKPT --out CKPT2 --layers '.*' --energy 0.9 --embeddings 64
    fairseq-train DATA ... --finetune-from-model CKPT2 --low-rank-ranks CKPT2      # fine-tune it
    fairseq-generate DATA ... --path CKPT2                                          # decode it
    smallcap-lowrank --merge CKPT2 --out CKPT3     # plain Linear layers again (for export)

A Linear layer ``y = W x + b`` (``W``: out x in) becomes :class:`LowRankLinear`,
``y = U (V x) + b`` with ``V = sqrt(S_r) V_r^T`` (r x in, no bias) and ``U = U_r sqrt(S_r)``
(out x r): the truncated SVD, the best rank-r approximation of ``W`` in Frobenius norm. It holds
``r (in + out) + out`` parameters instead of ``in * out + out``, fewer when ``r < in*out/(in+out)``.
The rank is given (``--rank R``, at most ``min(in, out)``) or chosen per layer by an energy
threshold (``--energy E`` in (0, 1]: the smallest rank whose singular values hold at least ``E``
of the squared Frobenius norm of ``W``). ``--embeddings R`` factorises the token embedding
tables V x d into V x R . R x d (:class:`LowRankEmbedding`); the decoder's tied output
projection (``share_decoder_input_output_embed``) then uses the same two factors
(:class:`TiedLowRankOutput`: logits = (x B) A^T), so input and output stay tied.

The factorisation is part of the architecture (``smallcap_transformer`` model options), so
fairseq's own tools rebuild the right shapes before the weights load:

* ``--low-rank-ranks SPEC`` — the structure: ``NAME=R,NAME=R,...`` (module names as in
  ``model.named_modules()``, e.g. ``encoder.layers.0.fc1=16``), or the path of a factorised
  checkpoint, whose recorded ranks are used (what ``fairseq-train --finetune-from-model CKPT2``
  needs: fairseq builds the model from the command line, not from the checkpoint). This command
  writes the per-layer ranks into the checkpoint's config, so ``fairseq-generate --path CKPT2``
  needs no flag.
* ``--low-rank-layers REGEX`` with ``--low-rank-rank R`` — factorise every Linear layer whose full
  name matches REGEX (``re.fullmatch``: ``encoder.layers.*.fc1`` works as a regex) at rank R;
  used to train a factorised model from scratch (the factors start from a randomized truncated
  SVD of fairseq's initial weights). The ranks chosen are recorded in ``low_rank_ranks``.
  ``--low-rank-energy`` needs trained weights: it is accepted only by this command.
* ``--low-rank-embeddings R`` — factorise the token embedding tables (and the tied output).

``--merge`` multiplies the factors back (``W = U V``, computed in float64) into plain
``nn.Linear`` / ``nn.Embedding`` weights and clears the low-rank options: a standard-architecture
checkpoint (what CTranslate2's fairseq converter reads) whose outputs equal the factorised
model's up to float32 rounding.

Written checkpoints are fresh ones like ``smallcap-cut-layers``' (optimizer state and progress
dropped, ``extra_state["low_rank"]`` records the source, ranks and parameter counts), written to
a temporary file in the output's directory and renamed, so a failure leaves nothing half-written.

Bad input (a rank above ``min(in, out)`` of a matrix, an energy outside (0, 1], a pattern that
matches no Linear layer, a checkpoint of another model) ends with one line naming it and exit
status 2, here and inside ``fairseq-train``/``fairseq-generate``.

The command (checkpoint loading, factorising, merging and writing) is
:mod:`fairseq_smallcap.compression.lowrank_cli`; this module is what the models import.
"""
import logging
import math
import os
import re
from collections import OrderedDict
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import SmallcapError

logger = logging.getLogger("fairseq_smallcap.compression.lowrank")
OPTIONS = ("low_rank_layers", "low_rank_rank", "low_rank_energy", "low_rank_embeddings", "low_rank_ranks")
EMBEDDINGS = ("encoder.embed_tokens", "decoder.embed_tokens")


class LowRankError(SmallcapError):
    """A bad rank, energy, layer pattern or checkpoint for low-rank factorisation."""


# ---------------------------------------------------------------------------- the modules
class LowRankLinear(nn.Module):
    """``nn.Linear(in, out)`` as ``up(down(x))``: ``down = Linear(in, r, bias=False)``,
    ``up = Linear(r, out, bias)``; ``r (in + out) + out`` parameters with a bias.

    ``weight`` and ``bias`` read as those of the equivalent dense layer (computed, with their
    gradients flowing to the factors), for code that reads them instead of calling the module —
    fairseq's MultiheadAttention passes ``q_proj.weight`` ... to ``F.multi_head_attention_forward``
    in training and in the encoder."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=bias)

    @property
    def weight(self) -> torch.Tensor:
        return self.up.weight @ self.down.weight

    @property
    def bias(self) -> Optional[torch.Tensor]:
        return self.up.bias

    def forward(self, x):
        return self.up(self.down(x))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


class LowRankEmbedding(nn.Module):
    """``nn.Embedding(V, d)`` as ``up(down(tokens))``: ``down = Embedding(V, r, padding_idx)``,
    ``up = Linear(r, d, bias=False)``; the table is ``down.weight @ up.weight.T``."""

    def __init__(self, num_embeddings: int, embedding_dim: int, rank: int, padding_idx: Optional[int] = None):
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.rank = num_embeddings, embedding_dim, rank
        self.padding_idx = padding_idx
        self.down = nn.Embedding(num_embeddings, rank, padding_idx=padding_idx)
        self.up = nn.Linear(rank, embedding_dim, bias=False)

    @property
    def weight(self) -> torch.Tensor:
        return self.down.weight @ self.up.weight.t()

    def forward(self, tokens):
        return self.up(self.down(tokens))

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, rank={self.rank}, padding_idx={self.padding_idx}"


class TiedLowRankOutput(nn.Module):
    """The decoder's output projection tied to a :class:`LowRankEmbedding` ``A B^T``:
    logits ``= x (A B^T)^T = (x B) A^T``. Holds no parameters of its own (the embedding's are
    not registered here, so the state dict names them once, under ``embed_tokens``)."""

    def __init__(self, embedding: LowRankEmbedding):
        super().__init__()
        object.__setattr__(self, "embedding", embedding)  # a reference, not a submodule

    @property
    def weight(self) -> torch.Tensor:
        return self.embedding.weight

    def forward(self, x):
        return F.linear(F.linear(x, self.embedding.up.weight.t()), self.embedding.down.weight)


def linear_params(in_features: int, out_features: int, rank: Optional[int] = None, bias: bool = True) -> int:
    """Parameters of a Linear layer, dense or at ``rank``: ``r (in + out) + out`` with a bias."""
    weights = in_features * out_features if rank is None else rank * (in_features + out_features)
    return weights + (out_features if bias else 0)


# ---------------------------------------------------------------------------- SVD
def svd(weight: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Exact thin SVD in float64: ``weight = U diag(S) Vh``."""
    return torch.linalg.svd(weight.detach().double(), full_matrices=False)


def energy_rank(singular_values: torch.Tensor, energy: float) -> int:
    """The smallest rank whose singular values hold at least ``energy`` of the squared
    Frobenius norm (``sum s_i^2``); all of them when ``energy`` is 1."""
    s2 = singular_values.double() ** 2
    total = float(s2.sum())
    if total == 0.0:
        return 1
    held = torch.cumsum(s2, 0) / total
    return min(int((held < energy - 1e-12).sum()) + 1, len(s2))


def split(weight: torch.Tensor, rank: int, exact: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """Factors ``(U_r sqrt(S_r), sqrt(S_r) Vh_r)`` of ``weight`` (out x in) at ``rank``, in the
    weight's dtype: the truncated SVD (exact), or a randomized one (``exact=False``, for the
    initial weights of a model being built: cheap for large matrices)."""
    if exact:
        u, s, vh = svd(weight)
        u, s, vh = u[:, :rank], s[:rank], vh[:rank]
    else:
        u, s, v = torch.svd_lowrank(weight.detach().float(), q=rank, niter=2)
        vh = v.t()
    root = s.sqrt()
    return (u * root).to(weight.dtype), (root[:, None] * vh).to(weight.dtype)


def factorise_linear(linear: nn.Linear, rank: int, exact: bool = True) -> LowRankLinear:
    module = LowRankLinear(linear.in_features, linear.out_features, rank, bias=linear.bias is not None)
    module.to(device=linear.weight.device, dtype=linear.weight.dtype)
    up, down = split(linear.weight, rank, exact)
    with torch.no_grad():
        module.up.weight.copy_(up)
        module.down.weight.copy_(down)
        if linear.bias is not None:
            module.up.bias.copy_(linear.bias)
    return module


def factorise_embedding(embedding: nn.Embedding, rank: int, exact: bool = True) -> LowRankEmbedding:
    module = LowRankEmbedding(embedding.num_embeddings, embedding.embedding_dim, rank, embedding.padding_idx)
    module.to(device=embedding.weight.device, dtype=embedding.weight.dtype)
    a, b = split(embedding.weight, rank, exact)  # table V x d = a (V x r) @ b (r x d)
    with torch.no_grad():
        module.down.weight.copy_(a)
        module.up.weight.copy_(b.t())
        # the padding row is not zeroed: tied to the output projection, it is trained (the
        # logit of <pad>), and a full-rank factorisation must reproduce it
    return module


def merge_linear(module: LowRankLinear) -> nn.Linear:
    linear = nn.Linear(module.in_features, module.out_features, bias=module.up.bias is not None)
    linear.to(device=module.up.weight.device, dtype=module.up.weight.dtype)
    with torch.no_grad():
        linear.weight.copy_(module.up.weight.double() @ module.down.weight.double())
        if module.up.bias is not None:
            linear.bias.copy_(module.up.bias)
    return linear


def merge_embedding(module: LowRankEmbedding) -> nn.Embedding:
    embedding = nn.Embedding(module.num_embeddings, module.embedding_dim, padding_idx=module.padding_idx)
    embedding.to(device=module.up.weight.device, dtype=module.up.weight.dtype)
    with torch.no_grad():
        embedding.weight.copy_(module.down.weight.double() @ module.up.weight.double().t())
    return embedding


# ---------------------------------------------------------------------------- on a model
def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, module)


def linear_layers(model: nn.Module) -> "OrderedDict[str, nn.Linear]":
    """The dense Linear layers a pattern can choose from (the tied output projection is
    the embedding's business: ``--embeddings``)."""
    tied = _tied_output(model)
    return OrderedDict((name, module) for name, module in model.named_modules()
                       if type(module) is nn.Linear and not (tied and name == "decoder.output_projection"))


def _tied_output(model: nn.Module) -> bool:
    decoder = getattr(model, "decoder", None)
    out = getattr(decoder, "output_projection", None)
    emb = getattr(decoder, "embed_tokens", None)
    if isinstance(out, TiedLowRankOutput):
        return True
    return (isinstance(out, nn.Linear) and isinstance(emb, nn.Embedding) and out.weight is emb.weight)


def match_layers(model: nn.Module, pattern: str, flag: str = "--layers") -> List[str]:
    try:
        regex = re.compile(pattern)
    except re.error as e:
        raise LowRankError(f"{flag} {pattern!r}: not a regular expression ({e})") from None
    layers = linear_layers(model)
    chosen = [name for name in layers if regex.fullmatch(name)]
    if not chosen:
        names = list(layers)
        shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
        raise LowRankError(f"{flag} {pattern!r} matches no Linear layer of the model (the whole name "
                           f"must match; its Linear layers: {shown})")
    return chosen


def check_rank(name: str, shape: Tuple[int, int], rank: int, flag: str) -> None:
    if rank < 1 or rank > min(shape):
        raise LowRankError(f"{flag} {rank}: {name} is a {shape[0]}x{shape[1]} matrix, whose rank is at most "
                           f"{min(shape)}; give a rank from 1 to {min(shape)}")


def check_energy(energy: float, flag: str = "--energy") -> None:
    if not (0.0 < energy <= 1.0) or math.isnan(energy):
        raise LowRankError(f"{flag} {energy}: the energy kept must be in (0, 1]")


def choose_ranks(model: nn.Module, pattern: str, rank: Optional[int] = None, energy: Optional[float] = None,
                 flags: Tuple[str, str, str] = ("--layers", "--rank", "--energy")) -> Dict[str, int]:
    """The rank of each Linear layer matching ``pattern``: ``rank``, or by ``energy``."""
    layers = linear_layers(model)
    chosen = match_layers(model, pattern, flags[0])
    if (rank is None) == (energy is None):
        raise LowRankError(f"give one of {flags[1]} R and {flags[2]} E")
    ranks = {}
    if energy is not None:
        check_energy(energy, flags[2])
    for name in chosen:
        weight = layers[name].weight
        if rank is not None:
            check_rank(name, tuple(weight.shape), rank, flags[1])
            ranks[name] = rank
        else:
            ranks[name] = energy_rank(torch.linalg.svdvals(weight.detach().double()), energy)
    return ranks


def factorise_(model: nn.Module, ranks: Dict[str, int], embeddings: Optional[int] = None,
               exact: bool = True, flag: str = "--low-rank-ranks") -> nn.Module:
    """Replace, in place, each Linear layer ``name`` of ``ranks`` by a :class:`LowRankLinear` of
    that rank and, with ``embeddings``, the token embedding tables by :class:`LowRankEmbedding`
    (and a tied output projection by :class:`TiedLowRankOutput`)."""
    layers = linear_layers(model)
    for name, rank in ranks.items():
        if name not in layers:
            raise LowRankError(f"{flag}: the model has no Linear layer {name!r} to factorise")
        check_rank(name, tuple(layers[name].weight.shape), rank, f"{flag} {name}=")
    for name, rank in ranks.items():
        set_module(model, name, factorise_linear(layers[name], rank, exact))
    if embeddings:
        tied = _tied_output(model)
        done = {}
        for name in EMBEDDINGS:
            table = model.get_submodule(name)
            if id(table) not in done:  # share_all_embeddings: one table, factorised once
                if not isinstance(table, nn.Embedding):
                    raise LowRankError(f"--embeddings: {name} is a {type(table).__name__}, not an embedding table")
                check_rank(name, tuple(table.weight.shape), embeddings, "--embeddings")
                done[id(table)] = factorise_embedding(table, embeddings, exact)
            set_module(model, name, done[id(table)])
        if tied:
            model.decoder.output_projection = TiedLowRankOutput(model.decoder.embed_tokens)
    return model


def merge_(model: nn.Module) -> nn.Module:
    """Multiply every factorised layer back into a plain ``nn.Linear`` / ``nn.Embedding``
    (in place); the tied output projection is tied to the merged decoder table again."""
    merged = {}
    for name, module in list(model.named_modules(remove_duplicate=False)):
        if isinstance(module, LowRankLinear):
            set_module(model, name, merge_linear(module))
        elif isinstance(module, LowRankEmbedding):
            if id(module) not in merged:
                merged[id(module)] = merge_embedding(module)
            set_module(model, name, merged[id(module)])
    out = getattr(getattr(model, "decoder", None), "output_projection", None)
    if isinstance(out, TiedLowRankOutput):
        table = model.decoder.embed_tokens
        projection = nn.Linear(table.embedding_dim, table.num_embeddings, bias=False)
        projection.weight = table.weight
        model.decoder.output_projection = projection
    return model


def recorded_ranks(model: nn.Module) -> Dict[str, int]:
    return {name: m.rank for name, m in model.named_modules() if isinstance(m, LowRankLinear)}


def format_ranks(ranks: Dict[str, int]) -> Optional[str]:
    return ",".join(f"{name}={rank}" for name, rank in ranks.items()) or None


def parse_ranks(spec: str, flag: str = "--low-rank-ranks") -> Dict[str, int]:
    ranks = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, eq, value = item.partition("=")
        try:
            if not eq:
                raise ValueError
            ranks[name.strip()] = int(value)
        except ValueError:
            raise LowRankError(f"{flag} {spec!r}: expected NAME=RANK,NAME=RANK,... (e.g. "
                               "encoder.layers.0.fc1=16) or a factorised checkpoint") from None
    return ranks


def n_params(model: nn.Module) -> int:
    """Parameters of a model, tied ones counted once."""
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------- model options
def add_low_rank_args(parser) -> None:
    """The ``smallcap_transformer`` model options (see the module docstring)."""
    group = parser.add_argument_group("low-rank factorisation (fairseq_smallcap.compression.lowrank)")
    group.add_argument("--low-rank-ranks", metavar="SPEC|CKPT", default=None,
                       help="factorised Linear layers and their ranks, NAME=R,NAME=R,... (module "
                            "names such as encoder.layers.0.fc1), or a factorised checkpoint whose "
                            "recorded ranks to use (to fine-tune it with --finetune-from-model)")
    group.add_argument("--low-rank-layers", metavar="REGEX", default=None,
                       help="factorise the Linear layers whose whole name matches REGEX (e.g. "
                            "'encoder.layers.*.fc1|decoder.layers.*.self_attn.out_proj'), at "
                            "--low-rank-rank")
    group.add_argument("--low-rank-rank", type=int, metavar="R", default=None,
                       help="rank of the layers of --low-rank-layers")
    group.add_argument("--low-rank-energy", type=float, metavar="E", default=None,
                       help="(smallcap-lowrank only: needs trained weights) the smallest rank "
                            "keeping E of each matrix's squared Frobenius norm")
    group.add_argument("--low-rank-embeddings", type=int, metavar="R", default=None,
                       help="factorise the token embedding tables (and the tied output "
                            "projection) V x d into V x R . R x d")


def _ranks_of_checkpoint(path: str) -> Tuple[Dict[str, int], Optional[int]]:
    from fairseq import checkpoint_utils

    state = checkpoint_utils.load_checkpoint_to_cpu(path)
    cfg = state["cfg"].get("model") if state.get("cfg") is not None else None
    spec = getattr(cfg, "low_rank_ranks", None) if cfg is not None else None
    embeddings = getattr(cfg, "low_rank_embeddings", None) if cfg is not None else None
    if not spec and not embeddings:
        raise LowRankError(f"--low-rank-ranks {path}: this checkpoint records no low-rank layers "
                           "(factorise it with smallcap-lowrank)")
    if spec and os.path.isfile(spec):
        raise LowRankError(f"--low-rank-ranks {path}: its config names another checkpoint, not ranks")
    return (parse_ranks(spec) if spec else {}), embeddings


def apply_low_rank_args(model: nn.Module, args) -> nn.Module:
    """``build_model``'s hook: factorise ``model`` as its options say (nothing without them),
    and record the per-layer ranks in ``args.low_rank_ranks`` (saved in the checkpoint config)."""
    spec = getattr(args, "low_rank_ranks", None)
    pattern = getattr(args, "low_rank_layers", None)
    rank = getattr(args, "low_rank_rank", None)
    energy = getattr(args, "low_rank_energy", None)
    embeddings = getattr(args, "low_rank_embeddings", None)
    if not (spec or pattern or rank is not None or energy is not None or embeddings):
        return model
    if spec:
        if os.path.isfile(spec):
            ranks, recorded_embeddings = _ranks_of_checkpoint(spec)
            embeddings = embeddings if embeddings is not None else recorded_embeddings
        else:
            ranks = parse_ranks(spec)
    elif pattern:
        if energy is not None and rank is None:
            check_energy(energy, "--low-rank-energy")
            raise LowRankError("--low-rank-energy chooses ranks from trained weights: factorise a trained "
                               "checkpoint with smallcap-lowrank --energy, or give --low-rank-rank R")
        if rank is None:
            raise LowRankError(f"--low-rank-layers {pattern!r}: give --low-rank-rank R (or --low-rank-ranks)")
        ranks = choose_ranks(model, pattern, rank=rank, flags=("--low-rank-layers", "--low-rank-rank", "--low-rank-energy"))
    elif rank is not None or energy is not None:
        raise LowRankError("--low-rank-rank/--low-rank-energy need --low-rank-layers REGEX (the layers to factorise)")
    else:
        ranks = {}
    factorise_(model, ranks, embeddings, exact=False, flag="--low-rank-ranks")
    _record(args, low_rank_ranks=format_ranks(ranks), low_rank_embeddings=embeddings)
    return model


def _record(args, **values) -> None:
    """Set options on the model config (a Namespace, or a DictConfig maybe in struct mode)."""
    from omegaconf import DictConfig, open_dict

    if isinstance(args, DictConfig):
        with open_dict(args):
            for key, value in values.items():
                args[key] = value
    else:
        for key, value in values.items():
            setattr(args, key, value)

"""Magnitude pruning inside ``fairseq-train``, with learning-rate rewinding between rounds.

Unstructured magnitude pruning (Han et al. 2015; See et al. 2016; Gale et al. 2019) of the
weight matrices of ``smallcap_transformer`` (every Linear of the encoder and decoder layers:
attention q/k/v/out projections, FFN fc1/fc2) and ``smallcap_bigru`` (GRU and GRU-cell matrices,
attention and projection Linears). Embedding tables and the (tied) output projection are not
pruned. Masks are torch's own (:mod:`torch.nn.utils.prune`): each pruned weight becomes a
``weight_orig`` parameter, a ``weight_mask`` buffer and a forward pre-hook computing
``weight = weight_orig * weight_mask``.

Model options (both models)::

    --prune-sparsity S          target fraction of zeros in [0, 1) (0: no pruning)
    --prune-scope global|layer  one magnitude threshold over all pruned matrices, or the same
                                sparsity in every matrix
    --prune-start-update T0     first update of the schedule (default 0)
    --prune-end-update T1       last update of the schedule (default T0: one-shot pruning at T0)
    --prune-frequency DT        prune every DT updates between T0 and T1 (default 100)

The gradual schedule is Zhu & Gupta's (2017): at update ``t = T0 + k DT`` the sparsity becomes
``S (1 - (1 - (t - T0) / (T1 - T0))^3)``, and ``S`` from ``T1`` on. fairseq's tasks call
``model.set_num_updates(t)`` at the start of every ``train_step`` (``FairseqTask.train_step`` and
our ``unsupervised_translation``), with ``t`` the updates done; the model then prunes, if the
schedule asks for more zeros than the masks hold, the weights of smallest magnitude among those
not yet pruned (masks only grow).

How it survives checkpoints:

* ``build_model`` reparametrises the weights (``prune.identity``: masks of ones) whenever
  ``--prune-sparsity > 0``, so the model's state dict always has ``weight_orig``/``weight_mask``
  and a checkpoint saved by the trainer holds the masks;
* on resume (``checkpoint_last.pt``, ``--restore-file``) the model is built reparametrised and
  ``load_state_dict`` copies the saved masks into it, so training goes on with exactly the masks
  it had, and the effective weights stay zero where they are pruned (their gradient is zero,
  whatever the optimizer does to ``weight_orig``);
* ``load_state_dict`` also adapts the other cases: a dense checkpoint loaded into a pruned model
  (``--finetune-from-model DENSE --prune-sparsity S``: masks of ones, then the schedule prunes),
  and a masked checkpoint loaded into a dense model (weights multiplied by their masks).

Rounds with learning-rate rewinding (Renda, Frankle & Carbin 2020): ``smallcap-prune-rounds``
runs ``fairseq-train --finetune-from-model PREV --prune-sparsity s_i`` for each sparsity: the
model starts from the previous round's weights and masks, is pruned to ``s_i`` at update 0 (or
on the schedule given), and retrains with a fresh optimizer and the learning-rate schedule from
its start (``--finetune-from-model`` resets optimizer, scheduler and update count) -- that is LR
rewinding. A round that finished (``round.json`` written) is skipped when the command is run
again; an interrupted round resumes from its ``checkpoint_last.pt``::

    smallcap-prune-rounds --sparsities 0.5,0.7,0.8 --init dense.pt --save-dir prune/ --finalize \\
        -- DATA <the usual fairseq-train flags>

``smallcap-prune-finalize CKPT --out CKPT2`` makes pruning permanent (what ``prune.remove`` does:
``weight = weight_orig * weight_mask``), sets ``prune_sparsity`` to 0 and records the sparsity
reached as ``prune_finalized`` in the checkpoint's model config: the result is a plain checkpoint
that ``fairseq-generate`` (or a later ``--finetune-from-model``) loads like any other.

The two commands' argument parsing and entry points are in
:mod:`fairseq_smallcap.compression.prune_cli`; this module is what the models import.
"""
import json
import logging
import math
import os
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from torch.nn.utils import prune

from .. import checkpoints
from ..errors import SmallcapError

logger = logging.getLogger("fairseq_smallcap.compression.pruning")
SCOPES = ("global", "layer")
OUR_MODELS = ("smallcap_transformer", "smallcap_bigru")
OUR_TASKS = ("unsupervised_translation", "translation")


class PruningError(SmallcapError):
    """Bad pruning options, or a checkpoint that cannot be pruned or finalized."""


# ---------------------------------------------------------------------------------- model hooks
def add_pruning_args(parser, attention_heads: bool = False) -> None:
    """The model options (called from the models' ``add_args``)."""
    group = parser.add_argument_group("pruning (fairseq_smallcap.compression.pruning)")
    group.add_argument("--prune-sparsity", type=float, metavar="S", default=0.0,
                       help="magnitude pruning: target fraction of zero weights in [0, 1) (0: off)")
    group.add_argument("--prune-scope", choices=SCOPES, default="global",
                       help="global: one magnitude threshold over all pruned matrices; layer: the "
                            "same sparsity in every matrix")
    group.add_argument("--prune-start-update", type=int, metavar="T0", default=0,
                       help="first update of the pruning schedule")
    group.add_argument("--prune-end-update", type=int, metavar="T1", default=None,
                       help="update where the target sparsity is reached (Zhu & Gupta 2017 cubic "
                            "schedule from T0); default T0: one-shot pruning")
    group.add_argument("--prune-frequency", type=int, metavar="DT", default=100,
                       help="prune every DT updates between T0 and T1")
    group.add_argument("--prune-finalized", type=float, metavar="S", default=None,
                       help="set by smallcap-prune-finalize: the sparsity made permanent (information)")
    if attention_heads:
        group.add_argument("--encoder-heads-kept", type=int, metavar="N", default=None,
                           help="set by smallcap-prune-structured: attention heads left in each "
                                "encoder layer (head size stays embed_dim / encoder_attention_heads)")
        group.add_argument("--decoder-heads-kept", type=int, metavar="N", default=None,
                           help="set by smallcap-prune-structured: attention heads left in each "
                                "decoder self- and cross-attention")


@dataclass
class PruningSchedule:
    sparsity: float
    scope: str = "global"
    start: int = 0
    end: int = 0
    frequency: int = 100

    def target(self, num_updates: int) -> float:
        """The sparsity the schedule asks for after ``num_updates`` updates."""
        if self.sparsity <= 0 or num_updates < self.start:
            return 0.0
        if num_updates >= self.end:
            return self.sparsity
        done = (num_updates - self.start) // self.frequency * self.frequency
        return self.sparsity * (1.0 - (1.0 - done / (self.end - self.start)) ** 3)


def check_sparsity(value, what: str = "--prune-sparsity") -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise PruningError(f"{what} {value!r}: expected a number in [0, 1)") from None
    if not (0.0 <= value < 1.0) or math.isnan(value):
        raise PruningError(f"{what} {value}: the sparsity must be in [0, 1) (the fraction of weights "
                           "set to zero; 1 would remove every weight)")
    return value


def schedule_from_args(args) -> Optional[PruningSchedule]:
    """The schedule of the model options, or None without pruning; bad options raise PruningError."""
    sparsity = check_sparsity(getattr(args, "prune_sparsity", 0.0) or 0.0)
    if sparsity == 0:
        return None
    scope = getattr(args, "prune_scope", "global") or "global"
    if scope not in SCOPES:
        raise PruningError(f"--prune-scope {scope}: expected one of {', '.join(SCOPES)}")
    start = int(getattr(args, "prune_start_update", 0) or 0)
    end = getattr(args, "prune_end_update", None)
    end = start if end is None else int(end)
    frequency = int(getattr(args, "prune_frequency", 100) or 0)
    if start < 0:
        raise PruningError(f"--prune-start-update {start}: must be >= 0")
    if end < start:
        raise PruningError(f"--prune-end-update {end}: must not come before --prune-start-update {start}")
    if frequency < 1:
        raise PruningError(f"--prune-frequency {frequency}: must be >= 1")
    return PruningSchedule(sparsity, scope, start, end, frequency)


Target = Tuple[str, nn.Module, str]  # (module name, module, parameter name)


def prunable_weights(model: nn.Module) -> List[Target]:
    """The weight matrices magnitude pruning acts on: every Linear, GRU/LSTM and RNN cell weight,
    except embedding tables and the output projection (tied to the embeddings, or vocabulary
    sized)."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    targets: List[Target] = []
    for name, module in model.named_modules():
        if name.split(".")[-1] == "output_projection":
            continue
        if isinstance(module, nn.Linear):
            names = ["weight"]
        elif isinstance(module, (nn.RNNBase, nn.RNNCellBase)):
            names = [n for n, _ in module.named_parameters(recurse=False) if n.startswith("weight")]
        else:
            continue
        for pname in names:
            param = getattr(module, pname + "_orig", None)
            if param is None:
                param = getattr(module, pname)
            if id(param) not in embeddings and param.dim() == 2:
                targets.append((name, module, pname))
    return targets


@dataclass
class PruningState:
    """What a pruned model carries (``model._smallcap_pruning``)."""
    schedule: PruningSchedule
    targets: List[Target]
    applied: Optional[float] = None  # schedule value the masks were last brought to (None: unknown)
    warned: set = field(default_factory=set)


def refresh_pruned_children(module: nn.Module, inputs) -> None:
    """Forward pre-hook of fairseq's MultiheadAttention: its fast path hands ``q_proj.weight``
    (etc.) to ``F.multi_head_attention_forward`` without calling those Linears, so their own
    pruning hooks would not run and a stale (or graph-freed) weight would be used."""
    for child in module.children():
        for hook in child._forward_pre_hooks.values():
            if isinstance(hook, prune.BasePruningMethod):
                hook(child, None)


def prepare_model(model: nn.Module, args) -> nn.Module:
    """Called by the models' ``build_model``: the structured-pruning shapes (``--*-heads-kept``),
    then the magnitude-pruning reparametrisation when ``--prune-sparsity > 0``."""
    from . import structured

    structured.apply_kept_heads(model, args)
    schedule = schedule_from_args(args)
    if schedule is None:
        return model
    targets = prunable_weights(model)
    for _, module, pname in targets:
        if not hasattr(module, pname + "_mask"):
            prune.identity(module, pname)
    from fairseq.modules import MultiheadAttention

    for module in model.modules():
        if isinstance(module, MultiheadAttention):
            module.register_forward_pre_hook(refresh_pruned_children)
    model._smallcap_pruning = PruningState(schedule, targets)
    logger.info(f"magnitude pruning of {len(targets)} weight matrices "
                f"({sum(getattr(m, p + '_orig').numel() for _, m, p in targets):,} weights) to sparsity "
                f"{schedule.sparsity} ({schedule.scope}), updates {schedule.start}-{schedule.end} "
                f"every {schedule.frequency}")
    return model


def mask_zeros(targets: List[Target]) -> List[int]:
    return [int((getattr(m, p + "_mask") == 0).sum()) for _, m, p in targets]


def prune_to(model: nn.Module, sparsity: float, scope: Optional[str] = None) -> float:
    """Bring the masks of ``model`` to ``sparsity`` by magnitude (masks only grow); returns the
    sparsity reached over the pruned matrices."""
    state: PruningState = model._smallcap_pruning
    scope = scope or state.schedule.scope
    targets = state.targets
    sizes = [getattr(m, p + "_orig").numel() for _, m, p in targets]
    zeros = mask_zeros(targets)
    scores = {(m, p): getattr(m, p + "_orig").detach().abs() for _, m, p in targets}
    with torch.no_grad():
        if scope == "global":
            extra = int(round(sparsity * sum(sizes))) - sum(zeros)
            if extra > 0:
                prune.global_unstructured([(m, p) for _, m, p in targets], pruning_method=prune.L1Unstructured,
                                          importance_scores=scores, amount=extra)
        else:
            for (_, m, p), size, zero in zip(targets, sizes, zeros):
                extra = int(round(sparsity * size)) - zero
                if extra > 0:
                    prune.l1_unstructured(m, p, amount=extra, importance_scores=scores[(m, p)])
    reached = sum(mask_zeros(targets)) / max(1, sum(sizes))
    if reached > sparsity + 1.0 / max(1, sum(sizes)) and "above" not in state.warned:
        state.warned.add("above")
        logger.warning(f"the masks already hold sparsity {reached:.4f}, above the target {sparsity:.4f}: "
                       "pruned weights are never restored")
    return reached


def on_update(model: nn.Module, num_updates: int) -> None:
    """Called by the models' ``set_num_updates``: prune as the schedule asks."""
    state: Optional[PruningState] = getattr(model, "_smallcap_pruning", None)
    if state is None:
        return
    target = state.schedule.target(num_updates)
    if state.applied is not None and target <= state.applied:
        return
    before = sum(mask_zeros(state.targets))
    reached = prune_to(model, target)
    state.applied = target
    if sum(mask_zeros(state.targets)) != before:
        logger.info(f"pruning at update {num_updates}: sparsity {reached:.4f} "
                    f"(schedule {target:.4f}, {state.schedule.scope})")


def adapt_state_dict(model: nn.Module, state_dict) -> None:
    """Called by the models' ``load_state_dict`` before loading (in place): a dense checkpoint
    gets masks of ones where the model is pruned, a masked one is multiplied out where the model
    is not; the schedule is re-checked against the loaded masks at the next update."""
    state: Optional[PruningState] = getattr(model, "_smallcap_pruning", None)
    pruned = set()
    if state is not None:
        state.applied = None
        for name, _, pname in state.targets:
            key = f"{name}.{pname}" if name else pname
            pruned.add(key)
            if key + "_orig" not in state_dict and key in state_dict:
                state_dict[key + "_orig"] = state_dict.pop(key)
                state_dict[key + "_mask"] = torch.ones_like(state_dict[key + "_orig"])
    for key in [k for k in state_dict if k.endswith("_orig")]:
        base = key[: -len("_orig")]
        if base not in pruned and base + "_mask" in state_dict:
            state_dict[base] = state_dict.pop(key) * state_dict.pop(base + "_mask")


def make_permanent(model: nn.Module) -> float:
    """``prune.remove`` on every pruned weight of ``model`` (plain ``weight`` tensors holding the
    zeros); returns the sparsity of those matrices."""
    state: Optional[PruningState] = getattr(model, "_smallcap_pruning", None)
    if state is None:
        return 0.0
    zeros, total = sum(mask_zeros(state.targets)), sum(getattr(m, p + "_orig").numel() for _, m, p in state.targets)
    for _, module, pname in state.targets:
        prune.remove(module, pname)
    del model._smallcap_pruning
    return zeros / max(1, total)


# ----------------------------------------------------------------------------- checkpoint tools
def masked_keys(model_state) -> List[str]:
    """Names of the pruned weights of a state dict (those with ``_orig`` and ``_mask``)."""
    return [k[: -len("_orig")] for k in model_state
            if k.endswith("_orig") and k[: -len("_orig")] + "_mask" in model_state]


def sparsity_of(model_state) -> Dict[str, float]:
    """Fraction of zeros of each pruned weight (from its mask) and over all of them (``"all"``)."""
    out, zeros, total = {}, 0, 0
    for base in masked_keys(model_state):
        mask = model_state[base + "_mask"]
        z = int((mask == 0).sum())
        out[base] = z / mask.numel()
        zeros, total = zeros + z, total + mask.numel()
    out["all"] = zeros / total if total else 0.0
    return out


def finalize_state_dict(model_state) -> float:
    """In place: ``weight = weight_orig * weight_mask`` for every pruned weight (``prune.remove``);
    returns the sparsity of those weights."""
    bases = masked_keys(model_state)
    zeros = total = 0
    for base in bases:
        mask = model_state.pop(base + "_mask")
        model_state[base] = model_state.pop(base + "_orig") * mask
        zeros, total = zeros + int((mask == 0).sum()), total + mask.numel()
    return zeros / total if total else 0.0


def model_name(model_cfg) -> Tuple[str, str]:
    from fairseq.models import ARCH_MODEL_NAME_REGISTRY

    arch = getattr(model_cfg, "arch", None) or getattr(model_cfg, "_name", None) or "?"
    return arch, ARCH_MODEL_NAME_REGISTRY.get(arch, arch)


def load_our_checkpoint(path: str, flag: str):
    """A fairseq checkpoint of one of our models (one clear error otherwise)."""
    from fairseq import checkpoint_utils

    import fairseq_smallcap  # noqa: F401  (architectures, checkpoint loading)

    if not os.path.isfile(path):
        raise PruningError(f"{flag} {path}: no such checkpoint")
    try:
        state = checkpoint_utils.load_checkpoint_to_cpu(path)
    except SmallcapError:
        raise
    except Exception as e:  # not a torch file at all
        raise PruningError(f"{flag} {path}: not a fairseq checkpoint ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(state, dict) or state.get("cfg") is None or "model" not in state:
        raise PruningError(f"{flag} {path}: not a fairseq checkpoint with a config and weights")
    task = getattr(state["cfg"].task, "_name", None) if state["cfg"].get("task") is not None else None
    if task not in OUR_TASKS:
        raise PruningError(f"{flag} {path}: a checkpoint of task {task}; pruning works on checkpoints of "
                           f"{' and '.join(OUR_TASKS)}")
    arch, model = model_name(state["cfg"].model)
    if model not in OUR_MODELS:
        raise PruningError(f"{flag} {path}: a checkpoint of architecture {arch} (model {model}); pruning "
                           f"works on {' and '.join(OUR_MODELS)} checkpoints")
    return state


def save_checkpoint(state, out: str) -> None:
    """Write ``state`` to ``out`` through a temporary name, with its config as a plain container."""
    directory = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(directory):
        raise PruningError(f"--out {out}: directory {directory} not found")
    checkpoints.save_checkpoint(state, out)


def set_model_options(state, **values) -> None:
    from omegaconf import OmegaConf, open_dict

    model_cfg = state["cfg"].model
    if OmegaConf.is_config(model_cfg):
        with open_dict(model_cfg):
            for key, value in values.items():
                model_cfg[key] = value
    else:
        for key, value in values.items():
            setattr(model_cfg, key, value)


def finalize(path: str, out: str) -> dict:
    """``smallcap-prune-finalize``: a plain checkpoint with the pruned weights made permanent."""
    if os.path.abspath(out) == os.path.abspath(path):
        raise PruningError(f"--out {out}: would overwrite the input checkpoint")
    state = load_our_checkpoint(path, "CKPT")
    if not masked_keys(state["model"]):
        raise PruningError(f"CKPT {path}: has no pruning masks (weight_orig/weight_mask); train it with "
                           "--prune-sparsity first (or it was finalized already)")
    per_tensor = sparsity_of(state["model"])
    sparsity = finalize_state_dict(state["model"])
    set_model_options(state, prune_sparsity=0.0, prune_finalized=round(sparsity, 6))
    state.pop("last_optimizer_state", None)  # its parameters were weight_orig; a plain model now
    extra = state.get("extra_state") or {}
    extra["pruning"] = {"finalized_from": os.path.abspath(path), "sparsity": sparsity,
                        "tensors": {k: v for k, v in per_tensor.items() if k != "all"}}
    state["extra_state"] = extra
    save_checkpoint(state, out)
    return {"sparsity": sparsity, "tensors": len(per_tensor) - 1}


# ------------------------------------------------------------------------------ rounds driver
RESERVED = ("--save-dir", "--prune-sparsity", "--finetune-from-model", "--restore-file",
            "--reset-optimizer", "--reset-lr-scheduler", "--reset-meters", "--reset-dataloader")


def parse_sparsities(value: str) -> List[float]:
    try:
        values = [float(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise PruningError(f"--sparsities {value!r}: expected comma-separated numbers such as 0.5,0.7,0.8") from None
    if not values:
        raise PruningError("--sparsities: give at least one sparsity")
    for v in values:
        check_sparsity(v, f"--sparsities {value}: sparsity")
    if any(b < a for a, b in zip(values, values[1:])):
        raise PruningError(f"--sparsities {value}: give the sparsities in increasing order (masks only grow)")
    return values


def rounds(args, train_flags: List[str]) -> List[dict]:
    sparsities = parse_sparsities(args.sparsities)
    for flag in train_flags:
        if flag.split("=")[0] in RESERVED:
            raise PruningError(f"{flag}: set by smallcap-prune-rounds itself; leave it out of the fairseq-train flags")
    if not train_flags:
        raise PruningError("give the fairseq-train flags after --: DATA --user-dir ... --arch ...")
    if args.init is not None:
        load_our_checkpoint(args.init, "--init")
    os.makedirs(args.save_dir, exist_ok=True)
    prev, done = args.init, []
    for i, sparsity in enumerate(sparsities, 1):
        round_dir = os.path.join(args.save_dir, f"round{i}")
        record = os.path.join(round_dir, "round.json")
        if os.path.isfile(record):
            with open(record, encoding="utf-8") as f:
                info = json.load(f)
            if abs(info.get("target", -1) - sparsity) > 1e-9:
                raise PruningError(f"{round_dir}: finished with sparsity {info.get('target')}, not {sparsity}; "
                                   "use another --save-dir for other sparsities")
            logger.info(f"round {i}: done already (sparsity {info['sparsity']:.4f}), skipped")
        else:
            cmd = [sys.executable, "-m", "fairseq_cli.train", *train_flags, "--save-dir", round_dir,
                   "--prune-sparsity", str(sparsity)]
            if prev is not None:
                cmd += ["--finetune-from-model", prev]
            logger.info(f"round {i}: sparsity {sparsity}" + (f", from {prev}" if prev else ", from scratch")
                        + " (learning rate rewound to the start of its schedule)")
            import subprocess

            rc = subprocess.call(cmd)
            if rc != 0:
                raise RoundFailed(rc, f"round {i}: fairseq-train exited with status {rc} (run the command "
                                      "again to resume it)")
            last = os.path.join(round_dir, f"checkpoint_{args.round_checkpoint}.pt")
            from fairseq import checkpoint_utils

            masks = checkpoint_utils.load_checkpoint_to_cpu(last)["model"]
            info = {"round": i, "target": sparsity, "sparsity": sparsity_of(masks)["all"], "from": prev,
                    "checkpoint": os.path.abspath(last)}
            with open(record + ".partial", "w", encoding="utf-8") as f:
                json.dump(info, f, indent=1)
            os.replace(record + ".partial", record)
            logger.info(f"round {i}: sparsity {info['sparsity']:.4f} reached, {last}")
        done.append(info)
        prev = info["checkpoint"]
    if args.finalize:
        out = os.path.join(args.save_dir, "checkpoint_pruned.pt")
        finalize(prev, out)
        done[-1]["finalized"] = out
    return done


class RoundFailed(PruningError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status

"""``smallcap-prune-structured``: remove whole attention heads and FFN neurons of a Transformer.

    smallcap-prune-structured CKPT --data DIR --prune-heads 1 --ffn-keep 0.5 --out small.pt

Unlike magnitude pruning, the matrices really shrink: the q/k/v projections lose the rows of the
removed heads and the output projection their columns, fc1 loses the rows (and bias entries) of
the removed FFN neurons and fc2 their columns. The result is a smaller checkpoint that
``fairseq-generate`` loads, and whose outputs equal those of the same model with those heads
and neurons masked (zeroed) instead of removed (``--masked-out`` writes that masked model).

Importance (``--importance gradient``, the default): Michel, Levy & Neubig 2019 ("Are Sixteen
Heads Really Better than One?"): a gate ``xi_h = 1`` multiplies each head's output before the
output projection, and ``I_h = E |dL/d xi_h|`` over the batches of ``--subset`` of ``--data``
(the checkpoint's criterion, model in eval mode); FFN neurons get the same gradient-of-a-gate
score (first-order Taylor importance). ``--importance weight`` ranks heads by the L2 norm of
their q/k/v rows and output-projection columns and neurons by the L2 norm of their fc1 row and
fc2 column (no data read, but ``--data`` still provides the dictionary).

fairseq's Transformer has one head count per side (``--encoder-attention-heads``,
``--decoder-attention-heads``, the decoder's self- and cross-attention alike) and one FFN width
per side, so every layer of a side keeps the same number: ``--prune-heads N`` removes the N least
important heads of every attention module (``--encoder-prune-heads`` / ``--decoder-prune-heads``
per side), ``--ffn-keep F`` keeps the fraction F of the most important neurons of every FFN.
The heads kept keep their size (``embed_dim / attention_heads``), which fairseq's options cannot
express (the head size follows from the embedding size and head count); the checkpoint records
the number kept as ``encoder_heads_kept`` / ``decoder_heads_kept`` (model options of
``smallcap_transformer``, applied at build time with fairseq's own
``MultiheadAttention._adaptive_prune_heads``), and the FFN width in ``encoder_ffn_embed_dim`` /
``decoder_ffn_embed_dim``. A head-pruned attention runs fairseq's own (non-fused) attention path.

The command's argument parsing and entry point are in
:mod:`fairseq_smallcap.compression.structured_cli`; this module is what the models import.
"""
import logging
import os
from typing import Dict, List

import torch
import torch.nn as nn

from ..errors import SmallcapError
from .pruning import (PruningError, load_our_checkpoint, make_permanent, save_checkpoint, set_model_options)

logger = logging.getLogger("fairseq_smallcap.compression.structured")
SIDES = ("encoder", "decoder")


# ----------------------------------------------------------------------------- shapes
def attention_modules(model, side: str):
    """(name, MultiheadAttention) of one side, in layer order."""
    out = []
    for i, layer in enumerate(getattr(model, side).layers):
        out.append((f"{side}.layers.{i}.self_attn", layer.self_attn))
        if side == "decoder" and getattr(layer, "encoder_attn", None) is not None:
            out.append((f"{side}.layers.{i}.encoder_attn", layer.encoder_attn))
    return out


def shrink_attention(mha, keep: List[int]) -> None:
    """Keep the heads ``keep`` (indices, in order) of a fairseq MultiheadAttention."""
    hd = mha.head_dim
    if list(keep) == list(range(mha.num_heads)):
        return
    mha._adaptive_prune_heads([(h * hd, (h + 1) * hd) for h in keep])
    mha._set_skip_embed_dim_check()  # inner size num_heads * head_dim != embed_dim now
    mha.out_proj.in_features = mha.embed_dim


def shrink_ffn(layer, keep: List[int]) -> None:
    """Keep the FFN neurons ``keep`` of a Transformer layer (rows of fc1, columns of fc2)."""
    fc1, fc2 = layer.fc1, layer.fc2
    if list(keep) == list(range(fc1.out_features)):
        return
    index = torch.as_tensor(keep, dtype=torch.long, device=fc1.weight.device)
    new_fc1 = nn.Linear(fc1.in_features, len(keep), bias=fc1.bias is not None).to(fc1.weight)
    new_fc2 = nn.Linear(len(keep), fc2.out_features, bias=fc2.bias is not None).to(fc2.weight)
    with torch.no_grad():
        new_fc1.weight.copy_(fc1.weight.index_select(0, index))
        if fc1.bias is not None:
            new_fc1.bias.copy_(fc1.bias.index_select(0, index))
        new_fc2.weight.copy_(fc2.weight.index_select(1, index))
        if fc2.bias is not None:
            new_fc2.bias.copy_(fc2.bias)
    layer.fc1, layer.fc2 = new_fc1, new_fc2


def apply_kept_heads(model, args) -> None:
    """Build-time hook: shrink the attention modules to ``--{side}-heads-kept`` heads (the first
    ones: the weights come from the checkpoint loaded next)."""
    for side in SIDES:
        kept = getattr(args, f"{side}_heads_kept", None)
        if kept is None:
            continue
        heads = getattr(args, f"{side}_attention_heads", None)
        if not hasattr(model, side) or not hasattr(getattr(model, side), "layers"):
            raise PruningError(f"--{side}-heads-kept {kept}: only Transformer models have attention heads")
        if not 1 <= int(kept) <= int(heads):
            raise PruningError(f"--{side}-heads-kept {kept}: the {side} has {heads} attention heads per layer; "
                               f"keep between 1 and {heads}")
        for _, mha in attention_modules(model, side):
            shrink_attention(mha, list(range(int(kept))))


# ----------------------------------------------------------------------------- importance
def weight_importance(model) -> Dict[str, torch.Tensor]:
    scores = {}
    for side in SIDES:
        for name, mha in attention_modules(model, side):
            h, hd = mha.num_heads, mha.head_dim
            rows = torch.cat([mha.q_proj.weight, mha.k_proj.weight, mha.v_proj.weight], dim=1).view(h, hd, -1)
            cols = mha.out_proj.weight.t().reshape(h, hd, -1)
            scores[name] = (rows.pow(2).sum(dim=(1, 2)) + cols.pow(2).sum(dim=(1, 2))).sqrt().detach()
        for i, layer in enumerate(getattr(model, side).layers):
            scores[f"{side}.layers.{i}.ffn"] = (layer.fc1.weight.pow(2).sum(1)
                                                + layer.fc2.weight.pow(2).sum(0)).sqrt().detach()
    return scores


def gradient_importance(model, task, criterion, batches) -> Dict[str, torch.Tensor]:
    """Michel et al. 2019: ``E |dL/d xi|`` of a gate on each head's output and each FFN neuron."""
    gates, handles, skip = {}, [], {}

    def gate_hook(gate, repeat):
        def hook(module, inputs):
            g = gate.repeat_interleave(repeat) if repeat > 1 else gate
            return (inputs[0] * g.to(inputs[0].dtype),) + tuple(inputs[1:])
        return hook

    for side in SIDES:
        for name, mha in attention_modules(model, side):
            gates[name] = torch.ones(mha.num_heads, requires_grad=True)
            handles.append(mha.out_proj.register_forward_pre_hook(gate_hook(gates[name], mha.head_dim)))
            skip[name] = mha.skip_embed_dim_check
            mha.skip_embed_dim_check = True  # the fused path would not call out_proj (no gate)
        for i, layer in enumerate(getattr(model, side).layers):
            name = f"{side}.layers.{i}.ffn"
            gates[name] = torch.ones(layer.fc1.out_features, requires_grad=True)
            handles.append(layer.fc2.register_forward_pre_hook(gate_hook(gates[name], 1)))
    scores = {name: torch.zeros_like(g) for name, g in gates.items()}
    requires = {p: p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    n = 0
    try:
        for sample in batches:
            parts = [sample] if "net_input" in sample else [b for k, b in sample.items()
                                                             if b and not k.endswith("-RT") and "net_input" in b]
            for part in parts:
                for g in gates.values():
                    g.grad = None
                loss, _, _ = criterion(model, part)
                loss.backward()
                for name, g in gates.items():
                    scores[name] += g.grad.abs()
                n += 1
    finally:
        for h in handles:
            h.remove()
        for side in SIDES:
            for name, mha in attention_modules(model, side):
                mha.skip_embed_dim_check = skip[name]
        for p, r in requires.items():
            p.requires_grad_(r)
    if n == 0:
        raise PruningError("--subset: no batch to score the heads and neurons on (empty split?)")
    return {name: s / n for name, s in scores.items()}


def top_indices(scores: torch.Tensor, keep: int) -> List[int]:
    """The ``keep`` highest-scoring indices, in increasing order (ties: lower index first)."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    return sorted(order[:keep])


# ----------------------------------------------------------------------------- the command
def check_request(args, model) -> Dict[str, Dict[str, int]]:
    """Heads removed and FFN neurons kept per side, checked against the model."""
    plan = {}
    for side in SIDES:
        heads_removed = getattr(args, f"{side}_prune_heads")
        if heads_removed is None:
            heads_removed = args.prune_heads or 0
        flag = f"--{side}-prune-heads" if getattr(args, f"{side}_prune_heads") is not None else "--prune-heads"
        modules = attention_modules(model, side)
        heads = modules[0][1].num_heads
        if heads_removed < 0:
            raise PruningError(f"{flag} {heads_removed}: must be >= 0")
        if heads_removed >= heads:
            raise PruningError(f"{flag} {heads_removed}: the {side} has {heads} attention heads per layer; "
                               f"at most {heads - 1} can be removed (one must remain)")
        ffn = getattr(model, side).layers[0].fc1.out_features
        keep_ffn = ffn
        if args.ffn_keep is not None:
            if not 0 < args.ffn_keep <= 1:
                raise PruningError(f"--ffn-keep {args.ffn_keep}: the fraction of FFN neurons kept must be in (0, 1]")
            keep_ffn = max(1, int(round(args.ffn_keep * ffn)))
        plan[side] = {"heads": heads, "heads_kept": heads - heads_removed, "ffn": ffn, "ffn_kept": keep_ffn}
    if all(p["heads_kept"] == p["heads"] and p["ffn_kept"] == p["ffn"] for p in plan.values()):
        raise PruningError("nothing to remove: give --prune-heads N and/or --ffn-keep F")
    return plan


def masked_state(model, keep: Dict[str, List[int]]) -> Dict[str, torch.Tensor]:
    """The model's weights with the removed heads and neurons zeroed (shapes unchanged)."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    for side in SIDES:
        for name, mha in attention_modules(model, side):
            hd = mha.head_dim
            for h in range(mha.num_heads):
                if h in keep[name]:
                    continue
                rows = slice(h * hd, (h + 1) * hd)
                for proj in ("q_proj", "k_proj", "v_proj"):
                    state[f"{name}.{proj}.weight"][rows] = 0
                    state[f"{name}.{proj}.bias"][rows] = 0
                state[f"{name}.out_proj.weight"][:, rows] = 0
        for i, layer in enumerate(getattr(model, side).layers):
            name = f"{side}.layers.{i}"
            drop = [j for j in range(layer.fc1.out_features) if j not in set(keep[f"{name}.ffn"])]
            if drop:
                state[f"{name}.fc1.weight"][drop] = 0
                state[f"{name}.fc1.bias"][drop] = 0
                state[f"{name}.fc2.weight"][:, drop] = 0
    return state


def batches_of(task, model, subset: str, max_tokens: int, max_batches: int):
    from fairseq import utils

    try:
        task.load_dataset(subset)
    except SmallcapError:
        raise
    except Exception as e:
        raise PruningError(f"--subset {subset}: cannot load it from --data ({type(e).__name__}: {str(e)[:200]})") from None
    itr = task.get_batch_iterator(
        dataset=task.dataset(subset), max_tokens=max_tokens,
        max_positions=utils.resolve_max_positions(task.max_positions(), model.max_positions()),
        ignore_invalid_inputs=True, seed=1, num_workers=0,
    ).next_epoch_itr(shuffle=False)
    for i, sample in enumerate(itr):
        if i >= max_batches:
            break
        yield sample


def prune_structured(args) -> dict:
    from fairseq import checkpoint_utils

    if os.path.abspath(args.out) == os.path.abspath(args.checkpoint):
        raise PruningError(f"--out {args.out}: would overwrite the input checkpoint")
    state = load_our_checkpoint(args.checkpoint, "CKPT")
    from .pruning import model_name

    arch, model_type = model_name(state["cfg"].model)
    if model_type != "smallcap_transformer":
        raise PruningError(f"CKPT {args.checkpoint}: a {arch} checkpoint has no attention heads or FFN; "
                           "structured pruning works on smallcap_transformer checkpoints")
    if not os.path.isdir(args.data):
        raise PruningError(f"--data {args.data}: no such directory")
    models, cfg, task = checkpoint_utils.load_model_ensemble_and_task([args.checkpoint],
                                                                      arg_overrides={"data": args.data})
    model = models[0]
    sparsity = make_permanent(model)  # magnitude masks, if any, into plain weights
    plan = check_request(args, model)

    if args.importance == "gradient":
        criterion = task.build_criterion(cfg.criterion)
        scores = gradient_importance(model, task, criterion,
                                     batches_of(task, model, args.subset, args.max_tokens, args.max_batches))
    else:
        scores = weight_importance(model)
    keep = {}
    for side in SIDES:
        for name, _ in attention_modules(model, side):
            keep[name] = top_indices(scores[name], plan[side]["heads_kept"])
        for i in range(len(getattr(model, side).layers)):
            name = f"{side}.layers.{i}.ffn"
            keep[name] = top_indices(scores[name], plan[side]["ffn_kept"])

    n_before = sum(p.numel() for p in model.parameters())
    if args.masked_out:
        masked = dict(state, model=masked_state(model, keep))
        masked["extra_state"] = dict(state.get("extra_state") or {})
        masked.pop("last_optimizer_state", None)
        if sparsity:
            set_model_options(masked, prune_sparsity=0.0, prune_finalized=round(sparsity, 6))
        save_checkpoint(masked, args.masked_out)  # replaces masked["cfg"] only; state["cfg"] stays a config

    for side in SIDES:
        for name, mha in attention_modules(model, side):
            shrink_attention(mha, keep[name])
        for i, layer in enumerate(getattr(model, side).layers):
            shrink_ffn(layer, keep[f"{side}.layers.{i}.ffn"])
    n_after = sum(p.numel() for p in model.parameters())

    options = {}
    for side in SIDES:
        if plan[side]["heads_kept"] != plan[side]["heads"]:
            options[f"{side}_heads_kept"] = plan[side]["heads_kept"]
        options[f"{side}_ffn_embed_dim"] = plan[side]["ffn_kept"]
    if sparsity:
        options.update(prune_sparsity=0.0, prune_finalized=round(sparsity, 6))
    set_model_options(state, **options)
    state["model"] = model.state_dict()
    state.pop("last_optimizer_state", None)
    extra = dict(state.get("extra_state") or {})
    extra["structured_pruning"] = {"from": os.path.abspath(args.checkpoint), "importance": args.importance,
                                   "kept": {k: [int(i) for i in v] for k, v in keep.items()},
                                   "parameters_before": n_before, "parameters_after": n_after}
    state["extra_state"] = extra
    save_checkpoint(state, args.out)
    return {"plan": plan, "params_before": n_before, "params_after": n_after, "keep": keep}

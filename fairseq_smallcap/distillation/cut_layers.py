"""``smallcap-cut-layers``: a student Transformer initialised from a teacher's layers.

    smallcap-cut-layers --teacher teacher.pt --encoder-layers 0 --decoder-layers 0,2,5 --output student.pt

"Shrink and fine-tune": a shallower student starts from a subset of the teacher's layers instead
of a random initialisation, then trains as usual (DistilBERT, Sanh et al. 2019, initialises its
student from every other teacher layer; Shleifer & Rush 2020, "Pre-trained Summarization
Distillation", copy evenly spaced decoder layers, keeping the first and the last, and fine-tune).
The kept layers (indices of the teacher, in increasing order) are renumbered ``0..n-1`` and
everything else (embeddings, positions, layer norms, output projection) is copied; the model
config gets the new ``encoder_layers``/``decoder_layers``, and the optimizer state and training
progress are dropped, so the output is a fresh checkpoint: it loads in ``fairseq-generate
--path`` and starts a run with ``fairseq-train ... --finetune-from-model`` plus the flags this
command prints (the architecture, the layer counts and the teacher's settings that differ from
the architecture's defaults, such as its widths).

Only depth can be cut: ``--student-arch`` must have the teacher's widths (embedding and FFN
dimensions, attention heads). Its layer counts are then the default number of layers kept,
chosen evenly spaced: the first and the last layer, the others at ``i * (n - 1) // (k - 1)``
(6 -> 3 layers keeps 0,2,5; 12 -> 6 keeps 0,2,4,6,8,11; a single layer is the first).
"""
import argparse
import logging
import os
import re
import shlex
import sys
from argparse import Namespace
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

from .. import checkpoints
from ..errors import SmallcapError
from ..cli import configure_logging, error_exit_status
from ..param_table import arch_args

logger = logging.getLogger("fairseq_smallcap.distillation.cut_layers")
PROG = "smallcap-cut-layers"
SIDES = ("encoder", "decoder")
WIDTHS = ("encoder_embed_dim", "decoder_embed_dim", "encoder_ffn_embed_dim", "decoder_ffn_embed_dim",
          "encoder_attention_heads", "decoder_attention_heads")
LAYER_KEY = re.compile(r"^(encoder|decoder)\.layers\.(\d+)\.(.+)$")


class CutLayersError(SmallcapError):
    """Bad teacher checkpoint, architecture or layer indices."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="initialise a shallower student from a "
                                     "teacher's layers (shrink and fine-tune)")
    parser.add_argument("--teacher", required=True, help="teacher checkpoint (a Transformer)")
    parser.add_argument("--output", required=True, help="student checkpoint to write")
    parser.add_argument("--encoder-layers", default=None, help="comma-separated teacher encoder layers "
                        "to keep, in increasing order (default: --student-arch's count, evenly spaced, or all)")
    parser.add_argument("--decoder-layers", default=None, help="comma-separated teacher decoder layers "
                        "to keep (default: as --encoder-layers)")
    parser.add_argument("--student-arch", default=None, help="architecture of the student: must have the "
                        "teacher's widths; its layer counts are the default number of layers kept")
    return parser


def evenly_spaced(n_teacher: int, n_student: int) -> List[int]:
    """``n_student`` of ``n_teacher`` layers: the first, the last and evenly spaced ones between."""
    if n_student == 1:
        return [0]
    return [i * (n_teacher - 1) // (n_student - 1) for i in range(n_student)]


def parse_layers(flag: str, value: str, n_teacher: int, side: str) -> List[int]:
    try:
        layers = [int(x) for x in value.split(",")]
    except ValueError:
        raise CutLayersError(f"{flag} {value!r}: expected comma-separated layer indices such as 0,2,5") from None
    for layer in layers:
        if not 0 <= layer < n_teacher:
            raise CutLayersError(f"{flag} {value}: layer {layer} does not exist, the teacher's {side} has "
                                 f"{n_teacher} layers (0-{n_teacher - 1})")
    if len(set(layers)) != len(layers):
        raise CutLayersError(f"{flag} {value}: each layer can be kept only once")
    if layers != sorted(layers):
        raise CutLayersError(f"{flag} {value}: give the layers in increasing order")
    return layers


def teacher_layers(model_state, model_cfg) -> Dict[str, int]:
    counts = {}
    for side in SIDES:
        indices = {int(m.group(2)) for m in map(LAYER_KEY.match, model_state) if m and m.group(1) == side}
        if not indices:
            raise CutLayersError(f"--teacher: no {side}.layers.* weights; only Transformer checkpoints "
                                 "can be cut")
        counts[side] = max(indices) + 1
        if getattr(model_cfg, f"{side}_layers", None) != counts[side]:
            raise CutLayersError(f"--teacher: the checkpoint has {counts[side]} {side} layers but its "
                                 f"config says {side}_layers={getattr(model_cfg, f'{side}_layers', None)}")
        if getattr(model_cfg, f"{side}_layers_to_keep", None):
            raise CutLayersError(f"--teacher: trained with --{side}-layers-to-keep, which fairseq applies "
                                 "when loading; cut from a checkpoint without it")
    return counts


def check_student_arch(name: str, teacher_arch: str, model_cfg, counts: Dict[str, int]) -> Namespace:
    """The student architecture's options, if its widths are the teacher's."""
    from fairseq.models import ARCH_MODEL_REGISTRY

    model_cls = ARCH_MODEL_REGISTRY.get(teacher_arch)
    if name not in ARCH_MODEL_REGISTRY:
        same = sorted(a for a, cls in ARCH_MODEL_REGISTRY.items() if cls is model_cls)
        raise CutLayersError(f"--student-arch {name}: unknown architecture (those of the teacher's model: "
                             f"{', '.join(same)})")
    if model_cls is not None and ARCH_MODEL_REGISTRY[name] is not model_cls:
        raise CutLayersError(f"--student-arch {name}: not an architecture of the teacher's model "
                             f"{model_cls.__name__}")
    student = arch_args(name)
    differ = [k for k in WIDTHS if getattr(student, k) != getattr(model_cfg, k)]
    if differ:
        raise CutLayersError(
            f"--student-arch {name}: layers can only be cut where the widths match, but {name} has "
            + ", ".join(f"{k}={getattr(student, k)}" for k in differ) + f" where the teacher ({teacher_arch}) has "
            + ", ".join(f"{k}={getattr(model_cfg, k)}" for k in differ)
            + "; train this student from scratch or with word-level or sequence-level KD instead")
    for side in SIDES:
        if getattr(student, f"{side}_layers") > counts[side]:
            raise CutLayersError(f"--student-arch {name}: has {getattr(student, f'{side}_layers')} {side} "
                                 f"layers, more than the teacher's {counts[side]}")
    return student


def cut_state_dict(model_state, keep: Dict[str, List[int]]) -> "OrderedDict":
    """The weights with only the ``keep`` layers of each side, renumbered from 0 in that order."""
    cut = OrderedDict()
    for key, value in model_state.items():
        m = LAYER_KEY.match(key)
        if m is None:
            cut[key] = value
        elif int(m.group(2)) in keep[m.group(1)]:
            cut[f"{m.group(1)}.layers.{keep[m.group(1)].index(int(m.group(2)))}.{m.group(3)}"] = value
    return cut


def training_flags(model_cfg, arch: str, output: str, keep: Dict[str, List[int]]) -> List[str]:
    """fairseq-train flags building the student: the architecture, the layer counts, and the
    teacher's options that the architecture would set otherwise (added one at a time, so options
    that follow from others, such as decoder_output_dim from decoder_embed_dim, are left out)."""
    overrides = {f"{side}_layers": len(keep[side]) for side in SIDES}
    inexpressible = set()
    while True:
        defaults = vars(arch_args(arch, overrides))
        differ = [k for k, v in defaults.items() if k not in overrides and k not in inexpressible
                  and hasattr(model_cfg, k) and getattr(model_cfg, k) != v]
        if not differ:
            break
        key, value = differ[0], getattr(model_cfg, differ[0])
        if value is None or value is False or isinstance(value, (list, tuple, dict)):
            inexpressible.add(key)  # no command-line flag resets a default to this
        else:
            overrides[key] = value
    if inexpressible:
        logger.warning(f"the teacher's {', '.join(sorted(inexpressible))} differ from {arch}'s defaults and "
                       "cannot be given as flags")
    flags = ["--finetune-from-model", output, "--arch", arch]
    for key, value in overrides.items():
        flag = "--" + key.replace("_", "-")
        flags += [flag] if value is True else [flag, str(value)]
    return flags


def n_params(weights) -> int:
    """Parameters of a state dict, counting tied weights once."""
    import torch

    return sum(t.numel() for t in {t.data_ptr(): t for t in weights.values() if torch.is_tensor(t)}.values())


def cut(args) -> dict:
    from fairseq import checkpoint_utils

    import fairseq_smallcap  # noqa: F401  (architectures, checkpoint loading)

    if not os.path.isfile(args.teacher):
        raise CutLayersError(f"--teacher {args.teacher}: no such checkpoint")
    if os.path.abspath(args.output) == os.path.abspath(args.teacher):
        raise CutLayersError(f"--output {args.output}: would overwrite the teacher")
    state = checkpoint_utils.load_checkpoint_to_cpu(args.teacher)
    if state.get("cfg") is None or "model" not in state:
        raise CutLayersError(f"--teacher {args.teacher}: not a fairseq checkpoint with a config and weights")
    model_cfg = state["cfg"].model
    teacher_arch = getattr(model_cfg, "arch", None) or getattr(model_cfg, "_name", None)
    counts = teacher_layers(state["model"], model_cfg)
    arch, n_keep = teacher_arch, dict(counts)
    if args.student_arch:
        student = check_student_arch(args.student_arch, teacher_arch, model_cfg, counts)
        arch, n_keep = args.student_arch, {side: getattr(student, f"{side}_layers") for side in SIDES}
    keep = {}
    for side in SIDES:
        value = getattr(args, f"{side}_layers")
        keep[side] = (parse_layers(f"--{side}-layers", value, counts[side], side) if value is not None
                      else evenly_spaced(counts[side], n_keep[side]))

    teacher_params = n_params(state["model"])
    state["model"] = cut_state_dict(state["model"], keep)
    for side in SIDES:
        setattr(model_cfg, f"{side}_layers", len(keep[side]))
    for key in ("arch", "_name"):
        if hasattr(model_cfg, key):
            setattr(model_cfg, key, arch)
    checkpoints.fresh_training_state(state, cut_from={"teacher": os.path.abspath(args.teacher),
                                          "encoder_layers": keep["encoder"], "decoder_layers": keep["decoder"]})
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    checkpoints.save_checkpoint(state, args.output)
    return {"keep": keep, "counts": counts, "params": n_params(state["model"]), "teacher_params": teacher_params,
            "flags": training_flags(model_cfg, arch, args.output, keep)}


def cli_main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(sys.stderr)
    try:
        result = cut(args)
    except SmallcapError as e:
        return error_exit_status(PROG, e)
    for side in SIDES:
        kept = result["keep"][side]
        print(f"{side}: kept layers {','.join(map(str, kept))} of {result['counts'][side]}")
    print(f"wrote {args.output}: {result['params']:,} parameters (teacher {result['teacher_params']:,})")
    print("train it with fairseq-train DATA <the teacher's task and training flags> and:")
    print(" ".join(shlex.quote(flag) for flag in result["flags"]))
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())

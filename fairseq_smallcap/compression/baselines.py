"""The plain-PyTorch baselines: a checkpoint decoded in bf16, fp16 or torch dynamic int8.

    python -m fairseq_smallcap.compression.baselines CKPT --data DATA -s en -t fr --precision int8
    (also: smallcap-baseline-decode, once installed)

:func:`load_model` loads a checkpoint as ``fairseq-generate`` does (the task of its config,
with the data directory and languages given), rebuilding low-rank and iPQ layers from the
state dict's shapes first (``lowrank``: from the config; ``ipq.restore_pq_modules_``), and
:func:`convert` returns it in one precision:

* ``fp32`` — as trained;
* ``bf16`` — every parameter and buffer in bfloat16 (CPU or GPU); fairseq's generator takes the
  log-softmax in fp32;
* ``fp16`` — half precision, on a GPU only: PyTorch's CPU kernels do not cover fp16 decoding
  (asking for it on the CPU is an error, one line);
* ``int8`` — ``torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)``
  (given as the names of the ``nn.Linear`` modules, leaving out a low-rank embedding's ``up``):
  int8 weights, activations quantized per batch on the fly, CPU only. Every ``nn.Linear``
  (attention projections, FFN, the tied output projection) becomes a dynamic quantized Linear;
  the embedding tables stay fp32. fairseq's MultiheadAttention reads ``q_proj.weight`` ... itself
  on its fast path (``F.multi_head_attention_forward``), which a quantized module does not have
  as a tensor, so :func:`convert` sets ``skip_embed_dim_check`` on every attention module: it
  then calls its projections as modules (the same computation).

:func:`translate` decodes the task's ``--gen-subset`` with fairseq's ``SequenceGenerator``
(``task.build_generator`` / ``task.inference_step``: the language tokens handled as in
``fairseq-generate``) and returns the hypotheses in sentence order. The command prints them, one
per line (sentencepiece removed), and on stderr the precision, parameters, seconds and target
tokens per second.
"""
import argparse
import logging
import os
import sys
import time
from argparse import Namespace
from typing import Dict, Optional, Sequence

import torch
import torch.nn as nn

from ..cli import configure_logging, error_exit_status
from ..errors import SmallcapError

logger = logging.getLogger("fairseq_smallcap.compression.baselines")
PROG = "smallcap-baseline-decode"
PRECISIONS = ("fp32", "bf16", "fp16", "int8")


class BaselineError(SmallcapError):
    """A precision that cannot run here, or a checkpoint that cannot be loaded."""


def load_model(path: str, data: str, source_lang: Optional[str] = None, target_lang: Optional[str] = None,
               overrides: Optional[dict] = None):
    """``(model, task, state)``: the checkpoint's model in eval mode on the CPU, its task set up
    on ``data`` (and the languages); low-rank layers built from the config, iPQ layers rebuilt
    from the state dict."""
    from fairseq import checkpoint_utils, tasks

    import fairseq_smallcap  # noqa: F401  (the task, models, safe checkpoint loading)
    from .ipq import restore_pq_modules_

    if not os.path.isfile(path):
        raise BaselineError(f"CKPT {path}: no such checkpoint")
    if not os.path.isdir(data):
        raise BaselineError(f"--data {data}: no such directory")
    values = {"data": data}
    if source_lang:
        values["source_lang"] = source_lang
    if target_lang:
        values["target_lang"] = target_lang
    values.update(overrides or {})
    state = checkpoint_utils.load_checkpoint_to_cpu(path, arg_overrides=values)
    cfg = state.get("cfg")
    if cfg is None or "model" not in state:
        raise BaselineError(f"CKPT {path}: not a fairseq checkpoint with a config and weights")
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model, from_checkpoint=True)
    restore_pq_modules_(model, state["model"])
    try:
        model.load_state_dict(state["model"], strict=True, model_cfg=cfg.model)
    except SmallcapError:
        raise
    except RuntimeError as e:
        raise BaselineError(f"CKPT {path}: its weights do not fit the model its config builds "
                            f"({str(e).splitlines()[0]})") from None
    model.eval()
    return model, task, state


def convert(model: nn.Module, precision: str, device: str = "cpu") -> nn.Module:
    """``model`` in ``precision`` (see the module docstring), on ``device``."""
    if precision not in PRECISIONS:
        raise BaselineError(f"--precision {precision}: unknown (choose from {', '.join(PRECISIONS)})")
    if device != "cpu" and not torch.cuda.is_available():
        raise BaselineError(f"--device {device}: no GPU available")
    if precision == "fp16" and device == "cpu":
        raise BaselineError("--precision fp16 needs a GPU (--device cuda): PyTorch's CPU kernels do not "
                            "support fp16 decoding; use --precision bf16 on the CPU")
    if precision == "int8" and device != "cpu":
        raise BaselineError("--precision int8 (torch dynamic quantization) runs on the CPU only")
    model = model.to(device)
    if precision == "bf16":
        model = model.to(torch.bfloat16)
    elif precision == "fp16":
        model = model.half()
    elif precision == "int8":
        from fairseq.modules import MultiheadAttention

        # every nn.Linear, by name, except the second factor of a low-rank embedding table (the
        # tied output projection reads its weight as a tensor)
        spec = {name: torch.ao.quantization.default_dynamic_qconfig for name, m in model.named_modules()
                if type(m) is nn.Linear and not name.endswith("embed_tokens.up")}
        model = torch.ao.quantization.quantize_dynamic(model, spec, dtype=torch.qint8)
        for module in model.modules():
            if isinstance(module, MultiheadAttention):
                module.skip_embed_dim_check = True  # no fast path: it reads q_proj.weight as a tensor
    return model.eval()


def quantized_linears(model: nn.Module) -> Dict[str, int]:
    """How many modules are float ``nn.Linear`` and how many dynamic int8 Linear."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    return {"float": sum(type(m) is nn.Linear for m in model.modules()),
            "int8": sum(isinstance(m, DynamicLinear) for m in model.modules())}


def translate(model: nn.Module, task, subset: str = "valid", beam: int = 1, max_len_a: float = 0,
              max_len_b: int = 200, batch_size: int = 64, max_sentences: Optional[int] = None,
              device: str = "cpu") -> Dict[str, object]:
    """Decode ``subset`` of the task's data with fairseq's SequenceGenerator: ``{"hypotheses":
    token strings in sentence order, "tokens": target tokens produced, "seconds": decoding time}``."""
    from fairseq import utils

    task.load_dataset(subset)
    dataset = task.dataset(subset)
    generator = task.build_generator([model], Namespace(beam=beam, max_len_a=max_len_a, max_len_b=max_len_b,
                                                        min_len=1, unnormalized=False, lenpen=1, unkpen=0,
                                                        temperature=1.0, match_source_len=False,
                                                        no_repeat_ngram_size=0, sampling=False))
    itr = task.get_batch_iterator(dataset=dataset, max_sentences=batch_size,
                                  max_positions=utils.resolve_max_positions(task.max_positions(),
                                                                            model.max_positions()),
                                  ignore_invalid_inputs=False, num_workers=0,
                                  required_batch_size_multiple=1).next_epoch_itr(shuffle=False)
    hypotheses, tokens, seconds = {}, 0, 0.0
    dictionary = task.target_dictionary
    for sample in itr:
        if device != "cpu":
            sample = utils.move_to_cuda(sample)
        start = time.perf_counter()
        output = task.inference_step(generator, [model], sample)
        seconds += time.perf_counter() - start
        for i, sample_id in enumerate(sample["id"].tolist()):
            best = output[i][0]["tokens"].int().cpu()
            tokens += len(best)
            hypotheses[sample_id] = dictionary.string(best, extra_symbols_to_ignore=generator.symbols_to_strip_from_output)
        if max_sentences is not None and len(hypotheses) >= max_sentences:
            break
    return {"hypotheses": [hypotheses[i] for i in sorted(hypotheses)], "ids": sorted(hypotheses),
            "tokens": tokens, "seconds": seconds}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="decode a checkpoint in fp32, bf16, fp16 (GPU) "
                                     "or torch dynamic int8 with fairseq's SequenceGenerator")
    parser.add_argument("ckpt", metavar="CKPT")
    parser.add_argument("--data", required=True, help="the data directory of the checkpoint's task")
    parser.add_argument("-s", "--source-lang", required=True)
    parser.add_argument("-t", "--target-lang", required=True)
    parser.add_argument("--precision", default="fp32", help=f"one of {', '.join(PRECISIONS)}")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--gen-subset", default="valid")
    parser.add_argument("--beam", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-len-a", type=float, default=0)
    parser.add_argument("--max-len-b", type=int, default=200)
    parser.add_argument("--max-sentences", type=int, default=None, help="stop after about this many sentences")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--post-process", default="sentencepiece",
                        help="subword scheme to remove from the output (fairseq's post_process)")
    return parser


def cli_main(argv: Optional[Sequence[str]] = None) -> int:
    from fairseq.data import data_utils

    args = build_parser().parse_args(argv)
    configure_logging(sys.stderr)
    try:
        if args.precision not in PRECISIONS:
            raise BaselineError(f"--precision {args.precision}: unknown (choose from {', '.join(PRECISIONS)})")
        if args.threads:
            torch.set_num_threads(args.threads)
        convert(nn.Linear(1, 1), args.precision, args.device)  # refuse before loading anything
        model, task, _ = load_model(args.ckpt, args.data, args.source_lang, args.target_lang)
        params = n_params(model)
        model = convert(model, args.precision, args.device)
        result = translate(model, task, args.gen_subset, args.beam, args.max_len_a, args.max_len_b,
                           args.batch_size, args.max_sentences, args.device)
    except SmallcapError as e:
        return error_exit_status(PROG, e)
    for hypothesis in result["hypotheses"]:
        print(data_utils.post_process(hypothesis, args.post_process) if args.post_process else hypothesis)
    speed = result["tokens"] / result["seconds"] if result["seconds"] else 0.0
    print(f"{args.precision}: {len(result['hypotheses'])} sentences, {params:,} parameters, "
          f"{result['seconds']:.2f} s, {speed:.0f} target tokens/s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    from fairseq_smallcap.compression.baselines import cli_main as _cli_main

    sys.exit(_cli_main())

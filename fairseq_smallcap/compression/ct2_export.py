"""``smallcap-export-ct2``: a ``smallcap_transformer`` checkpoint as a CTranslate2 model.

    smallcap-export-ct2 CKPT --data DATA --out MODEL_DIR --quantization int8

CTranslate2 (Klein et al. 2020, OpenNMT's inference engine) runs Transformers with 8-bit
weights on the CPU ("Pieces of eight", Quinn & Ballesteros 2018). The conversion is its own
fairseq converter; :func:`converter_accepts` adds our model name (fairseq's TransformerModel) to
the converter's supported models while it runs. It converts with ``no_default_special_tokens``
(``decoder_start_token: null``): the caller gives the source as ``[__en__, pieces..., </s>]`` and
``target_prefix=[__fr__]``, which becomes the decoder's first token as in fairseq (the default
start token ``</s>`` would feed ``</s> __fr__ ...``). ``MODEL_DIR`` also gets the data's
``spm.model`` and ``smallcap_ct2.json``; it is written as a temporary directory, then renamed.
"""
import argparse
import contextlib
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from typing import Optional, Sequence

from ..cli import configure_logging, error_exit_status
from ..errors import DictionaryMismatchError, SmallcapError

logger = logging.getLogger("fairseq_smallcap.compression.ct2_export")
PROG = "smallcap-export-ct2"
TASK = "unsupervised_translation"
QUANTIZATIONS = ("float32", "int8", "int16", "float16", "int8_float16", "bfloat16")
METADATA = "smallcap_ct2.json"
SPM_MODEL = "spm.model"
FORMAT_VERSION = 1


class CT2ExportError(SmallcapError):
    """A checkpoint, data directory or option that cannot be exported to CTranslate2."""


def import_ctranslate2():
    """``ctranslate2``, or a one-line error saying how to install it."""
    try:
        import ctranslate2
    except ImportError as e:
        raise CT2ExportError(f"CTranslate2 is not installed: pip install ctranslate2==4.8.5 "
                             f"(or pip install -e '.[ct2]') ({e})") from e
    return ctranslate2


def lang_token(lang: str) -> str:
    from ..tasks.unsupervised_translation import lang_token as task_lang_token

    return task_lang_token(lang)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0].split(": ", 1)[1],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("checkpoint", help="a checkpoint of the unsupervised_translation task with a "
                                           "smallcap_transformer (or fairseq transformer) architecture")
    parser.add_argument("--data", required=True,
                        help="the smallcap-prepare directory the model was trained with (dict.txt, "
                             "spm.model)")
    parser.add_argument("--out", required=True, help="the CTranslate2 model directory to write")
    parser.add_argument("--quantization", default="float32", metavar="TYPE",
                        help="weight type: " + ", ".join(QUANTIZATIONS))
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    return parser


# ---------------------------------------------------------------------------- checks
def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_quantization(quantization: str) -> None:
    if quantization not in QUANTIZATIONS:
        raise CT2ExportError(f"unknown quantization type {quantization!r}: choose one of "
                             f"{', '.join(QUANTIZATIONS)}")


def load_checkpoint(path: str) -> dict:
    """The checkpoint's contents (torch's weights-only loader, as fairseq_smallcap allows it)."""
    import torch

    from .. import checkpoint_safety

    checkpoint_safety.install()
    if not os.path.isfile(path):
        raise CT2ExportError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except SmallcapError:
        raise
    except Exception as e:
        if "GLOBAL" in str(e):
            raise checkpoint_safety._refusal(path, e) from e
        raise CT2ExportError(f"cannot read checkpoint {path}: not a fairseq checkpoint "
                             f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from e
    if not isinstance(state, dict) or "model" not in state or not (state.get("args") or state.get("cfg")):
        raise CT2ExportError(f"cannot read checkpoint {path}: not a fairseq checkpoint (no model "
                             "weights and configuration)")
    return state


def checkpoint_config(state: dict, path: str):
    """(model args, task name, languages) of a checkpoint."""
    args = state.get("args") or (state.get("cfg") or {}).get("model")
    if args is None or not hasattr(args, "arch"):
        raise CT2ExportError(f"checkpoint {path}: no model configuration (saved by fairseq-train?)")
    task_cfg = (state.get("cfg") or {}).get("task") or {}
    task = task_cfg.get("_name") if hasattr(task_cfg, "get") else None
    task = task or getattr(args, "task", None)
    langs = getattr(args, "mono_langs", None) or (task_cfg.get("mono_langs") if hasattr(task_cfg, "get") else None)
    return args, task, langs


def check_model(args, task: Optional[str], path: str) -> str:
    """The fairseq model name of the checkpoint's architecture, or an error when the checkpoint
    is not a Transformer of our task."""
    from fairseq.models import ARCH_MODEL_NAME_REGISTRY, ARCH_MODEL_REGISTRY
    from fairseq.models.transformer import TransformerModel

    if task != TASK:
        raise CT2ExportError(f"checkpoint {path} is a model of the task {task!r}, not {TASK}: "
                             f"{PROG} exports fairseq_smallcap's {TASK} models")
    arch = args.arch
    if arch not in ARCH_MODEL_REGISTRY:
        raise CT2ExportError(f"checkpoint {path}: unknown architecture {arch!r}")
    model_name = ARCH_MODEL_NAME_REGISTRY[arch]
    if not issubclass(ARCH_MODEL_REGISTRY[arch], TransformerModel):
        raise CT2ExportError(f"checkpoint {path}: architecture {arch!r} (model {model_name!r}) is not "
                             "a Transformer encoder-decoder; CTranslate2 export supports "
                             "smallcap_transformer and fairseq transformer architectures")
    return model_name


def check_weights(state: dict, path: str) -> int:
    """The number of token embeddings of the checkpoint (an error for pruning masks not yet
    made permanent, whose weights the converter cannot read)."""
    weights = state["model"]
    if any(key.endswith("_orig") or key.endswith("_mask") for key in weights):
        raise CT2ExportError(f"checkpoint {path} holds pruning masks (weight_orig/weight_mask): make "
                             "the pruning permanent before exporting")
    key = "encoder.embed_tokens.weight"
    if key not in weights:
        raise CT2ExportError(f"checkpoint {path}: no {key} (not a Transformer encoder-decoder?)")
    return int(weights[key].shape[0])


def check_data(data: str, langs: Sequence[str], rows: int) -> str:
    """The data directory's dict.txt, checked against the checkpoint's embedding rows."""
    from fairseq.data import Dictionary

    if not os.path.isdir(data):
        raise CT2ExportError(f"data directory not found: {data}")
    dict_path = os.path.join(data, "dict.txt")
    if not os.path.isfile(dict_path):
        raise CT2ExportError(f"no dictionary at {dict_path} (the smallcap-prepare directory the "
                             "model was trained with)")
    spm_path = os.path.join(data, SPM_MODEL)
    if not os.path.isfile(spm_path):
        raise CT2ExportError(f"no sentencepiece model at {spm_path} (the smallcap-prepare directory "
                             "the model was trained with)")
    try:
        size = len(Dictionary.load(dict_path))
    except Exception as e:
        raise CT2ExportError(f"cannot read the dictionary {dict_path}: {e}") from e
    expected = size + 1 + len(langs)  # + <mask> + one __lang__ token per language
    if expected != rows:
        raise DictionaryMismatchError(
            f"mismatched dictionary: {dict_path} gives {expected} symbols (with <mask> and "
            f"{len(langs)} language tokens) but the checkpoint has {rows} token embeddings: use "
            "the data directory the model was trained with")
    return dict_path


# ---------------------------------------------------------------------------- conversion
@contextlib.contextmanager
def converter_accepts(model_name: str):
    """Let CTranslate2's fairseq converter accept ``model_name`` (checked by :func:`check_model`
    to be fairseq's TransformerModel, whose layers the converter reads) while converting."""
    from ctranslate2.converters import fairseq as fairseq_converter

    supported = getattr(fairseq_converter, "_SUPPORTED_MODELS", None)
    if not isinstance(supported, set):
        raise CT2ExportError(f"this CTranslate2 version ({import_ctranslate2().__version__}) has no "
                             "fairseq converter model registry: install ctranslate2==4.8.5")
    added = model_name not in supported
    supported.add(model_name)
    try:
        yield
    finally:
        if added:
            supported.discard(model_name)


def without_init_embeddings(state: dict, args, checkpoint: str, staging: str) -> str:
    """The checkpoint to convert: ``checkpoint`` itself, or, when it was trained with
    ``--init-embeddings FILE``, a copy in ``staging`` without the flag. The converter builds the
    model with fairseq's ``build_model``, not the task's (which drops the flag when a model is
    built to load a checkpoint into), so it would read FILE again, only to overwrite it with the
    checkpoint's weights, and fail where FILE no longer exists (a model shipped elsewhere)."""
    if not getattr(args, "init_embeddings", None):
        return checkpoint
    import torch

    args.init_embeddings = None  # args is the configuration inside state
    state.pop("last_optimizer_state", None)  # (the converter reads the weights and configuration only)
    copy = os.path.join(staging, "checkpoint.pt")
    torch.save(state, copy)
    return copy


def heads_kept(args) -> dict:
    """Side -> (attention heads per module, head size) of a structured-pruned model
    (``--encoder-heads-kept`` / ``--decoder-heads-kept``; the sides not pruned are left out)."""
    kept = {}
    for side in ("encoder", "decoder"):
        if getattr(args, f"{side}_heads_kept", None) is not None:
            kept[side] = (int(getattr(args, f"{side}_heads_kept")),
                          getattr(args, f"{side}_embed_dim") // getattr(args, f"{side}_attention_heads"))
    return kept


def convert(checkpoint: str, data: str, output_dir: str, quantization: str, model_name: str,
            kept_heads: Optional[dict] = None) -> None:
    """CTranslate2's fairseq converter on ``checkpoint``, written to ``output_dir``. The converter
    takes the head count from ``--encoder-attention-heads``, which a head-pruned model keeps (its
    heads keep their size, ``embed_dim / attention_heads``); ``kept_heads`` (side -> (heads kept,
    head size)) sets each side's count in the converted specification instead, and every attention
    of that side gets the head size (CTranslate2's ``head_dim``, its option for heads narrower than
    the model), so that CTranslate2 splits the pruned projections into the heads they hold and
    scales their queries by ``head_dim ** -0.5`` as fairseq does."""
    import_ctranslate2()
    import numpy as np
    from ctranslate2.converters import FairseqConverter
    from ctranslate2.specs.attention_spec import MultiHeadAttentionSpec

    class HeadsKeptConverter(FairseqConverter):
        def _load(self):
            spec = super()._load()
            for side, (heads, head_dim) in (kept_heads or {}).items():
                getattr(spec, side).num_heads = np.dtype("int16").type(heads)
                for layer in getattr(spec, side).layer:
                    for attention in vars(layer).values():
                        if isinstance(attention, MultiHeadAttentionSpec):
                            # the spec declares head_dim only when built with one (from_config of
                            # an encoder-decoder takes none): set past its attribute freeze
                            object.__setattr__(attention, "head_dim", np.dtype("int32").type(head_dim))
            return spec

    converter = HeadsKeptConverter(checkpoint, data, no_default_special_tokens=True)
    with converter_accepts(model_name):
        try:
            converter.convert(output_dir, quantization=quantization, force=True)
        except ValueError as e:  # the converter's ConfigurationChecker: one reason per line
            reasons = [line.strip(" -") for line in str(e).splitlines()[1:] if line.strip(" -")]
            raise CT2ExportError(f"CTranslate2 cannot convert {checkpoint}: "
                                 f"{'; '.join(reasons) or str(e)}") from e


def export(checkpoint: str, data: str, out: str, quantization: str = "float32", force: bool = False) -> dict:
    """Export ``checkpoint`` (trained on ``data``) to the CTranslate2 model directory ``out``;
    returns the metadata written to ``out/smallcap_ct2.json``."""
    start = time.time()
    check_quantization(quantization)
    out = os.path.abspath(out)
    parent = os.path.dirname(out)
    if not os.path.isdir(parent):
        raise CT2ExportError(f"--out {out}: directory {parent} not found")
    if os.path.exists(out) and not force:
        raise CT2ExportError(f"--out {out} already exists (use --force to replace it)")
    import_ctranslate2()
    import fairseq_smallcap  # noqa: F401  (registers the task and models)

    state = load_checkpoint(checkpoint)
    args, task, langs = checkpoint_config(state, checkpoint)
    model_name = check_model(args, task, checkpoint)
    langs = sorted(lang.strip() for lang in (langs or "").split(",") if lang.strip())
    if len(langs) < 2:
        raise CT2ExportError(f"checkpoint {checkpoint}: no languages (--mono-langs) in its configuration")
    rows = check_weights(state, checkpoint)
    dict_path = check_data(data, langs, rows)
    kept = heads_kept(args)
    metadata = {
        "format": FORMAT_VERSION,
        "checkpoint": os.path.abspath(checkpoint),
        "data": os.path.abspath(data),
        "dict_sha256": _sha256(dict_path),
        "arch": args.arch,
        "quantization": quantization,
        "langs": langs,
        "lang_tokens": {lang: lang_token(lang) for lang in langs},
        "spm_model": SPM_MODEL,
        "max_source_positions": int(getattr(args, "max_source_positions", 1024)),
        "max_target_positions": int(getattr(args, "max_target_positions", 1024)),
        **({"heads_kept": {side: heads for side, (heads, _) in kept.items()}} if kept else {}),
        "source": "[lang_tokens[src], sentencepiece pieces..., '</s>']",
        "target_prefix": "[lang_tokens[tgt]] (the decoder's first token; not in the hypothesis)",
        "ctranslate2": import_ctranslate2().__version__,
    }

    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.partial-", dir=parent)
    try:
        model_dir = os.path.join(staging, "model")
        logger.info(f"converting {checkpoint} ({args.arch}) with CTranslate2's fairseq converter, "
                    f"{quantization} weights")
        source = without_init_embeddings(state, args, checkpoint, staging)
        del state
        convert(source, data, model_dir, quantization, model_name, kept)
        shutil.copyfile(os.path.join(data, SPM_MODEL), os.path.join(model_dir, SPM_MODEL))
        metadata["bytes"] = sum(os.path.getsize(os.path.join(model_dir, name)) for name in os.listdir(model_dir))
        with open(os.path.join(model_dir, METADATA), "w", encoding="utf-8") as f:
            json.dump(metadata, f, indent=1, ensure_ascii=False)
        if os.path.exists(out):  # --force: the old directory goes only once the new one is complete
            old = os.path.join(staging, "old")
            os.rename(out, old)
        os.rename(model_dir, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info(f"CTranslate2 model ({quantization}, {metadata['bytes'] / 1e6:.1f} MB) written to {out} "
                f"in {time.time() - start:.1f} s")
    return metadata


def cli_main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging()
    try:
        metadata = export(args.checkpoint, args.data, args.out, args.quantization, args.force)
    except SmallcapError as e:
        if os.environ.get("SMALLCAP_TRACEBACK"):
            raise
        return error_exit_status(PROG, e)
    print(f"{metadata['arch']} ({metadata['quantization']}, {metadata['bytes'] / 1e6:.1f} MB) "
          f"exported to {os.path.abspath(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())

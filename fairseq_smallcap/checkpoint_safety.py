"""Load fairseq checkpoints with torch's weights-only unpickler.

torch >= 2.6 loads with ``weights_only=True`` by default, and fairseq calls ``torch.load``
without saying otherwise, so every resume and every ``fairseq-generate`` fails with
"Unsupported global: GLOBAL argparse.Namespace". Turning the weights-only loader off would let a
checkpoint run arbitrary code. Instead, :func:`install` allowlists exactly the types fairseq
checkpoints hold (an ``argparse.Namespace`` of legacy args, numpy arrays and scalars in the
meters' state), and turns torch's refusal of anything else into a clear
:class:`UnsafeCheckpointError` that names the checkpoint and the offending global.
"""
import argparse
import functools
import pickle
import re

import numpy as np
import torch

from .errors import SmallcapError, reported

_multiarray = getattr(np, "_core", None) or np.core
_multiarray = _multiarray.multiarray

FAIRSEQ_CHECKPOINT_GLOBALS = [
    argparse.Namespace,
    np.ndarray,
    np.dtype,
    _multiarray._reconstruct,
    _multiarray.scalar,
] + sorted(
    {type(np.dtype(name)) for name in ("bool", "int8", "int16", "int32", "int64", "uint8",
                                        "float16", "float32", "float64")},
    key=lambda cls: cls.__name__,
)


class UnsafeCheckpointError(SmallcapError, pickle.UnpicklingError):
    """A checkpoint holds an object that is not one of the types fairseq checkpoints hold."""


def _refusal(path, error: Exception) -> UnsafeCheckpointError:
    found = re.search(r"GLOBAL ([\w.]+)", str(error))
    what = f"the global {found.group(1)}" if found else "an object"
    return UnsafeCheckpointError(
        f"refusing to load checkpoint {path}: it holds {what}, which is not one of the types a "
        "fairseq checkpoint holds, and loading it could run arbitrary code. Only load "
        "checkpoints you trust; fairseq_smallcap never turns the weights-only loader off."
    )


def install() -> None:
    """Allowlist the fairseq checkpoint types and guard fairseq's checkpoint loader (idempotent)."""
    torch.serialization.add_safe_globals(FAIRSEQ_CHECKPOINT_GLOBALS)
    from fairseq import checkpoint_utils

    load = checkpoint_utils.load_checkpoint_to_cpu
    if getattr(load, "_smallcap_guarded", False):
        return

    @reported
    @functools.wraps(load)
    def load_checkpoint_to_cpu(path, *args, **kwargs):
        try:
            return load(path, *args, **kwargs)
        except pickle.UnpicklingError as error:
            raise _refusal(path, error) from None

    load_checkpoint_to_cpu._smallcap_guarded = True
    checkpoint_utils.load_checkpoint_to_cpu = load_checkpoint_to_cpu

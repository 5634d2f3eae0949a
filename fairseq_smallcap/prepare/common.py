"""What every step of smallcap-prepare shares: its logger, error type, constants, file hash."""
import hashlib
import logging
import os
import re
from typing import Union

from ..errors import SmallcapError

logger = logging.getLogger("fairseq_smallcap.prepare")  # one logger for the whole package

PROG = "smallcap-prepare"
FORMAT_VERSION = 1
HELDOUT_SPLIT = "valid_mono"  # raw/valid_mono.{lang}, tmp/valid_mono.{lang} -> {lang}/valid.bin
_WHITESPACE = re.compile(r"\s+")  # what fairseq's tokenize_line splits on
PathLike = Union[str, os.PathLike]


class PrepareError(SmallcapError):
    """A problem with the inputs or options; the CLI prints it and exits with status 2."""


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()

"""User-facing errors: bad data, flags or checkpoints, reported as one clear line.

fairseq's command-line tools let exceptions escape as tracebacks, and sometimes wrap them
(the trainer re-raises any checkpoint loading problem as "Cannot load model parameters ...").
:func:`install_excepthook` prints a :class:`SmallcapError` found anywhere in an uncaught
exception's chain as ``<program>: error: <message>`` and exits with status 2, like argparse.
Set ``SMALLCAP_TRACEBACK=1`` to see the full traceback instead.
"""
import os
import sys


class SmallcapError(Exception):
    """Base class of the errors fairseq_smallcap reports to users without a traceback."""


def find_smallcap_error(exc):
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, SmallcapError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def install_excepthook() -> None:
    previous = sys.excepthook
    if getattr(previous, "_smallcap", False):
        return

    def excepthook(exc_type, exc, tb):
        error = find_smallcap_error(exc)
        if error is None or os.environ.get("SMALLCAP_TRACEBACK"):
            return previous(exc_type, exc, tb)
        sys.stderr.write(f"{os.path.basename(sys.argv[0] or 'fairseq')}: error: {error}\n")
        sys.stderr.flush()
        os._exit(2)

    excepthook._smallcap = True
    sys.excepthook = excepthook

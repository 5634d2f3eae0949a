"""What every ``smallcap-*`` command shares: fairseq-train's log format, and the one-line
``<program>: error: <message>`` report (exit status 2, like argparse) for bad input."""
import logging
import os
import sys

from .errors import error_exit_status  # noqa: F401  (the one place an error becomes a line and status 2)


def configure_logging(stream=None) -> None:
    """fairseq's log format on ``stream`` (stdout by default); ``force`` because importing fairseq
    may already have configured the root logger. ``LOGLEVEL`` sets the level (INFO)."""
    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s",
                        datefmt="%Y-%m-%d %H:%M:%S", level=os.environ.get("LOGLEVEL", "INFO").upper(),
                        stream=stream or sys.stdout, force=True)


def default_threads() -> int:
    """The CPUs this process may run on (a command's default number of threads)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1

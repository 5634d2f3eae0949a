"""User-facing errors: bad data, flags or checkpoints, reported as one clear line.

Every error fairseq_smallcap reports to a user is a :class:`SmallcapError`, and one function,
:func:`error_exit_status`, turns it into ``<program>: error: <message>`` on stderr and exit
status 2, like argparse:

* our own commands (``smallcap-*``) catch it in their ``main``;
* inside fairseq's command-line tools (``fairseq-train``, ``fairseq-generate``, ...), the methods
  fairseq calls on our task, models, criterion and checkpoint loader are wrapped in
  :func:`reported`: when a fairseq tool (or one of ours) is the running program, the error ends it with ``SystemExit(2)`` right there,
  before fairseq can wrap it (the trainer re-raises any checkpoint loading problem as "Cannot
  load model parameters ..."); ``SystemExit`` is not an ``Exception``, so it passes such
  handlers, and the interpreter exits normally (buffers flushed, ``atexit`` handlers run). In any
  other program (a library user, a test) the error propagates as itself.

Loading the user dir changes no process-wide hook. Set ``SMALLCAP_TRACEBACK=1`` to get the
exception and its traceback instead of the one line.
"""
import functools
import inspect
import os
import sys


class SmallcapError(Exception):
    """Base class of the errors fairseq_smallcap reports to users without a traceback."""


class DictionaryMismatchError(SmallcapError):
    """A checkpoint or teacher was trained with another dictionary than the one the task built."""


def error_exit_status(prog: str, message) -> int:
    """Print ``prog: error: message`` to stderr and return the exit status 2."""
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)
    return 2


def command_line_tool_running() -> bool:
    """Whether the running program is one of fairseq's command-line tools (``fairseq-train``
    and friends as console scripts, or ``python -m fairseq_cli.train``) or one of ours
    (``smallcap-*``, whose ``main`` reports errors of their own code the same way)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and (spec.name or "").startswith("fairseq_cli."):
        return True
    return os.path.basename(sys.argv[0] if sys.argv else "").startswith(("fairseq-", "smallcap-"))


def reported(method):
    """Decorate a method that fairseq's tools call: inside such a tool, a :class:`SmallcapError`
    it raises ends the program as one line and exit status 2 (see the module docstring)."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        try:
            return method(*args, **kwargs)
        except SmallcapError as error:
            if os.environ.get("SMALLCAP_TRACEBACK") or not command_line_tool_running():
                raise
            raise SystemExit(error_exit_status(os.path.basename(sys.argv[0]) or "fairseq", error)) from error

    # fairseq reads some signatures with inspect.getfullargspec, which does not follow
    # __wrapped__ (checkpoint_utils passes from_checkpoint=True only if build_model names it)
    wrapper.__signature__ = inspect.signature(method)
    return wrapper

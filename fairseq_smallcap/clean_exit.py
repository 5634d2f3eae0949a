"""Let ``fairseq-train`` exit cleanly when it stops in the middle of an epoch.

fairseq prefetches batches in a daemon thread (``fairseq.data.iterators.BackgroundConsumer``,
behind ``--data-buffer-size``). When training stops before the epoch's end (``--max-update``,
``--stop-time-hours``), that thread may still be collating the next batches while Python shuts
down. Python 3.11 ends a daemon thread that asks for the interpreter lock during finalization by
unwinding it; unwinding through torch's C++ code calls ``std::terminate``, and the finished run
exits with "terminate called without an active exception" and SIGABRT instead of 0 (a ``set -e``
script stops; a test fails at random). :func:`install` registers, once, an ``atexit`` handler
that runs before finalization: it tells each live consumer to stop after its current batch,
drains its queue and joins it. It does nothing when no consumer is running.
"""
import atexit
import queue
import threading

_installed = False


def stop_prefetch_threads(timeout: float = 30.0) -> int:
    """Stop fairseq's live batch-prefetching threads; return how many were stopped."""
    from fairseq.data.iterators import BackgroundConsumer

    stopped = 0
    for thread in threading.enumerate():
        if not isinstance(thread, BackgroundConsumer) or not thread.is_alive():
            continue
        thread._max_len = 0  # its loop ends after the batch it is working on
        waited = 0.0
        while thread.is_alive() and waited < timeout:
            try:  # make room for that batch and the end-of-data sentinel
                while True:
                    thread._queue.get_nowait()
            except queue.Empty:
                pass
            thread.join(0.01)
            waited += 0.01
        stopped += 1
    return stopped


def install() -> None:
    """Register :func:`stop_prefetch_threads` to run at exit (idempotent)."""
    global _installed
    if not _installed:
        atexit.register(stop_prefetch_threads)
        _installed = True

"""Let ``fairseq-train`` exit cleanly when it stops in the middle of an epoch.

fairseq prefetches batches in a daemon thread (``fairseq.data.iterators.BackgroundConsumer``,
behind ``--data-buffer-size``). When training stops before the epoch's end (``--max-update``,
``--stop-time-hours``), that thread may still be collating the next batches while Python shuts
down. Python 3.11 ends a daemon thread that asks for the interpreter lock during finalization by
unwinding it; unwinding through torch's C++ code calls ``std::terminate``, and the finished run
exits with "terminate called without an active exception" and SIGABRT instead of 0 (a ``set -e``
script stops; a test fails at random). :func:`install` registers, once, an ``atexit`` handler
that runs before finalization: it tells each live consumer to stop after its current batch,
drains its queue and joins it. It does nothing when no consumer is running. Our models and the
KD criterion install it when built, so it covers fairseq's own tasks with them; the
``unsupervised_translation`` task needs none, since it builds its batches without that thread.
fairseq offers no public way to stop the thread: the handler sets the private ``_max_len`` and
drains ``_queue`` of the pinned fairseq (tests check both exist).
"""
import atexit
import queue
import sys
import threading
import time

_installed = False


def stop_prefetch_threads(timeout: float = 30.0) -> int:
    """Stop fairseq's live batch-prefetching threads and return how many ended.

    For the exit handler only: called while an iterator is still read, it would cut its epoch
    short. Each consumer is told to stop after its current batch, then all are drained and joined
    against one deadline; one still alive after ``timeout`` seconds is named on stderr.
    """
    from fairseq.data.iterators import BackgroundConsumer

    consumers = [t for t in threading.enumerate() if isinstance(t, BackgroundConsumer) and t.is_alive()]
    for thread in consumers:
        thread._max_len = 0  # its loop ends after the batch it is working on
    deadline = time.monotonic() + timeout
    while any(t.is_alive() for t in consumers) and time.monotonic() < deadline:
        for thread in consumers:
            try:  # make room for that batch and the end-of-data sentinel
                while True:
                    thread._queue.get_nowait()
            except queue.Empty:
                pass
            thread.join(0.01)
    alive = [t.name for t in consumers if t.is_alive()]
    if alive:
        print(f"fairseq_smallcap.clean_exit: fairseq's prefetching thread(s) {', '.join(alive)} still "
              f"running after {timeout:g} s; the process may abort at exit", file=sys.stderr)
    return len(consumers) - len(alive)


def install() -> None:
    """Register :func:`stop_prefetch_threads` to run at exit (idempotent)."""
    global _installed
    if not _installed:
        atexit.register(stop_prefetch_threads)
        _installed = True

"""Process pools of the batch commands (build-priors, prepare-images, landmarks, bench).

Their workers leave interrupts to the parent, compute on one thread and do not outlive it:

- Ctrl-C in a terminal and ``timeout``/``kill`` of a process group reach every worker too. A
  worker killed by them mid-task breaks the pool, and Python's pool then races with the
  parent's own cancelling (``InvalidStateError`` tracebacks on an interrupted run). The workers
  here ignore SIGINT and SIGTERM: the parent, which handles both as an interrupt, cancels what
  has not started and waits for the tasks in flight (one per worker), then stops them.
- Each worker computes on one thread (:func:`facehd.threads.one_thread_per_worker`, before the
  pool's initializer runs): ``N`` workers use ``N`` cores, not ``N`` times as many threads.
- A parent killed outright (SIGKILL, the out-of-memory killer) cannot stop its workers: each
  worker watches its parent and exits within a second of its death, instead of lingering with
  its memory.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager

__all__ = ["PARENT_POLL_SECONDS", "process_pool", "running_pool"]

PARENT_POLL_SECONDS = 1.0
"""How often a worker checks that its parent is alive, seconds."""


def process_pool(
    workers: int, initializer: Callable[[], None] | None = None
) -> ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes (see the module docstring); ``initializer`` (a
    module-level function) runs once in each worker. Shut it down with
    ``shutdown(wait=True, cancel_futures=True)``, as :func:`running_pool` does."""
    import multiprocessing

    pool = ProcessPoolExecutor(
        max_workers=workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(os.getpid(), initializer),
    )
    # Start every worker now with SIGINT and SIGTERM ignored: an ignored signal stays ignored
    # across the spawn's exec, so no interrupt can kill a worker before its initializer runs
    # (the pool would break).
    if threading.current_thread() is threading.main_thread():
        quiet = (signal.SIGINT, signal.SIGTERM)
        before = {s: signal.signal(s, signal.SIG_IGN) for s in quiet}
        try:
            for _ in range(workers):
                pool.submit(os.getpid)
        finally:
            for s, handler in before.items():
                signal.signal(s, handler)
    return pool


@contextmanager
def running_pool(
    workers: int, initializer: Callable[[], None] | None = None
) -> Iterator[ProcessPoolExecutor]:
    """:func:`process_pool` for a ``with`` block: on leaving it (an interrupt included) the
    tasks not started are cancelled and those in flight finish."""
    pool = process_pool(workers, initializer)
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _start_worker(parent: int, initializer: Callable[[], None] | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    from facehd.threads import one_thread_per_worker

    one_thread_per_worker()
    if initializer is not None:
        initializer()


def _watch_parent(parent: int) -> None:
    while True:
        time.sleep(PARENT_POLL_SECONDS)
        if os.getppid() != parent:  # re-parented: the parent died
            os._exit(1)

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

:func:`run_tasks` runs a batch in such a pool and survives its workers: a worker that dies
(killed, out of memory, a crash in compiled code) fails its own task, not the batch, and a pool
whose workers cannot start is a clear error.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.reduction import ForkingPickler
from typing import Any, TypeVar

from facehd.errors import failure_reason, raise_if_interrupted

__all__ = [
    "PARENT_POLL_SECONDS",
    "DIED",
    "WORKER_DIED",
    "TaskFailed",
    "WorkersDieAtStart",
    "call_task",
    "process_pool",
    "run_tasks",
    "running_pool",
]

T = TypeVar("T")

PARENT_POLL_SECONDS = 1.0
"""How often a worker checks that its parent is alive, seconds."""


def process_pool(
    workers: int, initializer: Callable[[], None] | None = None
) -> ProcessPoolExecutor:
    """A pool of ``workers`` spawned processes (see the module docstring); ``initializer`` (a
    module-level function) runs once in each worker. Shut it down with
    ``shutdown(wait=True, cancel_futures=True)``, as :func:`running_pool` does."""
    return _start_pool(workers, initializer)[0]


def _start_pool(
    workers: int, initializer: Callable[[], None] | None
) -> tuple[ProcessPoolExecutor, list[Future]]:
    """:func:`process_pool`, and the futures of the no-op tasks that started its workers: the
    first task each worker runs, so a pool broken while none of them succeeded broke as its
    workers started."""
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
    if threading.current_thread() is not threading.main_thread():  # signals are the main's
        return pool, [pool.submit(os.getpid) for _ in range(workers)]
    quiet = (signal.SIGINT, signal.SIGTERM)
    before = {s: signal.signal(s, signal.SIG_IGN) for s in quiet}
    try:
        return pool, [pool.submit(os.getpid) for _ in range(workers)]
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


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


WORKER_DIED = (
    "worker process died while processing this item (killed, out of memory, or a crash in "
    "compiled code)"
)
"""The failure of a task whose worker process died under it (alone in the pool)."""


class WorkersDieAtStart(RuntimeError):
    """The processes of a pool die as they start, before any of them runs a task."""

    def __init__(self) -> None:
        super().__init__(
            "the worker processes die as they start, before any task (their error, if they "
            "printed one, is above); run with one worker to see the problem in this process"
        )


@dataclass(frozen=True)
class TaskFailed:
    """A task's failure: what a batch records for it."""

    reason: str
    """An exception's reason (:func:`facehd.errors.failure_reason`): the task's own, or the
    ``RuntimeError`` of :data:`WORKER_DIED` (:data:`DIED`)."""


DIED = TaskFailed(failure_reason(RuntimeError(WORKER_DIED)))
"""The failure recorded for a task whose worker process died under it (local pool or Ray)."""


def call_task(fn: Callable[[T], Any], task: T) -> Any:
    """``fn(task)``, or :class:`TaskFailed` with the reason of the exception it raised. An
    exception comes back as its reason: the exception object need not survive pickling (one
    whose constructor takes other arguments than its message breaks a pool when the parent
    unpickles it)."""
    try:
        return fn(task)
    except Exception as exc:
        raise_if_interrupted(exc)
        return TaskFailed(failure_reason(exc))


def _cannot(what: str, exc: Exception) -> TaskFailed:
    """The failure of a task that could not travel between processes: ``what`` failed, and
    the exception's reason (an interrupt is re-raised)."""
    raise_if_interrupted(exc)
    return TaskFailed(f"{what}: {failure_reason(exc)}")


def _call_pickled(blob: bytes) -> bytes:
    """:func:`call_task` on ``(fn, task)`` pickled by the parent, the outcome pickled here: a
    task that cannot be loaded in the worker (its function not importable there, a
    ``__setstate__`` that raises) or a value that cannot be sent back fails that task, where
    Python's pool lets the first kill the worker and the second fail the batch."""
    try:
        fn, task = ForkingPickler.loads(blob)
    except Exception as exc:
        outcome = _cannot("the task cannot be loaded in a worker process", exc)
    else:
        outcome = call_task(fn, task)
    try:
        return bytes(ForkingPickler.dumps(outcome))
    except Exception as exc:
        said = "the task's result cannot be sent back from its worker process"
        return bytes(ForkingPickler.dumps(_cannot(said, exc)))


def _load_outcome(blob: bytes) -> Any:
    """A task's outcome sent back by :func:`_call_pickled` (a :class:`TaskFailed` when it cannot
    be loaded here)."""
    try:
        return ForkingPickler.loads(blob)
    except Exception as exc:
        return _cannot("the task's result cannot be loaded", exc)


def run_tasks(
    fn: Callable[[T], Any],
    tasks: Sequence[T],
    done: Callable[[int, Any], None],
    *,
    workers: int = 1,
    initializer: Callable[[], None] | None = None,
) -> None:
    """Run ``fn`` on every task; ``done(index, outcome)`` runs in this process as each ends.

    ``outcome`` is what ``fn`` returned, or a :class:`TaskFailed`: ``fn`` raised (its reason) or
    the task's worker process died under it (:data:`WORKER_DIED`). The batch goes on either way.

    ``workers <= 1`` runs the tasks here, in order, after ``initializer``. More run them in a
    pool of spawned processes (:func:`process_pool`; ``fn`` must be a picklable module-level
    function or a ``functools.partial`` of one; ``initializer`` runs once in each worker), and
    ``done`` comes in the order they end. A task that cannot be pickled, or loaded in the
    worker, and a result that cannot be sent back fail that task. Python's pool fails every
    task in flight when one worker dies: the pool is then started again and those tasks run
    again one at a time, so the one that kills its worker alone fails. A pool whose workers die
    before any of them has run a task raises :class:`WorkersDieAtStart`. An exception from
    ``done`` (or Ctrl-C) stops the batch: the tasks not started are cancelled, those in flight
    finish.
    """
    if workers <= 1:
        if initializer is not None:
            initializer()
        for i, task in enumerate(tasks):
            done(i, call_task(fn, task))
        return
    queue = list(reversed(range(len(tasks))))
    suspects: list[int] = []  # in flight when a worker died: each runs again, alone
    in_flight: dict[Future, int] = {}
    window = 2 * workers
    pool, started = _start_pool(workers, initializer)
    try:
        while queue or in_flight or suspects:
            alone = bool(suspects)
            broken = False
            while len(in_flight) < (1 if alone else window) and (suspects or queue):
                i = suspects.pop(0) if alone else queue.pop()
                try:
                    blob = bytes(ForkingPickler.dumps((fn, tasks[i])))
                except Exception as exc:
                    done(i, _cannot("the task cannot be sent to a worker process", exc))
                    continue
                try:
                    in_flight[pool.submit(_call_pickled, blob)] = i
                except BrokenProcessPool:  # a worker died between tasks, or as it started
                    (suspects if alone else queue).append(i)
                    broken = True
                    break
            finished = wait(list(in_flight), return_when=FIRST_COMPLETED)[0] if in_flight else ()
            for fut in finished:
                i = in_flight.pop(fut)
                exc = fut.exception()
                if isinstance(exc, BrokenProcessPool):
                    broken = True
                    if not alone or _died_at_start(started):
                        suspects.append(i)
                        continue
                    outcome: Any = DIED
                elif exc is not None:  # not the task's own: _call_pickled returns those
                    raise exc
                else:
                    outcome = _load_outcome(fut.result())
                done(i, outcome)
            if broken:
                if _died_at_start(started):
                    raise WorkersDieAtStart()
                suspects.extend(in_flight.values())
                suspects.sort()
                in_flight.clear()
                pool.shutdown(wait=False, cancel_futures=True)
                pool, started = _start_pool(workers, initializer)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _died_at_start(started: list[Future]) -> bool:
    """Whether a broken pool broke before any of its workers ran its first (no-op) task."""
    wait(started, timeout=10)  # the broken pool fails them all at once, shortly
    return all(f.done() and f.exception() is not None for f in started)

"""Running per-item tasks beyond one machine: the Ray executor of the pipelines.

The local executor (a process pool) is :func:`facehd.h5io.process_items`. :func:`run_ray` runs the
same task, item by item, as Ray tasks on a cluster (or on a local Ray instance) and records each
result in the same resumable writer, in the driver: the shards, the merge and ``failures.csv``
behave exactly as in a local build.

Ray is an optional dependency (``pip install 'facehd[ray]'``); it is imported only here, when
used.
"""

from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from facehd.errors import FacehdError, failure_reason
from facehd.h5io import (
    OutputWriteError,
    RunSummary,
    ShardedDatasetWriter,
    WorkItem,
    pending_items,
)
from facehd.pools import DIED, TaskFailed, call_task

__all__ = ["import_ray", "check_ray_address", "ray_session", "run_ray"]

CONNECT_TIMEOUT_SECONDS = 10.0
"""How long :func:`check_ray_address` waits for the head node to answer."""


def import_ray() -> Any:
    """Import Ray, or raise a :class:`~facehd.errors.FacehdError` naming the extra to install."""
    try:
        import ray
    except ImportError as exc:
        raise FacehdError(
            "the ray executor needs Ray: pip install 'facehd[ray]' (or pip install ray)"
        ) from exc
    return ray


def check_ray_address(address: str | None, timeout: float = CONNECT_TIMEOUT_SECONDS) -> None:
    """Refuse, within ``timeout`` seconds, a ``HOST:PORT`` address where nothing answers.

    Ray itself retries such an address for minutes, printing warnings, before it gives up.
    None, ``auto`` and ``local`` are left to Ray (they name no host); so is an address without a
    port.

    Raises
    ------
    FacehdError
        Naming the address and why it cannot be reached.
    """
    if address is None or address in ("auto", "local"):
        return
    host, sep, port = address.split("://", 1)[-1].rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        why = f"no answer within {timeout:g} s" if isinstance(exc, TimeoutError) else None
        raise FacehdError(
            f"no Ray cluster at {address} ({why or exc.strerror or exc}): start one there "
            "(ray start --head) or give the address of its head node, HOST:6379 ('auto': the "
            "cluster running on this machine)"
        ) from None


@contextmanager
def ray_session(address: str | None = None) -> Iterator[Any]:
    """Ray, connected for the ``with`` block: to the cluster at ``address`` (``auto``: the one
    running on this machine), or to a local Ray instance started for it when ``address`` is
    None and none is running; disconnected (the local instance stopped) on leaving the block.
    Already connected: nothing changes.

    The command line's handling of SIGTERM (an interrupt, :mod:`facehd.cli`) is kept: Ray
    replaces it with its own, which exits without saying what was kept.

    Raises
    ------
    FacehdError
        When the cluster cannot be reached (:func:`check_ray_address`) or joined.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    check_ray_address(address)
    main = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if main else None
    try:
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    except (ConnectionError, TimeoutError) as exc:
        raise FacehdError(f"cannot join the Ray cluster at {address}: {exc}") from None
    finally:
        if sigterm is not None:
            signal.signal(signal.SIGTERM, sigterm)
    try:
        yield ray
    finally:
        ray.shutdown()


def run_ray(
    writer: ShardedDatasetWriter,
    items: Sequence[WorkItem],
    fn: Callable[[WorkItem], Mapping[str, Any]],
    address: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    *,
    max_in_flight: int | None = None,
    num_cpus: float = 1.0,
) -> RunSummary:
    """Run ``fn`` on the items not yet written, as Ray tasks, recording results in ``writer``.

    Failures are recorded as :func:`facehd.h5io.process_items` records them (the same
    ``failures.csv``): an exception's reason, and :data:`facehd.pools.DIED` for a task
    whose worker process died (Ray runs it once: it is not retried).

    Parameters
    ----------
    writer : the dataset writer (its pending ids decide what runs).
    items : all the build's items.
    fn : picklable module-level task ``fn(item) -> field values``.
    address : Ray address (``"auto"``: the running cluster); None starts a local Ray instance
        when none is running (see :func:`ray_session`).
    progress : ``progress(done, total)`` once before the first item and after each item of
        this run.
    max_in_flight : tasks submitted at once (default: twice the cluster's CPUs).
    num_cpus : CPUs reserved per task.
    """
    todo, n_skipped, unnamed = pending_items(writer, items)
    if progress is not None:
        progress(0, len(todo))
    with ray_session(address) as ray:
        crashed = ray.exceptions.WorkerCrashedError
        # the task returns an exception's reason, as in a local pool: Ray cannot bring back an
        # exception whose constructor takes other arguments than its message (InputFileError)
        remote = ray.remote(num_cpus=num_cpus, max_retries=0)(call_task)
        if max_in_flight is None:
            max_in_flight = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
        queue = list(reversed(todo))
        in_flight: dict[Any, WorkItem] = {}
        written = done = 0
        failed = unnamed
        while queue or in_flight:
            while queue and len(in_flight) < max_in_flight:
                item = queue.pop()
                in_flight[remote.remote(fn, item)] = item
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in ready:
                item = in_flight.pop(ref)
                try:
                    result = ray.get(ref)
                    if isinstance(result, TaskFailed):
                        writer.fail(item.sample_id, item.source, result.reason)
                        failed += 1
                    else:
                        writer.add(item.sample_id, result)
                        written += 1
                except OutputWriteError:
                    raise  # the output cannot be written (a full disk): the build stops
                except crashed:
                    writer.fail(item.sample_id, item.source, DIED.reason)  # as a local pool
                    failed += 1
                except Exception as exc:  # every failure is recorded; the build continues
                    cause = getattr(exc, "cause", None)
                    writer.fail(item.sample_id, item.source, failure_reason(cause or exc))
                    failed += 1
                done += 1
                if progress is not None:
                    progress(done, len(todo))
    return RunSummary(len(items), n_skipped, written, failed)

"""Running per-item tasks beyond one machine: the Ray executor of the pipelines.

The local executor (a process pool) is :func:`facehd.h5io.process_items`. :func:`run_ray` runs the
same task, item by item, as Ray tasks on a cluster (or on a local Ray instance) and records each
result in the same resumable writer, in the driver: the shards, the merge and ``failures.csv``
behave exactly as in a local build.

Ray is an optional dependency (``pip install 'facehd[ray]'``); it is imported only here, when
used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from facehd.errors import FacehdError
from facehd.h5io import (
    OutputWriteError,
    RunSummary,
    ShardedDatasetWriter,
    WorkItem,
    failure_reason,
    pending_items,
)

__all__ = ["import_ray", "run_ray"]


def import_ray() -> Any:
    """Import Ray, or raise a :class:`~facehd.errors.FacehdError` naming the extra to install."""
    try:
        import ray
    except ImportError as exc:
        raise FacehdError(
            "the ray executor needs Ray: pip install 'facehd[ray]' (or pip install ray)"
        ) from exc
    return ray


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

    Parameters
    ----------
    writer : the dataset writer (its pending ids decide what runs).
    items : all the build's items.
    fn : picklable module-level task ``fn(item) -> field values``.
    address : Ray address (``"auto"``: the running cluster); None starts a local Ray instance
        when none is running.
    progress : ``progress(done, total)`` after each item of this run.
    max_in_flight : tasks submitted at once (default: twice the cluster's CPUs).
    num_cpus : CPUs reserved per task.
    """
    ray = import_ray()
    todo, n_skipped, unnamed = pending_items(writer, items)
    started = False
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
        started = True
    try:
        remote = ray.remote(num_cpus=num_cpus, max_retries=0)(fn)
        if max_in_flight is None:
            max_in_flight = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
        queue = list(reversed(todo))
        in_flight: dict[Any, WorkItem] = {}
        written = done = 0
        failed = unnamed
        while queue or in_flight:
            while queue and len(in_flight) < max_in_flight:
                item = queue.pop()
                in_flight[remote.remote(item)] = item
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in ready:
                item = in_flight.pop(ref)
                try:
                    result = ray.get(ref)
                    writer.add(item.sample_id, result)
                    written += 1
                except OutputWriteError:
                    raise  # the output cannot be written (a full disk): the build stops
                except Exception as exc:  # every failure is recorded; the build continues
                    cause = getattr(exc, "cause", None)
                    writer.fail(item.sample_id, item.source, failure_reason(cause or exc))
                    failed += 1
                done += 1
                if progress is not None:
                    progress(done, len(todo))
    finally:
        if started:
            ray.shutdown()
    return RunSummary(len(items), n_skipped, written, failed)

"""Worker pools: interrupts are the parent's, and workers do not outlive a killed parent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def _pool_script(tmp_path: Path, body: str) -> Path:
    script = tmp_path / "pool.py"
    script.write_text(
        textwrap.dedent(
            """
            import faulthandler, os, signal, sys, time
            from facehd.pools import process_pool, running_pool

            # Ctrl-C as in a terminal, whatever this process inherited (a job started in the
            # background by a script has SIGINT ignored); a hang shows every thread's stack
            print("inherited SIGINT:", signal.getsignal(signal.SIGINT), file=sys.stderr)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            faulthandler.dump_traceback_later(20, exit=True)

            def pid_then_sleep(seconds):
                time.sleep(0.2)
                return os.getpid()

            def sleep_then_pid(seconds):
                time.sleep(seconds)
                return os.getpid()

            def mark_then_sleep(marks, seconds):
                # a file per task as it starts: the test sees which tasks are in flight
                open(os.path.join(marks, f"{os.getpid()}-{time.monotonic_ns()}"), "x").close()
                time.sleep(seconds)
                return os.getpid()

            if __name__ == "__main__":
            """
        )
        + textwrap.indent(textwrap.dedent(body), "    ")
    )
    return script


def test_workers_exit_when_the_parent_is_killed(tmp_path):
    script = _pool_script(
        tmp_path,
        """
        pool = process_pool(2)
        pids = set(pool.map(pid_then_sleep, [0] * 8))
        print(" ".join(map(str, sorted(pids))), flush=True)
        futures = [pool.submit(sleep_then_pid, 60) for _ in range(2)]
        time.sleep(60)
        """,
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    workers = [int(p) for p in proc.stdout.readline().split()]
    assert workers and all(_alive(p) for p in workers)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    deadline = time.monotonic() + 15
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    left = [p for p in workers if _alive(p)]
    for p in left:  # do not leave them behind when the test fails
        os.kill(p, signal.SIGKILL)
    assert not left, f"workers {left} outlived their killed parent"


def test_a_signal_to_the_whole_group_is_the_parents_to_handle(tmp_path):
    """Ctrl-C or `timeout` signal every process of the group: the workers carry on with their
    task, the parent cancels the rest and ends cleanly (no broken pool, no traceback)."""
    script = _pool_script(
        tmp_path,
        """
        try:
            with running_pool(2) as pool:  # as the batch commands run theirs
                futures = [pool.submit(mark_then_sleep, sys.argv[1], 2.0) for _ in range(6)]
                print("started", flush=True)
                time.sleep(60)
        except KeyboardInterrupt:
            done = [f for f in futures if not f.cancelled()]
            print("finished", len(done), "cancelled", len(futures) - len(done), flush=True)
            print("ok", all(f.exception() is None for f in done), flush=True)
            sys.exit(130)
        """,
    )
    marks = tmp_path / "marks"
    marks.mkdir()
    proc = subprocess.Popen(
        [sys.executable, str(script), str(marks)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert proc.stdout.readline().strip() == "started"
    # both workers busy with their first task (spawned workers may take seconds to start on a
    # loaded machine: a fixed wait saw one task in flight, not two)
    deadline = time.monotonic() + 15
    while len(list(marks.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(list(marks.iterdir())) >= 2, "the workers did not start their tasks in 15 s"
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    finished, cancelled = int(out.split()[1]), int(out.split()[3])
    # those in flight finish (and those the pool had already queued to its workers, at most
    # workers + 1); the rest never start
    assert 2 <= finished <= 5 and cancelled >= 1 and finished + cancelled == 6
    assert "ok True" in out
    assert "Traceback" not in err and "BrokenProcessPool" not in err


# --- run_tasks: a batch that outlives its workers


def square_or_die(k: int) -> int:
    """A task: ``k * k``; -1 kills its process a moment after it starts (others are in flight
    then), -2 raises an error whose constructor cannot be called back from its message."""
    if k == -1:
        time.sleep(0.2)
        os._exit(3)
    if k == -2:
        from facehd.errors import InputFileError

        raise InputFileError("/in/bad.obj", "truncated file")
    time.sleep(0.4)
    return k * k


def failing_initializer() -> None:
    raise OSError("cannot open the model file")


def exiting_initializer() -> None:
    os._exit(1)


OFFSET = {"k": 0}


def add_offset() -> None:
    OFFSET["k"] = 100


def offset_square(k: int) -> int:
    return k * k + OFFSET["k"]


@pytest.mark.parametrize("workers", [1, 2])
def test_the_initializer_runs_before_the_tasks_wherever_they_run(workers, monkeypatch):
    """In this process (one worker) or in each worker process: every task sees its effect."""
    from facehd.pools import run_tasks

    monkeypatch.setitem(OFFSET, "k", 0)
    outcomes: dict[int, object] = {}
    run_tasks(
        offset_square, [1, 2, 3], outcomes.__setitem__, workers=workers, initializer=add_offset
    )
    assert outcomes == {0: 101, 1: 104, 2: 109}


@pytest.mark.parametrize("workers", [1, 2])
def test_run_tasks_gives_each_task_its_own_outcome(workers):
    from facehd.pools import TaskFailed, run_tasks

    tasks = [0, 1, -2, 2, 3, 4]
    outcomes: dict[int, object] = {}

    def done(i: int, outcome: object) -> None:
        assert i not in outcomes, f"task {i} reported twice"
        outcomes[i] = outcome

    run_tasks(square_or_die, tasks, done, workers=workers)
    assert outcomes == {
        i: TaskFailed("/in/bad.obj: truncated file") if k == -2 else k * k
        for i, k in enumerate(tasks)
    }


def test_a_task_that_kills_its_worker_fails_alone():
    """Python's pool fails every task in flight when one worker dies: those run again, and only
    the one that kills its worker again fails."""
    from facehd.pools import WORKER_DIED, TaskFailed, run_tasks

    tasks = [1, -1, 2, 3, 4, -1, 5]
    outcomes: dict[int, object] = {}
    run_tasks(square_or_die, tasks, outcomes.__setitem__, workers=2)
    died = TaskFailed(f"RuntimeError: {WORKER_DIED}")
    assert outcomes == {i: died if k == -1 else k * k for i, k in enumerate(tasks)}


class LoadsOnlyHere:
    """A task that pickles, but cannot be unpickled in another process (a function defined in
    an interactive session is one)."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.pid = os.getpid()

    def __setstate__(self, state: dict) -> None:
        if state["pid"] != os.getpid():
            raise ValueError("cannot be loaded here")
        self.__dict__.update(state)


def square_anything(task: object) -> object:
    """``square_or_die``, for :class:`LoadsOnlyHere` too; -3 returns what cannot be pickled,
    -4 what cannot be unpickled in another process."""
    import threading

    if isinstance(task, LoadsOnlyHere):
        return task.k * task.k
    if task == -3:
        return threading.Lock()
    if task == -4:
        return LoadsOnlyHere(4)
    return square_or_die(task)


def test_tasks_that_cannot_travel_fail_alone():
    """A task that cannot be pickled, one that cannot be loaded in the worker (which killed it:
    each such task ran again alone in a fresh pool and was recorded as a dead worker), a
    result that cannot be sent back (which stopped the batch) and one that cannot be loaded
    here: each fails its own task."""
    import threading

    from facehd.pools import TaskFailed, run_tasks

    lock = "TypeError: cannot pickle '_thread.lock' object"
    tasks = [1, LoadsOnlyHere(2), -3, threading.Lock(), 4, LoadsOnlyHere(5), 6, -4]
    outcomes: dict[int, object] = {}
    run_tasks(square_anything, tasks, outcomes.__setitem__, workers=2)
    assert outcomes == {
        0: 1,
        1: TaskFailed("the task cannot be loaded in a worker process: ValueError: cannot be "
                      "loaded here"),
        2: TaskFailed(f"the task's result cannot be sent back from its worker process: {lock}"),
        3: TaskFailed(f"the task cannot be sent to a worker process: {lock}"),
        4: 16,
        5: TaskFailed("the task cannot be loaded in a worker process: ValueError: cannot be "
                      "loaded here"),
        6: 36,
        7: TaskFailed("the task's result cannot be loaded: ValueError: cannot be loaded here"),
    }  # fmt: skip


@pytest.mark.parametrize("initializer", [failing_initializer, exiting_initializer])
def test_workers_that_cannot_start_stop_the_batch_with_a_clear_error(initializer):
    """Not a failure of every task (each run alone in a fresh pool that breaks again)."""
    from facehd.pools import WorkersDieAtStart, run_tasks

    outcomes: dict[int, object] = {}
    with pytest.raises(WorkersDieAtStart, match="die as they start"):
        run_tasks(
            square_or_die, [1, 2, 3, 4], outcomes.__setitem__, workers=2, initializer=initializer
        )
    assert outcomes == {}

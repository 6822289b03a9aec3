"""The training-speed and reconstruction-latency perf entries run (no timing assertions)."""

from __future__ import annotations

from facehd import perf


def test_training_and_reconstruction_entries_run_quick(one_thread):
    registry = perf.discover()
    rows = registry["hrn-train"].fn(True)
    assert [r.metric for r in rows] == ["base stage", "deretouch stage", "hrn stage"]
    assert all(r.unit == "it/s" and r.value > 0 for r in rows)
    rows = registry["hrn-reconstruct"].fn(True)
    assert rows and all(r.unit == "ms" and r.value > 0 and r.target for r in rows)

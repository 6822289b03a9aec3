"""The models package's perf entry runs and reports timings (no timing assertions)."""

from __future__ import annotations

from facehd import perf


def test_hrn_forward_entry_runs_quick():
    registry = perf.discover()
    assert "hrn-forward" in registry
    rows = registry["hrn-forward"].fn(True)
    metrics = [r.metric for r in rows]
    assert any("tiny" in m for m in metrics) and any("mid_net" in m for m in metrics)
    assert all(r.entry == "hrn-forward" and r.unit == "ms" and r.value > 0 for r in rows)

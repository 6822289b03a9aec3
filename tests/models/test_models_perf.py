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


def test_hrn_refine_entry_runs_quick():
    rows = perf.discover()["hrn-refine"].fn(True)
    assert len(rows) == 3 and all(r.unit == "s" and r.value > 0 for r in rows)
    assert "10 + 10 steps" in rows[0].metric and rows[0].passed is None
    assert "3 iterations (--fit-iterations)" in rows[1].metric and rows[1].passed is None
    assert "texture fitted, 10 steps (--texture-fit-steps)" in rows[2].metric

"""benchmarks.methods: finding a registered method, and writing its predictions."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import numpy as np
import pytest

from benchmarks import methods
from benchmarks.methods import MethodOutput, copy_topology, load_method, write_prediction
from facehd.landmarks import load_landmarks
from facehd.mesh import Mesh, load_mesh

PLUGIN = '''
from benchmarks.methods import MethodOutput


class Method:
    name = "plugin"

    def reconstruct(self, images):
        raise AssertionError("not called here")


class CallableMethod(Method):
    """A method object that is also callable: the entry point gives it, not a factory."""

    def __call__(self):
        raise AssertionError("a method object is not called as a factory")


def make():
    return Method()


def make_nothing():
    return object()


instance = CallableMethod()
'''


@pytest.fixture
def registered(tmp_path, monkeypatch):
    """Entry points into a plugin module written for the test."""
    (tmp_path / "facehd_test_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = {
        name: EntryPoint(name, f"facehd_test_plugin:{attr}", methods.ENTRY_POINT_GROUP)
        for name, attr in (("zeta", "make"), ("alpha", "make_nothing"), ("obj", "instance"))
    }
    monkeypatch.setattr(methods, "available_methods", lambda: eps)
    return eps


def test_load_method_calls_a_factory_and_takes_a_method_object_as_it_is(registered):
    assert type(load_method("zeta")).__name__ == "Method"
    assert type(load_method("obj")).__name__ == "CallableMethod"
    with pytest.raises(ValueError, match="'alpha': the entry point does not give a Reconstr"):
        load_method("alpha")
    with pytest.raises(ValueError, match=r"\(registered: alpha, obj, zeta\); score a folder"):
        load_method("nope")


def test_load_method_says_when_nothing_is_registered(monkeypatch):
    monkeypatch.setattr(methods, "available_methods", dict)
    with pytest.raises(ValueError, match=r"\(registered: none\)"):
        load_method("hrn")


def _tetra() -> Mesh:
    v = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0], [0, 0, 10]], dtype=np.float64)
    return Mesh(v, np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]]))


def test_write_prediction_writes_the_mesh_and_its_seven_landmarks(tmp_path):
    lm = np.arange(21, dtype=np.float64) / 7.0
    out = MethodOutput(_tetra(), lm)  # flat (21,): written as 7 rows of x y z
    mesh_path, lm_path = tmp_path / "a" / "b" / "img.obj", tmp_path / "a" / "b" / "img.txt"
    write_prediction(out, mesh_path, lm_path)
    np.testing.assert_array_equal(load_mesh(mesh_path).vertices, _tetra().vertices)
    np.testing.assert_array_equal(load_landmarks(lm_path), lm.reshape(7, 3))
    # without a landmarks path only the mesh is written
    write_prediction(MethodOutput(_tetra()), tmp_path / "c.obj")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "c.obj"]


def test_write_prediction_without_landmarks_for_now_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match=r"img\.obj: the method gave no 7 landmarks"):
        write_prediction(MethodOutput(_tetra()), tmp_path / "img.obj", tmp_path / "img.txt")
    assert list(tmp_path.iterdir()) == []


def test_copy_topology_copies_the_keypoints_and_their_mesh(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "topo.txt").write_text("1 0.2 0.3\n")
    (src / "topo.obj").write_text("v 0 0 0\n")
    copy_topology(src / "topo.txt", tmp_path / "pred" / "x")
    assert (tmp_path / "pred" / "x" / "topo.txt").read_text() == "1 0.2 0.3\n"
    assert (tmp_path / "pred" / "x" / "topo.obj").read_text() == "v 0 0 0\n"

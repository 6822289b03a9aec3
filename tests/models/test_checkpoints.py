"""Reading checkpoints: every way a file can fail to be one is named; parts, prefixes and
states are checked before anything is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from facehd.errors import InputFileError
from models.checkpoints import (
    check_parts,
    compare_state,
    read_checkpoint,
    save_checkpoint_atomic,
    strip_prefix,
)


def test_files_that_are_no_checkpoint_say_what_they_are(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(InputFileError, match=r"empty\.pt: empty file \(0 bytes\)"):
        read_checkpoint(empty)
    text = tmp_path / "text.pt"
    text.write_bytes(b"hello world, not a checkpoint")
    with pytest.raises(InputFileError, match="neither a zip archive nor a pickle"):
        read_checkpoint(text)
    whole = save_checkpoint_atomic(tmp_path / "whole.pt", {"w": torch.ones(1000)}).read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(whole[: len(whole) // 3])  # begins as a zip archive, ends early
    with pytest.raises(InputFileError, match=r"cut\.pt: .*cut short or damaged"):
        read_checkpoint(cut)
    listed = tmp_path / "list.pt"
    torch.save([torch.ones(2)], listed)
    with pytest.raises(InputFileError, match="must hold a dict, found list"):
        read_checkpoint(listed)


def test_non_finite_values_are_found_in_nested_lists_by_their_path(tmp_path: Path) -> None:
    bad = torch.ones(3)
    bad[1] = float("inf")
    data = {"state": {"layers": [torch.ones(2), bad]}, "step": torch.tensor([7])}
    path = save_checkpoint_atomic(tmp_path / "inf.pt", data)
    with pytest.raises(InputFileError, match=r"state\.layers\.1 holds NaN or infinite values"):
        read_checkpoint(path)
    fine = save_checkpoint_atomic(tmp_path / "ok.pt", {"ids": torch.arange(3), "w": torch.ones(2)})
    assert set(read_checkpoint(fine)) == {"ids", "w"}


def test_parts_of_another_type_or_missing_are_named_once() -> None:
    data = {"state": {"hrn": {}, "steps": True}, "stages": [1, 2]}
    check_parts("m.pt", data, {"state.hrn": dict, "stages": list})
    with pytest.raises(InputFileError) as err:
        check_parts(
            "m.pt",
            data,
            {
                "state.steps": int,  # a bool is no count
                "stages.first": dict,  # a list where a mapping should be
                "extra.a": dict,
                "extra.b": dict,  # the same missing part: said once
            },
        )
    said = str(err.value)
    assert said.endswith(
        "damaged facehd checkpoint: 'state.steps' is a bool, 'stages' is a list, no 'extra'"
    )


def test_a_prefix_is_dropped_only_when_every_key_has_it() -> None:
    assert strip_prefix({"module.a": 1, "module.b": 2}) == {"a": 1, "b": 2}
    assert strip_prefix({"module.a": 1, "b": 2}) == {"module.a": 1, "b": 2}
    assert strip_prefix({}) == {}


def test_a_state_entry_that_is_no_tensor_is_a_mismatch() -> None:
    net = torch.nn.Linear(2, 3)
    state = {"weight": [[0.0, 0.0]] * 3, "bias": torch.zeros(3), "other": torch.zeros(1)}
    report, usable = compare_state(net, state, part="net")
    assert set(usable) == {"bias"}
    assert report.mismatched == [("weight", (3, 2), ())]
    assert report.unexpected == ["other"] and report.missing == []

"""``build-priors``'s output: a second build into a dataset being written is refused at once,
and --overwrite never replaces a file that is not a dataset."""

from __future__ import annotations

import os

import pytest

from facehd.errors import FacehdError, InputFileError


def test_a_second_build_into_the_same_output_is_refused_and_overwrite_keeps_other_files(
    tmp_path,
):
    from facehd.csvtext import locked
    from pipelines.build_priors import PriorsConfig, build_priors

    out = tmp_path / "p.h5"
    with locked(out):  # what a running build holds
        with pytest.raises(FacehdError, match=rf"another facehd build.*pid {os.getpid()}"):
            build_priors([], out, PriorsConfig(overwrite=True))
    assert not out.with_name("p.h5.shards").exists()
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    for overwrite in (False, True):
        with pytest.raises(InputFileError, match=r"notes\.txt: .*not a facehd dataset") as exc:
            build_priors([], notes, PriorsConfig(overwrite=overwrite))
        assert overwrite or "overwrite" not in str(exc.value).split(": ", 1)[1]
    assert notes.read_text() == "my notes"
    assert build_priors([], out, PriorsConfig()).n_samples == 0  # free again

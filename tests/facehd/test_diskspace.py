"""facehd.diskspace: the sizes and durations it writes, and the refusal of a job too large."""

from __future__ import annotations

import shutil

import pytest

import facehd.diskspace as diskspace
from facehd.diskspace import check_room, duration_text, free_bytes, size_text
from facehd.errors import InputFileError


@pytest.mark.parametrize(
    ("n_bytes", "text"),
    [
        (0, "0 B"),
        (7, "7 B"),
        (999, "999 B"),
        (999.6, "1 kB"),  # rounds to 1000 B: written in the next unit
        (1000, "1 kB"),
        (1.64e4, "16 kB"),
        (17e6, "17 MB"),
        (2.04e9, "2 GB"),
        (1.6e12, "1.6 TB"),
        (5e18, "5000 PB"),  # no unit above PB
    ],
)
def test_size_text(n_bytes: float, text: str) -> None:
    assert size_text(n_bytes) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0 s"),
        (40, "40 s"),
        (59.4, "59 s"),
        (60, "1 min"),
        (720, "12 min"),
        (3600, "1 hour"),
        (3700, "1 hour"),  # 1.03: two digits
        (86400, "1 day"),
        (3.4 * 3600, "3.4 hours"),
        (86400 * 81, "81 days"),
    ],
)
def test_duration_text(seconds: float, text: str) -> None:
    assert duration_text(seconds) == text


def test_free_bytes_of_a_folder_not_made_yet_is_its_disks(tmp_path) -> None:
    later = tmp_path / "not" / "made" / "yet"
    got = free_bytes(later)
    now = shutil.disk_usage(tmp_path).free
    assert abs(got - now) < 64 * 2**20  # the same disk, give or take what others wrote


def test_check_room_passes_what_fits_and_names_what_does_not(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(diskspace, "free_bytes", lambda path: 10_000_000)
    kw = dict(request="--subjects 40", item="scan", bytes_each=250_000.0, seconds_each=90.0)
    check_room(tmp_path, items=40, **kw)  # exactly the free space
    with pytest.raises(InputFileError) as info:
        check_room(tmp_path, items=41, **kw)
    message = str(info.value)
    assert str(tmp_path) in message
    assert "--subjects 40: 41 scans to write, about 10 MB (250 kB a scan)" in message
    assert "1 hour on one core" in message and "10 MB free (room for about 40)" in message

"""YAML as facehd reads it: exponent numbers in every form YAML 1.2 allows are numbers, and
written back they read as they were."""

from __future__ import annotations

import pytest
import yaml

from facehd.yamlio import DuplicateKeyError, safe_dump_text, safe_load_unique


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1e-4", 1e-4),
        ("-1e-4", -1e-4),
        ("+2E5", 2e5),
        (".5e3", 500.0),
        ("-.5e+2", -50.0),
        ("1_000e2", 1e5),
        ("5e3", 5000.0),
    ],
)
def test_exponent_numbers_are_numbers(text: str, value: float) -> None:
    got = safe_load_unique(f"lr: {text}\n")["lr"]
    assert isinstance(got, float) and got == pytest.approx(value, rel=1e-15)
    if "." not in text:  # a YAML 1.1 loader leaves these strings
        assert yaml.safe_load(f"lr: {text}\n")["lr"] == text


def test_strings_of_that_form_are_written_so_they_read_back_as_strings() -> None:
    data = {"name": "1e-4", "other": ".5e3", "lr": 1e-4}
    assert safe_load_unique(safe_dump_text(data)) == data


def test_a_key_given_twice_names_both_lines() -> None:
    with pytest.raises(
        DuplicateKeyError, match=r"line 3: key 'a' is given twice \(first on line 1\)"
    ):
        safe_load_unique("a: 1\nb: 2\na: 3\n")

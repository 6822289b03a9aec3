"""How facehd writes a value into a CSV cell: one format for every CSV the project writes."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["format_value"]


def format_value(value: Any) -> str:
    """CSV text of a value: full-precision floats (``repr``), empty for None and NaN,
    ``true``/``false`` for booleans.

    NumPy scalars are written as the Python numbers they hold (``repr`` of ``np.float64`` would
    write ``np.float64(...)``)."""
    if value is None:
        return ""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)

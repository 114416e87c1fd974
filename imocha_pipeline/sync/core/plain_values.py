"""Small value helpers shared by the sync steps: plain Python scalars and loose equality."""

from __future__ import annotations

from typing import Any

import pandas as pd


def plain(value: Any) -> Any:
    """pandas/numpy scalars to plain Python (JSON-safe), missing values to None."""
    if value is None or isinstance(value, (list, dict, str)):
        return value
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        return value
    return value.item() if hasattr(value, "item") else value


def same_value(left: Any, right: Any) -> bool:
    """Loose equality for values read back from Degreed (numbers as floats, missing as empty)."""
    left, right = plain(left), plain(right)
    if left in (None, "") and right in (None, ""):
        return True
    try:
        return abs(float(left) - float(right)) < 1e-6
    except (TypeError, ValueError):
        return str(left).strip() == str(right).strip()

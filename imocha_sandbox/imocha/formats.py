"""Values on the wire: reading request fields (keys, timestamps, integers) and writing iMocha's formats."""

from __future__ import annotations

import base64
import math
from datetime import UTC, datetime
from typing import Any


def lower_keys(data: dict[str, Any]) -> dict[str, Any]:
    """Request properties are bound case-insensitively (spec §3.2): look them up lower-cased."""
    return {str(key).lower(): value for key, value in data.items()}


def iso_millis_z(moment: datetime) -> str:
    """``2026-08-20T07:59:49.393Z``: the report's ``attemptedOn`` format."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def round_half_up(value: float) -> float:
    return float(math.floor(value + 0.5))


def opaque_token(prefix: str, number: int) -> str:
    """The base64 token iMocha puts in test and report URLs."""
    return base64.b64encode(f"{prefix}{number}".encode()).decode()


def as_int(value: Any) -> int | None:
    """An int, or a string of digits, as an int; None for anything else (bools included)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None

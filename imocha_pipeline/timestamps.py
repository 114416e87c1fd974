"""The one tolerant reader of timestamps, for both clients and both simulators.

iMocha and Degreed write time in several ways (spec §3 of each): ISO 8601 with ``Z``, an offset or no zone at all
(read as UTC), 0 to 7 fraction digits (.NET style), a space instead of ``T``, a bare date (midnight); Degreed's
captured answers also carry ``"None"`` and .NET's empty value ``0001-01-01T00:00:00``, which mean "no value".
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

_NULL_STRINGS = {"", "none", "null"}
_TIMESTAMP = re.compile(
    r"^(\d{4}-\d{2}-\d{2})(?:[T ](\d{2}:\d{2}(?::\d{2})?)(?:\.(\d{1,7})\d*)?)?\s*(Z|z|[+-]\d{2}:?\d{2})?$"
)


def parse_utc(value: Any, *, strict: bool = False) -> datetime | None:
    """``value`` as a tz-aware UTC datetime; None for no value (None, ``""``, ``"None"``, ``"null"``, year 1).

    A datetime is taken as it is (naive = UTC). Text that is not a timestamp gives None, or ``ValueError`` when
    ``strict`` (where a malformed answer must be reported rather than read as missing).
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str):
        if strict:
            raise ValueError(f"not a timestamp: {value!r}")
        return None
    text = value.strip()
    if text.lower() in _NULL_STRINGS:
        return None
    match = _TIMESTAMP.match(text)
    if not match:
        if strict:
            raise ValueError(f"not a timestamp: {text!r}")
        return None
    day, clock, fraction, zone = match.groups()
    try:
        parsed = datetime.fromisoformat(f"{day}T{clock or '00:00'}")
    except ValueError:
        if strict:
            raise ValueError(f"not a timestamp: {text!r}") from None
        return None
    if parsed.year == 1:
        return None
    if fraction:
        parsed = parsed.replace(microsecond=int(fraction[:6].ljust(6, "0")))
    parsed = parsed.replace(tzinfo=UTC)
    if zone and zone not in ("Z", "z"):
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        parsed -= sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return parsed

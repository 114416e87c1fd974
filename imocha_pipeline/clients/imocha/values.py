"""iMocha's values as the pipeline reads them: numbers, timestamps and attempt statuses.

Numbers may arrive as strings; timestamps come with or without ``Z`` and fractions (naive = UTC); one attempt
status has several spellings (``Completed``/``complete``, ``TestLeft``/``Test Left``).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

_STATUS_NAMES = {
    "complete": "Complete",
    "completed": "Complete",
    "testleft": "Test Left",
    "terminated": "Terminated",
    "inprogress": "In Progress",
    "pending": "Pending",
    "cancelled": "Cancelled",
    "canceled": "Cancelled",
    "expired": "Expired",
}


def normalize_status(status: str | None) -> str | None:
    """One spelling per attempt status: ``Completed``/``complete`` → ``Complete``, ``TestLeft`` → ``Test Left``."""
    if status is None:
        return None
    key = "".join(ch for ch in status.lower() if ch.isalpha())
    return _STATUS_NAMES.get(key, status.strip())


def to_number(value: Any) -> float | None:
    """A JSON number or numeric string as float; anything else (bools, junk) as None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def format_utc(moment: datetime) -> str:
    """``YYYY-MM-ddTHH:mm:ssZ`` (spec §3.4)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def as_utc(moment: datetime | date) -> datetime:
    """A datetime in UTC: a date is its midnight, a naive datetime is taken as UTC."""
    if not isinstance(moment, datetime):
        return datetime(moment.year, moment.month, moment.day, tzinfo=UTC)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)

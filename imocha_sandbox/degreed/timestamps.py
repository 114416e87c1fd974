"""Timestamps as Degreed writes and reads them, and the simulator's clock as a UTC date-time."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime


def _utc_to_the_second(value: datetime) -> tuple[datetime, str]:
    """``value`` in UTC (a naive value is taken as UTC already) and its text up to the seconds, without a zone."""
    value = value.astimezone(UTC) if value.tzinfo else value
    return value, value.strftime("%Y-%m-%dT%H:%M:%S")


def format_degreed_timestamp(value: datetime | None) -> str | None:
    """Degreed's .NET style: UTC without a zone, 7 fraction digits when there is a fraction."""
    if value is None:
        return None
    value, text = _utc_to_the_second(value)
    return f"{text}.{value.microsecond:06d}0" if value.microsecond else text


def format_dotnet_timestamp(value: datetime | None) -> str | None:
    """The documented read shape: UTC without a zone, 0-7 fraction digits with trailing zeros dropped.

    This is how .NET writes ``DateTime`` values (``yyyy-MM-ddTHH:mm:ss.FFFFFFF``) and matches every sample in
    the spec: ``2021-11-11T00:00:00``, ``2021-11-11T20:56:41.093``, ``2021-10-19T10:01:40.2467123``.
    """
    if value is None:
        return None
    value, text = _utc_to_the_second(value)
    fraction = f"{value.microsecond:06d}".rstrip("0")
    return f"{text}.{fraction}" if fraction else text


def iso_z(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z`` (how ``state()`` shows every date-time)."""
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def utc_now(clock: Callable[[], float]) -> datetime:
    """The simulator's clock (epoch seconds) as an aware UTC date-time."""
    return datetime.fromtimestamp(clock(), UTC)

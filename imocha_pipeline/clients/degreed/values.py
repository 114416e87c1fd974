"""Tolerant reading of Degreed's values: timestamps, text, booleans, numbers and relationships.

Where the spec says Degreed's behaviour is unknown, these cope with every variant the simulator can be set to:
relationships as an object or an array, timestamps with 0-7 fraction digits and no zone, ``"None"``/``"True"``
strings.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

_NULL_STRINGS = {"", "none", "null"}


def format_degreed_datetime(value: datetime) -> str:
    """What Degreed's callers send: ``yyyy-mm-ddTHH:MM:SS`` in UTC (a naive value is taken as UTC).

    Sub-second precision is dropped, so compare Degreed's values with ours at whole seconds.
    """
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S")


def optional_text(value: Any) -> str | None:
    """The value as text; None for null and for ``""``, ``"None"``, ``"null"`` (any case)."""
    if value is None:
        return None
    text = str(value)
    return None if text.strip().lower() in _NULL_STRINGS else text


def optional_bool(value: Any) -> bool | None:
    """A boolean, or ``"true"``/``"1"``/``"yes"`` and their opposites as text; None for anything else."""
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"true", "1", "yes"}:
        return True
    if text in {"false", "0", "no"}:
        return False
    return None


def optional_number(value: Any) -> float | int | None:
    """A number, or a numeric string (whole numbers without a point stay ``int``); None for anything else."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    text = str(value).strip()
    if text.lower() in _NULL_STRINGS:
        return None
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) if number.is_integer() and "." not in text else number


def optional_int(value: Any) -> int | None:
    """``optional_number`` cut to a whole number."""
    number = optional_number(value)
    return None if number is None else int(number)


def relationship_ids(resource: Mapping[str, Any], name: str) -> list[str]:
    """Ids in a resource's relationship ``name``, whether ``relationships`` is an object or an array.

    Degreed's samples show both ``{"user": {"data": {...}}}`` and ``[{"user": {"data": {...}}}]``;
    ``data`` itself may be one object or a list. Names match case-insensitively.
    """
    raw = resource.get("relationships")
    entries: list[tuple[str, Any]] = []
    if isinstance(raw, Mapping):
        entries = list(raw.items())
    elif isinstance(raw, list):
        entries = [item for element in raw if isinstance(element, Mapping) for item in element.items()]
    ids: list[str] = []
    for key, value in entries:
        if str(key).lower() != name.lower() or not isinstance(value, Mapping):
            continue
        data = value.get("data")
        for item in data if isinstance(data, list) else [data]:
            if isinstance(item, Mapping) and optional_text(item.get("id")) is not None:
                ids.append(str(item["id"]))
    return ids


def first_relationship_id(resource: Mapping[str, Any], name: str) -> str | None:
    """The first id of ``relationship_ids``, or None."""
    ids = relationship_ids(resource, name)
    return ids[0] if ids else None

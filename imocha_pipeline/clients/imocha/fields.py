"""Tolerant reading of one iMocha JSON object: keys in any casing, numbers as strings, errors that say where.

The docs and the wire disagree (spec §3.2, §10.2): keys are matched without regard to case
(``sectionID``/``sectionId``), numbers may arrive as strings, timestamps come with or without ``Z`` and
fractions (naive = UTC), and optional fields that are missing become None. A value of the wrong kind raises
``ImochaPayloadError`` naming the endpoint, the object and the field.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from imocha_pipeline.clients.imocha.errors import ImochaPayloadError, payload_error
from imocha_pipeline.clients.imocha.values import to_number
from imocha_pipeline.timestamps import parse_utc


class Fields:
    """Case-insensitive view of one JSON object from ``endpoint``."""

    def __init__(self, obj: Any, endpoint: str, what: str):
        if not isinstance(obj, Mapping):
            raise payload_error(endpoint, f"{what} is {_kind(obj)}, expected an object")
        self.obj = obj
        self.endpoint = endpoint
        self.what = what
        self._lower = {str(key).lower(): value for key, value in obj.items()}

    def get(self, *names: str) -> Any:
        """The first present, non-null value among ``names`` (any casing)."""
        for name in names:
            value = self._lower.get(name.lower())
            if value is not None:
                return value
        return None

    def has(self, name: str) -> bool:
        return name.lower() in self._lower

    def text(self, *names: str) -> str | None:
        value = self.get(*names)
        if value is None:
            return None
        if isinstance(value, Mapping | list):
            raise self._bad(names[0], value, "text")
        return str(value)

    def integer(self, *names: str, required: bool = False) -> int | None:
        value = self.get(*names)
        if value is None:
            if required:
                raise payload_error(self.endpoint, f"{self.what} has no {names[0]!r}")
            return None
        number = to_number(value)
        if number is None or not math.isfinite(number) or number != int(number):
            raise self._bad(names[0], value, "whole number")
        return int(number)

    def number(self, *names: str) -> float | None:
        value = self.get(*names)
        if value is None:
            return None
        number = to_number(value)
        if number is None or not math.isfinite(number):  # NaN / Infinity are not scores
            raise self._bad(names[0], value, "number")
        return number

    def boolean(self, *names: str) -> bool | None:
        value = self.get(*names)
        if value is None or isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes"):
            return True
        if text in ("false", "0", "no"):
            return False
        raise self._bad(names[0], value, "boolean")

    def moment(self, *names: str) -> datetime | None:
        value = self.get(*names)
        if value is None or value == "":
            return None
        parsed = parse_utc(value)
        if parsed is None:
            raise self._bad(names[0], value, "timestamp")
        return parsed

    def items(self, *names: str) -> list[Any] | None:
        """A list field: None when absent, an error when present but not a list."""
        value = self.get(*names)
        if value is None:
            return None
        if not isinstance(value, list):
            raise payload_error(self.endpoint, f"{self.what} field {names[0]!r} is {_kind(value)}, expected a list")
        return value

    def _bad(self, name: str, value: Any, expected: str) -> ImochaPayloadError:
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:60] + "…"
        return payload_error(self.endpoint, f"{self.what} field {name!r} is not a {expected}: {shown}")


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
             float: "a number"}
    return kinds.get(type(value), f"a {type(value).__name__}")

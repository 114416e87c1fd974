"""Parsers of setting values: each turns the environment's text into a typed value, or refuses it.

A parser knows nothing of the setting's name: it raises ``Refused`` saying what the value must be, and the
``Setting`` turns that into an ``InvalidSettingError`` naming the setting and the value. Each parser also writes
a value back as text (``format``: the defaults in the README, and what ``Setting.check`` validates) and lists a
few values it refuses (``bad_examples``, for the tests).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import date, datetime
from itertools import pairwise
from pathlib import Path
from string import Formatter
from typing import Generic, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")


class Refused(ValueError):
    """What a value must be (``expectation``, e.g. "a whole number of at least 1") and an optional hint."""

    def __init__(self, expectation: str, hint: str = ""):
        self.expectation = expectation
        self.hint = hint
        super().__init__(expectation)


@dataclass(frozen=True)
class Parser(Generic[T]):
    """The base: text in, typed value out."""

    def parse(self, raw: str) -> T:
        """``raw`` is stripped and not empty (an empty value means the setting's default)."""
        raise NotImplementedError

    def format(self, value: T) -> str:
        return "" if value is None else str(value)

    def bad_examples(self) -> tuple[str, ...]:
        return ()


def _number_text(value: float) -> str:
    """``30`` for 30.0, ``0.2``, ``12.5``: the shortest text that reads back as the same float."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _range_text(noun: str, minimum: float | None, maximum: float | None, above: float | None = None) -> str:
    low = None if minimum is None else _number_text(minimum)
    high = None if maximum is None else _number_text(maximum)
    if above is not None:
        return f"{noun} above {_number_text(above)}" + (f" and at most {high}" if high is not None else "")
    if low is not None and high is not None:
        return f"{noun} from {low} to {high}"
    if low is not None:
        return f"{noun} of at least {low}"
    if high is not None:
        return f"{noun} of at most {high}"
    return noun


@dataclass(frozen=True)
class Text(Parser[str]):
    """Any text (stripped), optionally at least ``min_length`` characters."""

    min_length: int = 0
    hint: str = ""

    def parse(self, raw: str) -> str:
        if len(raw) < self.min_length:
            raise Refused(f"at least {self.min_length} characters", self.hint)
        return raw

    def bad_examples(self) -> tuple[str, ...]:
        return ("x" * (self.min_length - 1),) if self.min_length > 1 else ()


@dataclass(frozen=True)
class Url(Parser[str]):
    """An http(s) URL with a host."""

    def parse(self, raw: str) -> str:
        parts = urlsplit(raw)
        if parts.scheme.lower() not in {"http", "https"} or not parts.netloc:
            raise Refused("an http or https URL such as https://host.example.com")
        return raw

    def bad_examples(self) -> tuple[str, ...]:
        return ("api.example.com", "ftp://example.com/x")


_DATABASE_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+._-]*://")


@dataclass(frozen=True)
class DatabaseUrl(Parser[str]):
    """A SQLAlchemy URL (``dialect[+driver]://...``)."""

    def parse(self, raw: str) -> str:
        if not _DATABASE_URL.match(raw):
            raise Refused("a SQLAlchemy URL such as postgresql://user@host/db or sqlite:////path/to/file.sqlite")
        return raw

    def bad_examples(self) -> tuple[str, ...]:
        return ("staging.sqlite",)


@dataclass(frozen=True)
class Template(Parser[str]):
    """A ``str.format`` template using only the ``fields`` placeholders."""

    fields: tuple[str, ...] = ()

    def parse(self, raw: str) -> str:
        expectation = f"a template with the placeholders {', '.join('{' + f + '}' for f in self.fields)} only"
        try:
            names = {name for _, name, _, _ in Formatter().parse(raw) if name}
        except ValueError:
            raise Refused(expectation, "the braces do not match") from None
        unknown = sorted(names - set(self.fields))
        if unknown:
            raise Refused(expectation, f"unknown: {', '.join(unknown)}")
        return raw

    def bad_examples(self) -> tuple[str, ...]:
        return ("{no_such_placeholder}", "{unclosed")


@dataclass(frozen=True)
class WholeNumber(Parser[int]):
    """A whole number, optionally within ``minimum``..``maximum``."""

    minimum: int | None = None
    maximum: int | None = None

    def _expectation(self) -> str:
        return _range_text("a whole number", self.minimum, self.maximum)

    def parse(self, raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise Refused(self._expectation()) from None
        if (self.minimum is not None and value < self.minimum) or (self.maximum is not None and value > self.maximum):
            raise Refused(self._expectation())
        return value

    def bad_examples(self) -> tuple[str, ...]:
        found = ["lots", "1.5"]
        if self.minimum is not None:
            found.append(str(self.minimum - 1))
        if self.maximum is not None:
            found.append(str(self.maximum + 1))
        return tuple(found)


@dataclass(frozen=True)
class Number(Parser[float]):
    """A finite number, optionally at least ``minimum`` (or above ``above``) and at most ``maximum``."""

    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None
    noun: str = "a number"

    def _expectation(self) -> str:
        return _range_text(self.noun, self.minimum, self.maximum, self.above)

    def parse(self, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise Refused(self._expectation()) from None
        if (not math.isfinite(value) or (self.minimum is not None and value < self.minimum)
                or (self.above is not None and value <= self.above)
                or (self.maximum is not None and value > self.maximum)):
            raise Refused(self._expectation())
        return value

    def format(self, value: float) -> str:
        return _number_text(value)

    def bad_examples(self) -> tuple[str, ...]:
        found = ["soon", "nan"]
        if self.minimum is not None:
            found.append(_number_text(self.minimum - 1 if self.minimum >= 1 else self.minimum - 0.1))
        if self.above is not None:
            found.append(_number_text(self.above))
        if self.maximum is not None:
            found.append(_number_text(self.maximum + 0.5))
        return tuple(found)


def share() -> Number:
    """A share: a number from 0 to 1."""
    return Number(minimum=0.0, maximum=1.0, noun="a share")


TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


@dataclass(frozen=True)
class Flag(Parser[bool]):
    """On or off: 1/true/yes/on or 0/false/no/off (any case)."""

    def parse(self, raw: str) -> bool:
        word = raw.lower()
        if word in TRUE_WORDS:
            return True
        if word in FALSE_WORDS:
            return False
        raise Refused(f"true or false ({'/'.join(TRUE_WORDS)} or {'/'.join(FALSE_WORDS)})")

    def format(self, value: bool) -> str:
        return "1" if value else "0"

    def bad_examples(self) -> tuple[str, ...]:
        return ("maybe",)


_CRON_ALIASES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# (lowest, highest, names) of minute, hour, day of month, month, day of week (0 and 7 are Sunday)
_CRON_FIELDS = ((0, 59, ()), (0, 23, ()), (1, 31, ()), (1, 12, _MONTHS), (0, 7, _DAYS))


def _cron_value(text: str, low: int, high: int, names: tuple[str, ...]) -> int | None:
    if text.lower() in names:
        return names.index(text.lower()) + (1 if names is _MONTHS else 0)
    if text.isdigit() and low <= int(text) <= high:
        return int(text)
    return None


def _cron_item_ok(item: str, low: int, high: int, names: tuple[str, ...], wildcard: set[str]) -> bool:
    base, _, step = item.partition("/")
    if step and not (step.isdigit() and int(step) > 0):
        return False
    if base in wildcard:
        return True
    first, dash, last = base.partition("-")
    start = _cron_value(first, low, high, names)
    if not dash:
        return start is not None
    end = _cron_value(last, low, high, names)
    return start is not None and end is not None and start <= end


def valid_cron(expression: str) -> bool:
    """A standard five-field cron expression (minute hour day-of-month month day-of-week: numbers, names,
    ``*``, ranges, lists, steps) or one of the ``@daily``-style aliases."""
    if expression.lower() in _CRON_ALIASES:
        return True
    fields = expression.split()
    if len(fields) != 5:
        return False
    for index, (text, (low, high, names)) in enumerate(zip(fields, _CRON_FIELDS, strict=True)):
        wildcard = {"*", "?"} if index in (2, 4) else {"*"}
        if not all(item and _cron_item_ok(item, low, high, names, wildcard) for item in text.split(",")):
            return False
    return True


@dataclass(frozen=True)
class Cron(Parser[str]):
    """A cron expression (see ``valid_cron``), kept as written."""

    def parse(self, raw: str) -> str:
        if not valid_cron(raw):
            raise Refused("a five-field cron expression (minute hour day-of-month month day-of-week) such as "
                          "'0 * * * *'")
        return raw

    def bad_examples(self) -> tuple[str, ...]:
        return ("every hour", "61 * * * *", "* * * *")


@dataclass(frozen=True)
class Day(Parser[date]):
    """A calendar date written YYYY-MM-DD."""

    def parse(self, raw: str) -> date:
        try:
            return datetime.strptime(raw, "%Y-%m-%d").date()
        except ValueError:
            raise Refused("a date written YYYY-MM-DD") from None

    def format(self, value: date) -> str:
        return value.isoformat()

    def bad_examples(self) -> tuple[str, ...]:
        return ("2024-13-01", "yesterday")


@dataclass(frozen=True)
class CommaList(Parser[tuple[str, ...]]):
    """Comma-separated values, each stripped, empty ones dropped; at least one."""

    def parse(self, raw: str) -> tuple[str, ...]:
        values = tuple(part.strip() for part in raw.split(",") if part.strip())
        if not values:
            raise Refused("a comma-separated list of at least one value")
        return values

    def format(self, value: tuple[str, ...]) -> str:
        return ",".join(value)

    def bad_examples(self) -> tuple[str, ...]:
        return (",",)


@dataclass(frozen=True)
class Numbers(Parser[tuple[float, ...]]):
    """``count`` comma-separated numbers, strictly increasing, each strictly between ``above`` and ``below``."""

    count: int = 1
    above: float = -math.inf
    below: float = math.inf

    def parse(self, raw: str) -> tuple[float, ...]:
        expectation = (f"{self.count} comma-separated numbers, increasing, each above {_number_text(self.above)} "
                       f"and below {_number_text(self.below)}")
        try:
            values = tuple(float(part) for part in raw.split(","))
        except ValueError:
            raise Refused(expectation) from None
        increasing = all(low < high for low, high in pairwise(values))
        if len(values) != self.count or not increasing or not all(self.above < v < self.below for v in values):
            raise Refused(expectation)
        return values

    def format(self, value: tuple[float, ...]) -> str:
        return ",".join(_number_text(v) for v in value)

    def bad_examples(self) -> tuple[str, ...]:
        return (",".join(["1"] * (self.count + 1)), "x", _number_text(self.above))


@dataclass(frozen=True)
class FilePath(Parser[str]):
    """The path of an existing file, kept as written."""

    def parse(self, raw: str) -> str:
        if not Path(raw).is_file():
            raise Refused("the path of an existing file")
        return raw

    def bad_examples(self) -> tuple[str, ...]:
        return ("/nonexistent/imocha_pipeline/missing.csv",)


@dataclass(frozen=True)
class Choice(Parser[str]):
    """One of ``choices``, matched without regard to case, ``_`` read as ``-``."""

    choices: tuple[str, ...] = ()
    hint: str = ""

    def parse(self, raw: str) -> str:
        value = raw.lower().replace("_", "-")
        if value not in self.choices:
            raise Refused(f"one of {', '.join(self.choices)}", self.hint)
        return value

    def bad_examples(self) -> tuple[str, ...]:
        return ("nowhere",)


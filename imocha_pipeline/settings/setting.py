"""``Setting``: one environment setting, with its name, default, parser, documentation and README group.

The one place the pipeline reads its environment is ``read_environment``; everything else asks a ``Setting``
for its ``value()`` (read when called: a setting changed at run time is seen by the next read).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from imocha_pipeline.settings.errors import InvalidSettingError, MissingSettingError
from imocha_pipeline.settings.parsers import Parser, Refused

T = TypeVar("T")

# The README's groups, in the order the tables show them. "sensors and callbacks" is the table under
# "### Sensors"; the others are the tables of "## Settings".
CONNECTIONS = "connections"
RATE_LIMITS = "rate limits"
STAGING = "staging"
MAPPING = "mapping"
GUARDS = "guards and dry run"
SCHEDULES = "schedules"
DELIVERY = "delivery and retries"
CALLBACK_ENDPOINT = "callback endpoint"
SENSORS = "sensors and callbacks"
GROUPS = (CONNECTIONS, RATE_LIMITS, STAGING, MAPPING, GUARDS, SCHEDULES, DELIVERY, CALLBACK_ENDPOINT, SENSORS)


def read_environment(name: str) -> str:
    """The environment's text for ``name``, stripped (``""`` when unset): the pipeline's only environment read."""
    return os.environ.get(name, "").strip()


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One environment setting.

    ``value()`` reads the environment now: unset or empty gives the default (``default``, or ``default_factory()``
    when the default depends on something else), a required one raises ``MissingSettingError``, a value the parser
    refuses raises ``InvalidSettingError`` naming the setting and the value (a secret's value is never repeated).
    """

    name: str
    parser: Parser[T]
    default: T | None
    doc: str
    """One line for the README: what the setting does."""
    group: str
    required: bool = False
    secret: bool = False
    shown_default: str = ""
    """The default as the README shows it, when the default value alone would not say it (e.g. "the region's")."""
    read_at_load: bool = False
    """Read once when the code location loads (schedules, partitions, sensor intervals), not at each use."""
    default_factory: Callable[[], T] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self):
        if self.group not in GROUPS:
            raise ValueError(f"setting {self.name}: unknown group {self.group!r}")

    # -- values ----------------------------------------------------------------------------------------------

    def value(self) -> T:
        """The setting's value now, from the environment."""
        return self.parse(read_environment(self.name))

    def is_set(self) -> bool:
        """Whether the environment gives the setting a (non-empty) value."""
        return bool(read_environment(self.name))

    def default_value(self) -> T:
        if self.default_factory is not None:
            return self.default_factory()
        return self.default  # type: ignore[return-value]

    def parse(self, raw: str | None) -> T:
        """``raw`` as this setting reads it: empty is the default (or missing, for a required setting)."""
        text = (raw or "").strip()
        if not text:
            if self.required:
                raise MissingSettingError(self.name, self.doc.replace("`", ""))
            return self.default_value()
        try:
            return self.parser.parse(text)
        except Refused as refused:
            raise self._invalid(text, refused) from None

    def from_values(self, values: Mapping[str, str]) -> T:
        """The value ``values`` gives the setting (e.g. the sandbox's ``env()``), else the environment's."""
        raw = values.get(self.name)
        return self.parse(raw) if raw and str(raw).strip() else self.value()

    def check(self, value: T) -> T:
        """A value given in code (a resource's field) held to the same rules as the environment's text."""
        return self.parse(self.parser.format(value))

    def format(self, value: T) -> str:
        """``value`` as the environment's text (``parse(format(v)) == v``)."""
        return self.parser.format(value)

    def _invalid(self, text: str, refused: Refused) -> InvalidSettingError:
        if self.secret:
            message = f"setting {self.name} must be {refused.expectation} (the value is not shown: it is a secret)"
            value = None
        else:
            message = f"setting {self.name} must be {refused.expectation}, got {text!r}"
            value = text
        if refused.hint:
            message += f" ({refused.hint})"
        return InvalidSettingError(self.name, message, value)

    # -- documentation -----------------------------------------------------------------------------------------

    @property
    def shown(self) -> str:
        """The default as people read it in the README."""
        if self.shown_default:
            return self.shown_default
        if self.required:
            return "(required)"
        default = self.default_value()
        if default is None or default == "" or default == ():
            return "(none)"
        return f"`{self.format(default)}`"

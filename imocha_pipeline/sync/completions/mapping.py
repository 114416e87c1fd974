"""Mapping rules for completions and skill ratings (DESIGN.md §4), each a setting: statuses sent, level bands in
exact arithmetic, rating type, the optional learner and skill mapping tables."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from numbers import Integral, Rational
from pathlib import Path

import pandas as pd

from imocha_pipeline import settings
from imocha_pipeline.clients.imocha.values import normalize_status
from imocha_pipeline.sync.completions.records import STATUS_COMPLETE


def read_mapping_csv(path: str, key_column: str, value_column: str, setting: str) -> dict[str, str]:
    """A two-column mapping table (CSV with a header). Keys are matched case-insensitively."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{setting} points to {path}, which is not a file")
    with file.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        missing = {key_column, value_column} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{setting} ({path}) needs the columns {key_column} and {value_column}; "
                             f"missing {sorted(missing)}")
        return {row[key_column].strip().lower(): row[value_column].strip()
                for row in reader if row.get(key_column, "").strip() and row.get(value_column, "").strip()}


@dataclass(frozen=True)
class CompletionMapping:
    """Mapping rules for completions and skill ratings (DESIGN.md §4), each a setting."""

    send_statuses: tuple[str, ...] = (STATUS_COMPLETE,)
    content_type: str = "Assessment"
    # Level boundaries in percent: level n+1 starts at bands[n]. Default: 8 equal bands of 12.5%.
    bands: tuple[float, ...] = settings.IMOCHA_PIPELINE_SKILL_LEVEL_BANDS.default
    rating_type: str = settings.IMOCHA_PIPELINE_RATING_TYPE.default
    learner_map: dict[str, str] = field(default_factory=dict)  # email -> EmployeeId
    skill_map: dict[str, str] = field(default_factory=dict)  # iMocha skill name (lower) -> Degreed skill name
    skill_map_configured: bool = False

    @classmethod
    def from_env(cls) -> CompletionMapping:
        learners, skills = settings.IMOCHA_PIPELINE_LEARNER_MAP, settings.IMOCHA_PIPELINE_SKILL_MAP
        learner_path, skill_path = learners.value(), skills.value()
        return cls(
            send_statuses=tuple(normalize_status(s) or s for s in settings.IMOCHA_PIPELINE_SEND_STATUSES.value()),
            bands=settings.IMOCHA_PIPELINE_SKILL_LEVEL_BANDS.value(),
            rating_type=settings.IMOCHA_PIPELINE_RATING_TYPE.value(),
            learner_map=read_mapping_csv(learner_path, "email", "employee_id", learners.name) if learner_path else {},
            skill_map=read_mapping_csv(skill_path, "imocha_skill", "degreed_skill", skills.name) if skill_path else {},
            skill_map_configured=bool(skill_path),
        )

    def level(self, percent: float | None) -> int | None:
        """Degreed's 1–8 level for a percentage, by the configured bands (compared exactly, see ``exact``).

        Prefer ``level_for(points, max_points)`` where the points are known: a percentage computed in floats
        can land just below a band edge (0.6 / 1.6 * 100 == 37.49999...).
        """
        value = exact(percent)
        return None if value is None else self._level_of(value)

    def level_for(self, points: float | None, max_points: float | None) -> int | None:
        """Degreed's 1–8 level for ``points`` out of ``max_points``: ``points / max_points * 100 >= edge`` in exact
        arithmetic on the values' decimal text, so 0.6 of 1.6 is exactly 37.5% (level 4 of the default bands).
        None when either value is missing or not finite, or ``max_points`` is not above 0."""
        scored, maximum = exact(points), exact(max_points)
        if scored is None or maximum is None or maximum <= 0:
            return None
        return self._level_of(scored / maximum * 100)

    def _level_of(self, percent: Fraction) -> int:
        return 1 + sum(1 for boundary in self.bands if percent >= exact(boundary))

    def learner_identifier(self, email: str) -> tuple[str, str]:
        """(user-id, user-identifier-type): EmployeeId when the mapping table names the learner, else Email."""
        employee_id = self.learner_map.get(email.strip().lower())
        return (employee_id, "EmployeeId") if employee_id else (email.strip(), "Email")

    def skill_name(self, imocha_name: str | None) -> str | None:
        if imocha_name is None:
            return None
        mapped = self.skill_map.get(imocha_name.strip().lower())
        if mapped:
            return mapped
        return None if self.skill_map_configured and self.skill_map_strict else imocha_name.strip()

    @property
    def skill_map_strict(self) -> bool:
        return settings.IMOCHA_PIPELINE_SKILL_MAP_STRICT.value()


def exact(value) -> Fraction | None:
    """A number as the exact decimal it is written as: ``Fraction(repr(float))``, so 0.6 is 3/5, not the binary
    double 0.59999999999999997779... Integers, Decimals and Fractions are taken as they are. None for a missing
    (None, NaN, pd.NA) or infinite value."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, Rational):  # int (numpy ints too), Fraction
        return Fraction(int(value)) if isinstance(value, Integral) else Fraction(value)
    if isinstance(value, Decimal):
        return Fraction(value) if value.is_finite() else None
    number = float(value)  # float, numpy floats, numeric text
    if not math.isfinite(number):
        return None
    return Fraction(repr(number))  # repr: the shortest decimal text that reads back as this float


def parse_bands(text: str) -> tuple[float, ...]:
    """``"12.5,25,37.5,50,62.5,75,87.5"``: seven strictly increasing boundaries between 0 and 100
    (IMOCHA_PIPELINE_SKILL_LEVEL_BANDS's rules; a bad list is an ``InvalidSettingError`` naming it)."""
    return settings.IMOCHA_PIPELINE_SKILL_LEVEL_BANDS.parse(text)

"""Completions and skill ratings in plain Python: keys, extraction, mapping rules, desired state.

Record keys (the ledger's natural keys):
- completion: ``"{learner email, lower-case}|{external id}"``, one Degreed completion per learner and
  assessment; the latest ``Complete`` attempt wins.
- skill rating: ``"{learner email, lower-case}|{Degreed skill name}"``; the latest attempt wins.
"""

from __future__ import annotations

import csv
import math
import zlib
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from itertools import pairwise
from numbers import Integral, Rational
from pathlib import Path

import pandas as pd
from sqlalchemy.engine import Engine

from imocha_pipeline.clients.errors import ApiError, NotFoundError
from imocha_pipeline.clients.imocha import ImochaClient, ImochaReport, normalize_status
from imocha_pipeline.settings import optional
from imocha_pipeline.sync import staging
from imocha_pipeline.sync.diff import EntitySpec
from imocha_pipeline.sync.fetching import fetch_all

COMPLETION = "completion"
SKILL_RATING = "skill_rating"
COMPLETION_FIELDS = ("completed_at", "percentile")
SKILL_RATING_FIELDS = ("rating", "rated_at")
COMPLETION_SPEC = EntitySpec(name=COMPLETION, key="record_key", fields=COMPLETION_FIELDS)
SKILL_RATING_SPEC = EntitySpec(name=SKILL_RATING, key="record_key", fields=SKILL_RATING_FIELDS)
STATUS_COMPLETE = "Complete"


def completion_key(email: str, external_id: str) -> str:
    return f"{email.strip().lower()}|{external_id}"


def skill_rating_key(email: str, skill_name: str) -> str:
    return f"{email.strip().lower()}|{skill_name}"


def utc_text(moment: datetime | None) -> str | None:
    """The canonical UTC text used in payloads and hashes (whole seconds, ``Z``)."""
    if moment is None or pd.isna(moment):
        return None
    moment = pd.Timestamp(moment).to_pydatetime()
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {moment!r} has no time zone")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------- settings


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
    bands: tuple[float, ...] = tuple(12.5 * i for i in range(1, 8))
    rating_type: str = "Evaluation"
    learner_map: dict[str, str] = field(default_factory=dict)  # email -> EmployeeId
    skill_map: dict[str, str] = field(default_factory=dict)  # iMocha skill name (lower) -> Degreed skill name
    skill_map_configured: bool = False

    @classmethod
    def from_env(cls) -> CompletionMapping:
        statuses = tuple(s.strip() for s in optional("IMOCHA_PIPELINE_SEND_STATUSES", STATUS_COMPLETE).split(",")
                         if s.strip())
        raw_bands = optional("IMOCHA_PIPELINE_SKILL_LEVEL_BANDS", "")
        bands = parse_bands(raw_bands) if raw_bands else cls.bands
        learner_path = optional("IMOCHA_PIPELINE_LEARNER_MAP", "")
        skill_path = optional("IMOCHA_PIPELINE_SKILL_MAP", "")
        return cls(
            send_statuses=tuple(normalize_status(s) or s for s in statuses),
            bands=bands,
            rating_type=optional("IMOCHA_PIPELINE_RATING_TYPE", "Evaluation"),
            learner_map=read_mapping_csv(learner_path, "email", "employee_id", "IMOCHA_PIPELINE_LEARNER_MAP")
            if learner_path else {},
            skill_map=read_mapping_csv(skill_path, "imocha_skill", "degreed_skill", "IMOCHA_PIPELINE_SKILL_MAP")
            if skill_path else {},
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
        return optional("IMOCHA_PIPELINE_SKILL_MAP_STRICT", "0").lower() in {"1", "true", "yes"}


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
    """``"12.5,25,37.5,50,62.5,75,87.5"``: seven strictly increasing boundaries between 0 and 100."""
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError as exc:
        raise ValueError(f"IMOCHA_PIPELINE_SKILL_LEVEL_BANDS must be comma-separated numbers, got {text!r}") from exc
    increasing = all(low < high for low, high in pairwise(values))
    if len(values) != 7 or not increasing or not all(0 < v < 100 for v in values):
        raise ValueError("IMOCHA_PIPELINE_SKILL_LEVEL_BANDS needs 7 increasing boundaries between 0 and 100 "
                         f"(level 1 below the first, level 8 from the last), got {text!r}")
    return values


# ---------------------------------------------------------------- extraction


@dataclass
class ExtractResult:
    completions: list[dict]
    skill_scores: list[dict]
    reports_fetched: int
    already_staged: int
    problems: list[tuple[int, str]]  # (invitation id, reason) for reports that could not be read


def staged_invitation_ids(engine: Engine, ids: list[int]) -> set[int]:
    """Of ``ids``, the attempts already staged in ``imocha_completions``."""
    return staging.existing_values(engine, staging.imocha_completions.c.test_invitation_id, ids)


def extract_completions(client: ImochaClient, engine: Engine, days: list[date], *,
                        full_refresh: bool = False, max_workers: int = 4,
                        extracted_at: datetime | None = None) -> ExtractResult:
    """Finished attempts iMocha reports for each UTC day, each enriched by its report.

    A report is fetched once per attempt: attempts already staged are skipped unless ``full_refresh``.
    ``attempt_date`` is the day whose Retrieve-Invites window returned the attempt (the partition).
    A report that still fails after the HTTP layer's retries (a 5xx streak) is read once more after the
    others; if it fails again, or too many do (``sync.fetching``), the error ends the run.
    """
    extracted_at = extracted_at or staging.utcnow()
    day_of: dict[int, date] = {}
    attempt_of: dict[int, object] = {}
    for day in days:
        start, end = day_window(day)
        for attempt in client.list_attempts(start, end, state="completed"):
            day_of.setdefault(attempt.test_invitation_id, day)
            attempt_of.setdefault(attempt.test_invitation_id, attempt)
    ids = sorted(day_of)
    skip = set() if full_refresh else staged_invitation_ids(engine, ids)
    todo = [i for i in ids if i not in skip]
    problems: list[tuple[int, str]] = []

    def fetch(invitation_id: int) -> ImochaReport | None:
        try:
            return client.get_report(invitation_id, report_type=3)
        except NotFoundError:
            problems.append((invitation_id, "report not available yet (404); it is read again on a later run"))
        except ApiError as exc:
            if exc.retryable:
                raise  # read again after the others (fetch_all); a second failure ends the run
            problems.append((invitation_id, f"report could not be read: {exc}"))
        return None

    reports = fetch_all(fetch, todo, max_workers=max_workers)
    completions, scores = [], []
    for invitation_id, report in reports.items():
        if report is None:
            continue
        if int(report.test_invitation_id) != int(invitation_id):
            problems.append((invitation_id, f"the report of attempt {invitation_id} names attempt "
                                            f"{report.test_invitation_id} (a duplicate attempt id); it is not staged"))
            continue
        row, skill_rows = report_rows(report, attempt_of[invitation_id], day_of[invitation_id], extracted_at)
        completions.append(row)
        scores.extend(skill_rows)
    return ExtractResult(completions, scores, len(todo), len(skip), problems)


def report_rows(report: ImochaReport, attempt, attempt_date: date,
                extracted_at: datetime) -> tuple[dict, list[dict]]:
    """One ``imocha_completions`` row and its ``imocha_skill_scores`` rows, values as iMocha sent them."""
    email = report.candidate_email or attempt.email
    row = {
        "test_invitation_id": int(report.test_invitation_id),
        "test_id": report.test_id if report.test_id is not None else attempt.test_id,
        "test_name": report.test_name,
        "learner_email": email,
        "learner_name": report.candidate_name or attempt.name,
        "status": normalize_status(report.status) or normalize_status(attempt.test_status),
        "attempted_on": report.attempted_on,
        "attempt_date": attempt_date,
        "score_percentage": report.score_percentage,
        "candidate_points": report.candidate_points,
        "total_points": report.total_test_points,
        "performance_category": report.performance_category,
        "time_taken_seconds": report.time_taken_seconds,
        "has_skills": report.skills is not None,
        "extracted_at": extracted_at,
    }
    skills = []
    for skill in report.skills or ():
        skills.append({
            "test_invitation_id": int(report.test_invitation_id),
            "skill_id": skill.qb_id if skill.qb_id is not None else missing_skill_id(skill.qb_name),
            "skill_name": skill.qb_name,
            "learner_email": email,
            "test_id": row["test_id"],
            "attempted_on": report.attempted_on,
            "attempt_date": attempt_date,
            "points": skill.candidate_score,
            "max_points": skill.max_score,
            "percent": skill.percent,
            "extracted_at": extracted_at,
        })
    return row, skills


def missing_skill_id(name: str | None) -> int:
    """A stable stand-in (negative, from the skill's name) for a report skill without ``qbId``, so two such
    skills of one report never collide in ``imocha_skill_scores``."""
    return -1 - zlib.crc32((name or "").strip().casefold().encode())


def day_window(day: date) -> tuple[datetime, datetime]:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)

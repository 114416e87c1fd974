"""Extraction of finished attempts: Retrieve Invites for each UTC day, each new attempt's report read once, as
``imocha_completions`` and ``imocha_skill_scores`` rows."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from sqlalchemy.engine import Engine

from imocha_pipeline import staging
from imocha_pipeline.clients.errors import ApiError, NotFoundError
from imocha_pipeline.clients.imocha import ImochaClient, ImochaReport
from imocha_pipeline.clients.imocha.values import normalize_status
from imocha_pipeline.sync.core.concurrent_fetch import fetch_all
from imocha_pipeline.sync.erasure.registry import Blocklist, clear_callback_bodies


@dataclass
class ExtractResult:
    completions: list[dict]
    skill_scores: list[dict]
    reports_fetched: int
    already_staged: int
    problems: list[tuple[int, str]]  # (invitation id, reason) for reports that could not be read
    day_of: dict[int, date] = field(default_factory=dict)  # every attempt listed -> the day whose window listed it
    skipped: set[int] = field(default_factory=set)  # attempts listed but already staged (no report fetched)
    erased: int = 0  # attempts of erased learners iMocha listed, not staged (``sync/erasure``)


def staged_invitation_ids(engine: Engine, ids: list[int]) -> set[int]:
    """Of ``ids``, the attempts already staged in ``imocha_completions``."""
    return staging.existing_values(engine, staging.imocha_completions.c.test_invitation_id, ids)


def extract_completions(client: ImochaClient, engine: Engine, days: list[date], *,
                        full_refresh: bool = False, max_workers: int = 4,
                        extracted_at: datetime | None = None) -> ExtractResult:
    """Finished attempts iMocha reports for each UTC day, each enriched by its report.

    A report is fetched once per attempt: attempts already staged are skipped unless ``full_refresh``. Attempts of
    an erased learner (by the listed or the reported email, or staged as erased) are never staged again.
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
    blocklist = Blocklist.read(engine, attempt_of)
    erased = blocklist.blocked((i, getattr(a, "email", None)) for i, a in attempt_of.items())
    ids = sorted(set(day_of) - erased)
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
    late = blocklist.blocked((i, r.candidate_email) for i, r in reports.items() if r is not None)
    for invitation_id, report in reports.items():
        if report is None or invitation_id in late:
            continue
        if int(report.test_invitation_id) != int(invitation_id):
            problems.append((invitation_id, f"the report of attempt {invitation_id} names attempt "
                                            f"{report.test_invitation_id} (a duplicate attempt id); it is not staged"))
            continue
        row, skill_rows = report_rows(report, attempt_of[invitation_id], day_of[invitation_id], extracted_at)
        completions.append(row)
        scores.extend(skill_rows)
    clear_callback_bodies(engine, erased | late)  # a callback of an erased attempt that came after the erasure
    return ExtractResult(completions, scores, reports_fetched=len(todo), already_staged=len(skip), problems=problems,
                         day_of=day_of, skipped=skip, erased=len(erased | late))


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

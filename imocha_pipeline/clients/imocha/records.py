"""The typed, frozen records the iMocha client returns (read by ``parsing.py``).

Optional fields that are missing are None. A report without a skills array gets ``skills=None`` (not an empty
list) so the pipeline can quarantine it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from imocha_pipeline.clients.imocha.values import normalize_status


@dataclass(frozen=True)
class ImochaTest:
    test_id: int
    name: str | None
    status: str | None
    duration_minutes: int | None
    labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class TestListProblem:
    """One entry of ``GET /v3/tests`` that could not be read; the other entries of the page still count.

    ``page`` is the ``pageNo`` asked for and ``item`` the entry's position on that page (both from 1);
    ``test_id`` is the entry's id when that much could be read (None: the entry names no test);
    ``reason`` is the ``ImochaPayloadError`` text (endpoint, page, item and field); ``entry`` is the entry as
    sent, as JSON cut to 200 characters.
    """

    __test__ = False  # not a pytest class, despite the name

    page: int
    item: int
    test_id: int | None
    reason: str
    entry: str = ""


@dataclass(frozen=True)
class ImochaTestSection:
    name: str | None
    section_type: str | None
    questions: int | None
    duration_minutes: int | None

    @property
    def duration(self) -> int | None:
        """Alias of ``duration_minutes`` (the wire name)."""
        return self.duration_minutes


@dataclass(frozen=True)
class ImochaTestDetail(ImochaTest):
    questions: int | None = None
    sections: tuple[ImochaTestSection, ...] = ()


@dataclass(frozen=True)
class ImochaTestLink:
    test_link_id: int
    test_id: int | None
    name: str | None
    status: str | None  # active | inactive
    link_key: str | None  # the short access key (``testLink``)
    invitation_type: str | None  # open | email
    is_api_link: bool | None

    @property
    def is_active(self) -> bool:
        return (self.status or "").strip().lower() == "active"

    @property
    def test_link(self) -> str | None:
        """Alias of ``link_key`` (the wire name ``testLink``)."""
        return self.link_key


@dataclass(frozen=True)
class ImochaAttempt:
    test_invitation_id: int
    test_id: int | None
    name: str | None
    email: str | None
    invitation_type: str | None
    test_status: str | None  # as sent ("Completed", "Test Left", ...)

    @property
    def normalized_status(self) -> str | None:
        return normalize_status(self.test_status)


@dataclass(frozen=True)
class ImochaReportSection:
    section_id: int | None
    section_name: str | None
    questions: int | None
    candidate_score: float | None
    max_score: float | None
    time_minutes: int | None
    time_taken_seconds: int | None


@dataclass(frozen=True)
class ImochaReportSkill:
    qb_id: int | None
    qb_name: str | None
    candidate_score: float | None
    max_score: float | None
    questions: int | None
    section_id: int | None
    section_name: str | None

    @property
    def percent(self) -> float | None:
        """candidateQbScore / qbScore × 100, or None when it cannot be computed."""
        if self.candidate_score is None or not self.max_score:
            return None
        return self.candidate_score / self.max_score * 100


@dataclass(frozen=True)
class ImochaReport:
    test_invitation_id: int
    test_id: int | None
    candidate_email: str | None
    candidate_name: str | None
    attempted_on: datetime | None  # tz-aware UTC
    status: str | None  # as sent ("Complete", "TestLeft", ...)
    score_percentage: float | None
    candidate_points: float | None
    total_test_points: float | None
    time_taken_seconds: int | None
    test_duration_minutes: int | None
    performance_category: str | None
    test_name: str | None
    pdf_report_url: str | None
    sections: tuple[ImochaReportSection, ...] | None
    skills: tuple[ImochaReportSkill, ...] | None  # None = the report carried no skills array
    raw: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def normalized_status(self) -> str | None:
        return normalize_status(self.status)


@dataclass(frozen=True)
class ProcessCallbacksResult:
    successful: tuple[int, ...]
    failed: tuple[int, ...]


@dataclass(frozen=True)
class GdprRequestResult:
    """iMocha's answer to a GDPR request: ``accepted`` (200, "Request accepted for processing") or not, and
    ``found`` False when it holds no records of the email (its 400 "No records found ...", spec §4.2)."""

    accepted: bool
    found: bool
    message: str

"""The state records: tests, their links and invitations (with their attempts), and the invitation statuses."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import quote

from imocha_sandbox.imocha.errors import not_found
from imocha_sandbox.imocha.formats import iso_millis_z, opaque_token, round_half_up
from imocha_sandbox.seed import STATUS_COMPLETE, STATUS_TERMINATED, STATUS_TEST_LEFT, QuestionBank

STATUS_PENDING = "Pending"
STATUS_IN_PROGRESS = "In Progress"
STATUS_CANCELLED = "Cancelled"
STATUS_EXPIRED = "Expired"
FINISHED = (STATUS_COMPLETE, STATUS_TEST_LEFT, STATUS_TERMINATED)
REOPENABLE = (STATUS_CANCELLED, STATUS_EXPIRED)


@dataclass
class SimLink:
    test_link_id: int
    test_id: int
    name: str
    key: str
    status: str = "active"  # active | inactive
    invitation_type: str = "open"  # open | email
    is_api_link: bool = False
    proctoring_mode: str = "disabled"
    stakeholder_emails: str = ""
    validity_days: int = 7
    time_zone_id: int = 200

    def to_json(self) -> dict[str, Any]:
        return {
            "testLinkId": self.test_link_id,
            "testId": self.test_id,
            "testLinkName": self.name,
            "testLink": self.key,
            "testLinkStatus": self.status,
            "invitationType": self.invitation_type,
            "isApiLink": self.is_api_link,
            "proctoringSettings": {"proctoringMode": self.proctoring_mode},
            "stakeholderEmails": self.stakeholder_emails,
            "invitationSchedule": {
                "scheduleType": "validityindays",
                "scheduleDetails": {
                    "invitationValidityInDays": self.validity_days,
                    "timeZoneId": self.time_zone_id,
                },
            },
        }


def sections_of(banks: list[QuestionBank], duration: int) -> list[dict[str, Any]]:
    """Group banks by section; each section gets its share of the test duration (minutes)."""
    total = sum(bank.questions for bank in banks) or 1
    grouped: dict[int, list[QuestionBank]] = {}
    for bank in banks:
        grouped.setdefault(bank.section_id, []).append(bank)
    sections = []
    for section_id, members in grouped.items():
        questions = sum(bank.questions for bank in members)
        sections.append({
            "sectionId": section_id,
            "sectionName": members[0].section_name,
            "questions": questions,
            "duration": max(1, round(duration * questions / total)),
            "banks": members,
        })
    return sections


@dataclass
class SimTest:
    test_id: int
    name: str
    duration: int
    status: str
    labels: list[str]
    banks: list[QuestionBank]
    links: list[SimLink]

    def summary_json(self) -> dict[str, Any]:
        return {
            "testId": self.test_id,
            "testName": self.name,
            "status": self.status,
            "duration": self.duration,
            "labels": list(self.labels),
        }

    def detail_json(self) -> dict[str, Any]:
        sections = [
            {"sectionName": s["sectionName"], "sectionType": "Multiple Choice",
             "questions": s["questions"], "duration": s["duration"]}
            for s in sections_of(self.banks, self.duration)
        ]
        detail = self.summary_json()
        detail.update(questions=sum(bank.questions for bank in self.banks), sections=sections)
        return detail

    def link(self, link_id: int) -> SimLink:
        for link in self.links:
            if link.test_link_id == link_id:
                return link
        raise not_found(f"Test link {link_id} not found for test {self.test_id}.")


@dataclass
class Invitation:
    """One test invitation and its attempt. Banks and test facts are copied at invite time."""

    test_invitation_id: int
    test_id: int
    test_link_id: int
    email: str
    name: str
    test_name: str
    duration: int
    banks: list[QuestionBank]
    invited_at: datetime
    status: str = STATUS_PENDING
    invitation_type: str = "api"
    callback_url: str | None = None
    redirect_url: str | None = None
    window_start: datetime | None = None
    window_end: datetime | None = None
    time_zone_id: int | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    changed_at: datetime | None = None  # when it became Cancelled/Expired
    time_taken_seconds: int | None = None
    bank_scores: dict[int, float] = field(default_factory=dict)
    root_id: int | None = None  # first invitation of a reattempt chain

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    @property
    def test_url(self) -> str:
        return f"https://test.imocha.io/IMInstructions?{opaque_token('inv-', self.test_invitation_id)}"

    @property
    def pdf_report_url(self) -> str:
        token = quote(opaque_token("rpt-", self.test_invitation_id), safe="")
        return f"https://app.imocha.io/PDFReport?id={token}"

    @property
    def candidate_points(self) -> float:
        return round(sum(self.bank_scores.get(bank.qb_id, 0.0) for bank in self.banks), 2)

    @property
    def total_points(self) -> float:
        return round(sum(bank.max_score for bank in self.banks), 2)

    @property
    def score_percentage(self) -> float:
        total = self.total_points
        return round_half_up(self.candidate_points / total * 100) if total else 0.0

    def to_json(self) -> dict[str, Any]:
        """The control surface's view of an invitation (not an iMocha shape)."""

        def stamp(moment: datetime | None) -> str | None:
            return iso_millis_z(moment) if moment else None

        return {
            "testInvitationId": self.test_invitation_id,
            "testId": self.test_id,
            "testLinkId": self.test_link_id,
            "email": self.email,
            "name": self.name,
            "status": self.status,
            "invitationType": self.invitation_type,
            "callbackUrl": self.callback_url,
            "redirectUrl": self.redirect_url,
            "invitedAt": stamp(self.invited_at),
            "startedAt": stamp(self.started_at),
            "completedAt": stamp(self.completed_at),
            "changedAt": stamp(self.changed_at),
            "timeTakenSeconds": self.time_taken_seconds,
            "bankScores": {str(k): v for k, v in self.bank_scores.items()},
            "rootId": self.root_id,
            "testUrl": self.test_url,
        }

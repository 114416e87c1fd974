"""Reading iMocha's answers into records: tests, test links, attempts and reports.

Each reader takes one JSON object (and the endpoint template it came from, for errors) and returns a frozen
record, or raises ``ImochaPayloadError`` naming the endpoint, the object and the field that is not the
documented shape.
"""

from __future__ import annotations

from typing import Any

from imocha_pipeline.clients.imocha.contract import EP_ATTEMPTS, EP_REPORT, EP_TEST, EP_TEST_LINKS, EP_TESTS
from imocha_pipeline.clients.imocha.errors import payload_error
from imocha_pipeline.clients.imocha.fields import Fields
from imocha_pipeline.clients.imocha.records import (
    ImochaAttempt,
    ImochaReport,
    ImochaReportSection,
    ImochaReportSkill,
    ImochaTest,
    ImochaTestDetail,
    ImochaTestLink,
    ImochaTestSection,
)


def parse_test(obj: Any, endpoint: str = EP_TESTS) -> ImochaTest:
    f = Fields(obj, endpoint, "test")
    return ImochaTest(**_test_fields(f))


def _test_fields(f: Fields) -> dict[str, Any]:
    labels = f.items("labels") or []
    return {
        "test_id": f.integer("testId", "id", required=True),
        "name": f.text("testName", "name"),
        "status": f.text("status", "testStatus"),
        "duration_minutes": f.integer("duration", "testDuration"),
        "labels": tuple(str(label) for label in labels if label is not None),
    }


def parse_test_detail(obj: Any, endpoint: str = EP_TEST) -> ImochaTestDetail:
    f = Fields(obj, endpoint, "test")
    sections = []
    for item in f.items("sections") or []:
        s = Fields(item, endpoint, "test section")
        sections.append(ImochaTestSection(
            name=s.text("sectionName", "name"),
            section_type=s.text("sectionType", "type"),
            questions=s.integer("questions", "noOfQue"),
            duration_minutes=s.integer("duration", "sectionTime"),
        ))
    return ImochaTestDetail(**_test_fields(f), questions=f.integer("questions", "noOfQuestions"),
                            sections=tuple(sections))


def parse_test_link(obj: Any, endpoint: str = EP_TEST_LINKS) -> ImochaTestLink:
    f = Fields(obj, endpoint, "test link")
    return ImochaTestLink(
        test_link_id=f.integer("testLinkId", "id", required=True),
        test_id=f.integer("testId"),
        name=f.text("testLinkName", "name"),
        status=f.text("testLinkStatus", "status"),
        link_key=f.text("testLink", "link"),
        invitation_type=f.text("invitationType"),
        is_api_link=f.boolean("isApiLink"),
    )


def parse_attempt(obj: Any, endpoint: str = EP_ATTEMPTS) -> ImochaAttempt:
    f = Fields(obj, endpoint, "test attempt")
    return ImochaAttempt(
        test_invitation_id=f.integer("testInvitationId", required=True),
        test_id=f.integer("testId"),
        name=f.text("name", "candidateName"),
        email=f.text("email", "candidateEmail"),
        invitation_type=f.text("invitationtype"),
        test_status=f.text("testStatus", "status"),
    )


def parse_report(obj: Any, endpoint: str = EP_REPORT, invitation_id: int | None = None) -> ImochaReport:
    """A report; ``invitation_id`` (the id asked for) stands in when the body omits its own."""
    f = Fields(obj, endpoint, "report")
    own_id = f.integer("testInvitationId")
    if own_id is None and invitation_id is None:
        raise payload_error(endpoint, "report has no 'testInvitationId'")
    sections = f.items("sections")
    skills = f.items("skills", "skillScores", "qbScores")
    return ImochaReport(
        test_invitation_id=own_id if own_id is not None else int(invitation_id or 0),
        test_id=f.integer("testId"),
        candidate_email=f.text("candidateEmail", "candidateEmailId", "email"),
        candidate_name=f.text("candidateName", "candidateFullName", "name"),
        attempted_on=f.moment("attemptedOn", "attemptedOnUtc", "appearedOn"),
        status=f.text("status", "testStatus"),
        score_percentage=f.number("scorePercentage"),
        candidate_points=f.number("candidatePoints", "score"),
        total_test_points=f.number("totalTestPoints"),
        time_taken_seconds=f.integer("timeTaken"),
        test_duration_minutes=f.integer("testDuration", "duration"),
        performance_category=f.text("performanceCategory"),
        test_name=f.text("testName"),
        pdf_report_url=f.text("pdfReportUrl", "reportPdfUrl"),
        sections=None if sections is None else tuple(_report_section(item, endpoint) for item in sections),
        skills=None if skills is None else tuple(_report_skill(item, endpoint) for item in skills),
        raw=dict(obj),
    )


def _report_section(obj: Any, endpoint: str) -> ImochaReportSection:
    f = Fields(obj, endpoint, "report section")
    return ImochaReportSection(
        section_id=f.integer("sectionId"),
        section_name=f.text("sectionName"),
        questions=f.integer("noOfQue", "questions"),
        candidate_score=f.number("candidateScore"),
        max_score=f.number("sectionScore"),
        time_minutes=f.integer("sectionTime"),
        time_taken_seconds=f.integer("sectionTimeTaken"),
    )


def _report_skill(obj: Any, endpoint: str) -> ImochaReportSkill:
    f = Fields(obj, endpoint, "report skill")
    return ImochaReportSkill(
        qb_id=f.integer("qbId"),
        qb_name=f.text("qbName", "skillName"),
        candidate_score=f.number("candidateQbScore", "candidateScore"),
        max_score=f.number("qbScore", "maxScore"),
        questions=f.integer("noOfQue", "questions"),
        section_id=f.integer("sectionId"),
        section_name=f.text("sectionName"),
    )

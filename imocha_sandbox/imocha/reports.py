"""Candidate reports (spec §10): building a finished attempt's report, the unfinished answers, the ready delay."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from imocha_sandbox.imocha.errors import not_found, validation_error
from imocha_sandbox.imocha.formats import iso_millis_z
from imocha_sandbox.imocha.records import Invitation, sections_of
from imocha_sandbox.imocha.settings import SimulatorSettings
from imocha_sandbox.imocha.store import ImochaStore
from imocha_sandbox.seed import STATUS_COMPLETE, QuestionBank, performance_category


def _section_report(section: dict[str, Any], inv: Invitation, total_questions: int) -> dict[str, Any]:
    banks: list[QuestionBank] = section["banks"]
    questions = section["questions"]
    score = round(sum(inv.bank_scores.get(bank.qb_id, 0.0) for bank in banks), 2)
    maximum = round(sum(bank.max_score for bank in banks), 2)
    correct = min(questions, round(questions * score / maximum)) if maximum else 0
    not_answered = 0 if inv.status == STATUS_COMPLETE else (questions - correct) // 2
    return {
        "sectionID": section["sectionId"],
        "sectionName": section["sectionName"],
        "noOfQue": questions,
        "sectionTime": section["duration"],
        "sectionTimeTaken": round((inv.time_taken_seconds or 0) * questions / (total_questions or 1)),
        "candidateScore": score,
        "sectionScore": maximum,
        "negativeMark": 0.0,
        "correctQuestions": correct,
        "wrongQuestions": questions - correct - not_answered,
        "skippedQuestions": 0,
        "notAnsweredQuestions": not_answered,
    }


def _skill_report(bank: QuestionBank, inv: Invitation) -> dict[str, Any]:
    return {
        "qbId": bank.qb_id,
        "qbName": bank.qb_name,
        "candidateQbScore": round(inv.bank_scores.get(bank.qb_id, 0.0), 2),
        "qbScore": bank.max_score,
        "noOfQue": bank.questions,
        "sectionId": bank.section_id,
        "sectionName": bank.section_name,
    }


def build_report(inv: Invitation, report_type: int, status_label: str) -> dict[str, Any]:
    """The report of a finished invitation: summary, plus sections (1, 3) and/or skills (2, 3)."""
    sections = sections_of(inv.banks, inv.duration)
    total_questions = sum(s["questions"] for s in sections)
    section_reports = [_section_report(s, inv, total_questions) for s in sections]
    correct = sum(s["correctQuestions"] for s in section_reports)
    report: dict[str, Any] = {
        "testInvitationId": inv.test_invitation_id,
        "testId": inv.test_id,
        "candidateEmail": inv.email,
        "candidateName": inv.name,
        "attemptedOn": iso_millis_z(inv.started_at or inv.invited_at),
        "status": status_label,
        "score": inv.candidate_points,
        "scorePercentage": inv.score_percentage,
        "candidatePoints": inv.candidate_points,
        "totalTestPoints": inv.total_points,
        "timeTaken": inv.time_taken_seconds or 0,
        "testDuration": inv.duration,
        "performanceCategory": performance_category(inv.score_percentage),
        "testName": inv.test_name,
        "pdfReportUrl": inv.pdf_report_url,
        "quesDifficultyAnalysis": [{
            "difficultyLevel": "Medium",
            "noOfQuestions": total_questions,
            "noOfCorrectQuestions": correct,
            "percentage": round(correct / total_questions * 100, 2) if total_questions else 0.0,
        }],
    }
    if report_type in (1, 3):
        report["sections"] = section_reports
    if report_type in (2, 3):
        report["skills"] = [_skill_report(bank, inv) for bank in inv.banks]
    return report


def unfinished_report(inv: Invitation, report_type: int) -> dict[str, Any]:
    """``unfinished_report="in_progress"``: a 200 report with zero scores and no breakdown."""
    report: dict[str, Any] = {
        "testInvitationId": inv.test_invitation_id,
        "testId": inv.test_id,
        "candidateEmail": inv.email,
        "candidateName": inv.name,
        "attemptedOn": iso_millis_z(inv.started_at) if inv.started_at else None,
        "status": inv.status,
        "score": 0.0,
        "scorePercentage": 0.0,
        "candidatePoints": 0.0,
        "totalTestPoints": inv.total_points,
        "timeTaken": 0,
        "testDuration": inv.duration,
        "performanceCategory": None,
        "testName": inv.test_name,
        "pdfReportUrl": None,
    }
    if report_type in (1, 3):
        report["sections"] = []
    if report_type in (2, 3):
        report["skills"] = []
    return report


class Reports:
    """Answers for ``GET /v3/reports/{id}`` and for harness code reading the truth."""

    def __init__(self, store: ImochaStore, settings: SimulatorSettings, clock: Callable[[], datetime]):
        self._store = store
        self._settings = settings
        self._clock = clock

    def report(self, invitation_id: int, report_type: int = 1, *, as_served: bool = False) -> dict:
        """The report of an invitation; 404 when it has none (or the ``unfinished_report`` variant).

        ``as_served=True`` (only the ``GET /v3/reports/{id}`` route passes it) also applies
        ``report_ready_delay_seconds``: a report still being prepared is the unfinished 404. Without it
        the real report comes back at once (what harness code reads as the truth).
        """
        if report_type not in (1, 2, 3):
            raise validation_error("'reportType' must be 1, 2 or 3.")
        with self._store.lock:
            inv = self._store.invitation(invitation_id)
            if inv.finished and as_served and self._report_preparing(inv):
                raise not_found(f"Report is not available for test invitation id: {invitation_id}.")
            if inv.finished:
                labels = self._settings.report_status_labels
                return build_report(inv, report_type, labels.get(inv.status, inv.status))
            if self._settings.unfinished_report == "in_progress":
                return unfinished_report(inv, report_type)
            raise not_found(f"Report is not available for test invitation id: {invitation_id}.")

    def _report_preparing(self, inv: Invitation) -> bool:
        """True while a finished attempt's report is within ``report_ready_delay_seconds`` of completion."""
        delay = self._settings.report_ready_delay_seconds
        if not delay or inv.completed_at is None:
            return False
        return self._clock() - inv.completed_at < timedelta(seconds=delay)

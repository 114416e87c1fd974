"""A local simulator of the iMocha Assessment API v3 (see ``specs/imocha-api.md``).

``ImochaSimulator(world, api_key)`` serves, under ``/v3``, what the pipeline and its tests need:
tests and their details, test links, invitations (invite, re-invite, reattempt, cancel), Retrieve
Invites (``POST /v3/candidates/testattempts``), candidate reports, callback notifications with
retries, and Process Callbacks. State lives in memory, is built from a seeded ``World`` and is guarded
by one lock: uvicorn calls the handlers on its event loop while tests call the control methods
directly from their own threads. Ids come from counters, so a seed always gives the same ids.

Documented facts are reproduced verbatim (error bodies, envelopes, the all-lowercase
``invitationtype`` key, PascalCase callbacks, ``sectionID`` in report sections). Where the spec is
silent (``INF``), the behaviour is an assumption, and the uncertain ones are settings
(``configure(**settings)`` or ``PUT /_sandbox/settings``):

- ``attempt_window_field``: Retrieve Invites filters on the completion time (``"completed"``,
  default) or the start time (``"started"``) of an attempt; the range is ``[start, end)``.
- ``test_status_labels``: the ``testStatus`` spelling per final status; default
  ``Complete -> "Completed"`` (the doc sample), ``"Test Left"``, ``"Terminated"``.
- ``report_status_labels``: report ``status``; default ``Complete``, ``TestLeft`` (both seen),
  ``Terminated`` (assumed).
- ``unfinished_report``: the answer for the report of an invitation that has not finished
  (Pending, In Progress, Cancelled, Expired). ``"not_found"`` (default): 404
  ``{"statusCode":404,"message":"Report is not available ..."}``; ``"in_progress"``: 200 with the
  invitation's status (``"Pending"``/``"In Progress"``/...), zero scores and empty sections/skills.
- ``report_ready_delay_seconds`` (default 0; also a constructor argument): for this many seconds after a
  finished attempt's completion time (``completed_at`` against ``clock()``), ``GET /v3/reports/{id}``
  answers the same 404 as an unfinished report (``Report is not available for test invitation id: N.``,
  whatever ``unfinished_report`` says), as real iMocha does while the report is being prepared; Retrieve
  Invites already lists the attempt as completed. The delay applies only to what the API serves
  (``report(..., as_served=True)``, which only the route passes): a direct ``report(id)`` call from
  Python (harness code computing the truth) always returns the real report. Negative values are refused.
- ``empty_attempts_404``: Retrieve Invites answers 404 instead of an empty list when nothing matches
  (clients in the wild treat 404 as "no attempts").
- ``max_page_size`` (default 100): larger ``pageSize`` values are clamped, not rejected.
- ``callbacks_process_limit`` (default 100): ids beyond it are ignored (not rejected).

Other assumptions, not settings: 404 and 5xx bodies use the gateway shape ``{"statusCode", "message"}``;
a missing key gets the same documented 401 body as a wrong key; the reattempt success code is 200 and
its in-progress error is a 400 in the cancel shape; Terminated behaves like Complete for re-invite and
reattempt; a re-invite or reattempt of a Pending/Cancelled/Expired invitation also replaces its
callback and redirect URLs when given; invites through an inactive link fail with a 400 ``errors``
body; callback retries count any non-2xx answer or connection error as a failure.

Also settable: ``callback_status_labels`` (the callback ``Status``; default ``In Progress``,
``Complete``, ``Test Left``, ``Terminated``). The 5xx of fault injection is a 503 with
``{"statusCode":503,...}``; an unexpected handler failure is a 500 with ``{"statusCode":500,...}``.

Control surface (under ``/_sandbox``, never logged, never faulted, no key), each mirrored by a method:

- ``POST /tests`` ``{name, duration, skills | banks, status, labels, link}`` → ``{testId, testLinkId}``
  (``add_test``); ``PATCH /tests/{id}`` ``{name, duration, status, labels}`` (``update_test``);
  ``DELETE /tests/{id}`` (``remove_test``; its invitations and reports stay).
- ``POST /tests/{id}/testlinks`` ``{name, invitationType, isApiLink}`` (``add_test_link``);
  ``POST /tests/{id}/testlinks/{linkId}/deactivate`` (``deactivate_test_link``).
- ``POST /attempts`` ``{testId, email, name, status, bankScores, attemptedOn, callbackUrl,
  timeTakenSeconds}`` → ``{testInvitationId}`` (``complete_attempt``).
- ``GET /invitations/{id}`` (``invitation``); ``POST /invitations/{id}/start|finish|leave|terminate|expire``
  ``{at, bankScores, timeTakenSeconds}`` (``start_attempt``, ``finish_attempt``, ``leave_attempt``,
  ``terminate_attempt``, ``expire_invitation``); a transition from the wrong state is a 409.
- ``GET /requests?since=N`` / ``DELETE /requests`` (``.log``); ``GET|PUT|DELETE /faults`` (``.faults``,
  a JSON of ``FaultConfig`` fields); ``GET|DELETE /callbacks`` (``callback_deliveries``: every try);
  ``GET|PUT /settings`` (``configure``); ``PUT|DELETE /responses`` ``{method, path, status, body,
  contentType, times}`` (``set_canned_response``: raw answers for malformed-payload tests).
- ``PUT /tests/{id}/listentry`` ``{entry}`` or ``{fields}`` / ``DELETE`` (``set_list_entry``,
  ``clear_list_entries``): serve one test's entry in ``GET /v3/tests`` malformed (the rest of the page,
  the order and ``count`` stay as they are). Without it the list is served as the state says.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import logging
import math
import queue
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, quote

import requests
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from imocha_sandbox.seed import (
    STATUS_COMPLETE,
    STATUS_TERMINATED,
    STATUS_TEST_LEFT,
    QuestionBank,
    World,
    performance_category,
)
from imocha_sandbox.server import (
    CONTROL_PREFIX,
    FaultConfig,
    FaultInjector,
    RequestLog,
    SimulatorMiddleware,
    json_bytes,
)

logger = logging.getLogger(__name__)

# Documented bodies (spec §4.2), verbatim.
INVALID_KEY_BODY = {
    "statusCode": 401,
    "message": "Access denied due to invalid subscription key. "
    "Make sure to provide a valid key for an active subscription.",
}
BAD_DATES_BODY = {"result": None, "errors": ["Date & time is not invalid or incorrect format"]}
FOREIGN_IDS_MESSAGE = "testinvitationIds does not belong to account or not found"
CANCEL_WRONG_STATE_BODY = {
    "statusCode": 400,
    "message": "Testinvitation state in inprogress, complete, and expired can not be cancelled.",
}
# Assumed bodies (spec §15: the gateway is probably Azure APIM).
SERVER_ERROR_BODY = {"statusCode": 503, "message": "The service is temporarily unavailable. Try again later."}
INTERNAL_ERROR_BODY = {"statusCode": 500, "message": "Internal server error."}
FAULT_RATE_LIMIT_BODY = {"statusCode": 429, "message": "Rate limit is exceeded. Try again in 1 seconds."}


class _Marker:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


DROP: Any = _Marker("DROP")  # in ``set_list_entry(fields=...)``: remove this key from the entry
_UNSET: Any = _Marker("UNSET")

STATUS_PENDING = "Pending"
STATUS_IN_PROGRESS = "In Progress"
STATUS_CANCELLED = "Cancelled"
STATUS_EXPIRED = "Expired"
FINISHED = (STATUS_COMPLETE, STATUS_TEST_LEFT, STATUS_TERMINATED)
REOPENABLE = (STATUS_CANCELLED, STATUS_EXPIRED)
DEFAULT_LINK_NAME = "Default test link"
BASE_IMG_URL = "https://imdatastorage.blob.core.windows.net/imcompanylogo/imocha.jpg"


class SimulatorError(Exception):
    """An API or control answer other than success: HTTP ``status`` with a JSON ``body``."""

    def __init__(self, status: int, body: Any):
        self.status = status
        self.body = body
        super().__init__(f"HTTP {status}: {json.dumps(body)}")


def _not_found(message: str) -> SimulatorError:
    return SimulatorError(404, {"statusCode": 404, "message": message})


def _validation(*messages: str) -> SimulatorError:
    return SimulatorError(400, {"errors": list(messages)})


def _delay_setting(value: Any) -> float:
    """``report_ready_delay_seconds``: a finite number of seconds, 0 or more; else the settings 400."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise SimulatorError(400, {"errors": [
            f"report_ready_delay_seconds must be a number of seconds, 0 or more; got {value!r}"]})
    return float(value)


def _check_final(status: str) -> None:
    if status not in FINISHED:
        raise SimulatorError(400, {"statusCode": 400, "message": f"final status must be one of {FINISHED}"})


# ---------------------------------------------------------------------------------------------
# Small helpers: request parsing and formatting


def lower_keys(data: dict[str, Any]) -> dict[str, Any]:
    """Request properties are bound case-insensitively (spec §3.2): look them up lower-cased."""
    return {str(key).lower(): value for key, value in data.items()}


def parse_request_datetime(value: Any) -> datetime | None:
    """ISO 8601 with or without ``Z``/offset/fraction; a bare date is midnight; naive is UTC.

    Returns None for anything that is not such a string.
    """
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text[-1] in "zZ":
        text = text[:-1] + "+00:00"
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def iso_millis_z(moment: datetime) -> str:
    """``2026-08-20T07:59:49.393Z``: the report's ``attemptedOn`` format."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _round_half_up(value: float) -> float:
    return float(math.floor(value + 0.5))


def _opaque(prefix: str, number: int) -> str:
    return base64.b64encode(f"{prefix}{number}".encode()).decode()


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


# ---------------------------------------------------------------------------------------------
# State records


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


def _sections_of(banks: list[QuestionBank], duration: int) -> list[dict[str, Any]]:
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
            for s in _sections_of(self.banks, self.duration)
        ]
        detail = self.summary_json()
        detail.update(questions=sum(bank.questions for bank in self.banks), sections=sections)
        return detail

    def link(self, link_id: int) -> SimLink:
        for link in self.links:
            if link.test_link_id == link_id:
                return link
        raise _not_found(f"Test link {link_id} not found for test {self.test_id}.")


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
        return f"https://test.imocha.io/IMInstructions?{_opaque('inv-', self.test_invitation_id)}"

    @property
    def pdf_report_url(self) -> str:
        token = quote(_opaque("rpt-", self.test_invitation_id), safe="")
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
        return _round_half_up(self.candidate_points / total * 100) if total else 0.0

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


# ---------------------------------------------------------------------------------------------
# Report building (spec §10.2)


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
    sections = _sections_of(inv.banks, inv.duration)
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


# ---------------------------------------------------------------------------------------------
# Callbacks (spec §8)


@dataclass
class _Notification:
    invitation_id: int
    url: str
    payload: dict[str, Any]
    replay: bool = False


class CallbackDispatcher:
    """Delivers callback notifications from one background thread, in order, with retries.

    Each notification is tried up to ``max_tries`` times (non-2xx or connection error = failure),
    ``retry_delay`` seconds apart, then dropped. Every try is recorded in ``deliveries``.
    """

    def __init__(self, max_tries: int, retry_delay: float, timeout: float = 5.0):
        self.max_tries = max_tries
        self.retry_delay = retry_delay
        self.timeout = timeout
        self._queue: queue.Queue[_Notification | None] = queue.Queue()
        self._lock = threading.Lock()
        self._deliveries: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def enqueue(self, notification: _Notification) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True, name="imocha-sim-callbacks")
                self._thread.start()
        self._queue.put(notification)

    def deliveries(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(entry) for entry in self._deliveries]

    def clear(self) -> None:
        with self._lock:
            self._deliveries.clear()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until every queued notification was delivered or given up; False on timeout."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=5)

    def _run(self) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                notification = self._queue.get()
                try:
                    if notification is not None:
                        self._deliver(session, notification)
                finally:
                    self._queue.task_done()

    def _deliver(self, session: requests.Session, note: _Notification) -> None:
        for attempt in range(1, self.max_tries + 1):
            status, error = self._post(session, note)
            ok = status is not None and 200 <= status < 300
            self._record(note, attempt, status, error, ok)
            if ok or self._stop.wait(self.retry_delay if attempt < self.max_tries else 0):
                return

    def _post(self, session: requests.Session, note: _Notification) -> tuple[int | None, str | None]:
        try:
            response = session.post(note.url, json=note.payload, timeout=self.timeout)
        except requests.RequestException as exc:
            return None, f"{type(exc).__name__}: {exc}"
        return response.status_code, None

    def _record(self, note: _Notification, attempt: int, status: int | None, error: str | None,
                ok: bool) -> None:
        with self._lock:
            self._deliveries.append({
                "seq": len(self._deliveries) + 1,
                "ts": time.time(),
                "invitationId": note.invitation_id,
                "status": note.payload["Status"],
                "url": note.url,
                "try": attempt,
                "httpStatus": status,
                "error": error,
                "ok": ok,
                "replay": note.replay,
                "payload": note.payload,
            })


# ---------------------------------------------------------------------------------------------
# Gateway: key check, rate limit and canned answers in front of the API routes


class TokenBucket:
    """``rate`` requests a second with a burst of ``max(1, rate)``; thread-safe."""

    def __init__(self, rate: float):
        self.rate = rate
        self.capacity = max(1.0, rate)
        self._tokens = self.capacity
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> float:
        """Take a token; return 0 when allowed, else the seconds until one is available."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self.rate


@dataclass
class CannedResponse:
    """A scripted answer for ``method path`` (query ignored), used ``times`` times (None = forever)."""

    method: str
    path: str
    status: int = 200
    body: str = ""
    content_type: str = "application/json"
    times: int | None = 1


class _Gateway:
    """ASGI layer for API paths: the X-API-KEY check, the optional rate limit, canned answers."""

    def __init__(self, app, sim: ImochaSimulator):
        self.app = app
        self.sim = sim

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"].startswith(CONTROL_PREFIX):
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1").lower(): value for name, value in scope.get("headers", [])}
        presented = headers.get("x-api-key", b"")
        if not hmac.compare_digest(presented, self.sim.api_key.encode()):
            await _send(send, 401, json_bytes(INVALID_KEY_BODY))
            return
        wait = self.sim.rate_limit_wait()
        if wait:
            seconds = max(1, math.ceil(wait))
            body = {"statusCode": 429, "message": f"Rate limit is exceeded. Try again in {seconds} seconds."}
            await _send(send, 429, json_bytes(body), [(b"retry-after", str(seconds).encode())])
            return
        canned = self.sim.take_canned(scope["method"], scope["path"])
        if canned is not None:
            await _send(send, canned.status, canned.body.encode(), content_type=canned.content_type)
            return
        try:
            await self.app(scope, receive, send)
        except Exception:
            # Starlette already answered 500 and re-raises; stop here so the request log keeps the entry.
            logger.exception("iMocha simulator failed on %s %s", scope["method"], scope["path"])


async def _send(send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None,
                content_type: str = "application/json") -> None:
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
        + (headers or []),
    })
    await send({"type": "http.response.body", "body": body})


# ---------------------------------------------------------------------------------------------
# The simulator


class ImochaSimulator:
    """In-memory iMocha v3 API built from a ``World``; serve ``.app`` with ``ServerThread``.

    ``.log`` is the request log and ``.faults`` the fault injector of the shared middleware.
    Python control methods mirror the ``/_sandbox`` endpoints and raise ``SimulatorError``.
    """

    def __init__(
        self,
        world: World,
        api_key: str,
        *,
        rate_limit_per_second: float | None = None,
        attempt_window_field: str = "completed",
        report_ready_delay_seconds: float = 0,
        callback_max_tries: int = 5,
        callback_retry_delay: float = 0.2,
        clock: Callable[[], datetime] | None = None,
    ):
        self.world = world
        self.api_key = api_key
        self.clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.RLock()
        self.max_page_size = 100
        self.callbacks_process_limit = 100
        self.test_status_labels = {STATUS_COMPLETE: "Completed", STATUS_TEST_LEFT: "Test Left",
                                   STATUS_TERMINATED: "Terminated", STATUS_CANCELLED: "Cancelled",
                                   STATUS_EXPIRED: "Expired"}
        self.report_status_labels = {STATUS_COMPLETE: "Complete", STATUS_TEST_LEFT: "TestLeft",
                                     STATUS_TERMINATED: "Terminated"}
        self.callback_status_labels = {STATUS_IN_PROGRESS: "In Progress", STATUS_COMPLETE: "Complete",
                                       STATUS_TEST_LEFT: "Test Left", STATUS_TERMINATED: "Terminated"}
        self.callback_display_offset = timedelta(hours=5, minutes=30)  # the doc sample's local time
        self.unfinished_report = "not_found"
        self.report_ready_delay_seconds = _delay_setting(report_ready_delay_seconds)
        self.empty_attempts_404 = False
        self.attempt_window_field = attempt_window_field
        self._bucket: TokenBucket | None = None
        self.rate_limit_per_second = rate_limit_per_second
        self._canned: list[CannedResponse] = []
        self._list_entries: dict[int, tuple[str, Any]] = {}  # test id -> ("entry" | "fields", value)
        self.callbacks = CallbackDispatcher(callback_max_tries, callback_retry_delay)
        self.log = RequestLog()
        self.faults = FaultInjector()
        self._build_state(world)
        self.app = SimulatorMiddleware(
            _Gateway(self._starlette(), self),
            self.log,
            self.faults,
            error_body_5xx=json_bytes(SERVER_ERROR_BODY),
            error_body_429=json_bytes(FAULT_RATE_LIMIT_BODY),
        )

    # ----- settings -------------------------------------------------------------------------

    SETTINGS = ("rate_limit_per_second", "attempt_window_field", "max_page_size", "test_status_labels",
                "report_status_labels", "callback_status_labels", "unfinished_report",
                "empty_attempts_404", "callbacks_process_limit", "report_ready_delay_seconds")

    @property
    def rate_limit_per_second(self) -> float | None:
        return self._bucket.rate if self._bucket else None

    @rate_limit_per_second.setter
    def rate_limit_per_second(self, rate: float | None) -> None:
        self._bucket = TokenBucket(rate) if rate else None

    def configure(self, **settings: Any) -> dict[str, Any]:
        """Change settings (names in ``SETTINGS``); returns them all."""
        unknown = set(settings) - set(self.SETTINGS)
        if unknown:
            raise SimulatorError(400, {"errors": [f"unknown settings: {sorted(unknown)}"]})
        if settings.get("attempt_window_field", "completed") not in ("completed", "started"):
            raise SimulatorError(400, {"errors": ["attempt_window_field must be 'completed' or 'started'"]})
        if settings.get("unfinished_report", "not_found") not in ("not_found", "in_progress"):
            raise SimulatorError(400, {"errors": ["unfinished_report must be 'not_found' or 'in_progress'"]})
        if "report_ready_delay_seconds" in settings:
            settings["report_ready_delay_seconds"] = _delay_setting(settings["report_ready_delay_seconds"])
        with self._lock:
            for name, value in settings.items():
                setattr(self, name, value)
            return self.settings()

    def settings(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.SETTINGS}

    def rate_limit_wait(self) -> float:
        bucket = self._bucket
        return bucket.take() if bucket else 0.0

    # ----- state built from the world -------------------------------------------------------

    def _build_state(self, world: World) -> None:
        self.tests: dict[int, SimTest] = {}
        self.invitations: dict[int, Invitation] = {}
        for spec in world.tests:
            links = [
                SimLink(link.test_link_id, spec.test_id, link.name, link.test_link, link.status,
                        link.invitation_type)
                for link in spec.links
            ]
            self.tests[spec.test_id] = SimTest(spec.test_id, spec.name, spec.duration, spec.status,
                                               list(spec.labels), copy.deepcopy(spec.banks), links)
        banks = [bank for test in self.tests.values() for bank in test.banks]
        links = [link for test in self.tests.values() for link in test.links]
        self._next_test_id = max(self.tests, default=300_000 - 17) + 17
        self._next_link_id = max((link.test_link_id for link in links), default=201_000) + 1
        self._next_qb_id = max((bank.qb_id for bank in banks), default=5_500) + 1
        self._next_section_id = max((bank.section_id for bank in banks), default=2_250_000) + 1
        attempt_ids = [attempt.test_invitation_id for attempt in world.attempts]
        self._next_invitation_id = max(attempt_ids, default=2_900_000) + 1
        for attempt in world.attempts:
            self._load_attempt(attempt)

    def _load_attempt(self, attempt) -> None:
        test = self.tests[attempt.test_id]
        link = self._default_link(test)
        started = attempt.attempted_on.astimezone(UTC)
        inv = Invitation(
            test_invitation_id=attempt.test_invitation_id,
            test_id=test.test_id,
            test_link_id=link.test_link_id,
            email=attempt.email,
            name=attempt.name,
            test_name=test.name,
            duration=test.duration,
            banks=copy.deepcopy(test.banks),
            invited_at=started - timedelta(hours=1),
            status=attempt.status,
            invitation_type=attempt.invitation_type,
            started_at=started,
            completed_at=started + timedelta(seconds=attempt.time_taken_seconds),
            time_taken_seconds=attempt.time_taken_seconds,
            bank_scores=dict(attempt.bank_scores),
        )
        self.invitations[inv.test_invitation_id] = inv

    def _default_link(self, test: SimTest) -> SimLink:
        """The test's "Default test link", created (as an API link) on first use (spec §7.1)."""
        for link in test.links:
            if link.name == DEFAULT_LINK_NAME:
                return link
        return self._create_link(test, DEFAULT_LINK_NAME, "email", is_api_link=True)

    def _create_link(self, test: SimTest, name: str, invitation_type: str, is_api_link: bool) -> SimLink:
        link_id = self._next_link_id
        self._next_link_id += 1
        key = hashlib.sha1(f"link-{link_id}".encode()).hexdigest()[:8]
        link = SimLink(link_id, test.test_id, name, key, invitation_type=invitation_type,
                       is_api_link=is_api_link)
        test.links.append(link)
        return link

    # ----- lookups ---------------------------------------------------------------------------

    def _test(self, test_id: int) -> SimTest:
        test = self.tests.get(test_id)
        if test is None:
            raise _not_found(f"Test {test_id} not found.")
        return test

    def _invitation(self, invitation_id: int) -> Invitation:
        inv = self.invitations.get(invitation_id)
        if inv is None:
            raise _not_found(f"Test invitation {invitation_id} not found.")
        return inv

    # ----- API: tests and links ---------------------------------------------------------------

    def list_tests_page(self, page_no: int, page_size: int, labels_filter: str | None = None) -> dict:
        with self._lock:
            tests = sorted(self.tests.values(), key=lambda test: test.test_id)
            if labels_filter:
                tests = [test for test in tests if labels_filter in test.labels]
            size = max(1, min(page_size, self.max_page_size))
            start = (max(1, page_no) - 1) * size
            return {"tests": [self._list_entry(test) for test in tests[start:start + size]], "count": len(tests)}

    def _list_entry(self, test: SimTest) -> Any:
        override = self._list_entries.get(test.test_id)
        if override is None:
            return test.summary_json()
        how, value = override
        if how == "entry":
            return copy.deepcopy(value)
        summary = test.summary_json()
        for name, field_value in value.items():
            if field_value is DROP:
                summary.pop(name, None)
            else:
                summary[name] = copy.deepcopy(field_value)
        return summary

    def test_detail(self, test_id: int) -> dict:
        with self._lock:
            return self._test(test_id).detail_json()

    def test_links(self, test_id: int) -> dict:
        with self._lock:
            return {"testLinks": [link.to_json() for link in self._test(test_id).links]}

    def test_link(self, test_id: int, link_id: int) -> dict:
        with self._lock:
            return self._test(test_id).link(link_id).to_json()

    # ----- API: invitations (spec §7) ---------------------------------------------------------

    def invite(self, test_id: int, body: dict[str, Any], link_id: int | None = None) -> dict:
        """Invite (or re-invite, §7.3) a candidate by the default link or a given link; 201 answer."""
        fields = lower_keys(body)
        with self._lock:
            test = self._test(test_id)
            link = self._default_link(test) if link_id is None else test.link(link_id)
            if link_id is not None and link.status != "active":
                raise _validation(f"Test link {link.test_link_id} is not active.")
            email, name = self._candidate_fields(fields)
            existing = self._latest_for(link.test_link_id, email)
            if existing is not None:
                self._reopen(existing, fields)
                return {"testInvitationId": existing.test_invitation_id, "testUrl": existing.test_url,
                        "status": existing.status}
            inv = self._new_invitation(test, link, email, name, fields)
            return {"testInvitationId": inv.test_invitation_id, "testUrl": inv.test_url, "status": inv.status}

    def _candidate_fields(self, fields: dict[str, Any]) -> tuple[str, str]:
        email = str(fields.get("email") or "").strip()
        name = str(fields.get("name") or "").strip()
        if _as_int(fields.get("disablemandatoryfields")) == 1:
            token = self._next_invitation_id
            return email or f"candidate{token}@imocha-generated.example", name or f"Candidate {token}"
        errors = []
        if not email:
            errors.append("'Email' must not be empty.")
        elif "@" not in email or "." not in email.split("@")[-1]:
            errors.append("'Email' is not a valid email address.")
        if not name:
            errors.append("'Name' must not be empty.")
        if errors:
            raise _validation(*errors)
        return email, name

    def _latest_for(self, link_id: int, email: str) -> Invitation | None:
        matches = [inv for inv in self.invitations.values()
                   if inv.test_link_id == link_id and inv.email.lower() == email.lower()]
        return max(matches, key=lambda inv: inv.test_invitation_id, default=None)

    def _reopen(self, inv: Invitation, fields: dict[str, Any]) -> None:
        """Re-invite/reattempt of a not-started invitation: new window; Cancelled/Expired → Pending."""
        if inv.status not in (STATUS_PENDING, *REOPENABLE):
            return
        inv.status = STATUS_PENDING
        inv.changed_at = None
        self._apply_window(inv, fields)

    def _apply_window(self, inv: Invitation, fields: dict[str, Any]) -> None:
        inv.window_start = parse_request_datetime(fields.get("startdatetime"))
        inv.window_end = parse_request_datetime(fields.get("enddatetime"))
        inv.time_zone_id = _as_int(fields.get("timezoneid"))
        inv.callback_url = fields.get("callbackurl") or inv.callback_url
        inv.redirect_url = fields.get("redirecturl") or inv.redirect_url

    def _new_invitation(self, test: SimTest, link: SimLink, email: str, name: str, fields: dict[str, Any],
                        invitation_type: str = "api", root_id: int | None = None) -> Invitation:
        inv = Invitation(
            test_invitation_id=self._next_invitation_id,
            test_id=test.test_id,
            test_link_id=link.test_link_id,
            email=email,
            name=name,
            test_name=test.name,
            duration=test.duration,
            banks=copy.deepcopy(test.banks),
            invited_at=self.clock(),
            invitation_type=invitation_type,
            root_id=root_id,
        )
        self._next_invitation_id += 1
        self._apply_window(inv, fields)
        self.invitations[inv.test_invitation_id] = inv
        return inv

    def reattempt(self, invitation_id: int, body: dict[str, Any]) -> dict:
        """Allow a retake (§7.4): a new invitation only from a finished one, else the current one."""
        fields = lower_keys(body)
        with self._lock:
            original = self._invitation(invitation_id)
            if original.status == STATUS_IN_PROGRESS:
                raise SimulatorError(400, {"statusCode": 400, "message": (
                    f"Reattempt is not allowed on Test invitation id: {invitation_id} "
                    "which is in inprogress state.")})
            latest = self._latest_in_chain(original)
            if latest.finished:
                latest = self._retake(latest, fields)
            else:
                self._reopen(latest, fields)
            return {"testInvitationId": latest.test_invitation_id, "testUrl": latest.test_url,
                    "callbackUrlRegistered": bool(latest.callback_url),
                    "redirectUrlRegistered": bool(latest.redirect_url)}

    def _latest_in_chain(self, inv: Invitation) -> Invitation:
        root = inv.root_id or inv.test_invitation_id
        chain = [other for other in self.invitations.values()
                 if (other.root_id or other.test_invitation_id) == root]
        return max(chain, key=lambda other: other.test_invitation_id)

    def _retake(self, previous: Invitation, fields: dict[str, Any]) -> Invitation:
        test = self.tests.get(previous.test_id)
        inherited = {"callbackurl": previous.callback_url, "redirecturl": previous.redirect_url}
        inherited.update({key: value for key, value in fields.items() if value})
        inv = Invitation(
            test_invitation_id=self._next_invitation_id,
            test_id=previous.test_id,
            test_link_id=previous.test_link_id,
            email=previous.email,
            name=previous.name,
            test_name=test.name if test else previous.test_name,
            duration=test.duration if test else previous.duration,
            banks=copy.deepcopy(test.banks) if test else copy.deepcopy(previous.banks),
            invited_at=self.clock(),
            invitation_type=previous.invitation_type,
            root_id=previous.root_id or previous.test_invitation_id,
        )
        self._next_invitation_id += 1
        self._apply_window(inv, inherited)
        self.invitations[inv.test_invitation_id] = inv
        return inv

    def cancel(self, invitation_id: int) -> dict:
        """Cancel a Pending invitation (§7.5); any other state is the documented 400."""
        with self._lock:
            inv = self._invitation(invitation_id)
            if inv.status != STATUS_PENDING:
                raise SimulatorError(400, CANCEL_WRONG_STATE_BODY)
            inv.status = STATUS_CANCELLED
            inv.changed_at = self.clock()
            return {"testInvitationId": inv.test_invitation_id, "status": "cancelled"}

    # ----- API: Retrieve Invites (spec §9) ----------------------------------------------------

    def test_attempts(self, state: str | None, body: Any) -> dict:
        """Invites in ``state`` whose timestamp falls in ``[StartDateTime, EndDateTime)``."""
        wanted = {"completed": FINISHED, "cancelled": (STATUS_CANCELLED,), "expired": (STATUS_EXPIRED,)}
        statuses = wanted.get((state or "").lower())
        if statuses is None:
            raise SimulatorError(400, {"result": None,
                                       "errors": ["state must be one of: completed, cancelled, expired"]})
        fields = lower_keys(body) if isinstance(body, dict) else {}
        start = parse_request_datetime(fields.get("startdatetime"))
        end = parse_request_datetime(fields.get("enddatetime"))
        if start is None or end is None or end < start:
            raise SimulatorError(401, BAD_DATES_BODY)
        test_id = fields.get("testid")
        if test_id is not None and _as_int(test_id) is None:
            raise SimulatorError(400, {"result": None, "errors": ["'testId' must be a number."]})
        with self._lock:
            found = [inv for inv in self.invitations.values()
                     if inv.status in statuses and (test_id is None or inv.test_id == _as_int(test_id))]
            stamped = [(stamp, inv) for inv in found if (stamp := self._window_stamp(inv)) is not None]
            hits = sorted((pair for pair in stamped if start <= pair[0] < end),
                          key=lambda pair: (pair[0], pair[1].test_invitation_id))
            if not hits and self.empty_attempts_404:
                raise _not_found("No test attempts found for the given date range.")
            return {"result": {"testAttempts": [self._attempt_json(inv) for _, inv in hits]}, "errors": None}

    def _window_stamp(self, inv: Invitation) -> datetime | None:
        if not inv.finished:
            return inv.changed_at
        return inv.started_at if self.attempt_window_field == "started" else inv.completed_at

    def _attempt_json(self, inv: Invitation) -> dict[str, Any]:
        return {
            "testInvitationId": inv.test_invitation_id,
            "testId": inv.test_id,
            "name": inv.name,
            "email": inv.email,
            "invitationtype": inv.invitation_type,
            "testStatus": self.test_status_labels.get(inv.status, inv.status),
        }

    # ----- API: reports (spec §10) ------------------------------------------------------------

    def report(self, invitation_id: int, report_type: int = 1, *, as_served: bool = False) -> dict:
        """The report of an invitation; 404 when it has none (or the ``unfinished_report`` variant).

        ``as_served=True`` (only the ``GET /v3/reports/{id}`` route passes it) also applies
        ``report_ready_delay_seconds``: a report still being prepared is the unfinished 404. Without it
        the real report comes back at once (what harness code reads as the truth).
        """
        if report_type not in (1, 2, 3):
            raise _validation("'reportType' must be 1, 2 or 3.")
        with self._lock:
            inv = self._invitation(invitation_id)
            if inv.finished and as_served and self._report_preparing(inv):
                raise _not_found(f"Report is not available for test invitation id: {invitation_id}.")
            if inv.finished:
                return build_report(inv, report_type, self.report_status_labels.get(inv.status, inv.status))
            if self.unfinished_report == "in_progress":
                return unfinished_report(inv, report_type)
            raise _not_found(f"Report is not available for test invitation id: {invitation_id}.")

    def _report_preparing(self, inv: Invitation) -> bool:
        """True while a finished attempt's report is within ``report_ready_delay_seconds`` of completion."""
        delay = self.report_ready_delay_seconds
        if not delay or inv.completed_at is None:
            return False
        return self.clock() - inv.completed_at < timedelta(seconds=delay)

    # ----- API: callbacks (spec §8) -----------------------------------------------------------

    def process_callbacks(self, body: Any) -> dict:
        """Re-send the latest notification of each id (≤ limit); any unknown id fails the call (401)."""
        fields = lower_keys(body) if isinstance(body, dict) else {}
        ids = fields.get("testinvitationids")
        if not isinstance(ids, list):
            raise SimulatorError(400, {"result": None, "errors": ["'testinvitationIds' must not be empty."]})
        ids = ids[: self.callbacks_process_limit]
        with self._lock:
            foreign = [str(raw) for raw in ids if _as_int(raw) not in self.invitations]
            if foreign:
                raise SimulatorError(401, {"result": None, "errors": [FOREIGN_IDS_MESSAGE, *foreign]})
            successful, failed = [], []
            for raw in ids:
                inv = self.invitations[_as_int(raw)]
                if inv.callback_url and (inv.finished or inv.status == STATUS_IN_PROGRESS):
                    self._notify(inv, replay=True)
                    successful.append(inv.test_invitation_id)
                else:
                    failed.append(inv.test_invitation_id)
            return {"result": {"testinvitationIds": {"successful": successful, "failed": failed}},
                    "errors": None}

    def callback_payload(self, inv: Invitation) -> dict[str, Any]:
        """The §8.2 PascalCase payload for the invitation's current state."""
        started = inv.started_at or self.clock()
        done = inv.finished
        return {
            "CandidateEmailId": inv.email,
            "AttemptedOn": (started + self.callback_display_offset).strftime("%d-%b-%Y %I:%M %p"),
            "TotalScore": inv.total_points if done else 0,
            "CandidateScore": inv.candidate_points if done else 0,
            "ReportPDFUrl": inv.pdf_report_url if done else None,
            "TestInvitationId": inv.test_invitation_id,
            "Status": self.callback_status_labels.get(inv.status, inv.status),
            "AttemptedOnUtc": started.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
            "PerformanceCategory": performance_category(inv.score_percentage) if done else None,
            "BaseImgUrl": BASE_IMG_URL,
        }

    def _notify(self, inv: Invitation, replay: bool = False) -> None:
        if inv.callback_url:
            self.callbacks.enqueue(_Notification(inv.test_invitation_id, inv.callback_url,
                                                 self.callback_payload(inv), replay))

    def callback_deliveries(self) -> list[dict[str, Any]]:
        """Every delivery try so far (oldest first), with the payload and the receiver's answer."""
        return self.callbacks.deliveries()

    def clear_callback_deliveries(self) -> None:
        self.callbacks.clear()

    def wait_for_callbacks(self, timeout: float = 10.0) -> bool:
        """Block until the callback queue is drained (delivered or given up); False on timeout."""
        return self.callbacks.wait_idle(timeout)

    # ----- control: tests and links -----------------------------------------------------------

    def add_test(self, name: str, duration: int = 30, *, skills: Iterable[str] | None = None,
                 banks: Iterable[dict[str, Any]] | None = None, status: str = "Published",
                 labels: Iterable[str] | None = None, link: bool = True) -> int:
        """Add a test; ``skills`` (names, 10 questions/10 points each) or ``banks``
        (``{"name", "questions", "maxScore", "sectionName"}``) become its question banks."""
        specs = list(banks or []) or [{"name": skill} for skill in (skills or ["General"])]
        with self._lock:
            test_id = self._next_test_id
            self._next_test_id += 17
            test = SimTest(test_id, name, int(duration), status, list(labels or []),
                           [self._new_bank(spec) for spec in specs], [])
            self.tests[test_id] = test
            if link:
                self._create_link(test, DEFAULT_LINK_NAME, "open", is_api_link=False)
            return test_id

    def _new_bank(self, spec: dict[str, Any]) -> QuestionBank:
        fields = lower_keys(spec)
        questions = int(fields.get("questions", 10))
        bank = QuestionBank(
            qb_id=self._next_qb_id,
            qb_name=str(fields["name"]),
            section_id=self._next_section_id,
            section_name=str(fields.get("sectionname") or fields["name"]),
            questions=questions,
            max_score=float(fields.get("maxscore", questions)),
        )
        self._next_qb_id += 1
        self._next_section_id += 1
        return bank

    def update_test(self, test_id: int, *, name: str | None = None, duration: int | None = None,
                    status: str | None = None, labels: Iterable[str] | None = None) -> dict:
        with self._lock:
            test = self._test(test_id)
            test.name = test.name if name is None else name
            test.duration = test.duration if duration is None else int(duration)
            test.status = test.status if status is None else status
            test.labels = test.labels if labels is None else list(labels)
            return test.detail_json()

    def remove_test(self, test_id: int) -> None:
        """The test disappears from the API; its invitations and reports stay."""
        with self._lock:
            self._test(test_id)
            del self.tests[test_id]
            self._list_entries.pop(test_id, None)

    def set_list_entry(self, test_id: int, entry: Any = _UNSET, *, fields: dict[str, Any] | None = None) -> None:
        """Serve test ``test_id``'s entry in ``GET /v3/tests`` malformed, until ``clear_list_entries``.

        ``entry``: any JSON value served in its place (a string, a list, an object without ``testId``);
        ``fields``: laid over the real summary (``{"testName": {"en": "x"}}``; the value ``DROP`` removes a key).
        The test keeps its place in the order, ``count`` and its own endpoints (detail, links) are unchanged.
        """
        if (entry is _UNSET) == (fields is None):
            raise SimulatorError(400, {"errors": ["give either an entry or fields"]})
        with self._lock:
            self._test(test_id)
            self._list_entries[test_id] = ("entry", entry) if fields is None else ("fields", dict(fields))

    def clear_list_entries(self, test_id: int | None = None) -> None:
        """Serve the list as the state says again (for one test, or for all)."""
        with self._lock:
            if test_id is None:
                self._list_entries.clear()
            else:
                self._list_entries.pop(test_id, None)

    def add_test_link(self, test_id: int, name: str = "Campaign link", *, invitation_type: str = "open",
                      is_api_link: bool = False) -> int:
        with self._lock:
            return self._create_link(self._test(test_id), name, invitation_type, is_api_link).test_link_id

    def deactivate_test_link(self, test_id: int, link_id: int) -> dict:
        with self._lock:
            link = self._test(test_id).link(link_id)
            link.status = "inactive"
            return link.to_json()

    # ----- control: attempts ------------------------------------------------------------------

    def invitation(self, invitation_id: int) -> dict:
        with self._lock:
            return self._invitation(invitation_id).to_json()

    def complete_attempt(self, test_id: int, email: str, name: str, status: str = STATUS_COMPLETE,
                         bank_scores: float | dict[int, float] | None = None,
                         attempted_on: datetime | None = None, callback_url: str | None = None,
                         time_taken_seconds: int | None = None) -> int:
        """Invite (by the default link), start and finish an attempt in one call; returns its id.

        A candidate who already finished on that link gets a reattempt (a new id). ``bank_scores``:
        None = a deterministic score, a number = that percent of every bank, a dict = points per qbId.
        """
        _check_final(status)
        body = {"email": email, "name": name, "callbackUrl": callback_url}
        with self._lock:
            inv = self._invitation(self.invite(test_id, body)["testInvitationId"])
            if inv.finished:
                inv = self._invitation(self.reattempt(inv.test_invitation_id, body)["testInvitationId"])
            taken = time_taken_seconds or max(60, int(inv.duration * 60 * 0.6))
            started = attempted_on or (self.clock() - timedelta(seconds=taken))
            if inv.status == STATUS_PENDING:
                self.start_attempt(inv.test_invitation_id, at=started)
            self._finish(inv, status, bank_scores, inv.started_at + timedelta(seconds=taken), taken)
            return inv.test_invitation_id

    def start_attempt(self, invitation_id: int, at: datetime | None = None) -> dict:
        """Pending → In Progress; sends the In Progress callback."""
        with self._lock:
            inv = self._invitation(invitation_id)
            self._require(inv, STATUS_PENDING, "start")
            inv.status = STATUS_IN_PROGRESS
            inv.started_at = (parse_request_datetime(at) if at else None) or self.clock()
            self._notify(inv)
            return inv.to_json()

    def finish_attempt(self, invitation_id: int, status: str = STATUS_COMPLETE,
                       bank_scores: float | dict[int, float] | None = None, at: datetime | None = None,
                       time_taken_seconds: int | None = None) -> dict:
        """In Progress → Complete / Test Left / Terminated; sends the final callback."""
        with self._lock:
            inv = self._invitation(invitation_id)
            completed = (parse_request_datetime(at) if at else None) or self.clock()
            self._finish(inv, status, bank_scores, completed, time_taken_seconds)
            return inv.to_json()

    def leave_attempt(self, invitation_id: int, **kwargs: Any) -> dict:
        return self.finish_attempt(invitation_id, STATUS_TEST_LEFT, **kwargs)

    def terminate_attempt(self, invitation_id: int, **kwargs: Any) -> dict:
        return self.finish_attempt(invitation_id, STATUS_TERMINATED, **kwargs)

    def expire_invitation(self, invitation_id: int, at: datetime | None = None) -> dict:
        """Pending → Expired (its access window ended)."""
        with self._lock:
            inv = self._invitation(invitation_id)
            self._require(inv, STATUS_PENDING, "expire")
            inv.status = STATUS_EXPIRED
            inv.changed_at = (parse_request_datetime(at) if at else None) or self.clock()
            return inv.to_json()

    def _require(self, inv: Invitation, status: str, action: str) -> None:
        if inv.status != status:
            raise SimulatorError(409, {"statusCode": 409, "message": (
                f"cannot {action} invitation {inv.test_invitation_id}: it is {inv.status}, not {status}")})

    def _finish(self, inv: Invitation, status: str, bank_scores: Any, completed: datetime,
                time_taken_seconds: int | None) -> None:
        _check_final(status)
        self._require(inv, STATUS_IN_PROGRESS, "finish")
        started = inv.started_at or completed
        inv.status = status
        inv.completed_at = completed
        inv.time_taken_seconds = (int(time_taken_seconds) if time_taken_seconds is not None
                                  else max(0, int((completed - started).total_seconds())))
        inv.bank_scores = self._scores(inv, bank_scores)
        self._notify(inv)

    @staticmethod
    def _scores(inv: Invitation, bank_scores: Any) -> dict[int, float]:
        if isinstance(bank_scores, dict):
            given = {int(key): float(value) for key, value in bank_scores.items()}
            return {bank.qb_id: min(bank.max_score, given.get(bank.qb_id, 0.0)) for bank in inv.banks}
        if isinstance(bank_scores, int | float):
            share = min(100.0, max(0.0, float(bank_scores))) / 100
            return {bank.qb_id: round(bank.max_score * share, 2) for bank in inv.banks}
        rng = random.Random(inv.test_invitation_id)
        level = rng.uniform(0.35, 0.95)
        return {bank.qb_id: round(bank.max_score * min(1.0, max(0.0, rng.gauss(level, 0.1))), 2)
                for bank in inv.banks}

    # ----- control: canned answers ------------------------------------------------------------

    def set_canned_response(self, method: str, path: str, body: str | bytes = "", *, status: int = 200,
                            content_type: str = "application/json", times: int | None = 1) -> None:
        """Answer the next ``times`` API requests ``method path`` with this raw body (after the key check).

        For malformed-payload tests: HTML pages, truncated JSON, empty bodies, wrong shapes.
        """
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        with self._lock:
            self._canned.append(CannedResponse(method.upper(), path, status, text, content_type, times))

    def clear_canned_responses(self) -> None:
        with self._lock:
            self._canned.clear()

    def take_canned(self, method: str, path: str) -> CannedResponse | None:
        with self._lock:
            for canned in self._canned:
                if canned.method == method.upper() and canned.path == path:
                    if canned.times is not None:
                        canned.times -= 1
                        if canned.times <= 0:
                            self._canned.remove(canned)
                    return canned
            return None

    def close(self) -> None:
        """Stop the callback worker (the HTTP server is stopped by its ``ServerThread``)."""
        self.callbacks.close()

    # ----- HTTP app ---------------------------------------------------------------------------

    def _starlette(self) -> Starlette:
        return Starlette(
            routes=self._api_routes() + self._control_routes(),
            exception_handlers={
                SimulatorError: _error_response,
                HTTPException: _http_error_response,
                Exception: _internal_error_response,
            },
        )

    def _api_routes(self) -> list[Route]:
        return [
            Route("/v3/tests", self._h_list_tests, methods=["GET"]),
            Route("/v3/tests/{test_id:int}", self._h_test, methods=["GET"]),
            Route("/v3/tests/{test_id:int}/testlinks", self._h_links, methods=["GET"]),
            Route("/v3/tests/{test_id:int}/testlinks/{link_id:int}", self._h_link, methods=["GET"]),
            Route("/v3/tests/{test_id:int}/invite", self._h_invite, methods=["POST"]),
            Route("/v3/tests/{test_id:int}/testlinks/{link_id:int}/invite", self._h_invite, methods=["POST"]),
            Route("/v3/invitations/{invitation_id:int}/reattempt", self._h_reattempt, methods=["POST"]),
            Route("/v3/invitations/{invitation_id:int}/cancel", self._h_cancel, methods=["POST"]),
            Route("/v3/candidates/testattempts", self._h_attempts, methods=["POST"]),
            Route("/v3/reports/{invitation_id:int}", self._h_report, methods=["GET"]),
            Route("/v3/callbacks/process", self._h_process_callbacks, methods=["POST"]),
        ]

    def _control_routes(self) -> list[Route]:
        p = CONTROL_PREFIX
        return [
            Route(f"{p}/tests", self._c_add_test, methods=["POST"]),
            Route(f"{p}/tests/{{test_id:int}}", self._c_test, methods=["PATCH", "DELETE"]),
            Route(f"{p}/tests/{{test_id:int}}/testlinks", self._c_add_link, methods=["POST"]),
            Route(f"{p}/tests/{{test_id:int}}/listentry", self._c_list_entry, methods=["PUT", "DELETE"]),
            Route(f"{p}/tests/{{test_id:int}}/testlinks/{{link_id:int}}/deactivate", self._c_deactivate_link,
                  methods=["POST"]),
            Route(f"{p}/attempts", self._c_complete_attempt, methods=["POST"]),
            Route(f"{p}/invitations/{{invitation_id:int}}", self._c_invitation, methods=["GET"]),
            Route(f"{p}/invitations/{{invitation_id:int}}/{{action}}", self._c_transition, methods=["POST"]),
            Route(f"{p}/requests", self._c_requests, methods=["GET", "DELETE"]),
            Route(f"{p}/faults", self._c_faults, methods=["GET", "PUT", "DELETE"]),
            Route(f"{p}/callbacks", self._c_callbacks, methods=["GET", "DELETE"]),
            Route(f"{p}/settings", self._c_settings, methods=["GET", "PUT"]),
            Route(f"{p}/responses", self._c_responses, methods=["PUT", "DELETE"]),
        ]

    # API handlers: thin wrappers turning requests into calls of the methods above.

    async def _h_list_tests(self, request: Request) -> Response:
        query = _query(request)
        page_no = _query_int(query, "pageno", 1)
        page_size = _query_int(query, "pagesize", 100)
        return JSONResponse(self.list_tests_page(page_no, page_size, query.get("labelsfilter")))

    async def _h_test(self, request: Request) -> Response:
        return JSONResponse(self.test_detail(request.path_params["test_id"]))

    async def _h_links(self, request: Request) -> Response:
        return JSONResponse(self.test_links(request.path_params["test_id"]))

    async def _h_link(self, request: Request) -> Response:
        params = request.path_params
        return JSONResponse(self.test_link(params["test_id"], params["link_id"]))

    async def _h_invite(self, request: Request) -> Response:
        body = await _json_object(request)
        params = request.path_params
        return JSONResponse(self.invite(params["test_id"], body, params.get("link_id")), status_code=201)

    async def _h_reattempt(self, request: Request) -> Response:
        body = await _json_object(request, allow_empty=True)
        return JSONResponse(self.reattempt(request.path_params["invitation_id"], body))

    async def _h_cancel(self, request: Request) -> Response:
        return JSONResponse(self.cancel(request.path_params["invitation_id"]))

    async def _h_attempts(self, request: Request) -> Response:
        body = await _json_any(request)
        return JSONResponse(self.test_attempts(_query(request).get("state"), body))

    async def _h_report(self, request: Request) -> Response:
        report_type = _query_int(_query(request), "reporttype", 1)
        return JSONResponse(self.report(request.path_params["invitation_id"], report_type, as_served=True))

    async def _h_process_callbacks(self, request: Request) -> Response:
        return JSONResponse(self.process_callbacks(await _json_any(request)))

    # Control handlers.

    async def _c_add_test(self, request: Request) -> Response:
        f = lower_keys(await _json_object(request))
        if not f.get("name"):
            raise _validation("'name' must not be empty.")
        test_id = self.add_test(str(f["name"]), int(f.get("duration", 30)), skills=f.get("skills"),
                                banks=f.get("banks"), status=f.get("status", "Published"),
                                labels=f.get("labels"), link=bool(f.get("link", True)))
        links = self.test_links(test_id)["testLinks"]
        return JSONResponse({"testId": test_id, "testLinkId": links[0]["testLinkId"] if links else None},
                            status_code=201)

    async def _c_test(self, request: Request) -> Response:
        test_id = request.path_params["test_id"]
        if request.method == "DELETE":
            self.remove_test(test_id)
            return Response(status_code=204)
        f = lower_keys(await _json_object(request))
        return JSONResponse(self.update_test(test_id, name=f.get("name"), duration=f.get("duration"),
                                             status=f.get("status"), labels=f.get("labels")))

    async def _c_list_entry(self, request: Request) -> Response:
        test_id = request.path_params["test_id"]
        if request.method == "DELETE":
            self.clear_list_entries(test_id)
            return Response(status_code=204)
        f = lower_keys(await _json_object(request))
        if "entry" in f:
            self.set_list_entry(test_id, f["entry"])
        else:
            fields = f.get("fields")
            if not isinstance(fields, dict):
                raise _validation("'entry' or 'fields' (an object) is required.")
            self.set_list_entry(test_id, fields=fields)
        return Response(status_code=204)

    async def _c_add_link(self, request: Request) -> Response:
        f = lower_keys(await _json_object(request, allow_empty=True))
        test_id = request.path_params["test_id"]
        link_id = self.add_test_link(test_id, f.get("name", "Campaign link"),
                                     invitation_type=f.get("invitationtype", "open"),
                                     is_api_link=bool(f.get("isapilink", False)))
        return JSONResponse(self.test_link(test_id, link_id), status_code=201)

    async def _c_deactivate_link(self, request: Request) -> Response:
        params = request.path_params
        return JSONResponse(self.deactivate_test_link(params["test_id"], params["link_id"]))

    async def _c_complete_attempt(self, request: Request) -> Response:
        f = lower_keys(await _json_object(request))
        if _as_int(f.get("testid")) is None:
            raise _validation("'testId' must be a number.")
        invitation_id = self.complete_attempt(
            _as_int(f["testid"]), str(f.get("email", "")), str(f.get("name", "")),
            status=f.get("status", STATUS_COMPLETE), bank_scores=f.get("bankscores"),
            attempted_on=parse_request_datetime(f.get("attemptedon")), callback_url=f.get("callbackurl"),
            time_taken_seconds=f.get("timetakenseconds"))
        return JSONResponse({"testInvitationId": invitation_id}, status_code=201)

    async def _c_invitation(self, request: Request) -> Response:
        return JSONResponse(self.invitation(request.path_params["invitation_id"]))

    async def _c_transition(self, request: Request) -> Response:
        invitation_id = request.path_params["invitation_id"]
        f = lower_keys(await _json_object(request, allow_empty=True))
        action = request.path_params["action"]
        if action in ("start", "expire"):
            method = self.start_attempt if action == "start" else self.expire_invitation
            return JSONResponse(method(invitation_id, at=f.get("at")))
        finals = {"finish": STATUS_COMPLETE, "leave": STATUS_TEST_LEFT, "terminate": STATUS_TERMINATED}
        if action not in finals:
            raise _not_found(f"unknown transition {action!r}")
        return JSONResponse(self.finish_attempt(
            invitation_id, finals[action], bank_scores=f.get("bankscores"), at=f.get("at"),
            time_taken_seconds=f.get("timetakenseconds")))

    async def _c_requests(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.log.clear()
            return Response(status_code=204)
        since = _query_int(_query(request), "since", 0)
        return JSONResponse({"requests": [entry.to_dict() for entry in self.log.entries(since)],
                             "lastSeq": self.log.last_seq})

    async def _c_faults(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.faults.clear()
        elif request.method == "PUT":
            try:
                self.faults.set(FaultConfig.from_dict(await _json_object(request)))
            except (TypeError, ValueError) as exc:
                raise _validation(str(exc)) from exc
        return JSONResponse(vars(self.faults.config))

    async def _c_callbacks(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.clear_callback_deliveries()
            return Response(status_code=204)
        return JSONResponse({"deliveries": self.callback_deliveries()})

    async def _c_settings(self, request: Request) -> Response:
        if request.method == "PUT":
            return JSONResponse(self.configure(**await _json_object(request)))
        return JSONResponse(self.settings())

    async def _c_responses(self, request: Request) -> Response:
        if request.method == "DELETE":
            self.clear_canned_responses()
            return Response(status_code=204)
        f = lower_keys(await _json_object(request))
        self.set_canned_response(str(f.get("method", "GET")), str(f["path"]), str(f.get("body", "")),
                                 status=int(f.get("status", 200)),
                                 content_type=str(f.get("contenttype", "application/json")),
                                 times=f.get("times", 1))
        return Response(status_code=204)


# ---------------------------------------------------------------------------------------------
# Request helpers and error handlers


def _query(request: Request) -> dict[str, str]:
    """Query parameters with lower-cased names (ASP.NET binds them case-insensitively)."""
    return {key.lower(): value for key, value in parse_qsl(request.url.query, keep_blank_values=True)}


def _query_int(query: dict[str, str], name: str, default: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    value = _as_int(raw)
    if value is None:
        raise _validation(f"The value '{raw}' is not valid for {name}.")
    return value


async def _json_any(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise _validation("The request body is not valid JSON.") from exc


async def _json_object(request: Request, allow_empty: bool = False) -> dict[str, Any]:
    body = await _json_any(request)
    if body is None and allow_empty:
        return {}
    if not isinstance(body, dict):
        raise _validation("A non-empty request body is required.")
    return body


async def _error_response(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SimulatorError)
    return JSONResponse(exc.body, status_code=exc.status)


async def _http_error_response(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = "Resource not found" if exc.status_code == 404 else str(exc.detail)
    return JSONResponse({"statusCode": exc.status_code, "message": message}, status_code=exc.status_code)


async def _internal_error_response(_request: Request, _exc: Exception) -> Response:
    return JSONResponse(INTERNAL_ERROR_BODY, status_code=500)

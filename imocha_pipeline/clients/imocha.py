"""The iMocha Assessment API v3 client and its typed records (see ``specs/imocha-api.md``).

``ImochaClient`` reads tests, test links, finished attempts and candidate reports, and asks iMocha to
re-send callbacks. Transport (retries, backoff, ``Retry-After``, metrics, secret redaction) is the
shared ``ApiSession``; this module turns answers into frozen records and typed errors.

Parsing is tolerant because the docs and the wire disagree (spec §3.2, §10.2): keys are matched
without regard to case (``sectionID``/``sectionId``), numbers may arrive as strings, timestamps come
with or without ``Z`` and fractions (naive = UTC), and optional fields that are missing become None.
A report without a skills array gets ``skills=None`` (not an empty list) so the pipeline can
quarantine it. A body that is not the documented shape (HTML, truncated JSON, an empty 200, a list
where an object belongs, a test without an id) raises ``ImochaPayloadError`` naming the endpoint and
the problem. The test list is the exception for single entries: given a ``problems`` list,
``list_tests``/``iter_tests`` report each unreadable entry there as a ``TestListProblem`` (page, position,
the test id when it can be read, the reason) and go on with the rest; without one they raise as before.
The API key is registered with the session as a secret and never appears in logs, reprs or exception text.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import requests

from imocha_pipeline.clients.errors import (
    ApiError,
    AuthError,
    BadRequestError,
    NotFoundError,
    PayloadError,
)
from imocha_pipeline.clients.http import ApiSession, RateBudget, RequestMetrics

API_NAME = "iMocha"
PROCESS_CALLBACKS_BATCH = 100
ATTEMPT_STATES = ("completed", "cancelled", "expired")

EP_TESTS = "GET /v3/tests"
EP_TEST = "GET /v3/tests/{id}"
EP_TEST_LINKS = "GET /v3/tests/{id}/testlinks"
EP_ATTEMPTS = "POST /v3/candidates/testattempts"
EP_REPORT = "GET /v3/reports/{id}"
EP_PROCESS_CALLBACKS = "POST /v3/callbacks/process"


class ImochaPayloadError(PayloadError):
    """iMocha answered, but the body is not what the contract says."""


# ---------------------------------------------------------------------------------------------
# Records


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


_STATUS_NAMES = {
    "complete": "Complete",
    "completed": "Complete",
    "testleft": "Test Left",
    "terminated": "Terminated",
    "inprogress": "In Progress",
    "pending": "Pending",
    "cancelled": "Cancelled",
    "canceled": "Cancelled",
    "expired": "Expired",
}


def normalize_status(status: str | None) -> str | None:
    """One spelling per attempt status: ``Completed``/``complete`` → ``Complete``, ``TestLeft`` → ``Test Left``."""
    if status is None:
        return None
    key = "".join(ch for ch in status.lower() if ch.isalpha())
    return _STATUS_NAMES.get(key, status.strip())


# ---------------------------------------------------------------------------------------------
# Tolerant field readers. Each names the endpoint and field in the error it raises.


class _Fields:
    """Case-insensitive view of one JSON object from ``endpoint``."""

    def __init__(self, obj: Any, endpoint: str, what: str):
        if not isinstance(obj, Mapping):
            raise _payload(endpoint, f"{what} is {_kind(obj)}, expected an object")
        self.obj = obj
        self.endpoint = endpoint
        self.what = what
        self._lower = {str(key).lower(): value for key, value in obj.items()}

    def get(self, *names: str) -> Any:
        """The first present, non-null value among ``names`` (any casing)."""
        for name in names:
            value = self._lower.get(name.lower())
            if value is not None:
                return value
        return None

    def has(self, name: str) -> bool:
        return name.lower() in self._lower

    def text(self, *names: str) -> str | None:
        value = self.get(*names)
        if value is None:
            return None
        if isinstance(value, Mapping | list):
            raise self._bad(names[0], value, "text")
        return str(value)

    def integer(self, *names: str, required: bool = False) -> int | None:
        value = self.get(*names)
        if value is None:
            if required:
                raise _payload(self.endpoint, f"{self.what} has no {names[0]!r}")
            return None
        number = to_number(value)
        if number is None or not math.isfinite(number) or number != int(number):
            raise self._bad(names[0], value, "whole number")
        return int(number)

    def number(self, *names: str) -> float | None:
        value = self.get(*names)
        if value is None:
            return None
        number = to_number(value)
        if number is None or not math.isfinite(number):  # NaN / Infinity are not scores
            raise self._bad(names[0], value, "number")
        return number

    def boolean(self, *names: str) -> bool | None:
        value = self.get(*names)
        if value is None or isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes"):
            return True
        if text in ("false", "0", "no"):
            return False
        raise self._bad(names[0], value, "boolean")

    def moment(self, *names: str) -> datetime | None:
        value = self.get(*names)
        if value is None or value == "":
            return None
        parsed = parse_timestamp(value)
        if parsed is None:
            raise self._bad(names[0], value, "timestamp")
        return parsed

    def items(self, *names: str) -> list[Any] | None:
        """A list field: None when absent, an error when present but not a list."""
        value = self.get(*names)
        if value is None:
            return None
        if not isinstance(value, list):
            raise _payload(self.endpoint, f"{self.what} field {names[0]!r} is {_kind(value)}, expected a list")
        return value

    def _bad(self, name: str, value: Any, expected: str) -> ImochaPayloadError:
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:60] + "…"
        return _payload(self.endpoint, f"{self.what} field {name!r} is not a {expected}: {shown}")


def to_number(value: Any) -> float | None:
    """A JSON number or numeric string as float; anything else (bools, junk) as None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    kinds = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "a number",
             float: "a number"}
    return kinds.get(type(value), f"a {type(value).__name__}")


def _payload(endpoint: str, problem: str, status: int | None = None) -> ImochaPayloadError:
    return ImochaPayloadError(problem, api=API_NAME, endpoint=endpoint, status=status)


def parse_timestamp(value: Any) -> datetime | None:
    """ISO 8601 with or without ``Z``/offset/fraction (any digits) → tz-aware UTC; naive is UTC."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text[-1] in "zZ":
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def format_utc(moment: datetime) -> str:
    """``YYYY-MM-ddTHH:mm:ssZ`` (spec §3.4)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _as_utc(moment: datetime | date) -> datetime:
    if not isinstance(moment, datetime):
        return datetime(moment.year, moment.month, moment.day, tzinfo=UTC)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# ---------------------------------------------------------------------------------------------
# Record parsers


def parse_test(obj: Any, endpoint: str = EP_TESTS) -> ImochaTest:
    f = _Fields(obj, endpoint, "test")
    return ImochaTest(**_test_fields(f))


def _test_fields(f: _Fields) -> dict[str, Any]:
    labels = f.items("labels") or []
    return {
        "test_id": f.integer("testId", "id", required=True),
        "name": f.text("testName", "name"),
        "status": f.text("status", "testStatus"),
        "duration_minutes": f.integer("duration", "testDuration"),
        "labels": tuple(str(label) for label in labels if label is not None),
    }


def parse_test_detail(obj: Any, endpoint: str = EP_TEST) -> ImochaTestDetail:
    f = _Fields(obj, endpoint, "test")
    sections = []
    for item in f.items("sections") or []:
        s = _Fields(item, endpoint, "test section")
        sections.append(ImochaTestSection(
            name=s.text("sectionName", "name"),
            section_type=s.text("sectionType", "type"),
            questions=s.integer("questions", "noOfQue"),
            duration_minutes=s.integer("duration", "sectionTime"),
        ))
    return ImochaTestDetail(**_test_fields(f), questions=f.integer("questions", "noOfQuestions"),
                            sections=tuple(sections))


def parse_test_link(obj: Any, endpoint: str = EP_TEST_LINKS) -> ImochaTestLink:
    f = _Fields(obj, endpoint, "test link")
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
    f = _Fields(obj, endpoint, "test attempt")
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
    f = _Fields(obj, endpoint, "report")
    own_id = f.integer("testInvitationId")
    if own_id is None and invitation_id is None:
        raise _payload(endpoint, "report has no 'testInvitationId'")
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
    f = _Fields(obj, endpoint, "report section")
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
    f = _Fields(obj, endpoint, "report skill")
    return ImochaReportSkill(
        qb_id=f.integer("qbId"),
        qb_name=f.text("qbName", "skillName"),
        candidate_score=f.number("candidateQbScore", "candidateScore"),
        max_score=f.number("qbScore", "maxScore"),
        questions=f.integer("noOfQue", "questions"),
        section_id=f.integer("sectionId"),
        section_name=f.text("sectionName"),
    )


# ---------------------------------------------------------------------------------------------
# The client


def _error_text(body: Any, fallback: str) -> str:
    """The human part of an iMocha error body, whichever of the three shapes it has (spec §3.3)."""
    if isinstance(body, Mapping):
        errors = body.get("errors")
        if isinstance(errors, list) and errors:
            return "; ".join(str(error) for error in errors)
        if body.get("message"):
            return str(body["message"])
    return fallback


class ImochaClient:
    """Typed access to the iMocha v3 endpoints the pipeline uses.

    ``base_url`` may be the host (``https://apiv3.imocha.io``) or include ``/v3``. ``session`` is an
    ``ApiSession`` to use instead (its own base URL applies; the key is registered with it as a
    secret and sent per request); by default the client builds one, with ``metrics`` when given.
    ``timeout`` is one number (the read timeout) or ``(connect, read)``; the read timeout defaults to
    ``IMOCHA_PIPELINE_HTTP_READ_TIMEOUT_SECONDS`` (30 s).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        session: ApiSession | None = None,
        page_size: int = 100,
        attempts_window_days: int = 7,
        timeout: float | tuple[float, float | None] = (5.0, None),
        metrics: RequestMetrics | None = None,
        rate_budget: RateBudget | None = None,
    ):
        if not api_key:
            raise ValueError("an iMocha API key is required")
        if page_size < 1 or attempts_window_days < 1:
            raise ValueError("page_size and attempts_window_days must be at least 1")
        root = base_url.rstrip("/")
        root = root[: -len("/v3")] if root.endswith("/v3") else root
        connect, read = timeout if isinstance(timeout, tuple) else (5.0, float(timeout))
        self.session = session or ApiSession(root, api_name=API_NAME, connect_timeout=connect,
                                             read_timeout=read, secrets=[api_key], metrics=metrics,
                                             rate_budget=rate_budget)
        self.session.add_secret(api_key)
        self._headers = {"X-API-KEY": api_key}
        self.page_size = page_size
        self.attempts_window = timedelta(days=attempts_window_days)

    @property
    def metrics(self) -> RequestMetrics:
        """Request counts by endpoint template and outcome (shared with the session)."""
        return self.session.metrics

    def __repr__(self) -> str:
        return f"ImochaClient(base_url={self.session.base_url!r}, api_key=<redacted>)"

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> ImochaClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ----- transport ----------------------------------------------------------------------

    def _call(self, method: str, path: str, endpoint: str, *, params: Mapping[str, Any] | None = None,
              json_body: Any = None) -> requests.Response:
        """One request through the session; a final 4xx becomes a typed error."""
        # Every iMocha call the pipeline makes is a read (Retrieve Invites is a POST that reads) or harmless to
        # repeat (asking for callbacks again): all may be retried after a lost answer.
        response = self.session.request(method, path, endpoint=endpoint, params=params, json_body=json_body,
                                        headers=self._headers, idempotent=True)
        if response.status_code >= 400:
            raise self._status_error(response, endpoint)
        return response

    def _json(self, response: requests.Response, endpoint: str) -> Any:
        try:
            return self.session.decode_json(response, endpoint)
        except PayloadError as exc:
            raise _rewrap(exc) from None

    def _status_error(self, response: requests.Response, endpoint: str) -> ApiError:
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        text = self.session.redact(_error_text(body, " ".join(response.text.split())[:200] or "no body"))
        kwargs = {"api": API_NAME, "endpoint": endpoint, "status": status, "detail": text}
        # iMocha answers some client errors with 401 in the result/errors envelope (bad dates,
        # foreign invitation ids, spec §4.2): those are bad requests, not bad keys.
        envelope = isinstance(body, Mapping) and isinstance(body.get("errors"), list)
        if status in (401, 403) and not envelope:
            return AuthError(f"access denied: {text}", **kwargs)
        if status == 404:
            return NotFoundError(f"not found: {text}", **kwargs)
        if 400 <= status < 500:
            return BadRequestError(f"request rejected: {text}", **kwargs)
        return ApiError(f"unexpected answer: {text}", **kwargs)

    # ----- tests and links -------------------------------------------------------------------

    def list_tests(self, problems: list[TestListProblem] | None = None) -> list[ImochaTest]:
        """Every test, page by page, until ``count`` tests were seen or a page comes back short.

        With ``problems``, an unreadable entry is appended there and left out instead of raising
        ``ImochaPayloadError``; an answer that is unusable as a whole (not JSON, no ``tests`` list) raises either way.
        """
        return list(self.iter_tests(problems))

    def iter_tests(self, problems: list[TestListProblem] | None = None) -> Iterator[ImochaTest]:
        """The tests of ``list_tests``, one page at a time (``problems`` as there, filled as pages are read)."""
        seen: set[int] = set()
        repeats: set[str] = set()  # pages with id-less entries, as sent
        unattributed = 0
        page = 1
        while True:
            found = self._tests_page(page, self.page_size, tolerant=problems is not None)
            fresh: list[ImochaTest] = []
            reported: list[TestListProblem] = []
            for test in found.tests:
                if test.test_id not in seen:
                    seen.add(test.test_id)
                    fresh.append(test)
            for problem in found.problems:
                if problem.test_id is not None and problem.test_id not in seen:
                    seen.add(problem.test_id)
                    reported.append(problem)
            idless = [problem for problem in found.problems if problem.test_id is None]
            if idless and found.fingerprint not in repeats:  # not the same page served again
                repeats.add(found.fingerprint)
                reported += idless
                unattributed += len(idless)
            if problems is not None:
                problems.extend(reported)
            yield from fresh
            # A page with nothing new means the server ignores pageNo: stop instead of looping. An unreadable
            # entry counts as seen (by its id, or by its place), so a page of them does not end the list early.
            new = bool(fresh or reported)
            read = len(seen) + unattributed
            done = not new or (read >= found.count if found.count is not None else found.size < self.page_size)
            if done:
                return
            page += 1

    def _tests_page(self, page: int, size: int, tolerant: bool = False) -> _TestsPage:
        """One page; ``tolerant``: unreadable entries become ``TestListProblem``s instead of raising."""
        response = self._call("GET", "/v3/tests", EP_TESTS, params={"pageNo": page, "pageSize": size})
        with _about(f"page {page}", response):
            f = _Fields(self._json(response, EP_TESTS), EP_TESTS, "tests page")
            items = f.items("tests")
            if items is None:
                raise _payload(EP_TESTS, "tests page has no 'tests' list")
            count = f.integer("count", "totalCount")
        tests: list[ImochaTest] = []
        problems: list[TestListProblem] = []
        for position, item in enumerate(items, start=1):
            try:
                with _about(f"page {page} item {position}", response):
                    tests.append(parse_test(item))
            except ImochaPayloadError as exc:
                if not tolerant:
                    raise
                problems.append(TestListProblem(page, position, _readable_test_id(item), str(exc), _shown(item)))
        fingerprint = _shown(items, limit=None) if any(p.test_id is None for p in problems) else ""
        return _TestsPage(tests, problems, count, len(items), fingerprint)

    def get_test(self, test_id: int) -> ImochaTestDetail:
        response = self._call("GET", f"/v3/tests/{int(test_id)}", EP_TEST)
        with _about(f"test {int(test_id)}", response):
            return parse_test_detail(self._json(response, EP_TEST))

    def list_test_links(self, test_id: int) -> list[ImochaTestLink]:
        response = self._call("GET", f"/v3/tests/{int(test_id)}/testlinks", EP_TEST_LINKS)
        with _about(f"test {int(test_id)}", response):
            body = self._json(response, EP_TEST_LINKS)
            items = body if isinstance(body, list) else _Fields(body, EP_TEST_LINKS, "answer").items("testLinks")
            if items is None:
                raise _payload(EP_TEST_LINKS, "answer has no 'testLinks' list")
            return [parse_test_link(item) for item in items]

    # ----- attempts -----------------------------------------------------------------------------

    def list_attempts(self, start: datetime | date, end: datetime | date, state: str = "completed",
                      test_id: int | None = None) -> list[ImochaAttempt]:
        """Invites in ``state`` within ``[start, end)``, asked for in ``attempts_window_days`` windows.

        Naive datetimes and dates are UTC. Boundaries go out as whole seconds (start rounded down,
        end up), so an attempt up to a second past ``end`` may be included. A 404 means "none";
        duplicates across windows are dropped (first seen wins).
        """
        if state not in ATTEMPT_STATES:
            raise ValueError(f"state must be one of {ATTEMPT_STATES}, not {state!r}")
        found: dict[int, ImochaAttempt] = {}
        for window_start, window_end in self.windows(start, end):
            for attempt in self._attempts_window(window_start, window_end, state, test_id):
                found.setdefault(attempt.test_invitation_id, attempt)
        return list(found.values())

    def windows(self, start: datetime | date, end: datetime | date) -> list[tuple[datetime, datetime]]:
        """``[start, end)`` cut into consecutive windows of at most ``attempts_window_days``."""
        low = _as_utc(start).replace(microsecond=0)
        high = _as_utc(end)
        if high.microsecond:
            high = high.replace(microsecond=0) + timedelta(seconds=1)
        result = []
        while low < high:
            upper = min(high, low + self.attempts_window)
            result.append((low, upper))
            low = upper
        return result

    def _attempts_window(self, start: datetime, end: datetime, state: str,
                         test_id: int | None) -> list[ImochaAttempt]:
        body: dict[str, Any] = {"StartDateTime": format_utc(start), "EndDateTime": format_utc(end)}
        if test_id is not None:
            body["testId"] = int(test_id)
        try:
            response = self._call("POST", "/v3/candidates/testattempts", EP_ATTEMPTS,
                                  params={"state": state}, json_body=body)
        except NotFoundError:
            return []  # clients in the wild read 404 as "no attempts in range" (spec §9)
        with _about(f"window {body['StartDateTime']} to {body['EndDateTime']}", response):
            return [parse_attempt(item) for item in self._attempt_items(self._json(response, EP_ATTEMPTS))]

    @staticmethod
    def _attempt_items(body: Any) -> list[Any]:
        f = _Fields(body, EP_ATTEMPTS, "test attempts answer")
        errors = f.get("errors")
        if errors:
            raise _payload(EP_ATTEMPTS, f"200 answer carries errors: {_error_text(f.obj, str(errors))}")
        result = f.get("result")
        if result is None:
            if f.has("result"):
                return []
            raise _payload(EP_ATTEMPTS, "answer has no 'result'")
        if isinstance(result, list):
            return result
        f = _Fields(result, EP_ATTEMPTS, "test attempts result")
        if not f.has("testAttempts"):
            raise _payload(EP_ATTEMPTS, "result has no 'testAttempts'")
        return f.items("testAttempts") or []

    # ----- reports and callbacks ----------------------------------------------------------------

    def get_report(self, invitation_id: int, report_type: int = 3) -> ImochaReport:
        """The candidate report; ``NotFoundError`` when iMocha has none (yet) for this invitation."""
        if report_type not in (1, 2, 3):
            raise ValueError("report_type must be 1, 2 or 3")
        response = self._call("GET", f"/v3/reports/{int(invitation_id)}", EP_REPORT,
                              params={"reportType": report_type})
        with _about(f"invitation {int(invitation_id)}", response):
            return parse_report(self._json(response, EP_REPORT), invitation_id=int(invitation_id))

    def process_callbacks(self, invitation_ids: Iterable[int]) -> ProcessCallbacksResult:
        """Ask iMocha to re-send the callbacks of these invitations, 100 ids a call."""
        ids = [int(invitation_id) for invitation_id in invitation_ids]
        successful: list[int] = []
        failed: list[int] = []
        for offset in range(0, len(ids), PROCESS_CALLBACKS_BATCH):
            batch = ids[offset: offset + PROCESS_CALLBACKS_BATCH]
            response = self._call("POST", "/v3/callbacks/process", EP_PROCESS_CALLBACKS,
                                  json_body={"testinvitationIds": batch})
            with _about(f"ids {batch[0]}..{batch[-1]}", response):
                ok, bad = _callback_outcome(self._json(response, EP_PROCESS_CALLBACKS))
            successful.extend(ok)
            failed.extend(bad)
        return ProcessCallbacksResult(tuple(successful), tuple(failed))

    def ping(self) -> int | None:
        """A cheap authenticated call (one test); returns the test count iMocha reports."""
        return self._tests_page(1, 1, tolerant=True).count


@dataclass(frozen=True)
class _TestsPage:
    tests: list[ImochaTest]
    problems: list[TestListProblem]
    count: int | None
    size: int  # entries on the page, readable or not
    fingerprint: str  # with id-less entries: all entries as sent (to notice the same page served again)


def _readable_test_id(item: Any) -> int | None:
    """The id of a test list entry when that much can be read, else None."""
    try:
        return _Fields(item, EP_TESTS, "test").integer("testId", "id", required=True)
    except PayloadError:
        return None


def _shown(value: Any, limit: int | None = 200) -> str:
    text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    return text if limit is None or len(text) <= limit else text[:limit] + "…"


def _callback_outcome(body: Any) -> tuple[list[int], list[int]]:
    f = _Fields(body, EP_PROCESS_CALLBACKS, "process callbacks answer")
    result = _Fields(f.get("result"), EP_PROCESS_CALLBACKS, "process callbacks result")
    outcome = _Fields(result.get("testinvitationIds"), EP_PROCESS_CALLBACKS, "process callbacks outcome")
    return _ids(outcome, "successful"), _ids(outcome, "failed")


def _ids(f: _Fields, name: str) -> list[int]:
    values: Sequence[Any] = f.items(name) or []
    ids = [to_number(value) for value in values]
    if any(number is None for number in ids):
        raise _payload(f.endpoint, f"{f.what} field {name!r} holds a non-numeric id")
    return [int(number) for number in ids if number is not None]


def _rewrap(exc: PayloadError, prefix: str = "", status: int | None = None) -> ImochaPayloadError:
    """``exc`` as an ``ImochaPayloadError`` with the same fields, its problem prefixed by ``prefix``."""
    head = " ".join(part for part in (exc.api, exc.endpoint) if part)
    head += f" (HTTP {exc.status})" if exc.status else ""
    text = str(exc)
    problem = text[len(head) + 2:] if head and text.startswith(head + ": ") else text
    return ImochaPayloadError(prefix + problem, api=exc.api or API_NAME, endpoint=exc.endpoint,
                              status=exc.status or status)


@contextmanager
def _about(subject: str, response: requests.Response) -> Iterator[None]:
    """Name the resource (and the HTTP status) in payload errors raised inside: the endpoint is a template."""
    try:
        yield
    except PayloadError as exc:
        raise _rewrap(exc, f"{subject}: ", response.status_code) from None

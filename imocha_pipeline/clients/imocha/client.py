"""``ImochaClient``: typed access to the iMocha Assessment API v3 endpoints the pipeline uses.

It reads tests, test links, finished attempts and candidate reports, and asks iMocha to re-send callbacks.
Transport (retries, backoff, ``Retry-After``, metrics, secret redaction) is the shared ``ApiSession``; answers
become frozen records (``parsing.py``) and typed errors (``errors.py``).

A body that is not the documented shape (HTML, truncated JSON, an empty 200, a list where an object belongs, a
test without an id) raises ``ImochaPayloadError`` naming the endpoint and the problem. The test list is the
exception for single entries: given a ``problems`` list, ``list_tests``/``iter_tests`` report each unreadable
entry there as a ``TestListProblem`` (page, position, the test id when it can be read, the reason) and go on with
the rest; without one they raise as before. The API key is registered with the session as a secret and never
appears in logs, reprs or exception text.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import requests

from imocha_pipeline.clients.errors import BadRequestError, NotFoundError, PayloadError
from imocha_pipeline.clients.http import ApiSession, RateBudget, RequestMetrics, Timeouts
from imocha_pipeline.clients.imocha.contract import (
    API_NAME,
    ATTEMPT_STATES,
    EP_ATTEMPTS,
    EP_GDPR,
    EP_PROCESS_CALLBACKS,
    EP_REPORT,
    EP_TEST,
    EP_TEST_LINKS,
    EP_TESTS,
    GDPR_NO_RECORDS,
    PROCESS_CALLBACKS_BATCH,
    imocha_root_url,
)
from imocha_pipeline.clients.imocha.errors import (
    ImochaPayloadError,
    as_imocha_payload_error,
    error_from_status,
    error_text,
    payload_error,
    payload_errors_about,
)
from imocha_pipeline.clients.imocha.fields import Fields
from imocha_pipeline.clients.imocha.parsing import (
    parse_attempt,
    parse_report,
    parse_test,
    parse_test_detail,
    parse_test_link,
)
from imocha_pipeline.clients.imocha.records import (
    GdprRequestResult,
    ImochaAttempt,
    ImochaReport,
    ImochaTest,
    ImochaTestDetail,
    ImochaTestLink,
    ProcessCallbacksResult,
    TestListProblem,
)
from imocha_pipeline.clients.imocha.values import as_utc, format_utc, to_number


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
        connect, read = timeout if isinstance(timeout, tuple) else (5.0, float(timeout))
        self.session = session or ApiSession(imocha_root_url(base_url), api_name=API_NAME,
                                             timeouts=Timeouts(connect=connect, read=read), secrets=[api_key],
                                             metrics=metrics, rate_budget=rate_budget)
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
            raise error_from_status(response, endpoint, self.session.redact)
        return response

    def _json(self, response: requests.Response, endpoint: str) -> Any:
        try:
            return self.session.decode_json(response, endpoint)
        except PayloadError as exc:
            raise as_imocha_payload_error(exc) from None


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
        with payload_errors_about(f"page {page}", response):
            f = Fields(self._json(response, EP_TESTS), EP_TESTS, "tests page")
            items = f.items("tests")
            if items is None:
                raise payload_error(EP_TESTS, "tests page has no 'tests' list")
            count = f.integer("count", "totalCount")
        tests: list[ImochaTest] = []
        problems: list[TestListProblem] = []
        for position, item in enumerate(items, start=1):
            try:
                with payload_errors_about(f"page {page} item {position}", response):
                    tests.append(parse_test(item))
            except ImochaPayloadError as exc:
                if not tolerant:
                    raise
                problems.append(TestListProblem(page, position, _readable_test_id(item), str(exc), _shown(item)))
        fingerprint = _shown(items, limit=None) if any(p.test_id is None for p in problems) else ""
        return _TestsPage(tests, problems, count, len(items), fingerprint)

    def get_test(self, test_id: int) -> ImochaTestDetail:
        response = self._call("GET", f"/v3/tests/{int(test_id)}", EP_TEST)
        with payload_errors_about(f"test {int(test_id)}", response):
            return parse_test_detail(self._json(response, EP_TEST))

    def list_test_links(self, test_id: int) -> list[ImochaTestLink]:
        response = self._call("GET", f"/v3/tests/{int(test_id)}/testlinks", EP_TEST_LINKS)
        with payload_errors_about(f"test {int(test_id)}", response):
            body = self._json(response, EP_TEST_LINKS)
            items = body if isinstance(body, list) else Fields(body, EP_TEST_LINKS, "answer").items("testLinks")
            if items is None:
                raise payload_error(EP_TEST_LINKS, "answer has no 'testLinks' list")
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
        low = as_utc(start).replace(microsecond=0)
        high = as_utc(end)
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
        with payload_errors_about(f"window {body['StartDateTime']} to {body['EndDateTime']}", response):
            return [parse_attempt(item) for item in self._attempt_items(self._json(response, EP_ATTEMPTS))]

    @staticmethod
    def _attempt_items(body: Any) -> list[Any]:
        f = Fields(body, EP_ATTEMPTS, "test attempts answer")
        errors = f.get("errors")
        if errors:
            raise payload_error(EP_ATTEMPTS, f"200 answer carries errors: {error_text(f.obj, str(errors))}")
        result = f.get("result")
        if result is None:
            if f.has("result"):
                return []
            raise payload_error(EP_ATTEMPTS, "answer has no 'result'")
        if isinstance(result, list):
            return result
        f = Fields(result, EP_ATTEMPTS, "test attempts result")
        if not f.has("testAttempts"):
            raise payload_error(EP_ATTEMPTS, "result has no 'testAttempts'")
        return f.items("testAttempts") or []

    # ----- reports and callbacks ----------------------------------------------------------------

    def get_report(self, invitation_id: int, report_type: int = 3) -> ImochaReport:
        """The candidate report; ``NotFoundError`` when iMocha has none (yet) for this invitation."""
        if report_type not in (1, 2, 3):
            raise ValueError("report_type must be 1, 2 or 3")
        response = self._call("GET", f"/v3/reports/{int(invitation_id)}", EP_REPORT,
                              params={"reportType": report_type})
        with payload_errors_about(f"invitation {int(invitation_id)}", response):
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
            with payload_errors_about(f"ids {batch[0]}..{batch[-1]}", response):
                ok, bad = _callback_outcome(self._json(response, EP_PROCESS_CALLBACKS))
            successful.extend(ok)
            failed.extend(bad)
        return ProcessCallbacksResult(tuple(successful), tuple(failed))

    def request_erasure(self, email: str, invitation_id: int | None = None) -> GdprRequestResult:
        """Ask iMocha to mask the candidate's records (``POST /v3/gdpr/requests``, spec §11): all of them, or only
        the attempt ``invitation_id``. iMocha's 400 "No records found for given Email address" is an answer, not an
        error (``accepted`` False, ``found`` False); any other failure raises as usual. A repeat after a lost answer
        is harmless (iMocha then answers "No records found")."""
        body: dict[str, Any] = {"CandidateEmail": email}
        if invitation_id is not None:
            body["testinvitationId"] = int(invitation_id)
        try:
            response = self._call("POST", "/v3/gdpr/requests", EP_GDPR, json_body=body)
        except BadRequestError as exc:
            if GDPR_NO_RECORDS.casefold() in str(exc.detail or "").casefold():
                return GdprRequestResult(accepted=False, found=False, message=GDPR_NO_RECORDS)
            raise
        answer = Fields(self._json(response, EP_GDPR), EP_GDPR, "GDPR request answer")
        return GdprRequestResult(accepted=True, found=True, message=str(answer.get("result") or ""))

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
        return Fields(item, EP_TESTS, "test").integer("testId", "id", required=True)
    except PayloadError:
        return None


def _shown(value: Any, limit: int | None = 200) -> str:
    text = json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)
    return text if limit is None or len(text) <= limit else text[:limit] + "…"


def _callback_outcome(body: Any) -> tuple[list[int], list[int]]:
    f = Fields(body, EP_PROCESS_CALLBACKS, "process callbacks answer")
    result = Fields(f.get("result"), EP_PROCESS_CALLBACKS, "process callbacks result")
    outcome = Fields(result.get("testinvitationIds"), EP_PROCESS_CALLBACKS, "process callbacks outcome")
    return _ids(outcome, "successful"), _ids(outcome, "failed")


def _ids(f: Fields, name: str) -> list[int]:
    values: Sequence[Any] = f.items(name) or []
    ids = [to_number(value) for value in values]
    if any(number is None for number in ids):
        raise payload_error(f.endpoint, f"{f.what} field {name!r} holds a non-numeric id")
    return [int(number) for number in ids if number is not None]

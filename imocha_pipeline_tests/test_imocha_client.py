"""The iMocha client against the simulator (and a few test-only apps) over real HTTP on loopback."""

from __future__ import annotations

import json
import logging
import math
import re
import time
from datetime import UTC, date, datetime, timedelta

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from imocha_pipeline.clients.errors import (
    ApiError,
    ApiTransportError,
    AuthError,
    BadRequestError,
    NotFoundError,
    PayloadError,
    ServerError,
)
from imocha_pipeline.clients.http import ApiSession, RetryPolicy, Timeouts
from imocha_pipeline.clients.imocha import (
    ImochaAttempt,
    ImochaClient,
    ImochaPayloadError,
    ImochaReportSkill,
    TestListProblem,
)
from imocha_pipeline.clients.imocha.values import normalize_status
from imocha_sandbox.imocha import ImochaSimulator
from imocha_sandbox.seed import generate_world
from imocha_sandbox.server import FaultConfig, ServerThread

KEY = "client-secret-key-7f3a9c"
NOW = datetime(2026, 3, 10, 12, 0, 0, tzinfo=UTC)


def fast_session(url: str, max_attempts: int = 6) -> ApiSession:
    """A session with millisecond backoff so retry tests stay fast."""
    return ApiSession(url, api_name="iMocha", retry=RetryPolicy(max_attempts=max_attempts, backoff_base=0.005,
                                                                backoff_max=0.05), timeouts=Timeouts(read=5))


class Env:
    def __init__(self, sim: ImochaSimulator, url: str):
        self.sim = sim
        self.url = url

    def client(self, key: str = KEY, **kwargs) -> ImochaClient:
        kwargs.setdefault("session", fast_session(self.url))
        return ImochaClient(self.url, key, **kwargs)


@pytest.fixture
def serve():
    """Start ASGI apps on loopback; every server is stopped at the end of the test."""
    servers: list[ServerThread] = []

    def start(app) -> str:
        server = ServerThread(app).start()
        servers.append(server)
        return server.url

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def make_env(serve):
    sims: list[ImochaSimulator] = []

    def make(**world_kwargs) -> Env:
        options = {"seed": 5, "tests": 8, "learners": 15, "attempts": 40, "now": NOW, "history_days": 30}
        options.update(world_kwargs)
        sim = ImochaSimulator(generate_world(**options), KEY)
        sims.append(sim)
        return Env(sim, serve(sim.app))

    yield make
    for sim in sims:
        sim.close()


@pytest.fixture
def env(make_env) -> Env:
    return make_env()


def completed_in(sim: ImochaSimulator, start: datetime, end: datetime, test_id: int | None = None) -> set[int]:
    return {inv.test_invitation_id for inv in sim.invitations.values()
            if inv.finished and start <= inv.completed_at < end and test_id in (None, inv.test_id)}


# ----- tests and links ------------------------------------------------------------------------


def test_list_tests_reads_every_page(make_env):
    env = make_env(tests=250, attempts=0)
    tests = env.client(page_size=100).list_tests()
    assert [test.test_id for test in tests] == sorted(spec.test_id for spec in env.sim.world.tests)
    assert len({test.test_id for test in tests}) == 250
    assert env.sim.log.count("GET", "/v3/tests") == 3
    spec = env.sim.world.tests[17]
    assert tests[17].name == spec.name and tests[17].duration_minutes == spec.duration
    assert tests[17].labels == tuple(spec.labels) and tests[17].status == "Published"
    # A server that clamps the page size: the client keeps going until `count` tests were seen.
    env.sim.configure(max_page_size=40)
    env.sim.log.clear()
    assert len(env.client(page_size=100).list_tests()) == 250
    assert env.sim.log.count("GET", "/v3/tests") == 7


def _paging_app(total: int, ignore_page: bool = False) -> Starlette:
    """Test-only /v3/tests without `count`: pages of `pageSize`, or always page 1 when `ignore_page`."""

    async def tests(request: Request):
        page = 1 if ignore_page else int(request.query_params["pageNo"])
        size = int(request.query_params["pageSize"])
        ids = list(range(1, total + 1))[(page - 1) * size: page * size]
        return JSONResponse({"tests": [{"testId": i, "testName": f"T{i}"} for i in ids]})

    return Starlette(routes=[Route("/v3/tests", tests)])


def test_list_tests_without_count_stops_on_short_page_and_on_repeated_pages(serve):
    url = serve(_paging_app(7))
    assert [test.test_id for test in ImochaClient(url, KEY, page_size=3).list_tests()] == list(range(1, 8))
    stuck = serve(_paging_app(10, ignore_page=True))
    client = ImochaClient(stuck, KEY, page_size=3)
    assert [test.test_id for test in client.list_tests()] == [1, 2, 3]
    assert client.metrics.snapshot()["GET /v3/tests"] == {"200": 2}


def test_unreadable_test_list_entries_are_reported_and_the_rest_of_the_list_is_read(make_env):
    env = make_env(tests=8, attempts=0)
    ids = sorted(env.sim.tests)
    bad_name, bad_labels, no_id, garbled_id = ids[2], ids[3], ids[4], ids[7]
    env.sim.set_list_entry(bad_name, fields={"testName": {"en": "Python"}})
    env.sim.set_list_entry(bad_labels, fields={"labels": "Technical"})
    env.sim.set_list_entry(no_id, "not a test")
    env.sim.set_list_entry(garbled_id, fields={"testId": "abc"})
    # Pages of 2: page 2 holds the two entries with an id, page 3 an id-less one and a good one, page 4 ends on
    # a garbled id (count says 8: the unreadable entries count as read, so the client neither stops early nor
    # asks for a page 5).
    problems: list[TestListProblem] = []
    tests = env.client(page_size=2).list_tests(problems)
    assert [test.test_id for test in tests] == [ids[0], ids[1], ids[5], ids[6]]
    assert env.sim.log.count("GET", "/v3/tests") == 4
    assert [(p.page, p.item, p.test_id) for p in problems] == [
        (2, 1, bad_name), (2, 2, bad_labels), (3, 1, None), (4, 2, None)]
    reasons = [p.reason for p in problems]
    assert reasons[0] == ("iMocha GET /v3/tests (HTTP 200): page 2 item 1: test field 'testName' is not a text: "
                          "{'en': 'Python'}")
    assert reasons[1].endswith("page 2 item 2: test field 'labels' is a string, expected a list")
    assert reasons[2].endswith("page 3 item 1: test is a string, expected an object")
    assert reasons[3].endswith("page 4 item 2: test field 'testId' is not a whole number: 'abc'")
    assert problems[2].entry == '"not a test"' and '"testId": "abc"' in problems[3].entry
    # Without a problem list the first unreadable entry fails the read, as it always did; so does `ping` never.
    with pytest.raises(ImochaPayloadError, match="page 2 item 1: test field 'testName'"):
        env.client(page_size=2).list_tests()
    assert env.client().ping() == 8


def _garbled_app(count: bool, ignore_page: bool) -> Starlette:
    """Test-only /v3/tests: page 1 and 3 readable, page 2 nothing but entries without an id."""
    pages = {1: [{"testId": 1}, {"testId": 2}], 2: ["x", {"testName": "no id"}], 3: [{"testId": 5}]}

    async def tests(request: Request):
        page = 2 if ignore_page else int(request.query_params["pageNo"])
        body = {"tests": pages.get(page, [])}
        if count:
            body["count"] = 5
        return JSONResponse(body)

    return Starlette(routes=[Route("/v3/tests", tests)])


def test_pages_of_unreadable_entries_neither_end_the_list_early_nor_loop(serve):
    for count in (True, False):
        client = ImochaClient(serve(_garbled_app(count, ignore_page=False)), KEY, page_size=2)
        problems: list[TestListProblem] = []
        assert [test.test_id for test in client.list_tests(problems)] == [1, 2, 5]
        assert [(p.page, p.item, p.test_id) for p in problems] == [(2, 1, None), (2, 2, None)]
        assert client.metrics.snapshot()["GET /v3/tests"] == {"200": 3}
    # A server that ignores pageNo and serves only id-less entries: the repeated page ends the list.
    stuck = ImochaClient(serve(_garbled_app(False, ignore_page=True)), KEY, page_size=2)
    problems = []
    assert stuck.list_tests(problems) == [] and len(problems) == 2
    assert stuck.metrics.snapshot()["GET /v3/tests"] == {"200": 2}


def test_get_test_and_links(env):
    spec = next(spec for spec in env.sim.world.tests if len(spec.links) > 1)
    client = env.client()
    detail = client.get_test(spec.test_id)
    assert (detail.test_id, detail.name, detail.duration_minutes) == (spec.test_id, spec.name, spec.duration)
    assert detail.questions == spec.questions
    assert [section.name for section in detail.sections] == [bank.section_name for bank in spec.banks]
    assert sum(section.duration_minutes for section in detail.sections) >= spec.duration - len(spec.banks)
    links = client.list_test_links(spec.test_id)
    assert [link.test_link_id for link in links] == [link.test_link_id for link in spec.links]
    assert [link.is_active for link in links] == [link.status == "active" for link in spec.links]
    assert [link.link_key for link in links] == [link.test_link for link in spec.links]
    assert links[0].test_id == spec.test_id and links[0].is_api_link is False
    with pytest.raises(NotFoundError) as excinfo:
        client.get_test(1)
    assert excinfo.value.status == 404 and excinfo.value.endpoint == "GET /v3/tests/{id}"
    assert env.sim.log.entries()[-1].path == "/v3/tests/1"


def test_base_url_may_include_v3(env):
    client = ImochaClient(env.url + "/v3/", KEY)
    assert client.ping() == 8
    assert env.sim.log.entries()[-1].query == "pageNo=1&pageSize=1"


# ----- attempts -------------------------------------------------------------------------------


def test_list_attempts_splits_a_long_range_into_windows(env):
    client = env.client(attempts_window_days=7)
    start, end = NOW - timedelta(days=33), NOW + timedelta(days=1)
    attempts = client.list_attempts(start, end)
    assert {a.test_invitation_id for a in attempts} == completed_in(env.sim, start, end)
    assert len(attempts) == len({a.test_invitation_id for a in attempts}) > 30
    bodies = [json.loads(entry.body) for entry in env.sim.log.entries()]
    assert len(bodies) == 5  # 34 days in windows of 7
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", b[k]) for b in bodies for k in b)
    assert bodies[0]["StartDateTime"] == "2026-02-05T12:00:00Z" and bodies[-1]["EndDateTime"] == "2026-03-11T12:00:00Z"
    assert [b["StartDateTime"] for b in bodies[1:]] == [b["EndDateTime"] for b in bodies[:-1]]
    assert {entry.query for entry in env.sim.log.entries()} == {"state=completed"}
    sample = next(a for a in attempts if a.test_invitation_id == env.sim.world.attempts[0].test_invitation_id)
    seed = env.sim.world.attempts[0]
    assert (sample.test_id, sample.email, sample.name, sample.invitation_type) == (
        seed.test_id, seed.email, seed.name, seed.invitation_type)
    assert sample.normalized_status == seed.status


def test_list_attempts_filters_by_test_and_treats_naive_times_as_utc(env):
    test_id = env.sim.world.attempts[0].test_id
    naive_start, naive_end = datetime(2026, 2, 1), datetime(2026, 3, 11)
    attempts = env.client().list_attempts(naive_start, naive_end, test_id=test_id)
    expected = completed_in(env.sim, naive_start.replace(tzinfo=UTC), naive_end.replace(tzinfo=UTC), test_id)
    assert {a.test_invitation_id for a in attempts} == expected and expected
    assert all(json.loads(e.body)["testId"] == test_id for e in env.sim.log.entries())
    by_date = env.client().list_attempts(date(2026, 2, 1), date(2026, 3, 11), test_id=test_id)
    assert by_date == attempts


def test_list_attempts_treats_404_as_none_and_other_states(env):
    env.sim.configure(empty_attempts_404=True)
    assert env.client().list_attempts(datetime(2020, 1, 1, tzinfo=UTC), datetime(2020, 2, 1, tzinfo=UTC)) == []
    assert env.sim.log.count(status=404) == 5
    test_id = env.sim.world.tests[0].test_id
    invited = env.sim.invite(test_id, {"email": "c@example.com", "name": "C"})["testInvitationId"]
    env.sim.cancel(invited)
    today = datetime.now(UTC)
    cancelled = env.client().list_attempts(today - timedelta(hours=1), today + timedelta(hours=1), state="cancelled")
    assert [(a.test_invitation_id, a.normalized_status) for a in cancelled] == [(invited, "Cancelled")]
    with pytest.raises(ValueError):
        env.client().list_attempts(today, today, state="done")


def test_list_attempts_dedupes_across_windows(serve):
    async def attempts(request: Request):
        item = {"testInvitationId": 7, "testId": "3", "name": "A", "email": "a@x.io", "invitationtype": "api",
                "testStatus": "Completed"}
        return JSONResponse({"result": {"testAttempts": [item]}, "errors": None})

    url = serve(Starlette(routes=[Route("/v3/candidates/testattempts", attempts, methods=["POST"])]))
    client = ImochaClient(url, KEY, attempts_window_days=1)
    found = client.list_attempts(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 4, tzinfo=UTC))
    assert found == [ImochaAttempt(7, 3, "A", "a@x.io", "api", "Completed")]
    assert client.metrics.snapshot()["POST /v3/candidates/testattempts"] == {"200": 3}


# ----- reports and callbacks ------------------------------------------------------------------


def test_get_report_parses_every_field(env):
    seed = env.sim.world.attempts[0]
    spec = env.sim.world.test(seed.test_id)
    report = env.client().get_report(seed.test_invitation_id)
    assert env.sim.log.entries()[-1].query == "reportType=3"
    assert (report.test_invitation_id, report.test_id, report.candidate_email, report.candidate_name) == (
        seed.test_invitation_id, seed.test_id, seed.email, seed.name)
    assert report.attempted_on == seed.attempted_on and report.attempted_on.tzinfo is not None
    assert report.normalized_status == seed.status
    assert report.time_taken_seconds == seed.time_taken_seconds and report.test_duration_minutes == spec.duration
    assert report.total_test_points == spec.total_points
    assert report.candidate_points == round(sum(seed.bank_scores.values()), 2)
    assert report.score_percentage == math.floor(report.candidate_points / spec.total_points * 100 + 0.5)
    assert report.test_name == spec.name and report.pdf_report_url.startswith("https://app.imocha.io/")
    assert report.performance_category
    bank = spec.banks[0]
    assert report.skills[0] == ImochaReportSkill(bank.qb_id, bank.qb_name, seed.bank_scores[bank.qb_id],
                                                 bank.max_score, bank.questions, bank.section_id, bank.section_name)
    assert [s.section_id for s in report.sections] == [b.section_id for b in spec.banks]
    assert report.raw["testInvitationId"] == seed.test_invitation_id
    summary = env.client().get_report(seed.test_invitation_id, report_type=1)
    assert summary.skills is None and summary.sections
    assert env.client().get_report(seed.test_invitation_id, report_type=2).sections is None
    with pytest.raises(NotFoundError):
        env.client().get_report(1)


def test_process_callbacks_in_batches_of_100(make_env):
    env = make_env(attempts=250)
    ids = [attempt.test_invitation_id for attempt in env.sim.world.attempts]
    result = env.client().process_callbacks(ids)
    assert sorted(result.failed) == sorted(ids) and result.successful == ()  # none registered a callback
    assert [len(json.loads(e.body)["testinvitationIds"]) for e in env.sim.log.entries()] == [100, 100, 50]
    with pytest.raises(BadRequestError) as excinfo:
        env.client().process_callbacks([ids[0], 94761])
    assert excinfo.value.status == 401 and "94761" in str(excinfo.value)
    assert "does not belong to account" in str(excinfo.value)


def test_ping_returns_the_test_count(env):
    assert env.client().ping() == 8
    with pytest.raises(AuthError) as excinfo:
        env.client(key="not-the-key").ping()
    assert excinfo.value.status == 401 and "invalid subscription key" in str(excinfo.value)


# ----- resilience -----------------------------------------------------------------------------


def _everything(client: ImochaClient, test_id: int, invitation_ids: list[int]):
    return (client.list_tests(), client.get_test(test_id), client.list_test_links(test_id),
            client.list_attempts(NOW - timedelta(days=31), NOW), [client.get_report(i) for i in invitation_ids])


def test_5xx_bursts_429_storms_and_drops_do_not_change_the_data(env):
    test_id = env.sim.world.tests[0].test_id
    ids = [attempt.test_invitation_id for attempt in env.sim.world.attempts[:10]]
    baseline = _everything(env.client(), test_id, ids)
    for faults in (FaultConfig(error_5xx_next=4), FaultConfig(rate_429_next=5, retry_after_seconds=0),
                   FaultConfig(drop_next=3), FaultConfig(lost_ack_next=2),
                   FaultConfig(error_5xx_share=0.15, rate_429_share=0.05, drop_share=0.05, retry_after_seconds=0,
                               seed=3)):
        env.sim.faults.set(faults)
        before = env.sim.log.last_seq
        assert _everything(env.client(), test_id, ids) == baseline, faults
        assert any(entry.fault for entry in env.sim.log.entries(before)), faults


def test_retry_after_is_honoured_and_real_rate_limit_is_survived(make_env):
    env = make_env()
    env.sim.faults.set(FaultConfig(rate_429_next=1, retry_after_seconds=1))
    started = time.monotonic()
    assert env.client().ping() == 8
    assert time.monotonic() - started >= 1.0
    env.sim.configure(rate_limit_per_second=25)
    ids = [attempt.test_invitation_id for attempt in env.sim.world.attempts[:40]]
    client = env.client()
    reports = [client.get_report(i) for i in ids]
    assert [report.test_invitation_id for report in reports] == ids
    assert env.sim.log.count(status=429) > 0


def test_persistent_failures_raise_typed_errors(env):
    env.sim.faults.set(FaultConfig(error_5xx_share=1.0))
    with pytest.raises(ServerError) as server_error:
        env.client().list_tests()
    assert server_error.value.status == 503 and server_error.value.endpoint == "GET /v3/tests"
    env.sim.faults.set(FaultConfig(drop_share=1.0))
    with pytest.raises(ApiTransportError):
        env.client().get_report(env.sim.world.attempts[0].test_invitation_id)
    assert env.sim.log.count(status=0) == 6  # every attempt of the session was made


# ----- malformed payloads ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body", "call", "expected"),
    [
        ("/v3/tests", "<!DOCTYPE html><html><body>Maintenance</body></html>", "tests", "HTML page"),
        ("/v3/reports/{id}", '{"testInvitationId": 1, "testId": 2, "sect', "report", "invalid JSON"),
        ("/v3/candidates/testattempts", "", "attempts", "empty response body"),
        ("/v3/tests", '{"tests": {"testId": 1}, "count": 1}', "tests", "'tests' is an object, expected a list"),
        ("/v3/tests", '{"tests": [{"testName": "no id"}], "count": 1}', "tests", "test has no 'testId'"),
        ("/v3/reports/{id}", "[1, 2]", "report", "report is a list, expected an object"),
        ("/v3/reports/{id}", '{"testInvitationId": 1, "skills": {"qbId": 1}}', "report", "'skills' is an object"),
        ("/v3/reports/{id}", '{"testInvitationId": 1, "skills": ["Java"]}', "report",
         "report skill is a string, expected an object"),
        ("/v3/reports/{id}", '{"testInvitationId": 1, "scorePercentage": "high"}', "report",
         "'scorePercentage' is not a number: 'high'"),
        ("/v3/reports/{id}", '{"testInvitationId": 1, "attemptedOn": "yesterday"}', "report",
         "'attemptedOn' is not a timestamp"),
        ("/v3/candidates/testattempts", '{"result": {"testAttempts": [{"testId": 1}]}, "errors": null}',
         "attempts", "test attempt has no 'testInvitationId'"),
        ("/v3/candidates/testattempts", '{"result": {"attempts": []}, "errors": null}', "attempts",
         "result has no 'testAttempts'"),
        ("/v3/callbacks/process", '{"result": null, "errors": null}', "callbacks", "result is null"),
    ],
)
def test_malformed_payloads_raise_imocha_payload_error(env, path, body, call, expected):
    invitation_id = env.sim.world.attempts[0].test_invitation_id
    concrete = path.replace("{id}", str(invitation_id))
    method = "POST" if call in ("attempts", "callbacks") else "GET"
    env.sim.set_canned_response(method, concrete, body, times=None,
                                content_type="text/html" if "html" in body else "application/json")
    client = env.client()
    calls = {
        "tests": client.list_tests,
        "report": lambda: client.get_report(invitation_id),
        "attempts": lambda: client.list_attempts(NOW - timedelta(days=1), NOW),
        "callbacks": lambda: client.process_callbacks([invitation_id]),
    }
    with pytest.raises(ImochaPayloadError) as excinfo:
        calls[call]()
    error = excinfo.value
    assert isinstance(error, PayloadError) and isinstance(error, ApiError)
    assert expected in str(error)
    assert str(error).startswith(f"iMocha {method} {path}")
    if call == "report":
        assert f"invitation {invitation_id}: " in str(error)  # names the report, not just the template
    assert error.endpoint == f"{method} {path}"


def test_tolerant_parsing_of_odd_but_valid_reports(env):
    invitation_id = env.sim.world.attempts[0].test_invitation_id
    odd = {
        "TESTINVITATIONID": str(invitation_id), "TestId": "300000", "CandidateEmail": "a@b.io",
        "attemptedOn": "2026-08-20T07:59:49.3930000", "Status": "Complete", "scorePercentage": "69",
        "candidatePoints": 27.63, "totalTestPoints": "40.0", "timeTaken": "4765", "testDuration": 120.0,
        "sections": [{"sectionId": "2259754", "SECTIONNAME": "Java", "candidateScore": "14"}],
        "unknownField": {"nested": True},
    }
    env.sim.set_canned_response("GET", f"/v3/reports/{invitation_id}", json.dumps(odd))
    report = env.client().get_report(invitation_id)
    assert report.test_invitation_id == invitation_id and report.test_id == 300000
    assert report.attempted_on == datetime(2026, 8, 20, 7, 59, 49, 393000, tzinfo=UTC)
    assert (report.score_percentage, report.total_test_points, report.time_taken_seconds) == (69.0, 40.0, 4765)
    assert report.test_duration_minutes == 120 and report.candidate_name is None
    assert report.skills is None  # no skills array: the pipeline quarantines, it does not assume "no skills"
    assert report.sections[0].section_id == 2259754 and report.sections[0].candidate_score == 14.0
    offset = {"testInvitationId": invitation_id, "attemptedOn": "2026-08-20T13:29:49+05:30", "skills": []}
    env.sim.set_canned_response("GET", f"/v3/reports/{invitation_id}", json.dumps(offset))
    shifted = env.client().get_report(invitation_id)
    assert shifted.attempted_on == datetime(2026, 8, 20, 7, 59, 49, tzinfo=UTC) and shifted.skills == ()


def test_envelope_401_is_a_bad_request_not_a_bad_key(env):
    body = json.dumps({"result": None, "errors": ["Date & time is not invalid or incorrect format"]})
    env.sim.set_canned_response("POST", "/v3/candidates/testattempts", body, status=401)
    with pytest.raises(BadRequestError) as excinfo:
        env.client().list_attempts(NOW - timedelta(days=1), NOW)
    assert not isinstance(excinfo.value, AuthError)
    assert "Date & time is not invalid" in str(excinfo.value)


def test_normalize_status_spellings():
    assert [normalize_status(s) for s in ("Completed", "complete", "TestLeft", "Test Left", "test_left",
                                          "In Progress", "Canceled", None, "Weird")] == [
        "Complete", "Complete", "Test Left", "Test Left", "Test Left", "In Progress", "Cancelled", None, "Weird"]


# ----- secrets --------------------------------------------------------------------------------


def test_the_api_key_never_leaks(env, serve, caplog):
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []

    def record(error: Exception) -> None:
        texts.extend([str(error), repr(error), str(getattr(error, "detail", ""))])

    client = env.client()
    texts.extend([repr(client), repr(client.session), str(client.metrics.snapshot())])
    client.list_tests()
    # A server that echoes the key back in an error body must not get it into our errors.
    env.sim.set_canned_response("GET", "/v3/tests", json.dumps({"message": f"bad key {KEY}"}), status=400)
    env.sim.set_canned_response("GET", "/v3/tests/1", f"<html>{KEY}</html>", content_type="text/html")
    env.sim.set_canned_response("POST", "/v3/callbacks/process", f"oops {KEY}", status=500, times=None)
    failures = [
        client.list_tests,
        lambda: client.get_test(1),
        lambda: client.process_callbacks([1]),
        lambda: env.client(key=KEY + "x").list_tests(),
        lambda: ImochaClient("http://127.0.0.1:9", KEY, session=fast_session("http://127.0.0.1:9", 2)).ping(),
    ]
    for failure in failures:
        with pytest.raises(ApiError) as excinfo:
            failure()
        record(excinfo.value)
    assert len(texts) == 18
    leaked = [text for text in [*texts, caplog.text] if KEY in text]
    assert leaked == []
    assert "***" in " ".join(texts)  # the echoed key was redacted, not silently dropped

"""The iMocha simulator over real HTTP on loopback: the documented contract, state machine and callbacks."""

from __future__ import annotations

import re
import socket
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from imocha_sandbox.imocha import (
    BAD_DATES_BODY,
    CANCEL_WRONG_STATE_BODY,
    DROP,
    INVALID_KEY_BODY,
    ImochaSimulator,
    SimulatorError,
)
from imocha_sandbox.seed import generate_world
from imocha_sandbox.server import FaultConfig, ServerThread

KEY = "sim-test-key-4242"
NOW = datetime(2026, 3, 10, 12, 0, 0, tzinfo=UTC)
BASE = datetime(2026, 3, 12, 12, 0, 0, tzinfo=UTC)  # two days after every seeded attempt


class Api:
    """A tiny HTTP helper bound to one running simulator."""

    def __init__(self, sim: ImochaSimulator, url: str):
        self.sim = sim
        self.url = url
        self.http = requests.Session()

    def call(self, method: str, path: str, *, key: str | None = KEY, header: str = "X-API-KEY", **kwargs):
        headers = {header: key} if key is not None else {}
        return self.http.request(method, self.url + path, headers=headers, timeout=10, **kwargs)

    def get(self, path: str, **kwargs):
        return self.call("GET", path, **kwargs)

    def post(self, path: str, body=None, **kwargs):
        return self.call("POST", path, json=body, **kwargs)


@pytest.fixture
def make_api():
    started: list[tuple[ServerThread, ImochaSimulator]] = []

    def make(world=None, **sim_kwargs) -> Api:
        world = world or generate_world(seed=11, tests=12, learners=20, attempts=30, now=NOW)
        sim_kwargs.setdefault("callback_retry_delay", 0.01)
        sim = ImochaSimulator(world, KEY, **sim_kwargs)
        server = ServerThread(sim.app).start()
        started.append((server, sim))
        return Api(sim, server.url)

    yield make
    for server, sim in started:
        server.stop()
        sim.close()


@pytest.fixture
def api(make_api) -> Api:
    return make_api()


@pytest.fixture
def receiver():
    """A callback receiver: records every POST body; answers the scripted statuses, then 200."""
    received: list[dict] = []
    script: list[int] = []
    lock = threading.Lock()

    async def handle(request: Request):
        body = await request.json()
        with lock:
            received.append(body)
            status = script.pop(0) if script else 200
        return JSONResponse({"ok": status < 300}, status_code=status)

    server = ServerThread(Starlette(routes=[Route("/cb", handle, methods=["POST"])])).start()
    yield {"url": server.url + "/cb", "received": received, "script": script}
    server.stop()


def free_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def attempts_body(start: str, end: str, **extra) -> dict:
    return {"StartDateTime": start, "EndDateTime": end, **extra}


# ----- authentication -------------------------------------------------------------------------


def test_missing_or_wrong_key_gets_the_documented_401_body(api):
    for response in (api.get("/v3/tests", key=None), api.get("/v3/tests", key="wrong"),
                     api.post("/v3/candidates/testattempts?state=completed", {}, key="")):
        assert response.status_code == 401
        assert response.json() == INVALID_KEY_BODY
    assert api.get("/v3/tests", header="x-api-key").status_code == 200
    assert api.get("/v3/tests", header="X-Api-Key").status_code == 200
    # Rejected calls are logged with their status; the control surface needs no key.
    assert api.sim.log.count(status=401) == 3
    assert api.call("GET", "/_sandbox/requests", key=None).status_code == 200


# ----- tests and links ------------------------------------------------------------------------


def test_tests_are_paged_with_total_count_and_clamped_page_size(api):
    pages = [api.get(f"/v3/tests?pageNo={page}&pageSize=5").json() for page in (1, 2, 3, 4)]
    assert [len(page["tests"]) for page in pages] == [5, 5, 2, 0]
    assert {page["count"] for page in pages} == {12}
    ids = [test["testId"] for page in pages for test in page["tests"]]
    assert ids == sorted({spec.test_id for spec in api.sim.world.tests})
    first = pages[0]["tests"][0]
    assert set(first) == {"testId", "testName", "status", "duration", "labels"}
    assert len(api.get("/v3/tests").json()["tests"]) == 12  # default pageSize 100
    api.sim.configure(max_page_size=4)
    assert len(api.get("/v3/tests?PAGENO=1&pagesize=50").json()["tests"]) == 4
    assert api.get("/v3/tests?pageSize=abc").status_code == 400


def test_one_test_list_entry_can_be_served_malformed_and_nothing_else_changes(api):
    ids = sorted(api.sim.tests)
    clean = api.get("/v3/tests").json()
    api.sim.set_list_entry(ids[1], fields={"testName": {"en": "x"}, "labels": DROP})
    api.sim.set_list_entry(ids[3], "garbage")
    served = api.get("/v3/tests").json()
    assert served["count"] == clean["count"] == 12 and len(served["tests"]) == 12
    assert served["tests"][1] == {**{k: v for k, v in clean["tests"][1].items() if k != "labels"},
                                  "testName": {"en": "x"}}
    assert served["tests"][3] == "garbage"
    assert [t for i, t in enumerate(served["tests"]) if i not in (1, 3)] == [
        t for i, t in enumerate(clean["tests"]) if i not in (1, 3)]
    assert api.get(f"/v3/tests/{ids[3]}").json()["testId"] == ids[3]  # the test's own endpoints are faithful
    api.sim.clear_list_entries(ids[1])
    assert api.get("/v3/tests").json()["tests"][1] == clean["tests"][1]
    with pytest.raises(SimulatorError):
        api.sim.set_list_entry(ids[0])
    ctl = api.url + "/_sandbox"
    assert requests.put(f"{ctl}/tests/{ids[0]}/listentry", json={"fields": {"testId": "abc"}}).status_code == 204
    assert api.get("/v3/tests").json()["tests"][0]["testId"] == "abc"
    assert requests.put(f"{ctl}/tests/{ids[0]}/listentry", json={"entry": None}).status_code == 204
    assert api.get("/v3/tests").json()["tests"][0] is None
    assert requests.put(f"{ctl}/tests/{ids[0]}/listentry", json={}).status_code == 400
    assert requests.delete(f"{ctl}/tests/{ids[0]}/listentry").status_code == 204
    api.sim.remove_test(ids[3])  # a removed test takes its override with it
    api.sim.clear_list_entries()
    assert api.get("/v3/tests").json()["tests"] == [t for t in clean["tests"] if t["testId"] != ids[3]]


def test_test_detail_sections_follow_question_banks_and_unknown_is_404(api):
    spec = api.sim.world.tests[0]
    detail = api.get(f"/v3/tests/{spec.test_id}").json()
    assert detail["testId"] == spec.test_id and detail["testName"] == spec.name
    assert detail["duration"] == spec.duration
    assert detail["questions"] == sum(bank.questions for bank in spec.banks)
    assert [s["sectionName"] for s in detail["sections"]] == [bank.section_name for bank in spec.banks]
    assert sum(s["questions"] for s in detail["sections"]) == detail["questions"]
    missing = api.get("/v3/tests/999")
    assert missing.status_code == 404 and missing.json()["statusCode"] == 404


def test_test_links_list_and_single(api):
    spec = next(spec for spec in api.sim.world.tests if len(spec.links) > 1)
    links = api.get(f"/v3/tests/{spec.test_id}/testlinks").json()["testLinks"]
    assert [link["testLinkId"] for link in links] == [link.test_link_id for link in spec.links]
    assert {link["testLinkStatus"] for link in links} == {"active", "inactive"}
    assert links[0]["invitationSchedule"]["scheduleType"] == "validityindays"
    one = api.get(f"/v3/tests/{spec.test_id}/testlinks/{links[1]['testLinkId']}").json()
    assert one == links[1]
    assert api.get(f"/v3/tests/{spec.test_id}/testlinks/1").status_code == 404
    assert api.get("/v3/tests/1/testlinks").status_code == 404


# ----- Retrieve Invites -----------------------------------------------------------------------


def _finished(api: Api, minutes: int, status: str = "Complete") -> int:
    """An attempt of 10 minutes that ends ``minutes`` after BASE."""
    test_id = api.sim.world.tests[0].test_id
    return api.sim.complete_attempt(
        test_id, f"cand{minutes}@example.com", f"Cand {minutes}", status=status,
        attempted_on=BASE + timedelta(minutes=minutes - 10), time_taken_seconds=600)


def _ids(response) -> list[int]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["errors"] is None
    return [item["testInvitationId"] for item in body["result"]["testAttempts"]]


def test_attempts_window_is_half_open_on_completion_time(api):
    at_start, inside, at_end = _finished(api, 60), _finished(api, 90), _finished(api, 120)
    path = "/v3/candidates/testattempts?state=completed"
    ids = _ids(api.post(path, attempts_body("2026-03-12T13:00:00Z", "2026-03-12T14:00:00Z")))
    assert ids == [at_start, inside]
    # Any casing of the body keys; no Z means UTC; a bare date means midnight.
    lower = {"startdatetime": "2026-03-12T13:00:00", "ENDDATETIME": "2026-03-12T14:00:00.5"}
    assert _ids(api.post(path, lower)) == [at_start, inside, at_end]
    assert _ids(api.post(path, attempts_body("2026-03-12", "2026-03-13"))) == [at_start, inside, at_end]
    assert _ids(api.post(path, attempts_body("2026-03-13", "2026-03-14"))) == []
    assert _ids(api.post(path, attempts_body("2026-03-12T14:00:00+01:00", "2026-03-12T15:00:00+01:00"))) == [
        at_start, inside]


def test_attempts_items_shape_status_labels_and_filters(api):
    complete, left, terminated = _finished(api, 10), _finished(api, 20, "Test Left"), _finished(api, 30, "Terminated")
    other_test = api.sim.world.tests[1].test_id
    foreign = api.sim.complete_attempt(other_test, "x@example.com", "X", attempted_on=BASE, time_taken_seconds=60)
    path = "/v3/candidates/testattempts?state=completed"
    body = api.post(path, attempts_body("2026-03-12T12:00:00Z", "2026-03-12T13:00:00Z")).json()
    items = {item["testInvitationId"]: item for item in body["result"]["testAttempts"]}
    assert set(items) == {complete, left, terminated, foreign}
    assert set(items[complete]) == {"testInvitationId", "testId", "name", "email", "invitationtype", "testStatus"}
    assert [items[i]["testStatus"] for i in (complete, left, terminated)] == ["Completed", "Test Left", "Terminated"]
    assert items[complete]["invitationtype"] == "api"
    filtered = attempts_body("2026-03-12T12:00:00Z", "2026-03-12T13:00:00Z", testId=str(other_test))
    assert _ids(api.post(path, filtered)) == [foreign]
    # The setting switches the filter to the start time and the labels to the client spelling.
    api.sim.configure(attempt_window_field="started", test_status_labels={"Complete": "Complete"})
    started = _ids(api.post(path, attempts_body("2026-03-12T11:59:00Z", "2026-03-12T12:01:00Z")))
    assert started == [complete, foreign]
    relabelled = api.post(path, attempts_body("2026-03-12", "2026-03-13")).json()["result"]["testAttempts"]
    assert {item["testStatus"] for item in relabelled if item["testInvitationId"] == complete} == {"Complete"}


def test_attempts_bad_dates_get_the_documented_401(api):
    path = "/v3/candidates/testattempts?state=completed"
    for body in (attempts_body("yesterday", "2026-03-10"), {"StartDateTime": "2026-03-10"}, None,
                 attempts_body("2026-03-11", "2026-03-10")):
        response = api.post(path, body)
        assert response.status_code == 401
        assert response.json() == BAD_DATES_BODY
    assert api.post("/v3/candidates/testattempts?state=bogus", attempts_body("2026-03-10", "2026-03-11")
                    ).status_code == 400


def test_cancelled_and_expired_states_and_optional_404_when_empty(api):
    test_id = api.sim.world.tests[0].test_id
    cancelled = api.post(f"/v3/tests/{test_id}/invite", {"email": "c@example.com", "name": "C"}).json()
    expired = api.post(f"/v3/tests/{test_id}/invite", {"email": "e@example.com", "name": "E"}).json()
    api.post(f"/v3/invitations/{cancelled['testInvitationId']}/cancel")
    api.sim.expire_invitation(expired["testInvitationId"])
    now = datetime.now(UTC)
    window = attempts_body((now - timedelta(hours=1)).isoformat(), (now + timedelta(hours=1)).isoformat())
    assert _ids(api.post("/v3/candidates/testattempts?state=cancelled", window)) == [cancelled["testInvitationId"]]
    assert _ids(api.post("/v3/candidates/testattempts?state=expired", window)) == [expired["testInvitationId"]]
    api.sim.configure(empty_attempts_404=True)
    empty = attempts_body("2001-01-01", "2001-01-02")
    assert api.post("/v3/candidates/testattempts?state=completed", empty).status_code == 404


# ----- reports --------------------------------------------------------------------------------


def test_report_types_select_sections_and_skills(api):
    attempt = api.sim.world.attempts[0]
    spec = api.sim.world.test(attempt.test_id)
    default = api.get(f"/v3/reports/{attempt.test_invitation_id}").json()
    assert "sections" in default and "skills" not in default
    skills_only = api.get(f"/v3/reports/{attempt.test_invitation_id}?reportType=2").json()
    assert "skills" in skills_only and "sections" not in skills_only
    both = api.get(f"/v3/reports/{attempt.test_invitation_id}?reporttype=3").json()
    assert set(both["sections"][0]) >= {"sectionID", "sectionName", "noOfQue", "sectionTime",
                                        "sectionTimeTaken", "candidateScore", "sectionScore"}
    assert set(both["skills"][0]) == {"qbId", "qbName", "candidateQbScore", "qbScore", "noOfQue",
                                      "sectionId", "sectionName"}
    assert [skill["qbId"] for skill in both["skills"]] == [bank.qb_id for bank in spec.banks]
    assert [skill["candidateQbScore"] for skill in both["skills"]] == [
        attempt.bank_scores[bank.qb_id] for bank in spec.banks]
    assert both["timeTaken"] == attempt.time_taken_seconds and both["testDuration"] == spec.duration
    assert both["candidateEmail"] == attempt.email and both["candidateName"] == attempt.name
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", both["attemptedOn"])
    assert both["attemptedOn"][:19] == attempt.attempted_on.strftime("%Y-%m-%dT%H:%M:%S")
    assert both["pdfReportUrl"].startswith("https://app.imocha.io/PDFReport?id=")
    assert api.get(f"/v3/reports/{attempt.test_invitation_id}?reportType=4").status_code == 400


def test_report_scores_status_and_rounding(api):
    test_id = api.sim.add_test("Rounding", 40, banks=[{"name": "A", "questions": 4, "maxScore": 8},
                                                       {"name": "B", "questions": 4, "maxScore": 8}])
    banks = api.get(f"/v3/tests/{test_id}").json()
    assert banks["questions"] == 8
    qb_ids = [bank.qb_id for bank in api.sim.tests[test_id].banks]
    left = api.sim.complete_attempt(test_id, "r@example.com", "R", status="Test Left",
                                    bank_scores={qb_ids[0]: 4.04, qb_ids[1]: 0.0}, time_taken_seconds=567)
    report = api.get(f"/v3/reports/{left}?reportType=3").json()
    assert report["status"] == "TestLeft"
    assert report["candidatePoints"] == 4.04 and report["totalTestPoints"] == 16.0
    assert report["scorePercentage"] == 25.0  # 25.25 rounds to the nearest integer
    assert report["performanceCategory"] == "Needs improvements"
    assert report["timeTaken"] == 567 and report["testDuration"] == 40
    complete = api.sim.complete_attempt(test_id, "s@example.com", "S", bank_scores=62.5)
    assert api.get(f"/v3/reports/{complete}").json()["scorePercentage"] == 63.0  # half rounds up
    assert api.get(f"/v3/reports/{complete}").json()["status"] == "Complete"


def test_report_of_unknown_or_unfinished_invitation(api):
    assert api.get("/v3/reports/1").status_code == 404
    test_id = api.sim.world.tests[0].test_id
    pending = api.post(f"/v3/tests/{test_id}/invite", {"email": "p@example.com", "name": "P"}).json()
    response = api.get(f"/v3/reports/{pending['testInvitationId']}")
    assert response.status_code == 404 and response.json()["statusCode"] == 404
    api.sim.start_attempt(pending["testInvitationId"])
    api.sim.configure(unfinished_report="in_progress")
    report = api.get(f"/v3/reports/{pending['testInvitationId']}?reportType=3").json()
    assert report["status"] == "In Progress" and report["skills"] == [] and report["scorePercentage"] == 0.0


class SettableClock:
    """A simulator clock (aware datetimes) that tests move by hand."""

    def __init__(self, now: datetime):
        self.now = now
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += timedelta(seconds=seconds)


def _not_available(invitation_id: int) -> dict:
    return {"statusCode": 404, "message": f"Report is not available for test invitation id: {invitation_id}."}


def test_report_answers_404_while_being_prepared_then_the_real_report(make_api):
    clock = SettableClock(BASE)
    api = make_api(clock=clock, report_ready_delay_seconds=60)
    test_id = api.sim.world.tests[0].test_id
    fresh = api.sim.complete_attempt(test_id, "fresh@example.com", "Fresh", bank_scores=80)
    pending = api.post(f"/v3/tests/{test_id}/invite", {"email": "p@example.com", "name": "P"}).json()[
        "testInvitationId"]
    # Harness code reading the truth directly gets the real report at once.
    truth = api.sim.report(fresh, report_type=3)
    assert truth["testInvitationId"] == fresh and truth["status"] == "Complete"
    assert truth["scorePercentage"] == 80.0 and truth["skills"]

    clock.advance(59)
    preparing = api.get(f"/v3/reports/{fresh}?reportType=3")
    assert preparing.status_code == 404
    assert preparing.json() == _not_available(fresh)
    unfinished = api.get(f"/v3/reports/{pending}?reportType=3")  # the very same shape as an unfinished report
    assert unfinished.status_code == 404 and unfinished.json() == _not_available(pending)
    assert api.get(f"/v3/reports/{fresh}").status_code == 404  # every report type
    with pytest.raises(SimulatorError) as excinfo:
        api.sim.report(fresh, report_type=3, as_served=True)
    assert excinfo.value.status == 404 and excinfo.value.body == _not_available(fresh)
    assert api.sim.report(fresh, report_type=3) == truth  # ... still the truth for direct calls
    # It is a 404 even where unfinished reports are served as a 200.
    api.sim.configure(unfinished_report="in_progress")
    assert api.get(f"/v3/reports/{fresh}?reportType=3").json() == _not_available(fresh)
    assert api.get(f"/v3/reports/{pending}?reportType=3").status_code == 200
    # Retrieve Invites already lists the attempt as completed: that is the real-world gap.
    listed = api.post("/v3/candidates/testattempts?state=completed", attempts_body(
        (BASE - timedelta(minutes=1)).isoformat(), (BASE + timedelta(minutes=1)).isoformat()))
    assert _ids(listed) == [fresh]
    # Attempts that finished earlier than the delay are served as usual.
    seeded = api.sim.world.attempts[0].test_invitation_id
    assert api.get(f"/v3/reports/{seeded}?reportType=3").status_code == 200

    clock.advance(2)
    served = api.get(f"/v3/reports/{fresh}?reportType=3")
    assert served.status_code == 200 and served.json() == truth


def test_report_ready_delay_defaults_to_zero_and_is_settable_over_http(make_api):
    clock = SettableClock(BASE)
    api = make_api(clock=clock)
    assert api.sim.settings()["report_ready_delay_seconds"] == 0
    test_id = api.sim.world.tests[0].test_id
    first = api.sim.complete_attempt(test_id, "now@example.com", "Now", bank_scores=50)
    immediate = api.get(f"/v3/reports/{first}?reportType=3")
    assert immediate.status_code == 200 and immediate.json() == api.sim.report(first, report_type=3)
    ctl = api.url + "/_sandbox/settings"
    changed = requests.put(ctl, json={"report_ready_delay_seconds": 30})
    assert changed.status_code == 200 and changed.json()["report_ready_delay_seconds"] == 30
    assert requests.get(ctl).json()["report_ready_delay_seconds"] == 30
    # The setting applies to reports of attempts that finished within the delay, whenever it was set.
    assert api.get(f"/v3/reports/{first}").json() == _not_available(first)
    clock.advance(30)
    assert api.get(f"/v3/reports/{first}").status_code == 200
    requests.put(ctl, json={"report_ready_delay_seconds": 0})
    second = api.sim.complete_attempt(test_id, "again@example.com", "Again", bank_scores=50)
    assert api.get(f"/v3/reports/{second}").status_code == 200


def test_report_ready_delay_refuses_negative_or_non_numeric_values(make_api):
    api = make_api()
    ctl = api.url + "/_sandbox/settings"
    for bad in (-1, -0.5, "10", True, None):
        refused = requests.put(ctl, json={"report_ready_delay_seconds": bad})
        assert refused.status_code == 400, bad
        assert "report_ready_delay_seconds" in refused.json()["errors"][0]
    assert requests.get(ctl).json()["report_ready_delay_seconds"] == 0  # nothing changed
    with pytest.raises(SimulatorError) as excinfo:
        api.sim.configure(report_ready_delay_seconds=-3)
    assert excinfo.value.status == 400 and "0 or more" in excinfo.value.body["errors"][0]
    with pytest.raises(SimulatorError):
        ImochaSimulator(api.sim.world, KEY, report_ready_delay_seconds=-1)
    assert api.sim.settings()["report_ready_delay_seconds"] == 0


# ----- invitations and the state machine ------------------------------------------------------


def test_invite_start_finish_and_reinvite_rules(api):
    test_id = api.sim.world.tests[0].test_id
    invite = f"/v3/tests/{test_id}/invite"
    first = api.post(invite, {"EMAIL": "amey@example.com", "Name": "Amey", "startDateTime": "2026-06-16T06:30:00Z"})
    assert first.status_code == 201
    created = first.json()
    assert created["status"] == "Pending" and created["testUrl"].startswith("https://test.imocha.io/IMInstructions?")
    inv_id = created["testInvitationId"]
    # Pending: same invitation, window replaced.
    again = api.post(invite, {"email": "AMEY@example.com", "name": "Amey", "StartDateTime": "2026-07-01T00:00:00Z"})
    assert again.status_code == 201 and again.json()["testInvitationId"] == inv_id
    assert api.sim.invitations[inv_id].window_start == datetime(2026, 7, 1, tzinfo=UTC)
    api.sim.start_attempt(inv_id)
    in_progress = api.post(invite, {"email": "amey@example.com", "name": "Amey"}).json()
    assert in_progress == {**created, "status": "In Progress"}
    api.sim.finish_attempt(inv_id, bank_scores=80)
    done = api.post(invite, {"email": "amey@example.com", "name": "Amey"}).json()
    assert done["testInvitationId"] == inv_id and done["status"] == "Complete"
    with pytest.raises(SimulatorError) as excinfo:
        api.sim.start_attempt(inv_id)
    assert excinfo.value.status == 409


def test_invite_validation_links_and_per_link_isolation(api):
    spec = api.sim.world.tests[0]
    response = api.post(f"/v3/tests/{spec.test_id}/invite", {"name": ""})
    assert response.status_code == 400
    assert response.json() == {"errors": ["'Email' must not be empty.", "'Name' must not be empty."]}
    assert api.post(f"/v3/tests/{spec.test_id}/invite", {"email": "nope", "name": "N"}).json() == {
        "errors": ["'Email' is not a valid email address."]}
    assert api.post("/v3/tests/1/invite", {"email": "a@example.com", "name": "A"}).status_code == 404
    link_id = api.sim.add_test_link(spec.test_id, "Campaign")
    by_link = api.post(f"/v3/tests/{spec.test_id}/testlinks/{link_id}/invite",
                       {"email": "iso@example.com", "name": "Iso"})
    by_default = api.post(f"/v3/tests/{spec.test_id}/invite", {"email": "iso@example.com", "name": "Iso"})
    assert by_link.status_code == by_default.status_code == 201
    assert by_link.json()["testInvitationId"] != by_default.json()["testInvitationId"]
    api.sim.deactivate_test_link(spec.test_id, link_id)
    inactive = api.post(f"/v3/tests/{spec.test_id}/testlinks/{link_id}/invite",
                        {"email": "late@example.com", "name": "Late"})
    assert inactive.status_code == 400 and "errors" in inactive.json()


def test_reattempt_rules(api, receiver):
    test_id = api.sim.world.tests[0].test_id
    created = api.post(f"/v3/tests/{test_id}/invite",
                       {"email": "re@example.com", "name": "Re", "CallbackURL": receiver["url"]}).json()
    inv_id = created["testInvitationId"]
    pending = api.post(f"/v3/invitations/{inv_id}/reattempt", {"StartDateTime": "2026-05-01T00:00:00Z"})
    assert pending.status_code == 200 and pending.json()["testInvitationId"] == inv_id
    api.sim.start_attempt(inv_id)
    refused = api.post(f"/v3/invitations/{inv_id}/reattempt", {})
    assert refused.status_code == 400
    assert refused.json()["message"] == (
        f"Reattempt is not allowed on Test invitation id: {inv_id} which is in inprogress state.")
    api.sim.finish_attempt(inv_id)
    retake = api.post(f"/v3/invitations/{inv_id}/reattempt", {"timeZoneId": 1720}).json()
    assert retake["testInvitationId"] > inv_id
    assert retake["callbackUrlRegistered"] is True and retake["redirectUrlRegistered"] is False
    assert api.sim.invitation(retake["testInvitationId"])["status"] == "Pending"
    # Before the retake is finished, asking again returns the same retake.
    assert api.post(f"/v3/invitations/{inv_id}/reattempt", {}).json()["testInvitationId"] == retake[
        "testInvitationId"]
    assert api.post("/v3/invitations/1/reattempt", {}).status_code == 404


def test_cancel_only_pending_and_reinvite_reopens(api):
    test_id = api.sim.world.tests[0].test_id
    inv_id = api.post(f"/v3/tests/{test_id}/invite", {"email": "k@example.com", "name": "K"}).json()[
        "testInvitationId"]
    cancelled = api.post(f"/v3/invitations/{inv_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json() == {"testInvitationId": inv_id, "status": "cancelled"}
    again = api.post(f"/v3/invitations/{inv_id}/cancel")
    assert again.status_code == 400 and again.json() == CANCEL_WRONG_STATE_BODY
    reopened = api.post(f"/v3/tests/{test_id}/invite", {"email": "k@example.com", "name": "K"}).json()
    assert reopened["testInvitationId"] == inv_id and reopened["status"] == "Pending"
    api.sim.expire_invitation(inv_id)
    assert api.post(f"/v3/invitations/{inv_id}/reattempt", {}).json()["testInvitationId"] == inv_id
    assert api.sim.invitation(inv_id)["status"] == "Pending"
    finished = api.sim.world.attempts[0].test_invitation_id
    assert api.post(f"/v3/invitations/{finished}/cancel").json() == CANCEL_WRONG_STATE_BODY
    assert api.post("/v3/invitations/1/cancel").status_code == 404


# ----- callbacks ------------------------------------------------------------------------------


def test_two_callbacks_per_attempt_with_pascal_case_payload(api, receiver):
    test_id = api.sim.world.tests[0].test_id
    inv_id = api.sim.complete_attempt(test_id, "cb@example.com", "Cb", bank_scores=50,
                                      attempted_on=datetime(2020, 10, 9, 13, 21, 53, tzinfo=UTC),
                                      callback_url=receiver["url"])
    assert api.sim.wait_for_callbacks(5)
    start, end = receiver["received"]
    assert set(start) == {"CandidateEmailId", "AttemptedOn", "TotalScore", "CandidateScore", "ReportPDFUrl",
                          "TestInvitationId", "Status", "AttemptedOnUtc", "PerformanceCategory", "BaseImgUrl"}
    assert (start["Status"], start["TotalScore"], start["ReportPDFUrl"]) == ("In Progress", 0, None)
    assert start["AttemptedOnUtc"] == "2020-10-09T13:21:53" and start["AttemptedOn"] == "09-Oct-2020 06:51 PM"
    report = api.get(f"/v3/reports/{inv_id}").json()
    assert end["Status"] == "Complete" and end["TestInvitationId"] == inv_id
    assert end["CandidateScore"] == report["candidatePoints"] and end["TotalScore"] == report["totalTestPoints"]
    assert end["ReportPDFUrl"] == report["pdfReportUrl"] and end["PerformanceCategory"] == "Passed"
    assert [d["ok"] for d in api.sim.callback_deliveries()] == [True, True]


def test_callbacks_retry_on_errors_then_give_up(api, receiver):
    test_id = api.sim.world.tests[0].test_id
    receiver["script"].extend([500, 502])  # the start notification fails twice, then succeeds
    api.sim.complete_attempt(test_id, "flaky@example.com", "F", callback_url=receiver["url"])
    assert api.sim.wait_for_callbacks(5)
    tries = [(d["status"], d["try"], d["httpStatus"]) for d in api.sim.callback_deliveries()]
    assert tries == [("In Progress", 1, 500), ("In Progress", 2, 502), ("In Progress", 3, 200), ("Complete", 1, 200)]
    api.sim.clear_callback_deliveries()
    receiver["script"].extend([500] * 7)
    api.sim.complete_attempt(test_id, "down@example.com", "D", status="Terminated", callback_url=receiver["url"])
    assert api.sim.wait_for_callbacks(5)
    deliveries = api.sim.callback_deliveries()
    assert [(d["status"], d["try"]) for d in deliveries] == [("In Progress", n) for n in range(1, 6)] + [
        ("Terminated", 1), ("Terminated", 2), ("Terminated", 3)]
    assert [d["ok"] for d in deliveries[:5]] == [False] * 5
    # A receiver that is not listening at all counts as a failure too.
    api.sim.clear_callback_deliveries()
    api.sim.complete_attempt(test_id, "gone@example.com", "G", callback_url=f"http://127.0.0.1:{free_port()}/cb")
    assert api.sim.wait_for_callbacks(10)
    gone = api.sim.callback_deliveries()
    assert len(gone) == 10 and all(d["error"] and d["httpStatus"] is None for d in gone)


def test_process_callbacks_replays_final_notification(api, receiver):
    test_id = api.sim.world.tests[0].test_id
    with_cb = api.sim.complete_attempt(test_id, "rp@example.com", "Rp", callback_url=receiver["url"])
    without_cb = api.sim.world.attempts[0].test_invitation_id
    assert api.sim.wait_for_callbacks(5)
    response = api.post("/v3/callbacks/process", {"testinvitationIds": [with_cb, without_cb]})
    assert response.status_code == 200
    assert response.json() == {"result": {"testinvitationIds": {"successful": [with_cb], "failed": [without_cb]}},
                               "errors": None}
    assert api.sim.wait_for_callbacks(5)
    assert [body["Status"] for body in receiver["received"]] == ["In Progress", "Complete", "Complete"]
    assert api.sim.callback_deliveries()[-1]["replay"] is True
    foreign = api.post("/v3/callbacks/process", {"TestInvitationIds": [with_cb, 94761]})
    assert foreign.status_code == 401
    assert foreign.json() == {"result": None, "errors": [
        "testinvitationIds does not belong to account or not found", "94761"]}


def test_process_callbacks_handles_at_most_100_ids(api):
    ids = [attempt.test_invitation_id for attempt in api.sim.world.attempts]
    many = (ids * 5)[:130]
    result = api.post("/v3/callbacks/process", {"testinvitationIds": many}).json()["result"]["testinvitationIds"]
    assert len(result["successful"]) + len(result["failed"]) == 100


# ----- rate limit and faults ------------------------------------------------------------------


def test_rate_limit_answers_429_with_retry_after(make_api):
    api = make_api(rate_limit_per_second=2)
    statuses = [api.get("/v3/tests?pageSize=1") for _ in range(6)]
    limited = [r for r in statuses if r.status_code == 429]
    assert [r.status_code for r in statuses[:2]] == [200, 200] and limited
    seconds = int(limited[0].headers["Retry-After"])
    assert seconds >= 1
    message = f"Rate limit is exceeded. Try again in {seconds} seconds."
    assert limited[0].json() == {"statusCode": 429, "message": message}
    time.sleep(seconds)
    assert api.get("/v3/tests?pageSize=1").status_code == 200
    assert api.call("GET", "/_sandbox/requests").status_code == 200  # control surface is never limited


def test_fault_injection_uses_imocha_error_bodies(api):
    api.sim.faults.set(FaultConfig(error_5xx_next=1, rate_429_next=1, retry_after_seconds=3))
    limited = api.get("/v3/tests")
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "3"
    assert limited.json()["statusCode"] == 429
    failed = api.get("/v3/tests")
    assert failed.status_code == 503 and set(failed.json()) == {"statusCode", "message"}
    assert api.get("/v3/tests").status_code == 200


# ----- control surface over HTTP --------------------------------------------------------------


def test_control_surface_over_http(api, receiver):
    ctl = api.url + "/_sandbox"
    http = requests.Session()
    created = http.post(f"{ctl}/tests", json={"name": "New & Shiny", "duration": 25,
                                              "skills": ["Rust", "WebAssembly"], "labels": ["Technical"]})
    assert created.status_code == 201
    test_id, link_id = created.json()["testId"], created.json()["testLinkId"]
    detail = api.get(f"/v3/tests/{test_id}").json()
    assert detail["testName"] == "New & Shiny" and [s["sectionName"] for s in detail["sections"]] == [
        "Rust", "WebAssembly"]
    assert api.get(f"/v3/tests/{test_id}/testlinks/{link_id}").json()["testLinkStatus"] == "active"
    http.patch(f"{ctl}/tests/{test_id}", json={"name": "Renamed", "duration": 50, "status": "Archived"})
    assert api.get(f"/v3/tests/{test_id}").json()["testName"] == "Renamed"
    assert api.get(f"/v3/tests/{test_id}").json()["status"] == "Archived"
    extra = http.post(f"{ctl}/tests/{test_id}/testlinks", json={"name": "Campaign"}).json()["testLinkId"]
    http.post(f"{ctl}/tests/{test_id}/testlinks/{extra}/deactivate")
    assert api.get(f"/v3/tests/{test_id}/testlinks/{extra}").json()["testLinkStatus"] == "inactive"

    done = http.post(f"{ctl}/attempts", json={"testId": test_id, "email": "h@example.com", "name": "H",
                                              "bankScores": 100, "callbackUrl": receiver["url"]})
    done_id = done.json()["testInvitationId"]
    assert api.get(f"/v3/reports/{done_id}").json()["scorePercentage"] == 100.0
    pending = api.post(f"/v3/tests/{test_id}/invite", {"email": "t@example.com", "name": "T"}).json()
    step = f"{ctl}/invitations/{pending['testInvitationId']}"
    assert http.post(f"{step}/start").json()["status"] == "In Progress"
    assert http.post(f"{step}/terminate", json={"bankScores": 10}).json()["status"] == "Terminated"
    assert http.post(f"{step}/finish").status_code == 409
    assert http.get(step).json()["status"] == "Terminated"
    assert api.sim.wait_for_callbacks(5)
    assert len(http.get(f"{ctl}/callbacks").json()["deliveries"]) == 2

    since = http.get(f"{ctl}/requests").json()["lastSeq"]
    api.get("/v3/tests")
    logged = http.get(f"{ctl}/requests", params={"since": since}).json()["requests"]
    assert [(e["method"], e["path"], e["status"]) for e in logged] == [("GET", "/v3/tests", 200)]
    assert http.put(f"{ctl}/faults", json={"error_5xx_next": 1}).status_code == 200
    assert api.get("/v3/tests").status_code == 503
    assert http.put(f"{ctl}/faults", json={"bogus": 1}).status_code == 400
    http.put(f"{ctl}/faults", json={"error_5xx_share": 1.0})
    http.delete(f"{ctl}/faults")
    assert api.get("/v3/tests").status_code == 200
    http.put(f"{ctl}/responses", json={"method": "GET", "path": "/v3/tests", "body": "<html>down</html>",
                                       "contentType": "text/html", "status": 200})
    assert api.get("/v3/tests").text == "<html>down</html>"
    assert http.put(f"{ctl}/settings", json={"max_page_size": 2}).json()["max_page_size"] == 2
    assert len(api.get("/v3/tests").json()["tests"]) == 2
    assert http.delete(f"{ctl}/tests/{test_id}").status_code == 204
    assert api.get(f"/v3/tests/{test_id}").status_code == 404
    assert api.get(f"/v3/reports/{done_id}").status_code == 200  # reports outlive their test
    http.delete(f"{ctl}/requests")
    assert http.get(f"{ctl}/requests").json()["requests"] == []

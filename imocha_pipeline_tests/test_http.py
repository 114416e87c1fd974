"""The shared HTTP layer: retries, backoff, Retry-After, rate budget, metrics and redaction, over loopback."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from imocha_pipeline.clients.errors import (
    AmbiguousWriteError,
    ApiTransportError,
    PayloadError,
    RateLimitedError,
    ServerError,
)
from imocha_pipeline.clients.http import ApiSession, LocalRateBudget, RetryPolicy, Timeouts
from imocha_pipeline.clients.http.budget import parse_reset, parse_retry_after, pause_from_headers
from imocha_sandbox.server import FaultConfig, FaultInjector, RequestLog, ServerThread, SimulatorMiddleware

SECRET = "s3cr3t-value-that-must-not-leak"


async def echo(request):
    return JSONResponse({"ok": True, "path": request.url.path})


async def html(request):
    return PlainTextResponse("<html><body>Gateway error</body></html>", media_type="text/html")


async def truncated(request):
    return PlainTextResponse('{"tests": [1, 2', media_type="application/json")


async def leaky(request):
    # A misbehaving gateway that echoes the caller's key in its error page.
    return JSONResponse({"message": f"bad key {request.headers.get('x-api-key')}"}, status_code=502)


async def empty(request):
    return PlainTextResponse("", media_type="application/json")


async def whoami(request):
    return JSONResponse({"authorization": request.headers.get("authorization")})


@pytest.fixture
def server():
    app = Starlette(routes=[Route("/echo", echo, methods=["GET", "POST"]), Route("/html", html),
                            Route("/truncated", truncated), Route("/empty", empty),
                            Route("/leaky", leaky), Route("/whoami", whoami)])
    log, faults = RequestLog(), FaultInjector()
    thread = ServerThread(SimulatorMiddleware(app, log, faults, b'{"message":"boom"}', b'{"message":"slow down"}'))
    thread.start()
    yield thread, log, faults
    thread.stop()


def make_session(url: str, **kwargs) -> tuple[ApiSession, list[float]]:
    sleeps: list[float] = []
    session = ApiSession(url, api_name="test", sleep=sleeps.append, secrets=[SECRET], timeouts=Timeouts(read=2.0),
                         **kwargs)
    return session, sleeps


def test_retries_5xx_then_returns_the_answer(server):
    thread, _log, faults = server
    faults.set(FaultConfig(error_5xx_next=3))
    session, sleeps = make_session(thread.url)
    response = session.request("GET", "/echo", endpoint="GET /echo")
    assert response.status_code == 200 and response.json()["ok"] is True
    assert len(sleeps) == 3 and sleeps[0] < sleeps[2]  # exponential backoff grows
    assert session.metrics.snapshot()["GET /echo"] == {"503": 3, "200": 1}


def test_honours_retry_after_on_429(server):
    thread, _log, faults = server
    faults.set(FaultConfig(rate_429_next=2, retry_after_seconds=7))
    session, sleeps = make_session(thread.url)
    assert session.request("GET", "/echo").status_code == 200
    assert sleeps == [7.0, 7.0]


def test_dropped_connections_and_lost_acks_are_retried(server):
    thread, log, faults = server
    faults.set(FaultConfig(drop_next=1, lost_ack_next=1))
    session, _sleeps = make_session(thread.url)
    assert session.request("POST", "/echo", json_body={"a": 1}, idempotent=True).json()["ok"] is True
    outcomes = session.metrics.snapshot()["POST /echo"]
    assert outcomes["200"] == 1 and sum(v for k, v in outcomes.items() if k.startswith("error:")) == 2
    # The lost ack reached the server: a request may be repeated only when repeating it is harmless.
    assert [entry.fault for entry in log.entries()] == ["drop", "lost_ack", None]


def test_a_non_idempotent_write_with_a_lost_answer_is_not_sent_again(server):
    """A POST whose answer was lost may have been applied (drill 2: a rating posted twice): the session
    raises AmbiguousWriteError instead of repeating it, so the caller reads the server before sending again."""
    thread, log, faults = server
    faults.set(FaultConfig(lost_ack_next=1))
    session, _sleeps = make_session(thread.url)
    with pytest.raises(AmbiguousWriteError, match="may have been applied"):
        session.request("POST", "/echo", json_body={"a": 1})
    assert [entry.fault for entry in log.entries()] == ["lost_ack"], "sent exactly once"
    faults.set(FaultConfig(lost_ack_next=1))
    assert session.request("GET", "/echo").status_code == 200, "a read is repeated after a lost answer"
    dead, _ = make_session("http://127.0.0.1:9", retry=RetryPolicy(max_attempts=2))
    with pytest.raises(ApiTransportError, match="no answer after 2 attempts") as refused:
        dead.request("POST", "/echo", json_body={"a": 1})
    assert not isinstance(refused.value, AmbiguousWriteError), "a refused connection never reached the server"


def test_gives_up_with_typed_errors(server):
    thread, _, faults = server
    session, _ = make_session(thread.url, retry=RetryPolicy(max_attempts=3))
    faults.set(FaultConfig(error_5xx_share=1.0))
    with pytest.raises(ServerError, match="after 3 attempts"):
        session.request("GET", "/echo")
    faults.set(FaultConfig(rate_429_share=1.0))
    with pytest.raises(RateLimitedError):
        session.request("GET", "/echo")
    faults.clear()
    dead, _ = make_session("http://127.0.0.1:9", retry=RetryPolicy(max_attempts=2))
    with pytest.raises(ApiTransportError, match="no answer after 2 attempts"):
        dead.request("GET", "/echo")


def test_read_timeout_is_retried(server):
    thread, _, faults = server
    faults.set(FaultConfig(timeout_next=1, timeout_seconds=3))
    session, _sleeps = make_session(thread.url)
    assert session.request("GET", "/echo").status_code == 200
    assert any(k.startswith("error:") for k in session.metrics.snapshot()["GET /echo"])


@pytest.mark.parametrize(("path", "message"), [
    ("/html", "HTML page instead of JSON"),
    ("/truncated", "invalid JSON"),
    ("/empty", "empty response body"),
])
def test_decode_json_names_what_came_back(server, path, message):
    thread, _, _ = server
    session, _ = make_session(thread.url)
    response = session.request("GET", path)
    with pytest.raises(PayloadError, match=message) as info:
        session.decode_json(response, f"GET {path}")
    assert f"GET {path}" in str(info.value)


def test_secrets_are_redacted_from_logs_and_errors(server, caplog):
    thread, _, _faults = server
    caplog.set_level(logging.DEBUG)
    session, _ = make_session(thread.url, retry=RetryPolicy(max_attempts=2), headers={"X-API-KEY": SECRET})
    with pytest.raises(ServerError) as info:
        session.request("GET", "/leaky")
    assert "bad key ***" in str(info.value)
    assert SECRET not in str(info.value) and SECRET not in repr(session)
    assert SECRET not in caplog.text
    assert "test GET /leaky -> 502" in caplog.text


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_local_budget_never_exceeds_the_limit_in_any_window():
    clock = FakeClock()
    budget = LocalRateBudget(10, clock=clock, sleep=clock.sleep, margin=0.0)
    sent = []
    for _ in range(35):
        budget.acquire("default")
        sent.append(clock.now)
    for i, start in enumerate(sent):
        assert sum(1 for t in sent[i:] if t < start + 60) <= 10
    assert sent[10] == pytest.approx(60.0)  # the 11th waits for the window, not longer


def test_budget_pauses_on_server_hints():
    clock = FakeClock()
    budget = LocalRateBudget(100, clock=clock, sleep=clock.sleep)
    budget.observe(429, {"Retry-After": "12"})
    budget.acquire("default")
    assert clock.now == pytest.approx(12.0, abs=0.01)
    reset = (datetime.now(UTC) + timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%S.%f") + "4Z"
    assert 28 < pause_from_headers(200, {"X-Rate-Limit-Remaining": "0", "X-Rate-Limit-Reset": reset}) <= 30
    assert pause_from_headers(200, {"X-Rate-Limit-Remaining": "5", "X-Rate-Limit-Reset": reset}) == 0


def test_header_parsers():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("garbage") is None
    assert parse_reset("not a date") is None
    future = (datetime.now(UTC) + timedelta(seconds=100)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert 95 < parse_retry_after(future) <= 100


# -- the rate budget's slot marks the send ------------------------------------------------------------------


class RecordingBudget:
    """A rate budget that records the wall-clock moment each slot is taken; ``waits`` makes the first takes
    wait that long (a budget with no free slot)."""

    def __init__(self, waits: tuple[float, ...] = ()):
        self.taken: list[float] = []
        self._waits = list(waits)

    def acquire(self, lane: str) -> None:
        if self._waits:
            time.sleep(self._waits.pop(0))
        self.taken.append(time.time())

    def observe(self, status, headers) -> None:
        return None


class Tokens:
    """Auth headers that hand out ``values`` in turn (the last one stays), each after ``delay`` seconds."""

    def __init__(self, *values: str, delay: float = 0.0):
        self.values = list(values)
        self.delay = delay
        self.ready: list[float] = []

    def __call__(self) -> dict[str, str]:
        time.sleep(self.delay)
        value = self.values.pop(0) if len(self.values) > 1 else self.values[0]
        self.ready.append(time.time())
        return {"Authorization": f"Bearer {value}"}


def test_the_slot_is_taken_once_slow_auth_headers_are_ready(server):
    """Auth headers that take long (a token being fetched) come before the slot, so the budget records when
    the server sees the request; a slot taken first would be 1.5 s older than the send."""
    thread, log, _ = server
    budget, tokens = RecordingBudget(), Tokens("t1", delay=1.5)
    session, _ = make_session(thread.url, rate_budget=budget)
    session.auth_headers = tokens
    assert session.request("GET", "/whoami").json() == {"authorization": "Bearer t1"}
    [slot], [seen] = budget.taken, [entry.ts for entry in log.entries()]
    assert slot >= tokens.ready[0], "the slot was taken before the auth headers were ready"
    assert 0 <= seen - slot < 0.5, f"the server saw the request {seen - slot:.2f} s after its slot"


def test_a_long_wait_for_a_slot_asks_for_the_auth_headers_again(server):
    """A slot that took long to come: the token may have been renewed meanwhile. New headers mean the slot
    predates them; it stays unused and the request takes another one, then goes with the new token."""
    thread, log, _ = server
    budget, tokens = RecordingBudget(waits=(0.4,)), Tokens("old", "new")
    session, _ = make_session(thread.url, rate_budget=budget, auth_recheck_seconds=0.2)
    session.auth_headers = tokens
    assert session.request("GET", "/whoami").json() == {"authorization": "Bearer new"}
    assert len(tokens.ready) == 2, "asked again after the long wait (the second slot came at once)"
    assert len(budget.taken) == 2 and budget.taken[1] >= tokens.ready[1]
    assert len(log.entries()) == 1, "the unused slot sent nothing"

    # A short wait: the headers are not asked for again and one slot is enough.
    budget.taken.clear()
    tokens.ready.clear()
    assert session.request("GET", "/whoami").json() == {"authorization": "Bearer new"}
    assert len(tokens.ready) == 1 and len(budget.taken) == 1


def test_auth_headers_that_keep_changing_stop_taking_slots(server):
    thread, _log, _ = server
    budget = RecordingBudget(waits=(0.3,) * 10)
    session, _ = make_session(thread.url, rate_budget=budget, auth_recheck_seconds=0.1)
    session.auth_headers = Tokens(*[f"t{i}" for i in range(10)])
    assert session.request("GET", "/whoami").status_code == 200
    assert len(budget.taken) == 4, "at most 3 rechecks, then the request goes with its slot's headers"

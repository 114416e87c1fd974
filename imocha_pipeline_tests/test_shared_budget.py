"""The shared rate budget: window bound, processes sharing one row, lane priority, server hints, simulator."""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from imocha_pipeline.clients.degreed import DegreedClient
from imocha_pipeline.clients.errors import RateLimitedError
from imocha_pipeline.clients.http import ApiSession, LocalRateBudget, Unlimited
from imocha_pipeline.clients.shared_budget import (
    IMOCHA_RATE_LIMIT_SETTING,
    SharedRateBudget,
    degreed_budget_name,
    imocha_rate_budget,
)
from imocha_pipeline.defs.resources import _rate_budget
from imocha_pipeline.sandbox import degreed_sim
from imocha_pipeline.sandbox.runtime import Sandbox, SandboxConfig
from imocha_pipeline.sync.staging import create_engine, get_engine

TOKEN_PATH = "/oauth/token"


class FakeClock:
    def __init__(self, start: float = 1_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture(params=["process", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def budget_engine(request):
    """Where the budget lives: this process only (no engine), a SQLite file, or a PostgreSQL schema."""
    if request.param == "process":
        return None
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")
    return get_engine(url)


@pytest.fixture
def other_engine(staging_url):
    """A second engine on the same database: to the budget it is another process."""
    engine = create_engine(staging_url)
    yield engine
    engine.dispose()


def unique_name() -> str:
    return f"test:{uuid.uuid4().hex[:8]}"


def max_in_any_window(times: list[float], window: float) -> int:
    times = sorted(times)
    return max((sum(1 for t in times[i:] if t < start + window) for i, start in enumerate(times)), default=0)


def reset_header(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S.%f") + "4Z"


# -- the window ---------------------------------------------------------------------------------------------


def test_never_more_than_the_limit_in_any_window(budget_engine):
    clock = FakeClock()
    budget = SharedRateBudget(budget_engine, unique_name(), 10, margin=0.0, clock=clock, sleep=clock.sleep)
    sent = []
    for _ in range(35):
        budget.acquire("reads")
        sent.append(clock.now)
    assert max_in_any_window(sent, 60.0) == 10
    assert sent[10] == pytest.approx(1_060.0)  # the 11th waits for the window, not longer
    assert budget.status()["used"] == 5


def test_margin_widens_the_window(budget_engine):
    clock = FakeClock()
    budget = SharedRateBudget(budget_engine, unique_name(), 2, window=10.0, margin=0.5, clock=clock,
                              sleep=clock.sleep)
    for _ in range(3):
        budget.acquire("reads")
    assert clock.now == pytest.approx(1_010.5)


def _send_times(url: str, name: str, count: int, per_minute: int, window: float, margin: float,
                barrier, out) -> None:
    """One OS process taking ``count`` slots and reporting when it got each."""
    engine = create_engine(url)
    budget = SharedRateBudget(engine, name, per_minute, window=window, margin=margin)
    barrier.wait(30)
    times = []
    for _ in range(count):
        budget.acquire("reads")
        times.append(time.time())
    out.put(times)
    engine.dispose()


def test_two_processes_share_one_budget(staging_url):
    per_minute, window, margin, count = 5, 1.0, 0.25, 10
    get_engine(staging_url)  # tables exist before the children race
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(3), ctx.Queue()
    name = unique_name()
    children = [ctx.Process(target=_send_times, args=(staging_url, name, count, per_minute, window, margin,
                                                      barrier, out)) for _ in range(2)]
    for child in children:
        child.start()
    barrier.wait(60)
    reports = [out.get(timeout=60) for _ in children]
    for child in children:
        child.join(30)
        assert child.exitcode == 0
    sent = [t for times in reports for t in times]
    assert len(sent) == 2 * count
    # The window is checked at its plain length: the margin absorbs the gap between slot and timestamp.
    assert max_in_any_window(sent, window) <= per_minute


# -- lanes --------------------------------------------------------------------------------------------------


def test_last_free_slots_go_to_higher_lanes(budget_engine):
    clock = FakeClock()
    budget = SharedRateBudget(budget_engine, unique_name(), 3, margin=0.0, linger=2.0, clock=clock,
                              sleep=clock.sleep)
    # Each taker is a thread: one that writes completions, one that reads.
    with ThreadPoolExecutor(1) as writer_thread, ThreadPoolExecutor(1) as reader_thread:

        def writer() -> float:
            return writer_thread.submit(budget.try_acquire, "completions").result()

        def reader() -> float:
            return reader_thread.submit(budget.try_acquire, "reads").result()

        assert writer() == 0
        clock.now += 1
        assert reader() == 0  # two slots were free: more than the reserve of one
        assert 0 < reader() <= 1.0  # the last slot, and the writer sent a moment ago
        clock.now += 1.5  # the writer's interest lapsed
        assert reader() == 0

        assert writer() > 0  # full: the writer registers and waits
        clock.now = 1_059.0
        assert writer() > 0  # a waiting taker wakes at least every HEARTBEAT seconds and renews its interest
        clock.now = 1_060.0  # the first slot frees
        assert reader() > 0
        assert writer() == 0
    assert budget.status()["registered"] == {"completions": 1, "reads": 1}


def test_completions_go_first_when_lanes_compete(staging_url):
    name = unique_name()
    options = {"window": 0.4, "margin": 0.05, "reserve": 2, "linger": 0.3}
    SharedRateBudget(get_engine(staging_url), name, 2, **options)  # table and engine ready
    filler = SharedRateBudget(create_engine(staging_url), name, 2, **options)
    for _ in range(2):
        filler.acquire("reads")  # the window is full: both lanes below have to wait
    order: list[str] = []
    lock = threading.Lock()

    def take(lane: str) -> None:
        engine = create_engine(staging_url)
        budget = SharedRateBudget(engine, name, 2, **options)
        for _ in range(4):
            budget.acquire(lane)
            with lock:
                order.append(lane)
        engine.dispose()

    threads = [threading.Thread(target=take, args=(lane,)) for lane in ("reads", "completions")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert order == ["completions"] * 4 + ["reads"] * 4


def test_an_interrupted_wait_withdraws_its_interest(budget_engine):
    clock = FakeClock()
    budget = SharedRateBudget(budget_engine, unique_name(), 1, clock=clock, sleep=clock.sleep)
    budget.acquire("completions")

    def interrupted(_seconds: float) -> None:
        raise KeyboardInterrupt

    budget._sleep = interrupted
    with pytest.raises(KeyboardInterrupt):
        budget.acquire("completions")
    assert budget.status()["registered"] == {}


# -- server hints -------------------------------------------------------------------------------------------


def test_a_429_pauses_every_taker(staging_url, other_engine):
    clock = FakeClock()
    name = unique_name()
    first = SharedRateBudget(get_engine(staging_url), name, 70, clock=clock, sleep=clock.sleep)
    second = SharedRateBudget(other_engine, name, 70, clock=clock, sleep=clock.sleep)
    first.observe(429, {"Retry-After": "12"})
    assert second.status()["paused_for"] == pytest.approx(12.0)
    second.acquire("completions")
    assert clock.now == pytest.approx(1_012.0)


def test_remaining_zero_pauses_every_taker_until_the_reset(staging_url, other_engine):
    clock = FakeClock()
    name = unique_name()
    first = SharedRateBudget(get_engine(staging_url), name, 70, clock=clock, sleep=clock.sleep)
    second = SharedRateBudget(other_engine, name, 70, clock=clock, sleep=clock.sleep)
    first.acquire("reads")
    first.observe(200, {"X-Rate-Limit-Remaining": "0", "X-Rate-Limit-Reset": reset_header(30)})
    second.acquire("reads")
    assert 1_028.0 < clock.now <= 1_030.1


def test_fewer_remaining_than_counted_books_someone_elses_sends(staging_url, other_engine):
    clock = FakeClock()
    name = unique_name()
    first = SharedRateBudget(get_engine(staging_url), name, 10, margin=0.0, clock=clock, sleep=clock.sleep)
    second = SharedRateBudget(other_engine, name, 10, margin=0.0, clock=clock, sleep=clock.sleep)
    first.acquire("reads")
    first.acquire("reads")
    first.observe(200, {"X-Rate-Limit-Remaining": "8", "X-Rate-Limit-Reset": reset_header(50)})
    first.observe(200, {"X-Rate-Limit-Remaining": "9", "X-Rate-Limit-Reset": reset_header(50)})  # older answer
    assert second.status()["used"] == 2  # what the server says matches what we count: nothing changes

    first.observe(200, {"X-Rate-Limit-Remaining": "3", "X-Rate-Limit-Reset": reset_header(30)})
    assert second.status()["used"] == 7  # five sends by another tool on the same key
    for _ in range(3):
        second.acquire("reads")
    assert clock.now == 1_000.0
    second.acquire("reads")  # the other tool's sends free up at the server's reset
    assert 1_028.0 < clock.now <= 1_030.1


def _status_elsewhere(url: str, name: str, out) -> None:
    engine = create_engine(url)
    out.put(SharedRateBudget(engine, name, 70).status())
    engine.dispose()


def test_a_pause_reaches_another_os_process(staging_url):
    name = unique_name()
    SharedRateBudget(get_engine(staging_url), name, 70).observe(429, {"Retry-After": "120"})
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    child = ctx.Process(target=_status_elsewhere, args=(staging_url, name, out))
    child.start()
    status = out.get(timeout=60)
    child.join(30)
    assert 60 < status["paused_for"] <= 120


# -- against the Degreed simulator --------------------------------------------------------------------------


def _api_answers(sandbox: Sandbox) -> list:
    return [entry for entry in sandbox.degreed.log.entries() if entry.path != TOKEN_PATH]


def _degreed_client(sandbox: Sandbox, budget, **session_options) -> DegreedClient:
    env = sandbox.env()
    session = ApiSession(env["DEGREED_API_BASE_URL"], api_name="degreed", rate_budget=budget, **session_options)
    return DegreedClient(env["DEGREED_API_BASE_URL"], env["DEGREED_TOKEN_URL"], env["DEGREED_CLIENT_ID"],
                         env["DEGREED_CLIENT_SECRET"], session=session)


def _in_threads(clients: list[DegreedClient], calls: int) -> list[BaseException]:
    errors: list[BaseException] = []

    def work(client: DegreedClient) -> None:
        try:
            for _ in range(calls):
                client.list_providers()
        except Exception as exc:
            errors.append(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=work, args=(client,)) for client in clients]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return errors


@pytest.fixture
def short_window_sandbox(monkeypatch):
    """The simulator with a 2-second rate window instead of 60, so a test can span several windows."""
    monkeypatch.setattr(degreed_sim._RateLimiter, "PERIOD", 2.0)
    with Sandbox(SandboxConfig(tests=2, learners=2, attempts=1, degreed_rate_limit=6)) as sandbox:
        yield sandbox


def test_two_clients_sharing_the_budget_never_get_a_429(short_window_sandbox, staging_url, other_engine):
    rate, name = 6, degreed_budget_name(unique_name())
    budgets = [SharedRateBudget(engine, name, rate, window=2.0, margin=0.3)
               for engine in (get_engine(staging_url), other_engine)]
    clients = [_degreed_client(short_window_sandbox, budget, max_attempts=1) for budget in budgets]
    assert _in_threads(clients, rate) == []
    answers = _api_answers(short_window_sandbox)
    assert len(answers) == 2 * rate
    assert [a.status for a in answers if a.status != 200] == []


def test_control_two_separate_budgets_do_get_429s(short_window_sandbox):
    rate = 6
    clients = [_degreed_client(short_window_sandbox, LocalRateBudget(rate, window=2.0), max_attempts=1)
               for _ in range(2)]
    errors = _in_threads(clients, rate)
    assert errors and all(isinstance(error, RateLimitedError) for error in errors)


def test_a_burst_up_to_the_limit_passes_and_the_next_request_waits(staging_url, other_engine):
    rate, name = 6, degreed_budget_name(unique_name())
    with Sandbox(SandboxConfig(tests=2, learners=2, attempts=1, degreed_rate_limit=rate)) as sandbox:
        budgets = [SharedRateBudget(engine, name, rate) for engine in (get_engine(staging_url), other_engine)]
        clients = [_degreed_client(sandbox, budget, max_attempts=1) for budget in budgets]
        assert _in_threads(clients, rate // 2) == []
        assert {a.status for a in _api_answers(sandbox)} == {200}
        assert budgets[0].try_acquire("reads") > 50  # the next one waits for the window


# -- factories ----------------------------------------------------------------------------------------------


def test_imocha_budget_is_unlimited_unless_set(monkeypatch):
    monkeypatch.delenv(IMOCHA_RATE_LIMIT_SETTING, raising=False)
    assert isinstance(imocha_rate_budget(), Unlimited)
    monkeypatch.setenv(IMOCHA_RATE_LIMIT_SETTING, "30")
    budget = imocha_rate_budget()
    assert isinstance(budget, SharedRateBudget) and budget.per_minute == 30
    assert isinstance(imocha_rate_budget(per_minute=0), Unlimited)


def test_resource_budget_is_shared_through_the_staging_database(sqlite_url):
    budget = _rate_budget("client-a", 70, sqlite_url)
    assert budget is _rate_budget("client-a", 70, sqlite_url)
    assert isinstance(budget, SharedRateBudget) and budget.name == "degreed:client-a"
    assert "database" in repr(budget)
    assert "process" in repr(_rate_budget("client-a", 70))

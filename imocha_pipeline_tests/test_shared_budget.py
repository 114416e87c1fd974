"""The shared rate budget: window bound, processes sharing one row, lane priority, server hints, simulator."""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from imocha_pipeline import settings
from imocha_pipeline.cli import main
from imocha_pipeline.clients.degreed import DegreedClient
from imocha_pipeline.clients.errors import RateLimitedError
from imocha_pipeline.clients.http import ApiSession, LocalRateBudget, RetryPolicy, Unlimited
from imocha_pipeline.clients.http.shared_budget import SharedRateBudget
from imocha_pipeline.connections import (
    IMOCHA_RATE_LIMIT_SETTING,
    TOKEN_REQUESTS_COUNT_SETTING,
    degreed_budget_name,
    imocha_rate_budget,
    shared_degreed_client,
    shared_rate_budget,
    token_requests_count,
)
from imocha_pipeline.defs.resources import DegreedResource, _rate_budget
from imocha_pipeline.demo import show_sandbox
from imocha_pipeline.staging import create_engine, dispose_engine, get_engine, rate_budget
from imocha_pipeline.sync.triggers.polling import PollSettings, tick_client
from imocha_sandbox.degreed.rate_limit import RateLimiter
from imocha_sandbox.runtime import Sandbox, SandboxConfig
from imocha_sandbox.server import FaultConfig

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
    budget = shared_rate_budget(budget_engine, unique_name(), 10, margin=0.0, clock=clock, sleep=clock.sleep)
    sent = []
    for _ in range(35):
        budget.acquire("reads")
        sent.append(clock.now)
    assert max_in_any_window(sent, 60.0) == 10
    assert sent[10] == pytest.approx(1_060.0)  # the 11th waits for the window, not longer
    assert budget.status()["used"] == 5


def test_margin_widens_the_window(budget_engine):
    clock = FakeClock()
    budget = shared_rate_budget(budget_engine, unique_name(), 2, window=10.0, margin=0.5, clock=clock,
                                sleep=clock.sleep)
    for _ in range(3):
        budget.acquire("reads")
    assert clock.now == pytest.approx(1_010.5)


def _send_times(url: str, name: str, count: int, per_minute: int, window: float, margin: float,
                barrier, out) -> None:
    """One OS process taking ``count`` slots and reporting when it got each."""
    engine = create_engine(url)
    budget = shared_rate_budget(engine, name, per_minute, window=window, margin=margin)
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
    budget = shared_rate_budget(budget_engine, unique_name(), 3, margin=0.0, linger=2.0, clock=clock,
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
    shared_rate_budget(get_engine(staging_url), name, 2, **options)  # table and engine ready
    filler = shared_rate_budget(create_engine(staging_url), name, 2, **options)
    for _ in range(2):
        filler.acquire("reads")  # the window is full: both lanes below have to wait
    order: list[str] = []
    lock = threading.Lock()

    def take(lane: str) -> None:
        engine = create_engine(staging_url)
        budget = shared_rate_budget(engine, name, 2, **options)
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
    budget = shared_rate_budget(budget_engine, unique_name(), 1, clock=clock, sleep=clock.sleep)
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
    first = shared_rate_budget(get_engine(staging_url), name, 70, clock=clock, sleep=clock.sleep)
    second = shared_rate_budget(other_engine, name, 70, clock=clock, sleep=clock.sleep)
    first.observe(429, {"Retry-After": "12"})
    assert second.status()["paused_for"] == pytest.approx(12.0)
    second.acquire("completions")
    assert clock.now == pytest.approx(1_012.0)


def test_remaining_zero_pauses_every_taker_until_the_reset(staging_url, other_engine):
    clock = FakeClock()
    name = unique_name()
    first = shared_rate_budget(get_engine(staging_url), name, 70, clock=clock, sleep=clock.sleep)
    second = shared_rate_budget(other_engine, name, 70, clock=clock, sleep=clock.sleep)
    first.acquire("reads")
    first.observe(200, {"X-Rate-Limit-Remaining": "0", "X-Rate-Limit-Reset": reset_header(30)})
    second.acquire("reads")
    assert 1_028.0 < clock.now <= 1_030.1


def test_fewer_remaining_than_counted_books_someone_elses_sends(staging_url, other_engine):
    clock = FakeClock()
    name = unique_name()
    first = shared_rate_budget(get_engine(staging_url), name, 10, margin=0.0, clock=clock, sleep=clock.sleep)
    second = shared_rate_budget(other_engine, name, 10, margin=0.0, clock=clock, sleep=clock.sleep)
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
    out.put(shared_rate_budget(engine, name, 70).status())
    engine.dispose()


def test_a_pause_reaches_another_os_process(staging_url):
    name = unique_name()
    shared_rate_budget(get_engine(staging_url), name, 70).observe(429, {"Retry-After": "120"})
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
    monkeypatch.setattr(RateLimiter, "PERIOD", 2.0)
    with Sandbox(SandboxConfig(tests=2, learners=2, attempts=1, degreed_rate_limit=6)) as sandbox:
        yield sandbox


def test_two_clients_sharing_the_budget_never_get_a_429(short_window_sandbox, staging_url, other_engine):
    rate, name = 6, degreed_budget_name(unique_name())
    budgets = [shared_rate_budget(engine, name, rate, window=2.0, margin=0.3)
               for engine in (get_engine(staging_url), other_engine)]
    clients = [_degreed_client(short_window_sandbox, budget, retry=RetryPolicy(max_attempts=1)) for budget in budgets]
    assert _in_threads(clients, rate) == []
    answers = _api_answers(short_window_sandbox)
    assert len(answers) == 2 * rate
    assert [a.status for a in answers if a.status != 200] == []


def test_control_two_separate_budgets_do_get_429s(short_window_sandbox):
    rate = 6
    clients = [_degreed_client(short_window_sandbox, LocalRateBudget(rate, window=2.0),
                               retry=RetryPolicy(max_attempts=1)) for _ in range(2)]
    errors = _in_threads(clients, rate)
    assert errors and all(isinstance(error, RateLimitedError) for error in errors)


def test_a_burst_up_to_the_limit_passes_and_the_next_request_waits(staging_url, other_engine):
    rate, name = 6, degreed_budget_name(unique_name())
    with Sandbox(SandboxConfig(tests=2, learners=2, attempts=1, degreed_rate_limit=rate)) as sandbox:
        budgets = [shared_rate_budget(engine, name, rate) for engine in (get_engine(staging_url), other_engine)]
        clients = [_degreed_client(sandbox, budget, retry=RetryPolicy(max_attempts=1)) for budget in budgets]
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



# -- the slot marks the send; token requests ----------------------------------------------------------------


STAGING_SETTING = "IMOCHA_PIPELINE_STAGING_DB_URL"


def recorded_sends(url: str, name: str) -> list[float]:
    """The send times a budget row holds (epoch seconds on SQLite)."""
    with get_engine(url).connect() as conn:
        row = conn.execute(sa.select(rate_budget.c.sent).where(rate_budget.c.name == name)).one_or_none()
    return sorted(row.sent or []) if row is not None else []


def degreed_settings(sandbox: Sandbox) -> settings.DegreedSettings:
    env = sandbox.env()
    return settings.DegreedSettings(client_id=env["DEGREED_CLIENT_ID"], client_secret=env["DEGREED_CLIENT_SECRET"],
                                    api_base_url=env["DEGREED_API_BASE_URL"], token_url=env["DEGREED_TOKEN_URL"],
                                    rate_limit_per_minute=int(env["DEGREED_RATE_LIMIT_PER_MINUTE"]))


@pytest.fixture
def small_sandbox():
    with Sandbox(SandboxConfig(seed=3, tests=3, learners=3, attempts=3, degreed_rate_limit=6000)) as sandbox:
        yield sandbox


def test_the_slot_is_recorded_after_a_slow_token_fetch(small_sandbox, sqlite_url, monkeypatch):
    """The token answer takes 2 s: the API request's slot is recorded after it, when the request is sent."""
    monkeypatch.delenv(TOKEN_REQUESTS_COUNT_SETTING, raising=False)
    sandbox = small_sandbox
    sandbox.degreed.faults.set(FaultConfig(path_prefix=TOKEN_PATH, timeout_next=1, timeout_seconds=2.0))
    client = shared_degreed_client(degreed_settings(sandbox), sqlite_url)
    client.list_providers()
    client.close()
    [token] = [entry for entry in sandbox.degreed.log.entries() if entry.path == TOKEN_PATH]
    [api] = _api_answers(sandbox)
    [slot] = recorded_sends(sqlite_url, degreed_budget_name(client.client_id))
    assert slot >= token.ts - 0.05, f"the slot was taken {token.ts - slot:.2f} s before the token was answered"
    assert 0 <= api.ts - slot < 0.5, f"the request reached Degreed {api.ts - slot:.2f} s after its slot"


@pytest.mark.parametrize("counted", [False, True])
def test_token_requests_take_a_slot_when_they_count(small_sandbox, sqlite_url, monkeypatch, counted):
    """DEGREED_TOKEN_REQUESTS_COUNT: a token request takes a slot of the client's shared budget (here through
    the jobs' DegreedResource), as a server that charges token requests counts them."""
    monkeypatch.setenv(TOKEN_REQUESTS_COUNT_SETTING, "true" if counted else "false")
    sandbox = small_sandbox
    sandbox.degreed.configure(token_requests_count=counted)
    env = sandbox.env()
    resource = DegreedResource(client_id=env["DEGREED_CLIENT_ID"], client_secret=env["DEGREED_CLIENT_SECRET"],
                               api_base_url=env["DEGREED_API_BASE_URL"], token_url=env["DEGREED_TOKEN_URL"],
                               rate_limit_per_minute=6000, staging_db_url=sqlite_url)
    client = resource.client()
    client.list_providers()
    client.list_providers()
    client.close()
    sends = recorded_sends(sqlite_url, degreed_budget_name(env["DEGREED_CLIENT_ID"]))
    assert len(sends) == (3 if counted else 2)
    assert sandbox.degreed.max_requests_in_any_minute(env["DEGREED_CLIENT_ID"]) == len(sends)


def test_token_requests_count_setting(monkeypatch):
    monkeypatch.delenv(TOKEN_REQUESTS_COUNT_SETTING, raising=False)
    assert token_requests_count() is False
    for value, expected in (("1", True), ("TRUE", True), ("on", True), ("0", False), ("no", False)):
        monkeypatch.setenv(TOKEN_REQUESTS_COUNT_SETTING, value)
        assert token_requests_count() is expected
    monkeypatch.setenv(TOKEN_REQUESTS_COUNT_SETTING, "sometimes")
    with pytest.raises(settings.InvalidSettingError, match=TOKEN_REQUESTS_COUNT_SETTING):
        token_requests_count()


# -- every command and sensor draws from the shared budgets -------------------------------------------------


def _imocha_requests(sandbox: Sandbox) -> int:
    return len(sandbox.imocha.log.entries())


def test_the_polling_sensor_client_draws_from_the_imocha_budget(small_sandbox, sqlite_url, monkeypatch):
    """tick_client as the sensor calls it (base URL, key, settings): its budget is the staging database's."""
    monkeypatch.setenv(IMOCHA_RATE_LIMIT_SETTING, "5")
    monkeypatch.setenv(STAGING_SETTING, sqlite_url)
    sandbox = small_sandbox
    client = tick_client(sandbox.imocha_url, sandbox.env()["IMOCHA_API_KEY"], PollSettings.from_env())
    client.ping()
    now = datetime.now(UTC)
    client.list_attempts(now - timedelta(days=3), now)
    client.close()
    sent = _imocha_requests(sandbox)
    assert sent >= 2
    assert len(recorded_sends(sqlite_url, "imocha")) == sent
    assert imocha_rate_budget(get_engine(sqlite_url), 5).status()["free"] == 5 - sent


def test_callback_replay_draws_from_the_imocha_budget(small_sandbox, sqlite_url, monkeypatch):
    monkeypatch.delenv(TOKEN_REQUESTS_COUNT_SETTING, raising=False)
    sandbox = small_sandbox
    env = sandbox.env() | {STAGING_SETTING: sqlite_url, IMOCHA_RATE_LIMIT_SETTING: "50"}
    result = CliRunner().invoke(main, ["callbacks", "replay", "--since", "720"], env=env)
    assert result.exit_code == 0, result.output
    assert "had no final callback" in result.output
    sent = _imocha_requests(sandbox)
    assert sent >= 2, "Retrieve Invites (7-day windows), then Process Callbacks"
    assert len(recorded_sends(sqlite_url, "imocha")) == sent


def test_doctor_draws_from_the_shared_budgets(small_sandbox, sqlite_url, monkeypatch):
    monkeypatch.delenv(TOKEN_REQUESTS_COUNT_SETTING, raising=False)
    sandbox = small_sandbox
    env = sandbox.env() | {STAGING_SETTING: sqlite_url, IMOCHA_RATE_LIMIT_SETTING: "50"}
    result = CliRunner().invoke(main, ["doctor"], env=env)
    assert result.exit_code == 0, result.output
    degreed_calls = _api_answers(sandbox)
    assert degreed_calls, "the provider check reads Degreed"
    assert len(recorded_sends(sqlite_url, degreed_budget_name(env["DEGREED_CLIENT_ID"]))) == len(degreed_calls)
    assert len(recorded_sends(sqlite_url, "imocha")) == _imocha_requests(sandbox) == 1
    assert "PASS  Staging database:" in result.output


def test_doctor_without_a_staging_setting_uses_the_pipelines_default_database(small_sandbox, tmp_path,
                                                                               monkeypatch):
    monkeypatch.delenv(STAGING_SETTING, raising=False)
    monkeypatch.delenv(TOKEN_REQUESTS_COUNT_SETTING, raising=False)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    default_url = settings.default_staging_db_url()
    assert str(tmp_path) in default_url
    sandbox = small_sandbox
    try:
        result = CliRunner().invoke(main, ["doctor"], env=sandbox.env())
        assert result.exit_code == 0, result.output
        sends = recorded_sends(default_url, degreed_budget_name(sandbox.env()["DEGREED_CLIENT_ID"]))
        assert len(sends) == len(_api_answers(sandbox)) >= 1
    finally:
        dispose_engine(default_url)


def test_doctor_reports_a_staging_database_it_cannot_open(small_sandbox, tmp_path, monkeypatch):
    sandbox = small_sandbox
    env = sandbox.env() | {STAGING_SETTING: f"sqlite:///{tmp_path / 'missing' / 'dir' / 'staging.sqlite'}"}
    result = CliRunner().invoke(main, ["doctor"], env=env)
    assert result.exit_code == 1
    assert "FAIL  Staging database: cannot open" in result.output
    assert "fix: check IMOCHA_PIPELINE_STAGING_DB_URL" in result.output
    assert "PASS  Degreed token" in result.output and "PASS  iMocha API" in result.output


def test_the_demo_clients_draw_from_the_shared_budgets(small_sandbox, sqlite_url, monkeypatch):
    monkeypatch.setenv(IMOCHA_RATE_LIMIT_SETTING, "500")
    monkeypatch.delenv(TOKEN_REQUESTS_COUNT_SETTING, raising=False)
    sandbox = small_sandbox
    lines: list[str] = []
    show_sandbox(sandbox, lines.append, sqlite_url)
    assert any(line.startswith("Degreed: provider(s) visible") for line in lines)
    client_id = sandbox.env()["DEGREED_CLIENT_ID"]
    assert len(recorded_sends(sqlite_url, degreed_budget_name(client_id))) == len(_api_answers(sandbox)) >= 2
    assert len(recorded_sends(sqlite_url, "imocha")) == _imocha_requests(sandbox) >= 3

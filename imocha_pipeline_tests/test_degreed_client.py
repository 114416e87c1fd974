"""The production Degreed client against the simulator, over real HTTP on loopback.

Tests that are not about the rate limit give the simulator a very high limit and the client an
unlimited budget with near-zero backoff, so retries cost milliseconds.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import traceback
from datetime import UTC, date, datetime, timedelta

import pytest

from imocha_pipeline.clients.degreed import DegreedClient, DegreedCompletion, DegreedSkillRating
from imocha_pipeline.clients.degreed.paging import date_windows
from imocha_pipeline.clients.degreed.values import relationship_ids
from imocha_pipeline.clients.errors import (
    AmbiguousWriteError,
    AuthError,
    ConflictError,
    DuplicateCompletionError,
    LearnerNotFoundError,
    NotFoundError,
)
from imocha_pipeline.clients.http import ApiSession, LocalRateBudget, RetryPolicy, Unlimited
from imocha_pipeline.settings import DEGREED_REQUIRED_SCOPES
from imocha_pipeline.timestamps import parse_utc
from imocha_sandbox.degreed import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    ApiClientSpec,
    DegreedSimulator,
)
from imocha_sandbox.seed import generate_world
from imocha_sandbox.server import FaultConfig, ServerThread

ORG_ID, ORG_SECRET = "org-admin", "org-secret-5678"
COMPLETIONS_PATH = "/api/v2/completions"


class FakeClock:
    """Shared by the simulator and the client's sleeps: waiting a minute takes no time."""

    def __init__(self) -> None:
        self.now = time.time()
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += max(0.0, seconds)


@pytest.fixture(scope="module")
def world():
    return generate_world(seed=5, tests=4, learners=60, attempts=10)


@pytest.fixture
def sim_server(world):
    """Factory: ``sim_server(**settings)`` -> (simulator, base url); servers stop after the test."""
    servers: list[ServerThread] = []

    def start(**settings):
        settings.setdefault("rate_limit_per_minute", 100_000)
        clients = {
            DEFAULT_CLIENT_ID: ApiClientSpec(DEFAULT_CLIENT_SECRET, frozenset(DEGREED_REQUIRED_SCOPES), "IMOCHA"),
            ORG_ID: ApiClientSpec(ORG_SECRET, frozenset(DEGREED_REQUIRED_SCOPES), None),
        }
        sim = DegreedSimulator(world, clients=clients, **settings)
        server = ServerThread(sim.app).start()
        servers.append(server)
        return sim, server.url

    yield start
    for server in servers:
        server.stop()


def make_client(base: str, client_id: str = DEFAULT_CLIENT_ID, secret: str = DEFAULT_CLIENT_SECRET, *,
                budget=None, sleep=None, **options) -> DegreedClient:
    session = ApiSession(base, api_name="degreed", rate_budget=budget or Unlimited(),
                         retry=RetryPolicy(max_attempts=8, backoff_base=0.005, backoff_max=0.02),
                         **({"sleep": sleep} if sleep else {}))
    return DegreedClient(base, f"{base}/oauth/token", client_id, secret, session=session, **options)


def in_degreed(world, index: int = 0):
    return [learner for learner in world.learners if learner.in_degreed][index]


def api_requests(sim, path_prefix: str, method: str = "GET"):
    return [e for e in sim.log.entries() if e.path.startswith(path_prefix) and e.method == method]


def seed_completions(sim, world, count: int, start: datetime, days: int) -> None:
    """``count`` completions spread over ``days`` days from ``start``: one per (learner, assessment)."""
    emails = [learner.email for learner in world.learners if learner.in_degreed]
    assessments = [sim.add_assessment(f"imocha-{n}")["external_id"] for n in range(count // len(emails) + 1)]
    pairs = [(email, external_id) for external_id in assessments for email in emails][:count]
    step = days * 86400 / count
    for index, (email, external_id) in enumerate(pairs):
        sim.add_completion(email, external_id, start + timedelta(seconds=index * step))


# ---------------------------------------------------------------------------------------------------------
# Every method
# ---------------------------------------------------------------------------------------------------------


def degreed_user_id(sim, email: str) -> str:
    return next(u["id"] for u in sim.state()["users"] if u["email"].lower() == email.lower())


def test_assessment_methods(sim_server):
    sim, base = sim_server(conflict_body="error_with_id")
    client = make_client(base)
    created = client.create_assessment({"external_id": "imocha-300000", "title": "Python", "url": "https://t/1",
                                        "summary": "40 questions", "duration": 45, "duration-type": "Minutes"})
    assert (created.external_id, created.provider_code, created.duration, created.obsolete) == (
        "imocha-300000", "IMOCHA", 45, False)
    assert created.modified_at.tzinfo is UTC
    assert client.get_assessment(created.id) == created
    assert client.find_assessment("imocha-300000") == created
    assert client.find_assessment("imocha-30000") is None

    since = sim.log.last_seq
    retired = client.update_assessment(created.id, {"obsolete": True})
    patch_body = json.loads(sim.log.entries(since)[0].body)
    assert patch_body == {"data": {"type": "content/assessments", "id": created.id,
                                   "attributes": {"obsolete": True}}}  # only what was given
    assert retired.obsolete is True and retired.summary == "40 questions"
    assert [a.id for a in client.iter_assessments()] == [created.id]  # obsolete items still listed

    with pytest.raises(ConflictError) as conflict:
        client.create_assessment({"external-id": "imocha-300000", "title": "Again", "url": "https://t/2"})
    assert conflict.value.existing_id == created.id and conflict.value.status == 409
    sim.configure(conflict_body="empty")  # the only public 409 body: nothing to read an id from
    with pytest.raises(ConflictError) as bare:
        client.create_assessment({"external-id": "imocha-300000", "title": "Again", "url": "https://t/3"})
    assert bare.value.existing_id is None and bare.value.status == 409

    client.delete_assessment(created.id)
    with pytest.raises(NotFoundError):
        client.get_assessment(created.id)
    assert sim.state()["assessments"] == [a for a in sim.state()["assessments"] if a["provider_code"] != "IMOCHA"]


@pytest.mark.parametrize("shape", ["documented", "echo"])
def test_completion_methods(sim_server, world, shape):
    sim, base = sim_server(read_shape=shape, conflict_body="error_with_id")
    client = make_client(base)
    content = sim.add_assessment("imocha-1")
    learner = in_degreed(world)
    moment = datetime(2024, 5, 2, 16, 30, 5, 123000, tzinfo=UTC)
    created = client.create_completion(learner.email, "imocha-1", moment, percentile=87.5)
    assert (created.degreed_user_id, created.degreed_content_id, created.employee_id) == (
        degreed_user_id(sim, learner.email), content["id"], learner.employee_id)
    if shape == "echo":
        assert (created.user_id, created.user_identifier_type, created.content_id, created.percentile) == (
            learner.email, "Email", "imocha-1", 87.5)
    else:  # spec §8.3: Degreed ids only, no percentile
        assert created.percentile is None and created.raw["attributes"].keys() == {
            "employee-id", "completed-at", "added-at", "points-earned", "is-verified", "rating", "access-method"}
    assert created.completed_at == moment.replace(microsecond=0)  # sent at whole seconds, read back as UTC
    assert created.added_at.tzinfo is UTC
    assert client.get_completion(created.id) == created

    since = sim.log.last_seq
    updated = client.update_completion(created.id, percentile=90)
    assert json.loads(sim.log.entries(since)[0].body)["data"]["attributes"] == {"percentile": 90}
    assert updated.completed_at == created.completed_at
    assert sim.state()["completions"][0]["percentile"] == 90 and updated.percentile == (90 if shape == "echo" else None)

    with pytest.raises(DuplicateCompletionError) as duplicate:
        client.create_completion(learner.email, "imocha-1", moment)
    assert duplicate.value.existing_id == created.id

    missing = next(learner for learner in world.learners if not learner.in_degreed)
    with pytest.raises(LearnerNotFoundError) as not_found:
        client.create_completion(missing.email, "imocha-1", moment)
    assert not_found.value.identifier == missing.email and not_found.value.status == 400

    other = client.create_completion(in_degreed(world, 1).email, "imocha-1", moment + timedelta(days=9))
    listed = list(client.iter_completions(date(2024, 4, 28), date(2024, 5, 11)))
    assert sorted(c.id for c in listed) == sorted([created.id, other.id])
    assert [c.id for c in client.iter_completions(date(2024, 5, 3), date(2024, 5, 10))] == []

    client.delete_completion(created.id)
    with pytest.raises(NotFoundError):
        client.get_completion(created.id)


def test_duplicate_completion_in_update_mode_returns_the_same_record(sim_server, world):
    sim, base = sim_server(completion_duplicates="update")
    client = make_client(base)
    sim.add_assessment("imocha-1")
    email = in_degreed(world).email
    first = client.create_completion(email, "imocha-1", datetime(2024, 5, 2, tzinfo=UTC), percentile=40)
    again = client.create_completion(email, "imocha-1", datetime(2024, 5, 9, tzinfo=UTC), percentile=75)
    assert again.id == first.id and sim.state()["completions"][0]["percentile"] == 75
    assert again.completed_at == datetime(2024, 5, 9, tzinfo=UTC)


@pytest.mark.parametrize("shape", ["documented", "echo"])
def test_skill_rating_methods(sim_server, world, shape):
    sim, base = sim_server(read_shape=shape)
    client = make_client(base)
    learner = in_degreed(world)
    rated_at = datetime(2024, 5, 2, 14, 30, tzinfo=UTC)
    first = client.create_skill_rating(learner.email, "Python", 3, rated_at=rated_at)
    user = learner.email if shape == "echo" else degreed_user_id(sim, learner.email)
    assert (first.user_id, first.employee_id, first.skill_name, first.rating, first.rating_type,
            first.rated_at) == (user, learner.employee_id, "Python", 3, "Evaluation", rated_at)
    replaced = client.create_skill_rating(learner.email, "Python", 6, rated_at=rated_at + timedelta(days=1))
    assert replaced.id == first.id and replaced.rating == 6
    second = client.create_skill_rating(in_degreed(world, 1).email, "SQL", 8, rated_at=rated_at + timedelta(days=20))
    assert sorted(r.id for r in client.iter_skill_ratings()) == sorted([first.id, second.id])
    windowed = list(client.iter_skill_ratings(date(2024, 5, 1), date(2024, 5, 10)))
    assert [r.id for r in windowed] == [first.id]

    before = sim.log.last_seq
    for bad in (0, 9, 4.5, True):
        with pytest.raises(ValueError):
            client.create_skill_rating(learner.email, "Python", bad)
    assert sim.log.last_seq == before  # rejected before any request
    with pytest.raises(LearnerNotFoundError):
        client.create_skill_rating("nobody@example.com", "Python", 4)
    client.delete_skill_rating(second.id)
    assert [r.id for r in client.iter_skill_ratings()] == [first.id]


def test_users_and_providers(sim_server, world):
    sim, base = sim_server()
    client = make_client(base)
    added = sim.add_user("ana+degreed@example.com", "E55555", "Ana", "Lima")
    by_email = client.get_user("ana+degreed@example.com")
    assert (by_email.id, by_email.email, by_email.employee_id, by_email.full_name) == (
        added["id"], "ana+degreed@example.com", "E55555", "Ana Lima")
    assert client.get_user("E55555", identifier="employee-id") == by_email
    assert client.get_user(added["id"], identifier="id") == by_email
    with pytest.raises(LearnerNotFoundError):
        client.get_user("missing@example.com")
    with pytest.raises(NotFoundError):
        client.get_user("nope00", identifier="id")
    assert len(list(client.iter_users())) == sum(learner.in_degreed for learner in world.learners) + 1
    providers = {p.code: p for p in client.list_providers()}
    assert set(providers) == {"IMOCHA", "ACMELEARN"} and providers["IMOCHA"].name == "iMocha"


def test_check_scope_and_token_works(sim_server):
    _sim, base = sim_server()
    client = make_client(base)
    assert client.check_scope("content:write") is True
    assert client.check_scope("users:write") is False
    assert client.token_works() is True
    wrong = make_client(base, secret="not-the-secret")
    assert wrong.token_works() is False
    with pytest.raises(AuthError):
        wrong.check_scope("content:read")


def test_organization_code_header_is_sent(sim_server):
    _sim, base = sim_server()
    org = make_client(base, ORG_ID, ORG_SECRET, organization_code="TENANT-1")
    assert {p.code for p in org.list_providers()} == {"IMOCHA", "ACMELEARN"}
    # The simulator refuses the header from a provider key: proof that the client sends it.
    provider = make_client(base, organization_code="TENANT-1")
    with pytest.raises(AuthError) as refused:
        provider.list_providers()
    assert refused.value.status == 403 and "organization API key" in str(refused.value)


# ---------------------------------------------------------------------------------------------------------
# Paging
# ---------------------------------------------------------------------------------------------------------


def test_paging_over_2500_records_uses_three_full_pages(sim_server):
    sim, base = sim_server()
    expected = {sim.add_assessment(f"imocha-{n}")["id"] for n in range(2500)}
    client = make_client(base)
    since = sim.log.last_seq
    got = [a.id for a in client.iter_assessments()]
    assert len(got) == 2500 and set(got) == expected
    pages = [e for e in sim.log.entries(since) if e.path == "/api/v2/content/assessments"]
    assert len(pages) == 3 and all("limit=1000" in e.query for e in pages)


@pytest.mark.parametrize("answer", ["code", "bare_400", "not_found"])
def test_expired_cursor_restarts_only_that_window(sim_server, world, answer):
    """However Degreed answers a follow-up page whose cursor expired (not documented: a 400 with a code, a bare
    400, a 404), only that window's chain is read again."""
    sim, base = sim_server(cursor_expiry=answer)
    start = datetime(2024, 3, 1, tzinfo=UTC)
    seed_completions(sim, world, 2500, start, days=21)
    client = make_client(base, page_limit=250)
    windows = date_windows(date(2024, 3, 1), date(2024, 3, 21))
    assert len(windows) == 4
    in_first = sum(1 for c in sim.state()["completions"]
                   if windows[0][0].isoformat() <= c["completed_at"][:10] <= windows[0][1].isoformat())
    # Let every cursor request of window 1 and the first of window 2 pass; expire window 2's second.
    sim.schedule_cursor_expiry(skip=-(-in_first // 250), count=1)
    since = sim.log.last_seq

    got = list(client.iter_completions(date(2024, 3, 1), date(2024, 3, 21)))

    assert len(got) == len({c.id for c in got}) == 2500
    assert {c.id for c in got} == {c["id"] for c in sim.state()["completions"]}
    first_pages = [e.query for e in sim.log.entries(since) if e.path == COMPLETIONS_PATH and "next=" not in e.query]
    starts = [q.split("filter%5Bstart_date%5D=")[1][:10] for q in first_pages]
    assert starts == ["2024-03-01", "2024-03-07", "2024-03-07", "2024-03-13", "2024-03-19"]  # window 2 restarted
    assert [e.status for e in sim.log.entries(since) if e.status != 200] == [404 if answer == "not_found" else 400]


def test_each_chain_is_read_whole_before_it_yields(sim_server, world):
    sim, base = sim_server()
    seed_completions(sim, world, 600, datetime(2024, 3, 1, tzinfo=UTC), days=14)
    in_first = sum(1 for c in sim.state()["completions"] if c["completed_at"][:10] <= "2024-03-07")
    client = make_client(base, page_limit=100)
    since = sim.log.last_seq
    iterator = client.iter_completions(date(2024, 3, 1), date(2024, 3, 14))
    next(iterator)
    read = [e.query for e in sim.log.entries(since) if e.path == COMPLETIONS_PATH]
    assert len(read) == -(-in_first // 100) >= 3  # every page of window 1 ...
    assert next(q for q in read if "next=" not in q).count("2024-03-01") == 1  # ... and none of window 2
    assert len(read) - 1 == sum("next=" in q for q in read)
    assert len(list(iterator)) + 1 == 600


# ---------------------------------------------------------------------------------------------------------
# Tokens and credentials
# ---------------------------------------------------------------------------------------------------------


def test_token_expiry_mid_run_is_refreshed_transparently(sim_server):
    sim, base = sim_server()
    sim.add_assessment("imocha-1")
    client = make_client(base)
    found = client.find_assessment("imocha-1")
    assert sim.expire_tokens() == 1
    since = sim.log.last_seq
    assert client.get_assessment(found.id) == found
    assert [(e.path, e.status) for e in sim.log.entries(since)] == [
        (f"/api/v2/content/assessments/{found.id}", 401), ("/oauth/token", 200),
        (f"/api/v2/content/assessments/{found.id}", 200)]


def test_token_is_renewed_before_it_expires(sim_server):
    sim, base = sim_server(token_ttl_seconds=2)
    client = make_client(base, refresh_skew_seconds=60)  # capped at half the lifetime: renew after 1 s
    client.list_providers()
    time.sleep(1.1)
    since = sim.log.last_seq
    client.list_providers()
    assert [(e.path, e.status) for e in sim.log.entries(since)] == [("/oauth/token", 200), ("/api/v2/providers", 200)]


def test_revoked_secret_gives_a_clear_auth_error(sim_server):
    sim, base = sim_server()
    client = make_client(base)
    client.list_providers()
    sim.revoke_client(DEFAULT_CLIENT_ID)
    with pytest.raises(AuthError) as error:
        client.list_providers()
    message = str(error.value)
    assert DEFAULT_CLIENT_ID in message and "wrong client secret" in message
    assert DEFAULT_CLIENT_SECRET not in message and error.value.status == 401
    assert [(e.path, e.status) for e in sim.log.entries()][-2:] == [("/api/v2/providers", 401), ("/oauth/token", 401)]


# ---------------------------------------------------------------------------------------------------------
# Faults and rate limits
# ---------------------------------------------------------------------------------------------------------


def test_429_storms_and_5xx_bursts_still_give_exactly_the_right_data(sim_server, world):
    sim, base = sim_server()
    seed_completions(sim, world, 1200, datetime(2024, 3, 1, tzinfo=UTC), days=10)
    sim.add_assessment("imocha-new")
    expected = {c["id"] for c in sim.state()["completions"]}
    client = make_client(base, page_limit=200)
    sim.faults.set(FaultConfig(rate_429_share=0.3, error_5xx_share=0.2, error_5xx_next=3,
                               retry_after_seconds=0, seed=3))

    got = [c.id for c in client.iter_completions(date(2024, 3, 1), date(2024, 3, 11))]
    emails = [learner.email for learner in world.learners if learner.in_degreed][:10]
    written = [client.create_completion(email, "imocha-new", datetime(2024, 3, 12, tzinfo=UTC), percentile=50)
               for email in emails]

    faulted = [e for e in sim.log.entries() if e.fault]
    assert {e.fault for e in faulted} == {"rate_429", "error_5xx"} and len(faulted) > 10
    assert len(got) == len(set(got)) and set(got) == expected
    state = sim.state()["completions"]
    new = [c for c in state if c["content_external_id"] == "imocha-new"]
    assert sorted(c["user_email"] for c in new) == sorted(emails)  # each write landed exactly once
    assert {c.id for c in written} == {c["id"] for c in new}


def test_lost_answer_on_create_surfaces_the_existing_record(sim_server, world):
    """A create whose answer is lost is not posted again blindly (it may have landed: drill 2 saw a rating
    posted twice); the caller is told, and reading Degreed surfaces the record that landed exactly once."""
    from imocha_pipeline.sync.assessments.writer import AssessmentWriter
    from imocha_pipeline.sync.completions.writers import CompletionWriter

    sim, base = sim_server()
    client = make_client(base)
    sim.add_assessment("imocha-1")
    email = in_degreed(world).email
    sim.faults.set(FaultConfig(lost_ack_next=1, path_prefix=COMPLETIONS_PATH, methods=["POST"]))
    with pytest.raises(AmbiguousWriteError):
        client.create_completion(email, "imocha-1", datetime(2024, 5, 2, tzinfo=UTC))
    stored = sim.state()["completions"]
    assert len(stored) == 1
    found = CompletionWriter(client).find_existing({
        "user_id": email, "user_identifier_type": "Email", "content_id": "imocha-1",
        "completed_at": "2024-05-02T00:00:00Z"})
    assert found is not None and found["degreed_id"] == stored[0]["id"]

    sim.faults.set(FaultConfig(lost_ack_next=1, path_prefix="/api/v2/content", methods=["POST"]))
    with pytest.raises(AmbiguousWriteError):
        client.create_assessment({"external-id": "imocha-2", "title": "T", "url": "https://t/2"})
    found = AssessmentWriter(client).find_existing({"record_key": "imocha-2"})
    assert found is not None and found["degreed_id"] == sim.state()["assessments"][-1]["id"]
    with pytest.raises(ConflictError):
        client.create_assessment({"external-id": "imocha-2", "title": "T", "url": "https://t/2"})
    outcome = AssessmentWriter(client).create({"record_key": "imocha-2", "title": "T", "url": "https://t/2"})
    assert (outcome.degreed_id, outcome.action) == (found["degreed_id"], "adopted"), "a 409 resolved by a look-up"


def test_client_budget_keeps_it_under_the_server_limit(sim_server):
    clock = FakeClock()
    sim, base = sim_server(rate_limit_per_minute=10, clock=clock)
    sim.add_assessment("imocha-1")
    budget = LocalRateBudget(10, clock=clock, sleep=clock.advance)
    client = make_client(base, budget=budget, sleep=clock.advance)
    found = client.find_assessment("imocha-1")
    started = clock()
    for _ in range(34):
        assert client.get_assessment(found.id) == found
    assert [e.status for e in sim.log.entries() if e.status == 429] == []
    assert clock() - started >= 180  # 35 calls at 10 a minute need three full windows


def test_server_429s_are_waited_out_without_a_budget(sim_server):
    clock = FakeClock()
    sim, base = sim_server(rate_limit_per_minute=10, clock=clock)
    sim.add_assessment("imocha-1")
    client = make_client(base, sleep=clock.advance)  # no budget: only Retry-After keeps it polite
    found = client.find_assessment("imocha-1")
    results = [client.get_assessment(found.id) for _ in range(24)]
    assert results == [found] * 24
    limited = [e for e in sim.log.entries() if e.status == 429]
    assert 1 <= len(limited) <= 3  # one per exhausted window: Retry-After was honoured, not hammered


# ---------------------------------------------------------------------------------------------------------
# Secrets
# ---------------------------------------------------------------------------------------------------------


def test_secret_and_tokens_never_appear_in_logs_errors_or_reprs(sim_server, world, caplog):
    caplog.set_level(logging.DEBUG)
    sim, base = sim_server()
    client = make_client(base)
    sim.add_assessment("imocha-1")
    texts = [repr(client), repr(client.session), repr(client.token_session)]

    def capture(call):
        try:
            call()
        except Exception as exc:  # every failure's text is checked below
            texts.extend([str(exc), repr(exc), "".join(traceback.format_exception(exc))])

    email = in_degreed(world).email
    completion = client.create_completion(email, "imocha-1", datetime(2024, 5, 2, tzinfo=UTC))
    texts.append(repr(completion))
    capture(lambda: client.create_completion(email, "imocha-1", datetime(2024, 5, 2, tzinfo=UTC)))
    capture(lambda: client.create_completion("nobody@example.com", "imocha-1", datetime(2024, 5, 2, tzinfo=UTC)))
    sim.faults.set(FaultConfig(error_5xx_share=1.0))
    capture(client.list_providers)  # gives up after every retry
    sim.faults.clear()
    sim.expire_tokens()
    capture(client.list_providers)  # 401, renewed, repeated
    texts.append(str(client.check_scope("users:write")))
    sim.revoke_client(DEFAULT_CLIENT_ID)
    capture(client.list_providers)
    capture(lambda: client.check_scope("content:read"))
    capture(make_client(base, secret=DEFAULT_CLIENT_SECRET + "-wrong").list_providers)

    tokens = sim.issued_tokens()
    assert len(tokens) >= 4 and len(texts) >= 15 and DEFAULT_CLIENT_ID in caplog.text
    haystacks = [caplog.text, *texts, *(e.body or "" for e in sim.log.entries())]
    for secret in [DEFAULT_CLIENT_SECRET, *tokens]:
        assert not any(secret in text for text in haystacks)


# ---------------------------------------------------------------------------------------------------------
# Tolerance of the spec's quirks
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2021-11-11T00:00:00", datetime(2021, 11, 11, tzinfo=UTC)),
        ("2021-11-11T20:56:41.093", datetime(2021, 11, 11, 20, 56, 41, 93000, tzinfo=UTC)),
        ("2021-10-19T10:01:40.2467123", datetime(2021, 10, 19, 10, 1, 40, 246712, tzinfo=UTC)),
        ("2021-10-19T10:01:40.5Z", datetime(2021, 10, 19, 10, 1, 40, 500000, tzinfo=UTC)),
        ("2021-10-19T12:01:40+02:00", datetime(2021, 10, 19, 10, 1, 40, tzinfo=UTC)),
        ("2021-10-19", datetime(2021, 10, 19, tzinfo=UTC)),
        ("0001-01-01T00:00:00", None),
        ("None", None),
        ("", None),
        (None, None),
    ],
)
def test_timestamps_with_any_fraction_and_no_zone(raw, expected):
    assert parse_utc(raw, strict=True) == expected


def test_records_tolerate_array_relationships_and_string_values():
    resource = {
        "id": "z49gvlE9", "type": "completions",
        "attributes": {"employee-id": "E87958", "completed-at": "2024-05-02T14:30:00", "added-at": "None",
                       "percentile": "87", "is-verified": "True"},
        "relationships": [{"content": {"data": {"id": "Xk3PqR7", "type": "content"}}},
                          {"User": {"data": [{"id": "b1GdOL", "type": "users"}]}}],
    }
    completion = DegreedCompletion.from_resource(resource)
    assert (completion.user_id, completion.user_identifier_type, completion.content_id,
            completion.content_id_type, completion.percentile, completion.added_at) == (
        "b1GdOL", "UserId", "Xk3PqR7", "Id", 87, None)
    assert relationship_ids({"relationships": {"skills": {"data": [{"id": "Python"}, {"id": "SQL"}]}}},
                            "skills") == ["Python", "SQL"]
    rating = DegreedSkillRating.from_resource({"id": "r1", "attributes": {"rating": "5", "rating-type": "None",
                                                                          "skill-name": "Go"}})
    assert (rating.rating, rating.rating_type, rating.skill_name) == (5, None, "Go")


def test_client_reads_array_relationships_from_the_simulator(sim_server, world):
    sim, base = sim_server(relationships_style="array")
    client = make_client(base)
    sim.add_assessment("imocha-1")
    created = client.create_completion(in_degreed(world).email, "imocha-1", datetime(2024, 5, 2, tzinfo=UTC))
    stored = sim.state()["completions"][0]
    assert (created.degreed_user_id, created.degreed_content_id) == (stored["user_id"], stored["content_id"])


def test_date_windows_cover_the_range_in_windows_of_at_most_seven_calendar_days():
    windows = date_windows(date(2024, 1, 1), date(2024, 1, 31))
    assert windows[0] == (date(2024, 1, 1), date(2024, 1, 7)), "start..start+6, as public clients send"
    assert windows[0][0] == date(2024, 1, 1) and windows[-1][1] == date(2024, 1, 31)
    assert all((end - start).days + 1 <= 7 for start, end in windows), "7 calendar days, both ends counted"
    assert all(windows[i][1] == windows[i + 1][0] for i in range(len(windows) - 1))  # no day falls between
    assert date_windows(date(2024, 1, 1), date(2024, 1, 1)) == [(date(2024, 1, 1), date(2024, 1, 1))]
    with pytest.raises(ValueError):
        date_windows(date(2024, 1, 2), date(2024, 1, 1))

"""One rate budget for two OS processes writing to Degreed at the limit, measured by the server.

Two processes (four writer threads) share one staging database (SQLite file, or a PostgreSQL schema) and send
400 skill ratings through ``shared_degreed_client`` to the Degreed simulator in its sliding-window mode at 70
requests a minute, with token requests charged by the server and counted by the pipeline
(``DEGREED_TOKEN_REQUESTS_COUNT``). A token answer takes 15 s to arrive (the server counts the request when it
arrives), and every token is expired once half the writes are done, so each process fetches its token at
least twice while the budget is saturated. The server's request log must show no 429 and at most 70 requests
of the client in any rolling 60 s. A slot taken before the token fetch (the bug this guards) is recorded
15 s before its request is sent, and lets more than 70 into one of the server's minutes.

About 6 minutes per database.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
import time
from collections import Counter

import pytest

from imocha_pipeline import settings
from imocha_pipeline.connections import TOKEN_REQUESTS_COUNT_SETTING, shared_degreed_client
from imocha_pipeline.staging import get_engine
from imocha_sandbox.runtime import Sandbox, SandboxConfig

TOKEN_PATH = "/oauth/token"
LIMIT = 70
WINDOW = 60.0
WRITES = 400
PROCESSES = 2
THREADS = 2
TOKEN_DELAY_SECONDS = 15.0


def _writer(staging_url: str, env: dict[str, str], emails: list[str], first: int, count: int, barrier, out) -> None:
    """One OS process: ``THREADS`` threads posting ``count`` skill ratings through one shared-budget client."""
    os.environ[TOKEN_REQUESTS_COUNT_SETTING] = "1"
    cfg = settings.DegreedSettings(client_id=env["DEGREED_CLIENT_ID"], client_secret=env["DEGREED_CLIENT_SECRET"],
                                   api_base_url=env["DEGREED_API_BASE_URL"], token_url=env["DEGREED_TOKEN_URL"],
                                   rate_limit_per_minute=LIMIT)
    client = shared_degreed_client(cfg, staging_url)
    ask_for_token = client.token_session.request

    def slow_token_answer(*args, **kwargs):
        # The server counts the token request when it arrives; its answer takes this long to come back.
        response = ask_for_token(*args, **kwargs)
        time.sleep(TOKEN_DELAY_SECONDS)
        return response

    client.token_session.request = slow_token_answer
    errors: list[str] = []
    written = Counter()

    def work(numbers: range) -> None:
        for number in numbers:
            try:
                client.create_skill_rating(emails[number % len(emails)], f"Budget skill {number}", 1 + number % 8)
                written["ok"] += 1
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")

    share = count // THREADS
    threads = [threading.Thread(target=work, args=(range(first + i * share, first + (i + 1) * share),))
               for i in range(THREADS)]
    barrier.wait(120)
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    out.put({"pid": os.getpid(), "written": written["ok"], "errors": errors, "metrics": client.metrics.snapshot()})
    client.close()


def max_in_any_window(times: list[float], window: float = WINDOW) -> int:
    """The most of ``times`` inside any half-open ``[t, t + window)``."""
    times = sorted(times)
    best, first = 0, 0
    for last, moment in enumerate(times):
        while times[first] <= moment - window:
            first += 1
        best = max(best, last - first + 1)
    return best


@pytest.mark.slow
def test_two_processes_never_exceed_the_servers_rolling_minute(staging_url):
    get_engine(staging_url)  # the schema exists before the children race for it
    with Sandbox(SandboxConfig(seed=5, tests=2, learners=12, attempts=1, degreed_rate_limit=LIMIT)) as sandbox:
        sandbox.degreed.configure(rate_window="sliding", token_requests_count=True)
        env = sandbox.env()
        client_id = env["DEGREED_CLIENT_ID"]
        emails = [learner.email for learner in sandbox.world.learners if learner.in_degreed]
        ctx = multiprocessing.get_context("spawn")
        barrier, out = ctx.Barrier(PROCESSES + 1), ctx.Queue()
        per_process = WRITES // PROCESSES
        children = [ctx.Process(target=_writer, args=(staging_url, env, emails, i * per_process, per_process,
                                                      barrier, out)) for i in range(PROCESSES)]
        for child in children:
            child.start()
        reports = []
        expired_at = None
        try:
            barrier.wait(120)
            started = time.time()
            deadline = time.monotonic() + 15 * 60
            while len(reports) < PROCESSES and time.monotonic() < deadline:
                if expired_at is None and sandbox.degreed.log.count("POST", "/api/v2/skill-ratings") >= WRITES // 2:
                    assert sandbox.degreed.expire_tokens() >= PROCESSES
                    expired_at = time.time()
                try:
                    reports.append(out.get(timeout=0.5))
                except queue.Empty:
                    continue
        finally:
            for child in children:
                child.join(30)
                if child.is_alive():
                    child.terminate()
                    child.join(10)
        finished = time.time()

        entries = [entry for entry in sandbox.degreed.log.entries() if entry.client == client_id]
        statuses = Counter(entry.status for entry in entries)
        tokens = [entry for entry in entries if entry.path == TOKEN_PATH]
        writes = [entry for entry in entries if entry.method == "POST" and entry.path == "/api/v2/skill-ratings"]
        charged = sandbox.degreed.max_requests_in_any_minute(client_id)
        logged = max_in_any_window([entry.ts for entry in entries])
        print(f"\n[{staging_url.split(':')[0]}] {len(entries)} requests in {finished - started:.0f} s, statuses "
              f"{dict(statuses)}; {len(tokens)} token requests ({sum(t.ts > (expired_at or 0) for t in tokens)} "
              f"after the expiry); max in any rolling 60 s: {charged} charged by the server, {logged} in its log "
              f"(401s included)")

    assert [child.exitcode for child in children] == [0] * PROCESSES
    assert len(reports) == PROCESSES
    assert [error for report in reports for error in report["errors"]] == []
    assert sum(report["written"] for report in reports) == WRITES
    assert len(writes) >= WRITES and {entry.status for entry in writes} <= {200, 201, 401}

    assert statuses[429] == 0, "the server refused requests for going over its limit"
    assert charged <= LIMIT, f"{charged} requests in one rolling minute (server's count)"
    assert logged <= LIMIT, f"{logged} requests in one rolling minute (server's log)"
    assert charged == LIMIT, "the test must drive the budget at the limit to prove anything"

    # The tokens were part of what was measured: fetched at the start and again after the expiry, by both.
    assert expired_at is not None and statuses[401] >= 1
    assert len({report["pid"] for report in reports}) == PROCESSES
    assert len([t for t in tokens if t.ts < expired_at]) >= PROCESSES
    assert len([t for t in tokens if t.ts > expired_at]) >= PROCESSES
    assert {t.status for t in tokens} == {200}

"""A run's cost does not grow with history (issue 14, item 1).

The same five new attempts are synced, by a real completion_sync_job run against the sandbox, into two staging
databases that differ only in their history (``bench/history_data.py``: staged attempts, acknowledged ledger and
plan rows, records waiting for their learner). The SQL statements the run sends to the staging database are counted
(a ``before_cursor_execute`` listener): the counts must be the same. So must those of the catch-up job and of the
catch-up schedule's question (``catch_up_work``). On SQLite, every statement's query plan is read back
(``EXPLAIN QUERY PLAN``): none may scan a history table in full.
"""

from __future__ import annotations

import re
import sqlite3
import sys
import uuid
from collections import Counter
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from imocha_pipeline import staging
from imocha_pipeline.staging import dispose_engine, normalise_url
from imocha_pipeline.sync.catch_up import catch_up_work
from imocha_pipeline.sync.entities import ATTEMPT_ENTITIES
from sync_harness import SyncHarness

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
from bench.history_data import build_history  # noqa: E402

SMALL, LARGE = 2_000, 20_000
WAITING = 200  # records waiting for their learner, the same in both: the catch-up walks those (by index)
HISTORY_TABLES = ("imocha_completions", "imocha_skill_scores", "sync_ledger", "sync_plan", "sync_quarantine")
NEW_ATTEMPTS = 5


class StatementLog:
    """Every statement an engine sends while the log is open: (SQL, parameters, executemany, rows changed)."""

    def __init__(self, engine: sa.engine.Engine):
        self.engine = engine
        self.statements: list[tuple[str, object, bool, int]] = []

    def _record(self, _conn, cursor, statement, parameters, _context, executemany):
        self.statements.append((statement, parameters, executemany, cursor.rowcount))

    def __enter__(self) -> StatementLog:
        sa.event.listen(self.engine, "after_cursor_execute", self._record)
        return self

    def __exit__(self, *_exc) -> None:
        sa.event.remove(self.engine, "after_cursor_execute", self._record)

    def shapes(self) -> Counter:
        """How often each statement was sent (its text with the bound values left out)."""
        return Counter(re.sub(r"\s+", " ", sql).strip() for sql, _params, _many, _rows in self.statements)

    def rows(self) -> int:
        """Rows the statements read or changed: each SELECT counted again now (``SELECT count(*)`` over it, the
        same parameters), each UPDATE and DELETE by its row count."""
        total = 0
        raw = self.engine.raw_connection()
        try:
            cursor = raw.cursor()
            for sql, params, many, rowcount in self.statements:
                if many:
                    continue
                if re.match(r"\s*SELECT\b", sql, re.IGNORECASE):
                    cursor.execute(f"SELECT count(*) FROM ({sql}) AS counted", params or ())
                    total += int(cursor.fetchone()[0])
                elif re.match(r"\s*(UPDATE|DELETE)\b", sql, re.IGNORECASE):
                    total += max(0, int(rowcount or 0))
            cursor.close()
        finally:
            raw.close()
        return total

    def sqlite_steps(self, path: str) -> int:
        """SQLite virtual-machine instructions the statements take when run again (each in a transaction rolled
        back): rows a query walks count even when it returns none, e.g. an index range over the whole history."""
        steps = 0

        def tick() -> int:
            nonlocal steps
            steps += 1
            return 0

        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.set_progress_handler(tick, 100)
            for sql, params, many, _rows in self.statements:
                if many or not re.match(r"\s*(SELECT|UPDATE|DELETE)\b", sql, re.IGNORECASE):
                    continue
                conn.execute("BEGIN")
                conn.execute(sql, params or ()).fetchall()
                conn.execute("ROLLBACK")
        finally:
            conn.close()
        return steps * 100


@contextmanager
def fresh_database(kind: str, tmp_path: Path, name: str, request):
    """A new, empty staging database of ``kind`` (a SQLite file, or a schema on the test PostgreSQL server)."""
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / f'{name}.sqlite'}"
        try:
            yield url
        finally:
            dispose_engine(url)
        return
    server = request.getfixturevalue("postgres_server_url")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(normalise_url(server))
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in server else "?"
    url = f"{server}{separator}options=-csearch_path%3D{schema}"
    try:
        yield url
    finally:
        dispose_engine(url)
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def run_with_history(make_sandbox, instance, url: str, history: int) -> dict:
    """Sync five new attempts into a staging database holding ``history`` attempts and ledger rows (and
    ``WAITING`` waiting records); returns the statement logs of the run, the catch-up job and the catch-up question."""
    sandbox = make_sandbox(seed=41, tests=3, learners=12, attempts=0, degreed_rate_limit=60_000)
    h = SyncHarness(sandbox, url, instance)
    h.assessments()
    engine = staging.get_engine(url)
    tests = sandbox.world.tests
    build_history(engine, attempts=history, ledger=history, waiting=WAITING,
                  test_ids=[test.test_id for test in tests])
    learners = [learner for learner in sandbox.world.learners if learner.in_degreed][:NEW_ATTEMPTS]
    assert len(learners) == NEW_ATTEMPTS
    for i, learner in enumerate(learners):
        sandbox.imocha.complete_attempt(tests[i % len(tests)].test_id, learner.email, learner.name,
                                        bank_scores=60.0)
    writes_before = sandbox.degreed.log.last_seq
    with StatementLog(engine) as run_log:
        result = h.completions()
    assert result.success
    completions = [w for w in h.writes(writes_before) if w.path == "/api/v2/completions"]
    assert len(completions) == NEW_ATTEMPTS, "the five new attempts reached Degreed"
    with StatementLog(engine) as catch_up_log:
        catch_up = h.catch_up()
    assert catch_up.success
    with StatementLog(engine) as question_log:
        work = catch_up_work(engine, ATTEMPT_ENTITIES)
    assert work == {}, "nothing is due: the history's waiting records wait for their retry time"
    return {"run": run_log, "catch_up": catch_up_log, "question": question_log, "engine": engine}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_five_attempt_run_sends_the_same_statements_at_any_history_size(kind, make_sandbox, instance, tmp_path,
                                                                          request):
    found, rows, steps = {}, {}, {}
    for size in (SMALL, LARGE):
        with fresh_database(kind, tmp_path, f"history_{size}", request) as url:
            logs = run_with_history(make_sandbox, instance, url, size)
            parts = {name: log for name, log in logs.items() if name != "engine"}
            found[size] = {name: log.shapes() for name, log in parts.items()}
            rows[size] = {name: log.rows() for name, log in parts.items()}
            if kind == "sqlite":
                path = sa.engine.make_url(url).database
                steps[size] = {name: log.sqlite_steps(path) for name, log in parts.items()}
            if kind == "sqlite" and size == LARGE:
                scans = full_scans(url, [s for log in parts.values() for s in log.statements])
                assert scans == [], "statements that read a history table in full:\n" + "\n\n".join(scans)
    for part in ("run", "catch_up", "question"):
        small, large = found[SMALL][part], found[LARGE][part]
        grown = {sql: (small.get(sql, 0), n) for sql, n in (large - small).items()}
        assert sum(large.values()) == sum(small.values()) and not grown, (
            f"{part}: {sum(small.values())} statements with {SMALL} history rows, {sum(large.values())} with "
            f"{LARGE}; sent more often with the larger history:\n" + "\n".join(
                f"{before} -> {after}: {sql[:300]}" for sql, (before, after) in grown.items()))
        assert rows[LARGE][part] == rows[SMALL][part], (
            f"{part}: its statements read or changed {rows[SMALL][part]} rows with {SMALL} history rows, "
            f"{rows[LARGE][part]} with {LARGE}")
        if steps:  # what the statements walk, not only what they return (a tenth more history: +10% allowed)
            assert steps[LARGE][part] <= 1.1 * steps[SMALL][part] + 1000, (
                f"{part}: its statements take {steps[SMALL][part]} SQLite steps with {SMALL} history rows, "
                f"{steps[LARGE][part]} with {LARGE}: a query walks the history")
    assert sum(found[LARGE]["run"].values()) > 0 and rows[LARGE]["run"] > 0


def full_scans(url: str, statements: list[tuple[str, object, bool, int]]) -> list[str]:
    """The statements whose SQLite query plan scans a history table in full (``SCAN <table>``; a ``SEARCH`` uses
    an index)."""
    path = sa.engine.make_url(url).database
    problems: list[str] = []
    pattern = re.compile(r"\bSCAN (\w+)")
    with sqlite3.connect(path) as conn:
        for sql, params, many, _rows in statements:
            if many or not re.match(r"\s*(SELECT|UPDATE|DELETE|WITH)\b", sql, re.IGNORECASE):
                continue
            plan = [row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params or ())]
            scanned = {m.group(1) for line in plan for m in [pattern.search(line)] if m} & set(HISTORY_TABLES)
            if scanned:
                problems.append(f"{sql}\n  plan: {plan}")
    return problems


def _ledger_row(entity: str, key: str, state: str, payload_hash: str, at: datetime, **extra) -> dict:
    return {"entity": entity, "record_key": key, "state": state, "payload_hash": payload_hash, "action": "create",
            "attempts": 1, "degreed_id": f"d-{key}", "created_at": at, "updated_at": at,
            "acknowledged_at": at if state == "acknowledged" else None, **extra}


def _plan_row(key: str, payload_hash: str, at: datetime, payload: dict | None = None) -> dict:
    return {"entity": "completion", "record_key": key, "action": "create", "payload_hash": payload_hash,
            "payload": payload or {}, "planned_at": at, "source_id": 1, "source_at": at, "source_day": at.date()}


def test_upgrade_to_0005_marks_the_plan_rows_the_ledger_shows_delivered(staging_url):
    from imocha_pipeline.staging import versions

    assert versions.upgrade(staging_url, "0004")[1] == "0004"
    at = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
    engine = staging.create_engine(staging_url)
    try:
        with engine.begin() as conn:
            conn.execute(staging.sync_ledger.insert(), [
                _ledger_row("completion", "a", "acknowledged", "h1", at),
                _ledger_row("completion", "b", "acknowledged", "old", at),  # the plan holds newer values
                _ledger_row("completion", "c", "failed", "h3", at)])
            conn.execute(staging.sync_plan.insert(), [_plan_row("a", "h1", at), _plan_row("b", "h2", at),
                                                      _plan_row("c", "h3", at), _plan_row("d", "h4", at)])
        assert versions.upgrade(staging_url) == ("0004", versions.head_revision())
        with engine.connect() as conn:
            marked = dict(conn.execute(sa.select(staging.sync_plan.c.record_key,
                                                 staging.sync_plan.c.delivered_at)).all())
        assert marked == {"a": at, "b": None, "c": None, "d": None}
    finally:
        engine.dispose()


def test_outstanding_of_every_day_finds_unmarked_rows_and_rows_claimed_again(staging_url):
    from imocha_pipeline.sync.completions.entity import COMPLETIONS
    from imocha_pipeline.sync.core.ledger import Ledger
    from imocha_pipeline.sync.core.outstanding import Scope, outstanding
    from imocha_pipeline.sync.core.plan_store import mark_delivered

    engine = staging.get_engine(staging_url)
    at = datetime.now(UTC) - timedelta(days=3)
    payload = {"user_id": "x@example.com", "user_identifier_type": "Email", "content_id": "imocha-1",
               "content_id_type": "ExternalId", "content_type": "Assessment", "completed_at": "2026-11-02T09:30:00Z",
               "percentile": 70.0, "test_invitation_id": 1}
    with engine.begin() as conn:
        conn.execute(staging.sync_ledger.insert(), [
            _ledger_row("assessment", "imocha-1", "acknowledged", "ha", at),
            _ledger_row("completion", "delivered", "acknowledged", "h1", at)])
        conn.execute(staging.sync_plan.insert(), [_plan_row("delivered", "h1", at, payload),
                                                  _plan_row("never-sent", "h2", at, payload)])

    def due() -> set[str]:
        return set(outstanding(engine, COMPLETIONS, Scope()).due["record_key"])

    assert mark_delivered(engine, "completion", ["delivered", "never-sent"]) == 1, "only what the ledger shows"
    assert due() == {"never-sent"}
    ledger = Ledger(engine, "completion", "repair-run")  # a repair of the record is sent again, and fails
    assert ledger.claim("delivered", "create", payload, "h1", resend=True)
    ledger.fail("delivered", "503 Service Unavailable")
    assert due() == {"delivered", "never-sent"}, "the claim unmarked it: the ledger no longer shows it delivered"
    ledger.claim("delivered", "create", payload, "h1")
    ledger.acknowledge("delivered", "d-delivered", "h1", payload)
    assert mark_delivered(engine, "completion", ["delivered"]) == 1
    assert due() == {"never-sent"}

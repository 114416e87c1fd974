"""Staging database, ledger and quarantine on SQLite and on the local PostgreSQL server."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from imocha_pipeline import staging
from imocha_pipeline.sync.core.ledger import ACKNOWLEDGED, FAILED, SENDING, Ledger
from imocha_pipeline.sync.core.quarantine import OPEN, RESOLVED, VALIDATION, WAITING_FOR_LEARNER, Entry, Quarantine


def test_tables_are_created_on_first_use(staging_url):
    engine = staging.get_engine(staging_url)
    names = set(sa.inspect(engine).get_table_names())
    assert {"imocha_assessments", "imocha_completions", "imocha_skill_scores", "degreed_assessments",
            "degreed_completions", "degreed_skill_ratings", "sync_ledger", "sync_quarantine"} <= names


def test_upsert_by_natural_key_and_utc_round_trip(staging_url):
    engine = staging.get_engine(staging_url)
    ist = timezone(timedelta(hours=5, minutes=30))
    local = datetime(2026, 3, 1, 10, 0, tzinfo=ist)
    row = {"test_id": 7, "test_name": "Python", "status": "Published", "duration_minutes": 30,
           "question_count": 10, "labels": ["Tech"], "sections": [{"name": "Python"}], "test_link_id": 1,
           "test_link_key": "abc", "test_link_url": None, "extracted_at": local}
    with engine.begin() as conn:
        staging.upsert(conn, staging.imocha_assessments, [row])
        staging.upsert(conn, staging.imocha_assessments, [row | {"test_name": "Python 3"}])
    with engine.connect() as conn:
        rows = staging.read_rows(conn, staging.imocha_assessments)
    assert len(rows) == 1 and rows[0]["test_name"] == "Python 3" and rows[0]["labels"] == ["Tech"]
    assert rows[0]["extracted_at"] == datetime(2026, 3, 1, 4, 30, tzinfo=UTC)
    assert rows[0]["extracted_at"].tzinfo == UTC


def test_naive_timestamps_are_refused(sqlite_url):
    engine = staging.get_engine(sqlite_url)
    with pytest.raises(sa.exc.StatementError, match="naive datetime"), engine.begin() as conn:
        staging.set_state(conn, "x", 1) if False else conn.execute(
            staging.sync_state.insert().values(name="x", value=1, updated_at=datetime(2026, 1, 1)))


def test_sweep_removes_rows_missing_from_a_full_extract(staging_url):
    engine = staging.get_engine(staging_url)
    old, new = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC)
    base = {"test_name": "t", "status": "s", "duration_minutes": 1, "question_count": 1, "labels": [],
            "sections": [], "test_link_id": None, "test_link_key": None, "test_link_url": None}
    with engine.begin() as conn:
        staging.upsert(conn, staging.imocha_assessments, [base | {"test_id": i, "extracted_at": old} for i in (1, 2)])
        staging.upsert(conn, staging.imocha_assessments, [base | {"test_id": 1, "extracted_at": new}])
        assert staging.sweep_older(conn, staging.imocha_assessments, "extracted_at", new) == 1
        assert [r["test_id"] for r in staging.read_rows(conn, staging.imocha_assessments)] == [1]


def test_ledger_lifecycle_and_claims(staging_url):
    engine = staging.get_engine(staging_url)
    first = Ledger(engine, "assessment", run_id="run-1")
    second = Ledger(engine, "assessment", run_id="run-2")
    assert first.claim("imocha-1", "create", {"title": "T"}, "h1")
    assert not second.claim("imocha-1", "create", {"title": "T"}, "h1"), "a live claim must not be taken"
    assert first.get("imocha-1")["state"] == SENDING
    first.acknowledge("imocha-1", "deg1", "h1", {"title": "T"})
    row = first.get("imocha-1")
    assert row["state"] == ACKNOWLEDGED and row["degreed_id"] == "deg1" and row["attempts"] == 1
    assert second.claim("imocha-1", "update", {"title": "T2"}, "h2")
    second.fail("imocha-1", "HTTP 500 " + "x" * 5000)
    row = second.get("imocha-1")
    assert row["state"] == FAILED and row["attempts"] == 2 and len(row["last_error"]) == 2000
    assert row["degreed_id"] == "deg1", "a failed update keeps the known Degreed id"
    assert first.counts()[FAILED] == 1


def test_stale_claims_can_be_taken_over(staging_url):
    engine = staging.get_engine(staging_url)
    dead = Ledger(engine, "completion", run_id="dead")
    assert dead.claim("k", "create", {}, "h")
    with engine.begin() as conn:
        conn.execute(staging.sync_ledger.update().values(claimed_at=datetime.now(UTC) - timedelta(hours=2)))
    alive = Ledger(engine, "completion", run_id="alive")
    assert list(alive.stuck_sending()["record_key"]) == ["k"]
    assert alive.claim("k", "create", {}, "h")


def test_concurrent_claims_let_exactly_one_run_send(staging_url):
    engine = staging.get_engine(staging_url)
    Ledger(engine, "skill_rating").ensure_rows(["k"])
    winners = []
    barrier = threading.Barrier(8)

    def contend(i):
        ledger = Ledger(engine, "skill_rating", run_id=f"run-{i}")
        barrier.wait()
        if ledger.claim("k", "create", {}, "h"):
            winners.append(i)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1


def test_quarantine_counts_attempts_schedules_retries_and_resolves(staging_url):
    engine = staging.get_engine(staging_url)
    quarantine = Quarantine(engine, "completion", run_id="r1", retry_base=timedelta(minutes=5))
    quarantine.put([Entry("a", WAITING_FOR_LEARNER, "learner not in Degreed yet: a@x"),
                    Entry("b", VALIDATION, "score must be at most 100 (got 120)", "score", "le", "120")])
    quarantine.put([Entry("a", WAITING_FOR_LEARNER, "learner not in Degreed yet: a@x")])
    rows = quarantine.open_entries().set_index("record_key")
    assert rows.loc["a", "attempts"] == 2 and rows.loc["b", "bad_value"] == "120"
    first_delay = rows.loc["a", "next_retry_at"] - rows.loc["a", "last_seen_at"]
    assert timedelta(minutes=9) < first_delay <= timedelta(minutes=10)  # second attempt waits twice as long
    assert pd_isna(rows.loc["b", "next_retry_at"])
    assert quarantine.not_due(WAITING_FOR_LEARNER) == {"a"}
    assert quarantine.resolve(["a"]) == 1
    with engine.connect() as conn:
        statuses = {r["record_key"]: r["status"] for r in staging.read_rows(conn, staging.sync_quarantine)}
    assert statuses == {"a": RESOLVED, "b": OPEN}


def pd_isna(value) -> bool:
    import pandas as pd

    return value is None or pd.isna(value)

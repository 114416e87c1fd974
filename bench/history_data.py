"""A synthetic history in a staging database: years of staged attempts, ledger and plan rows, waiting records.

Used by benchmark 8 (``bench/history_cost.py``, 1M attempts and ledger rows, 100k waiting) and by
``imocha_pipeline_tests/test_history_cost.py`` (a few thousand). Rows are written the fast way each database
offers (SQLite: ``executemany`` in one transaction; PostgreSQL: ``COPY``), in chunks, so the builder's memory
stays small. Every key is disjoint from the sandbox's learners (``@history.example``), so a run of new attempts
does exactly the same work whatever the history holds.

What is built, for ``attempts`` A, ``ledger`` L and ``waiting`` W:
- ``imocha_completions``: A finished attempts spread over the ~3 years before yesterday, all planned, each with one
  ``imocha_skill_scores`` row;
- ``sync_ledger`` and ``sync_plan``: L acknowledged records (half completions, half skill ratings), the plan row
  of each marked delivered;
- W records waiting for their learner: an open ``waiting_for_learner`` quarantine entry (retry in 12 h), a
  ``failed`` ledger row and an undelivered plan row each.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.engine import Engine

CHUNK = 50_000
DAYS = 1000  # how far back the history reaches


def _ts(value: datetime, dialect: str) -> str:
    value = value.astimezone(UTC)
    if dialect == "sqlite":  # SQLite keeps the UTC wall time (staging.UtcDateTime)
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    return value.strftime("%Y-%m-%d %H:%M:%S.%f+00")


def _bool(value: bool, dialect: str) -> object:
    return int(value) if dialect == "sqlite" else ("t" if value else "f")


def _write(engine: Engine, table: str, columns: Sequence[str], rows: Iterator[tuple]) -> int:
    """Write ``rows`` (values already in the database's text form) in chunks; returns how many."""
    count = 0
    dialect = engine.dialect.name
    with engine.begin() as conn:
        raw = conn.connection.dbapi_connection
        cursor = raw.cursor()
        try:
            chunk: list[tuple] = []
            for row in rows:
                chunk.append(row)
                if len(chunk) >= CHUNK:
                    count += _flush(cursor, dialect, table, columns, chunk)
                    chunk = []
            count += _flush(cursor, dialect, table, columns, chunk)
        finally:
            cursor.close()
    return count


def _flush(cursor, dialect: str, table: str, columns: Sequence[str], chunk: list[tuple]) -> int:
    if not chunk:
        return 0
    if dialect == "sqlite":
        marks = ", ".join("?" for _ in columns)
        cursor.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", chunk)
    else:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        for row in chunk:
            writer.writerow(["\\N" if value is None else value for value in row])
        buffer.seek(0)
        cursor.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv, NULL '\\N')", buffer)
    return len(chunk)


def history_email(i: int) -> str:
    return f"h{i}@history.example"


def build_history(engine: Engine, *, attempts: int, ledger: int, waiting: int, test_ids: Sequence[int],
                  today: date | None = None, log: Callable[[str], None] | None = None) -> dict[str, int]:
    """Write the synthetic history (see the module docstring) into a migrated, empty staging database; returns
    the rows written per table."""
    dialect = engine.dialect.name
    today = today or datetime.now(UTC).date()
    now = datetime.now(UTC)
    start = today - timedelta(days=DAYS + 1)
    tests = list(test_ids)
    say = log or (lambda _m: None)
    counts: dict[str, int] = {}

    def day_of(i: int) -> date:
        return start + timedelta(days=i % DAYS)

    def at_of(i: int) -> datetime:
        day = day_of(i)
        return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(seconds=(i * 37) % 86_000)

    def attempts_rows() -> Iterator[tuple]:
        for i in range(attempts):
            at = _ts(at_of(i), dialect)
            yield (10_000_000 + i, tests[i % len(tests)], "History test", history_email(i), f"Learner {i}",
                   "Complete", at, day_of(i).isoformat(), 70.0, 7.0, 10.0, "Good", 600, _bool(True, dialect), at, at)

    say(f"history: {attempts:,} staged attempts")
    counts["imocha_completions"] = _write(engine, "imocha_completions", (
        "test_invitation_id", "test_id", "test_name", "learner_email", "learner_name", "status", "attempted_on",
        "attempt_date", "score_percentage", "candidate_points", "total_points", "performance_category",
        "time_taken_seconds", "has_skills", "extracted_at", "planned_at"), attempts_rows())

    def score_rows() -> Iterator[tuple]:
        for i in range(attempts):
            at = _ts(at_of(i), dialect)
            yield (10_000_000 + i, 1, "History skill", history_email(i), tests[i % len(tests)], at,
                   day_of(i).isoformat(), 7.0, 10.0, 70.0, at)

    counts["imocha_skill_scores"] = _write(engine, "imocha_skill_scores", (
        "test_invitation_id", "skill_id", "skill_name", "learner_email", "test_id", "attempted_on", "attempt_date",
        "points", "max_points", "percent", "extracted_at"), score_rows())

    def record(i: int) -> tuple[str, str, dict]:
        """(entity, key, payload) of history record ``i``: even ones completions, odd ones skill ratings."""
        email, at = history_email(i // 2), at_of(i // 2)
        content = f"imocha-{tests[(i // 2) % len(tests)]}"
        if i % 2 == 0:
            return "completion", f"{email}|{content}", {
                "completed_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "percentile": 70.0, "user_id": email,
                "user_identifier_type": "Email", "content_id": content, "content_id_type": "ExternalId",
                "content_type": "Assessment", "test_invitation_id": 10_000_000 + i // 2}
        return "skill_rating", f"{email}|History skill", {
            "rating": 6, "rated_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"), "user_id": email,
            "user_identifier_type": "Email", "skill_name": "History skill", "rating_type": "Evaluation",
            "test_invitation_id": 10_000_000 + i // 2, "percent": 70.0}

    def waiting_record(i: int) -> tuple[str, str, dict]:
        email, content = f"w{i}@history.example", f"imocha-{tests[i % len(tests)]}"
        return "completion", f"{email}|{content}", {
            "completed_at": at_of(i).strftime("%Y-%m-%dT%H:%M:%SZ"), "percentile": 50.0, "user_id": email,
            "user_identifier_type": "Email", "content_id": content, "content_id_type": "ExternalId",
            "content_type": "Assessment", "test_invitation_id": 20_000_000 + i}

    def ledger_rows() -> Iterator[tuple]:
        for i in range(ledger):
            entity, key, payload = record(i)
            at, source_id = _ts(at_of(i // 2), dialect), 10_000_000 + i // 2
            yield (entity, key, f"d{i}", "create", "acknowledged", f"{i:064x}", json.dumps(payload, sort_keys=True),
                   1, None, "history", source_id, at, None, at, at, at)
        for i in range(waiting):
            entity, key, payload = waiting_record(i)
            at = _ts(at_of(i), dialect)
            yield (entity, key, None, "create", "failed", f"w{i:063x}", json.dumps(payload, sort_keys=True), 3,
                   "400 Invalid user identifier", "history", 20_000_000 + i, at, None, None, at, at)

    say(f"history: {ledger:,} acknowledged and {waiting:,} failed ledger rows")
    counts["sync_ledger"] = _write(engine, "sync_ledger", (
        "entity", "record_key", "degreed_id", "action", "state", "payload_hash", "payload", "attempts", "last_error",
        "run_id", "source_id", "source_at", "claimed_at", "acknowledged_at", "created_at", "updated_at"),
        ledger_rows())

    def plan_rows() -> Iterator[tuple]:
        for i in range(ledger):
            entity, key, payload = record(i)
            at = at_of(i // 2)
            yield (entity, key, "create", "not in Degreed yet", "[]", None, json.dumps(payload, sort_keys=True),
                   f"{i:064x}", "history", _ts(at, dialect), 10_000_000 + i // 2, _ts(at, dialect),
                   day_of(i // 2).isoformat(), None, _ts(at, dialect))
        for i in range(waiting):
            entity, key, payload = waiting_record(i)
            at = at_of(i)
            yield (entity, key, "create", "not in Degreed yet", "[]", None, json.dumps(payload, sort_keys=True),
                   f"w{i:063x}", "history", _ts(at, dialect), 20_000_000 + i, _ts(at, dialect),
                   day_of(i).isoformat(), None, None)

    say(f"history: {ledger + waiting:,} plan rows")
    counts["sync_plan"] = _write(engine, "sync_plan", (
        "entity", "record_key", "action", "reason", "changed_fields", "degreed_id", "payload", "payload_hash",
        "run_id", "planned_at", "source_id", "source_at", "source_day", "plan_id", "delivered_at"), plan_rows())

    def quarantine_rows() -> Iterator[tuple]:
        retry = _ts(now + timedelta(hours=12), dialect)
        for i in range(waiting):
            _entity, key, _payload = waiting_record(i)
            at = _ts(at_of(i), dialect)
            yield ("completion", key, "waiting_for_learner", f"learner not in Degreed yet: w{i}@history.example",
                   "user_id", "learner exists in Degreed", f"w{i}@history.example", "open", 3, "history", at, at,
                   retry, None)

    say(f"history: {waiting:,} waiting quarantine entries")
    counts["sync_quarantine"] = _write(engine, "sync_quarantine", (
        "entity", "record_key", "kind", "reason", "column_name", "rule", "bad_value", "status", "attempts", "run_id",
        "first_seen_at", "last_seen_at", "next_retry_at", "resolved_at"), quarantine_rows())
    if dialect == "postgresql":  # what autovacuum does after a bulk load
        with engine.begin() as conn:
            for table in counts:
                conn.execute(sa.text(f"ANALYZE {table}"))
    return counts

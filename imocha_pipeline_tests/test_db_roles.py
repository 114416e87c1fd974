"""`imocha-pipeline db roles`: after a real sync on PostgreSQL, connect as each role and see what it may do.

The analyst reads the analyst views and nothing else (no ledger payloads, raw tables, callback bodies, rate
budgets, settings, foreign tables such as Dagster's; no writes); the writer reads and writes the pipeline's tables
but neither owns nor drops them. PostgreSQL on 127.0.0.1 trusts local connections, so a test connects as any
LOGIN role by name.
"""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from imocha_pipeline import staging
from imocha_pipeline.cli import main
from imocha_pipeline.staging import normalise_url
from imocha_pipeline.staging.roles import ANALYST_VIEWS
from sync_harness import SyncHarness

pytestmark = pytest.mark.postgres

REFUSED_TABLES = ("sync_ledger", "sync_plan", "imocha_completions", "imocha_skill_scores", "callback_inbox",
                  "rate_budget", "sync_state", "degreed_users", "imocha_pipeline_alembic_version", "runs")


@pytest.fixture
def role_names(postgres_url):
    suffix = uuid.uuid4().hex[:10]
    names = (f"analyst_{suffix}", f"writer_{suffix}")
    yield names
    admin = sa.create_engine(normalise_url(postgres_url))
    with admin.begin() as conn:
        for name in names:
            if conn.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :n"), {"n": name}).first():
                conn.execute(sa.text(f'DROP OWNED BY "{name}"'))
                conn.execute(sa.text(f'DROP ROLE "{name}"'))
    admin.dispose()


def as_role(url: str, role: str) -> sa.Engine:
    return sa.create_engine(sa.engine.make_url(normalise_url(url)).set(username=role))


def refused(engine: sa.Engine, sql: str, params: dict | None = None) -> str:
    with pytest.raises(sa.exc.ProgrammingError) as caught, engine.begin() as conn:
        conn.execute(sa.text(sql), params or {})
    message = str(caught.value.orig)
    assert "permission denied" in message or "must be owner" in message, message
    return message


def run_roles(url: str, analyst: str, writer: str):
    return CliRunner().invoke(main, ["db", "roles", "--analyst", analyst, "--writer", writer, "--url", url])


def test_analyst_reads_only_the_views_and_writer_reads_and_writes_the_tables(
        postgres_url, role_names, make_sandbox, instance):
    analyst, writer = role_names
    sandbox = make_sandbox(seed=3, tests=3, learners=8, attempts=10)
    h = SyncHarness(sandbox, postgres_url, instance)
    h.assessments()
    test = sandbox.world.tests[0]
    for learner in (h.learner(), h.learner(in_degreed=False)):  # one sent, one waiting for its Degreed user
        sandbox.imocha.complete_attempt(test.test_id, learner.email, learner.name, bank_scores=80.0)
    assert h.completions().success
    with staging.get_engine(postgres_url).begin() as conn:  # a table that is not the pipeline's (as Dagster's)
        conn.execute(sa.text("CREATE TABLE runs (run_id text PRIMARY KEY, run_body text)"))
        conn.execute(sa.text("INSERT INTO runs VALUES ('r1', 'secret')"))
        staged = conn.execute(sa.text("SELECT count(*) FROM v_sync_status")).scalar()
        ledger = conn.execute(sa.text("SELECT count(*) FROM sync_ledger")).scalar()
    assert staged > 0 and ledger > 0

    first = run_roles(postgres_url, analyst, writer)
    assert first.exit_code == 0, first.output
    assert f"created role {analyst}" in first.output and f"created role {writer}" in first.output
    # An earlier, broader grant is taken back by the next run; the run is otherwise a no-op.
    with staging.get_engine(postgres_url).begin() as conn:
        conn.execute(sa.text(f'GRANT SELECT ON sync_ledger TO "{analyst}"'))
    second = run_roles(postgres_url, analyst, writer)
    assert second.exit_code == 0, second.output
    assert f"role {analyst} exists" in second.output and "created role" not in second.output

    reader = as_role(postgres_url, analyst)
    try:
        with reader.connect() as conn:
            assert conn.execute(sa.text("SELECT current_user")).scalar() == analyst
            for view in ANALYST_VIEWS:
                conn.execute(sa.text(f"SELECT * FROM {view}")).fetchall()
            rows = conn.execute(sa.text("SELECT learner_email, sync_status FROM v_sync_status")).fetchall()
        assert len(rows) == staged and all("@" in row.learner_email for row in rows)
        for table in REFUSED_TABLES:
            refused(reader, f"SELECT * FROM {table}")
        refused(reader, "SELECT payload FROM sync_ledger")
        refused(reader, "INSERT INTO sync_ledger (entity, record_key, state) VALUES ('completion', 'x', 'planned')")
        refused(reader, "UPDATE sync_ledger SET state = 'failed'")
        refused(reader, "DELETE FROM imocha_completions")
        refused(reader, "DELETE FROM v_skill_ratings_current")  # a simple view, updatable by its owner
        refused(reader, "CREATE TABLE mine (x int)")
    finally:
        reader.dispose()

    pipeline = as_role(postgres_url, writer)
    try:
        with pipeline.begin() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM sync_ledger")).scalar() == ledger
            conn.execute(sa.text("UPDATE sync_ledger SET last_error = 'checked' WHERE true"))
            conn.execute(sa.text("DELETE FROM sync_state WHERE name = 'nothing'"))
            conn.execute(sa.text("SELECT payload FROM callback_inbox")).fetchall()
            conn.execute(sa.text("SELECT * FROM rate_budget")).fetchall()
            conn.execute(sa.text("SELECT count(*) FROM v_sync_status")).scalar()
            conn.execute(sa.text("SELECT * FROM imocha_pipeline_alembic_version")).fetchall()
        with pipeline.connect() as conn:  # the pipeline's own code path writes as this role
            staging.upsert(conn, staging.sync_state, [{"name": "roles_check", "value": {"ok": True},
                                                      "updated_at": staging.utcnow()}], ["name"])
            conn.commit()
        refused(pipeline, "SELECT * FROM runs")
        refused(pipeline, "DROP TABLE sync_ledger")
    finally:
        pipeline.dispose()
    assert {r["name"] for r in h.rows(staging.sync_state)} >= {"roles_check"}


def test_on_sqlite_the_command_explains_there_are_no_roles(sqlite_url):
    result = CliRunner().invoke(main, ["db", "roles", "--analyst", "analyst", "--writer", "writer",
                                       "--url", sqlite_url])
    assert result.exit_code != 0
    assert "no database roles" in result.output and "PostgreSQL" in result.output


def test_role_names_are_checked_before_anything_is_created(postgres_url):
    result = run_roles(postgres_url, "Robert'); DROP TABLE x;--", "writer_ok")
    assert result.exit_code != 0 and "role name" in result.output
    admin = sa.create_engine(normalise_url(postgres_url))
    with admin.connect() as conn:
        assert conn.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = 'writer_ok'")).first() is None
    admin.dispose()

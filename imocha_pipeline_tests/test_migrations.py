"""Staging schema migrations on SQLite and PostgreSQL: upgrade from empty, upgrade with data in place, refusal
of a database that is behind (a real job run), adoption of a pre-migration database, models == migrations."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, date, datetime

import dagster as dg
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from click.testing import CliRunner

from imocha_pipeline import staging
from imocha_pipeline.cli import main
from imocha_pipeline.staging import versions as schema
from sync_harness import UNREACHABLE_SETTINGS, definitions_for

VIEWS = {"v_sync_status", "v_open_quarantine", "v_skill_ratings_current", "v_drift_last_reconcile",
         "v_unmapped_skills"}
T0 = datetime(2026, 3, 1, 9, 30, 15, 250000, tzinfo=UTC)
T1 = datetime(2026, 3, 2, 18, 0, tzinfo=UTC)
EMAIL = "Ana.Lima@example.com"


def sample_rows() -> dict[str, list[dict]]:
    """A row or two in every table of revision 0001, with JSON, timestamps, booleans and odd text."""
    payload = {"completed_at": "2026-03-01T09:30:15Z", "percentile": 81.5, "test_invitation_id": 501,
               "user_id": EMAIL, "user_identifier_type": "Email", "content_id": "imocha-7"}
    rating = {"rating": 7, "rated_at": "2026-03-01T09:30:15Z", "skill_name": "Python & Data", "percent": 81.5,
              "test_invitation_id": 501, "user_id": EMAIL, "user_identifier_type": "Email",
              "rating_type": "Evaluation"}
    return {
        "imocha_assessments": [{"test_id": 7, "test_name": "Python & Data — Ünïcode ?#", "status": "Published",
                                "duration_minutes": 30, "question_count": 12, "labels": ["tech"],
                                "sections": [{"name": "Python", "questions": 12}], "test_link_id": 70,
                                "test_link_key": "abc?x=1", "test_link_url": None, "extracted_at": T0}],
        "degreed_assessments": [{"degreed_id": "D-7", "external_id": "imocha-7", "title": "Python & Data",
                                 "summary": "s", "url": "https://x/y?z=1", "duration": 30.0,
                                 "duration_type": "Minutes", "language": "en", "content_type": "Assessment",
                                 "obsolete": False, "provider_code": "IMOCHA", "modified_at": T0,
                                 "snapshot_at": T1}],
        "desired_assessments": [{"external_id": "imocha-7", "test_id": 7, "title": "Python & Data", "summary": "s",
                                 "url": "https://x/y?z=1", "duration": 30.0, "duration_type": "Minutes",
                                 "language": "en", "content_type": "Assessment", "computed_at": T0}],
        "imocha_completions": [{"test_invitation_id": 501, "test_id": 7, "test_name": "Python & Data",
                                "learner_email": EMAIL, "learner_name": "Ana", "status": "Complete",
                                "attempted_on": T0, "attempt_date": date(2026, 3, 1), "score_percentage": 81.5,
                                "candidate_points": 16.3, "total_points": 20.0, "performance_category": "Good",
                                "time_taken_seconds": 1200, "has_skills": True, "extracted_at": T1},
                               {"test_invitation_id": 502, "test_id": 7, "test_name": "Python & Data",
                                "learner_email": EMAIL, "learner_name": "Ana", "status": "Complete",
                                "attempted_on": T1, "attempt_date": date(2026, 3, 2), "score_percentage": 135.0,
                                "candidate_points": 27.0, "total_points": 20.0, "performance_category": None,
                                "time_taken_seconds": 900, "has_skills": False, "extracted_at": T1}],
        "imocha_skill_scores": [{"test_invitation_id": 501, "skill_id": 9, "skill_name": "Python & Data",
                                 "learner_email": EMAIL, "test_id": 7, "attempted_on": T0,
                                 "attempt_date": date(2026, 3, 1), "points": 16.3, "max_points": 20.0,
                                 "percent": 81.5, "extracted_at": T1}],
        "degreed_completions": [{"degreed_id": "C-1", "user_id": EMAIL, "employee_id": None,
                                 "content_id": "imocha-7", "completed_at": T0, "percentile": 81.5, "added_at": T1,
                                 "snapshot_at": T1}],
        "degreed_skill_ratings": [{"degreed_id": "R-1", "user_id": EMAIL, "employee_id": "E1",
                                   "skill_name": "Python & Data", "rating": 7, "rating_type": "Evaluation",
                                   "rated_at": T0, "snapshot_at": T1}],
        "sync_ledger": [
            {"entity": "completion", "record_key": "ana.lima@example.com|imocha-7", "degreed_id": "C-1",
             "action": "create", "state": "acknowledged", "payload_hash": "h1", "payload": payload, "attempts": 1,
             "last_error": None, "run_id": "r1", "claimed_at": None, "acknowledged_at": T1, "created_at": T0,
             "updated_at": T1},
            {"entity": "skill_rating", "record_key": "ana.lima@example.com|Python & Data", "degreed_id": "R-1",
             "action": "create", "state": "acknowledged", "payload_hash": "h2", "payload": rating, "attempts": 1,
             "last_error": None, "run_id": "r1", "claimed_at": None, "acknowledged_at": T1, "created_at": T0,
             "updated_at": T1},
        ],
        "sync_quarantine": [{"entity": "completion", "record_key": "attempt:502", "kind": "validation",
                             "reason": "score_percentage must be at most 100 (got 135.0)",
                             "column_name": "score_percentage", "rule": "<= 100", "bad_value": "135.0",
                             "status": "open", "attempts": 2, "run_id": "r1", "first_seen_at": T0,
                             "last_seen_at": T1, "next_retry_at": None, "resolved_at": None}],
        "sync_plan": [{"entity": "assessment", "record_key": "imocha-7", "action": "update", "reason": "title changed",
                       "changed_fields": ["title"], "degreed_id": "D-7", "payload": {"title": "x"},
                       "payload_hash": "h3", "run_id": "r1", "planned_at": T0}],
        "sync_state": [{"name": "assessment_extract_counts", "value": {"previous": 1, "current": 1},
                        "updated_at": T0}],
        "sync_drift": [{"entity": "completion", "record_key": "ana.lima@example.com|imocha-7",
                        "kind": "changed_in_degreed", "degreed_id": "C-1", "detail": "percentile: ours 81.5",
                        "repaired": False, "run_id": "r2", "found_at": T1}],
        "callback_inbox": [{"test_invitation_id": 501, "status": "Complete", "payload": {"Status": "Complete"},
                            "received_at": T0, "processed_at": T1, "run_key": "cb-501"}],
        "rate_budget": [{"name": "degreed:imocha-sandbox", "sent": [1.5, 2.5], "paused_until": 0.0,
                         "waiting": {}, "updated_at": T0}],
    }


def everything(engine, tables) -> dict[str, list[dict]]:
    """Every row of ``tables`` (a dict of sample rows: only the columns they name, which every revision has)."""
    with engine.connect() as conn:
        found = {}
        for name in tables:
            table = staging.metadata.tables[name]
            columns = [table.c[c] for c in tables[name][0]] if isinstance(tables, dict) else list(table.c)
            found[name] = [dict(row._mapping) for row in conn.execute(sa.select(*columns))]
        return found


def names(engine) -> tuple[set[str], set[str]]:
    inspector = sa.inspect(engine)
    return set(inspector.get_table_names()), set(inspector.get_view_names())


def test_db_upgrade_creates_an_empty_database_at_the_latest_revision(staging_url):
    runner = CliRunner()
    before = runner.invoke(main, ["db", "current", "--url", staging_url])
    assert before.exit_code == 0 and "schema revision none" in before.output and "empty" in before.output
    result = runner.invoke(main, ["db", "upgrade", "--url", staging_url])
    assert result.exit_code == 0, result.output
    assert f"schema revision none -> {schema.head_revision()}" in result.output
    engine = staging.create_engine(staging_url)
    try:
        tables, views = names(engine)
        assert set(staging.metadata.tables) | {schema.VERSION_TABLE} == tables
        assert views == VIEWS
        assert schema.current_revision(engine) == schema.head_revision() == schema.known_revisions()[-1]
        schema.check_up_to_date(engine)
    finally:
        engine.dispose()
    again = runner.invoke(main, ["db", "upgrade", "--url", staging_url])
    assert again.exit_code == 0 and "already at schema revision" in again.output
    current = runner.invoke(main, ["db", "current", "--url", staging_url])
    assert current.exit_code == 0 and "up to date" in current.output


def test_first_use_migrates_an_empty_database(staging_url):
    engine = staging.get_engine(staging_url)
    assert schema.current_revision(engine) == schema.head_revision()
    assert names(engine)[1] >= VIEWS


def test_upgrade_from_the_first_revision_keeps_every_row(staging_url):
    assert schema.upgrade(staging_url, "0001") == (None, "0001")
    engine = staging.create_engine(staging_url)
    try:
        rows = sample_rows()
        with engine.begin() as conn:
            for name, table_rows in rows.items():
                conn.execute(staging.metadata.tables[name].insert(), table_rows)
        before = everything(engine, rows)
        assert set(rows) == set(staging.metadata.tables) - {"skill_mapping", "degreed_users", "erased_learners"}, \
            "every table of 0001"

        assert schema.upgrade(staging_url) == ("0001", schema.head_revision())
        after = everything(engine, rows)
        assert after == before
        assert after["imocha_completions"][0]["attempted_on"] == T0
        assert after["sync_ledger"][0]["payload"]["percentile"] == 81.5
        with engine.connect() as conn:  # 0003: attempts staged before it count as planned by their run
            planned = conn.execute(sa.select(staging.imocha_completions.c.planned_at)).scalars().all()
        assert planned == [row["extracted_at"] for row in before["imocha_completions"]]
        check_views_over_sample(engine)
    finally:
        engine.dispose()
    staging.get_engine(staging_url)  # at the latest revision: used as it is


def test_0008_counts_an_earlier_degreed_erasure_as_asked_where_the_ledger_shows_a_delete(staging_url):
    """Learners erased before 0008: the request to delete in Degreed was not recorded, so the migration infers it
    from a ``deleted`` ledger row under the learner's hash (not for a lifted erasure, nor a local-only one)."""
    assert schema.upgrade(staging_url, "0007") == (None, "0007")
    engine = staging.create_engine(staging_url)
    try:
        with engine.begin() as conn:  # only the columns of 0007
            conn.execute(staging.erased_learners.insert(), [
                {"email_hmac": h, "erased_at": T0, "lifted_at": lifted, "updated_at": T1}
                for h, lifted in (("a" * 64, None), ("b" * 64, None), ("c" * 64, T1))])
            conn.execute(staging.sync_ledger.insert(), [
                {"entity": "completion", "record_key": f"erased:{h}|imocha-7", "degreed_id": f"D-{h[0]}",
                 "state": state, "attempts": 1, "created_at": T0, "updated_at": T1}
                for h, state in (("a" * 64, "deleted"), ("b" * 64, "erased"), ("c" * 64, "deleted"))]
                + [{"entity": "completion", "record_key": f"erased:{'a' * 64}|imocha-8", "degreed_id": "D-a2",
                    "state": "erased", "attempts": 1, "created_at": T0, "updated_at": T1}])
        assert schema.upgrade(staging_url) == ("0007", schema.head_revision())
        with engine.connect() as conn:
            asked = dict(conn.execute(sa.select(staging.erased_learners.c.email_hmac,
                                                staging.erased_learners.c.degreed_deletion_requested_at)).all())
        assert {h[0]: v is not None for h, v in asked.items()} == {"a": True, "b": False, "c": False}
        assert asked["a" * 64] == T0
    finally:
        engine.dispose()


def check_views_over_sample(engine) -> None:
    """The views over the sample rows, on this backend; and every documented query runs here too."""
    from imocha_pipeline_tests.test_analyst_views import documented_queries

    with engine.begin() as conn:
        conn.execute(staging.skill_mapping.insert(), [{"imocha_skill_key": "sql", "imocha_skill": "SQL",
                                                        "degreed_skill": "SQL", "loaded_at": T1}])
        staging.set_state(conn, "skill_mapping", {"rows": 1})

    def query(sql: str) -> list[dict]:
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.text(sql)).mappings()]

    status = query("SELECT * FROM v_sync_status")
    assert [(r["learner_email"], r["attempts"], r["latest_test_invitation_id"], r["sync_status"], r["ledger_state"],
             r["degreed_id"], r["degreed_test_invitation_id"], bool(r["latest_attempt_in_degreed"]),
             r["quarantine_kind"]) for r in status] == [
        ("ana.lima@example.com", 2, 502, "validation", "acknowledged", "C-1", 501, False, "validation")]
    assert status[0]["degreed_percentile"] == 81.5
    (held,) = query("SELECT * FROM v_open_quarantine")
    assert (held["learner_email"], held["test_invitation_id"], held["attempt_test_id"]) == (
        "ana.lima@example.com", 502, 7)
    assert held["age_hours"] > 24 * 200 and bool(held["retry_due"]) is False
    (rating,) = query("SELECT * FROM v_skill_ratings_current")
    assert (rating["learner_email"], rating["skill_name"], rating["rating"], rating["test_invitation_id"],
            bool(rating["in_degreed"])) == ("ana.lima@example.com", "Python & Data", 7, 501, True)
    assert str(rating["rated_at"]).startswith("2026-03-01 09:30:15")
    (drift,) = query("SELECT * FROM v_drift_last_reconcile")
    assert (drift["kind"], drift["learner_email"], bool(drift["repaired"])) == (
        "changed_in_degreed", "ana.lima@example.com", False)
    (unmapped,) = query("SELECT * FROM v_unmapped_skills")
    assert (unmapped["skill_name"], unmapped["attempts"], unmapped["learners"], unmapped["tests"]) == (
        "Python & Data", 1, 1, 1)
    for name, sql in documented_queries().items():
        assert isinstance(query(sql), list), name


def _step_errors(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(event.step_failure_data.error.to_string() for event in result.get_step_failure_events())


def test_a_database_behind_makes_a_job_run_fail_naming_the_command(staging_url):
    schema.upgrade(staging_url, "0001")
    defs = definitions_for(UNREACHABLE_SETTINGS, staging_url)
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("assessment_sync_job").execute_in_process(instance=instance,
                                                                                 raise_on_error=False)
    assert not result.success
    errors = _step_errors(result)
    assert "SchemaOutOfDate" in errors
    assert "is at schema revision 0001" in errors and "`imocha-pipeline db upgrade`" in errors
    assert "Connection refused" not in errors, "the run stops before it talks to any API"
    with pytest.raises(schema.SchemaOutOfDate, match="imocha-pipeline db upgrade"):
        staging.get_engine(staging_url)
    engine = staging.create_engine(staging_url)
    with pytest.raises(schema.SchemaOutOfDate, match=f"needs schema revision {schema.head_revision()}") as behind:
        schema.check_up_to_date(engine)
    engine.dispose()
    assert (behind.value.current, behind.value.head) == ("0001", schema.head_revision())
    assert CliRunner().invoke(main, ["db", "current", "--url", staging_url]).exit_code == 1

    assert CliRunner().invoke(main, ["db", "upgrade", "--url", staging_url]).exit_code == 0
    staging.get_engine(staging_url)


def test_a_database_from_before_migrations_is_refused_then_adopted(staging_url):
    engine = staging.create_engine(staging_url)
    try:
        # What get_engine did before migrations: the tables of revision 0001, without a version.
        schema.upgrade(staging_url, "0001")
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE {schema.VERSION_TABLE}"))
        rows = sample_rows()
        with engine.begin() as conn:
            conn.execute(staging.sync_ledger.insert(), rows["sync_ledger"])
        before = everything(engine, {"sync_ledger": rows["sync_ledger"]})
        with pytest.raises(schema.SchemaOutOfDate, match=r"no schema version .*imocha-pipeline db upgrade"):
            staging.get_engine(staging_url)
        assert schema.upgrade(staging_url) == (None, schema.head_revision())
        assert everything(engine, {"sync_ledger": rows["sync_ledger"]}) == before and len(before["sync_ledger"]) == 2
        assert names(engine)[1] >= VIEWS
    finally:
        engine.dispose()
    staging.get_engine(staging_url)


def test_a_pre_migration_database_that_does_not_match_is_not_adopted(sqlite_url):
    engine = staging.create_engine(sqlite_url)
    try:
        staging.metadata.create_all(engine, tables=[staging.sync_ledger, staging.sync_state])
        with pytest.raises(schema.SchemaOutOfDate, match="cannot be adopted") as refused:
            schema.upgrade(sqlite_url)
        assert "missing: table callback_inbox" in str(refused.value)
        assert schema.current_revision(engine) is None
    finally:
        engine.dispose()


def test_a_database_upgraded_by_a_newer_version_is_refused(sqlite_url):
    staging.get_engine(sqlite_url)
    staging.dispose_engine(sqlite_url)
    engine = staging.create_engine(sqlite_url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {schema.VERSION_TABLE} SET version_num = '0099'"))
    engine.dispose()
    with pytest.raises(schema.SchemaOutOfDate, match="revision 0099, which this version of imocha_pipeline does "
                                                     "not know"):
        staging.get_engine(sqlite_url)
    result = CliRunner().invoke(main, ["db", "upgrade", "--url", sqlite_url])
    assert result.exit_code != 0 and "does not know" in result.output


def test_models_and_migrated_schema_agree(staging_url):
    engine = staging.get_engine(staging_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "version_table": schema.VERSION_TABLE})
        assert compare_metadata(context, staging.metadata) == []
        # The comparison does see a difference when there is one.
        changed = sa.MetaData()
        for table in staging.metadata.tables.values():
            table.to_metadata(changed)
        sa.Table("sync_state", changed, sa.Column("extra", sa.Integer), extend_existing=True)
        diff = compare_metadata(context, changed)
    assert [(d[0], d[3].name) for d in diff] == [("add_column", "extra")]


FIRST_USE = """
import pathlib, sys, time
from imocha_pipeline import staging
from imocha_pipeline.staging import versions as schema
url, ready, go = sys.argv[1:4]
pathlib.Path(ready).touch()
while not pathlib.Path(go).exists():
    time.sleep(0.002)
print(schema.current_revision(staging.get_engine(url)))
"""


def test_processes_starting_together_on_an_empty_database_do_not_race(staging_url, tmp_path):
    go = tmp_path / "go"
    children = [subprocess.Popen([sys.executable, "-c", FIRST_USE, staging_url, str(tmp_path / f"ready{n}"), str(go)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in range(3)]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready{n}").exists() for n in range(3)) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()  # all three reach get_engine at the same moment
    outcomes = [child.communicate(timeout=60) for child in children]
    assert [child.returncode for child in children] == [0, 0, 0], [err for _, err in outcomes]
    assert [out.strip() for out, _ in outcomes] == [schema.head_revision()] * 3


def test_upgrade_sql_is_printed_without_a_database():
    result = CliRunner().invoke(main, ["db", "upgrade", "--url", "postgresql://nobody@127.0.0.1:1/none", "--sql"])
    assert result.exit_code == 0, result.output
    assert "CREATE TABLE sync_ledger" in result.output and "CREATE VIEW v_sync_status" in result.output
    assert f"INSERT INTO {schema.VERSION_TABLE}" in result.output
    step = CliRunner().invoke(main, ["db", "upgrade", "--url", "sqlite:///x.sqlite", "--sql", "--from", "0001"])
    assert "CREATE TABLE sync_ledger" not in step.output and "json_extract" in step.output


@pytest.mark.postgres
def test_messages_never_show_the_database_password(postgres_url):
    given = sa.engine.make_url(postgres_url)
    secret = given.password or "s3cret-pw"  # the server's own password, or one trust authentication ignores
    url = given.set(password=secret).render_as_string(hide_password=False)
    upgraded = CliRunner().invoke(main, ["db", "upgrade", "--url", url, "--revision", "0001"])
    assert upgraded.exit_code == 0 and secret not in upgraded.output and "***" in upgraded.output
    with pytest.raises(schema.SchemaOutOfDate) as refused:
        staging.get_engine(url)
    assert secret not in str(refused.value) and "***" in str(refused.value)
    current = CliRunner().invoke(main, ["db", "current", "--url", url])
    assert current.exit_code == 1 and secret not in current.output

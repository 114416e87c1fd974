"""The production Dagster instance (deploy/dagster.yaml): Dagster's own config schema accepts it, and a real
instance on the local PostgreSQL server runs a job, a sensor tick and a schedule tick, in process and through
`dagster-daemon run`, with every run and tick recorded in PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa
import yaml
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.instance.config import dagster_instance_config

from imocha_pipeline.staging import dispose_engine, normalise_url
from imocha_sandbox.runtime import Sandbox, SandboxConfig
from sync_harness import definitions_for

REPO = Path(__file__).resolve().parents[1]
DEPLOY_INSTANCE = REPO / "deploy" / "dagster.yaml"
BIN = Path(sys.executable).parent
ENTITY_TAG = "imocha_pipeline/entity"
PG_SETTINGS = ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB")


def deploy_config() -> dict:
    return yaml.safe_load(DEPLOY_INSTANCE.read_text())


def validate_instance_file(config: dict, tmp_path: Path) -> dict:
    """Dagster's own validation of an instance file: the schema dagster.yaml is read with."""
    home = tmp_path / f"home-{uuid.uuid4().hex[:6]}"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    value, custom_class = dagster_instance_config(str(home))
    assert custom_class is None
    return dict(value)


def finished_attempt(box: Sandbox, learner, test, percent: float) -> int:
    """An attempt that iMocha lists as finished a few minutes ago (today, UTC, unless it is just past midnight)."""
    now = datetime.now(UTC)
    started = max(now - timedelta(minutes=20), now.replace(hour=0, minute=0, second=1, microsecond=0))
    return box.imocha.complete_attempt(test.test_id, learner.email, learner.name, bank_scores=percent,
                                       attempted_on=started, time_taken_seconds=5)


# ##### FIXTURES


@pytest.fixture
def dagster_pg_env(postgres_server_url):
    """A fresh PostgreSQL database for Dagster's storage, as the five DAGSTER_PG_* settings; dropped afterwards."""
    server = sa.engine.make_url(normalise_url(postgres_server_url))
    name = f"imocha_dagster_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    env = {"DAGSTER_PG_HOST": server.host or "127.0.0.1", "DAGSTER_PG_PORT": str(server.port or 5432),
           "DAGSTER_PG_USER": server.username or "postgres", "DAGSTER_PG_PASSWORD": server.password or "",
           "DAGSTER_PG_DB": name}
    yield env
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def dagster_home(tmp_path, dagster_pg_env, monkeypatch):
    """DAGSTER_HOME in a temp dir holding deploy/dagster.yaml, with the DAGSTER_PG_* settings exported."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(DEPLOY_INSTANCE, home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    for name, value in dagster_pg_env.items():
        monkeypatch.setenv(name, value)
    return home


def pg_engine(env: dict[str, str]) -> sa.Engine:
    url = sa.engine.URL.create("postgresql+psycopg2", username=env["DAGSTER_PG_USER"],
                               password=env["DAGSTER_PG_PASSWORD"] or None, host=env["DAGSTER_PG_HOST"],
                               port=int(env["DAGSTER_PG_PORT"]), database=env["DAGSTER_PG_DB"])
    return sa.create_engine(url)


def runs_in_postgres(engine: sa.Engine) -> dict[str, dict]:
    """run id -> {job, status, tags}, read straight from Dagster's tables in PostgreSQL."""
    with engine.connect() as conn:
        runs = conn.execute(sa.text("SELECT run_id, pipeline_name, status FROM runs")).all()
        tags = conn.execute(sa.text("SELECT run_id, key, value FROM run_tags")).all()
    out = {run_id: {"job": job, "status": status, "tags": {}} for run_id, job, status in runs}
    for run_id, key, value in tags:
        if run_id in out:
            out[run_id]["tags"][key] = value
    return out


def ticks_in_postgres(engine: sa.Engine) -> list[dict]:
    """Sensor and schedule ticks, read straight from Dagster's job_ticks table in PostgreSQL."""
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT type, status, tick_body FROM job_ticks ORDER BY id")).all()
    ticks = []
    for kind, status, body in rows:
        data = json.loads(body)
        ticks.append({"type": kind, "status": status, "name": data.get("job_name") or data.get("instigator_name"),
                      "run_ids": data.get("run_ids") or []})
    return ticks


# ##### TESTS


def test_deploy_instance_file_passes_dagsters_config_schema(tmp_path):
    value = validate_instance_file(deploy_config(), tmp_path)

    pg = value["storage"]["postgres"]["postgres_db"]
    assert {pg[field]["env"] for field in ("hostname", "port", "username", "password", "db_name")} == set(PG_SETTINGS)
    assert value["run_monitoring"]["enabled"] is True
    assert value["run_retries"]["enabled"] is True and value["run_retries"]["max_retries"] >= 1
    assert value["sensors"]["use_threads"] is True
    assert value["telemetry"]["enabled"] is False

    # Every job of the code location has a concurrency limit for its entity tag, and one run per partition.
    limits = {(lim["key"], str(lim.get("value"))): lim["limit"] for lim in value["run_queue"]["tag_concurrency_limits"]}
    from imocha_pipeline.definitions import defs

    entities = {defs.resolve_job_def(name).tags[ENTITY_TAG]
                for name in ("assessment_sync_job", "completion_sync_job", "catch_up_job", "reconcile_job")}
    assert entities == {"assessment", "completion", "catch_up", "reconcile"}
    for entity in entities:
        assert limits[(ENTITY_TAG, entity)] >= 1, entity
    assert limits[("dagster/partition", "{'applyLimitPerUniqueValue': True}")] == 1
    assert value["run_queue"]["max_concurrent_runs"] >= sum(limits[(ENTITY_TAG, e)] for e in entities)

    # The schema has teeth: a misspelt key or a wrong type is refused.
    typo = deploy_config()
    typo["run_queue"]["max_concurent_runs"] = typo["run_queue"].pop("max_concurrent_runs")
    with pytest.raises(DagsterInvalidConfigError):
        validate_instance_file(typo, tmp_path)
    wrong_type = deploy_config()
    wrong_type["sensors"]["use_threads"] = "sometimes"
    with pytest.raises(DagsterInvalidConfigError):
        validate_instance_file(wrong_type, tmp_path)

    # The root dagster.yaml stays the local default: no storage block, so SQLite under DAGSTER_HOME.
    local = validate_instance_file(yaml.safe_load((REPO / "dagster.yaml").read_text()), tmp_path)
    assert "storage" not in local and "run_storage" not in local


@pytest.mark.postgres
def test_instance_on_postgres_runs_a_job_a_sensor_tick_and_a_schedule_tick(dagster_home, dagster_pg_env,
                                                                           sqlite_url):
    from dagster._core.run_coordinator import QueuedRunCoordinator
    from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

    instance = dg.DagsterInstance.get()  # reads $DAGSTER_HOME/dagster.yaml, as the webserver and daemon do
    engine = pg_engine(dagster_pg_env)
    try:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
        queue = instance.get_concurrency_config().run_queue_config
        assert queue.max_concurrent_runs == 5
        assert {"key": ENTITY_TAG, "value": "completion", "limit": 2} in queue.tag_concurrency_limits
        assert instance.run_monitoring_enabled and instance.run_retries_enabled
        assert instance.run_retries_max_retries == 2
        assert instance.get_settings("sensors")["use_threads"] is True

        with Sandbox(SandboxConfig(seed=31, tests=2, learners=3, attempts=0, degreed_rate_limit=6000)) as box:
            defs = definitions_for(box, sqlite_url)
            resources = defs.resources

            # A schedule tick: the run request of assessment_sync_schedule, run on the PostgreSQL instance.
            schedule = defs.resolve_schedule_def("assessment_sync_schedule")
            with dg.build_schedule_context(instance=instance, resources=resources,
                                           scheduled_execution_time=datetime.now(UTC)) as context:
                requests = schedule.evaluate_tick(context).run_requests
            assert len(requests) == 1
            job = defs.resolve_job_def("assessment_sync_job")
            synced = job.execute_in_process(instance=instance, tags={**requests[0].tags, "test/origin": "schedule"},
                                            run_config=requests[0].run_config)
            assert synced.success

            # A sensor tick: an attempt finishes; imocha_completions_sensor asks for its day's run.
            learner = next(x for x in box.world.learners if x.in_degreed)
            test = box.world.tests[0]
            finished_attempt(box, learner, test, 80.0)
            sensor = defs.resolve_sensor_def("imocha_completions_sensor")
            context = dg.build_sensor_context(instance=instance, resources=resources, definitions=defs)
            tick = sensor(context)
            assert tick.cursor and len(tick.run_requests) == 1
            request = tick.run_requests[0]
            assert request.partition_key == datetime.now(UTC).date().isoformat()
            completion = defs.resolve_job_def("completion_sync_job").execute_in_process(
                instance=instance, partition_key=request.partition_key, tags={**request.tags, "test/origin": "sensor"})
            assert completion.success
            assert [c["user_email"].lower() for c in box.degreed.state()["completions"]] == [learner.email.lower()]

        # Every run, with its tags, is in PostgreSQL; so are the materializations and the check results.
        runs = runs_in_postgres(engine)
        by_origin = {r["tags"].get("test/origin"): r for r in runs.values()}
        assert by_origin["schedule"]["job"] == "assessment_sync_job"
        assert by_origin["schedule"]["status"] == "SUCCESS"
        assert by_origin["schedule"]["tags"][ENTITY_TAG] == "assessment"
        assert by_origin["sensor"]["job"] == "completion_sync_job"
        assert by_origin["sensor"]["status"] == "SUCCESS"
        assert by_origin["sensor"]["tags"]["dagster/partition"] == request.partition_key
        assert by_origin["sensor"]["tags"]["imocha_pipeline/trigger"] == "poll"
        with engine.connect() as conn:
            materialized = set(conn.execute(sa.text(
                "SELECT DISTINCT asset_key FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'"
            )).scalars())
            checks = dict(conn.execute(sa.text(
                "SELECT check_name, execution_status FROM asset_check_executions")).all())
        assert {'["assessment_sync_apply"]', '["completion_sync_apply"]', '["imocha_completions"]'} <= materialized
        assert checks["desired_assessments_valid"] == "SUCCEEDED"
        assert checks["assessment_plan_guard"] == "SUCCEEDED"
    finally:
        instance.dispose()
        engine.dispose()
        dispose_engine(sqlite_url)


def _wait_for(predicate, timeout: float, what: str, process: subprocess.Popen, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if process.poll() is not None:
            break
        time.sleep(1)
    pytest.fail(f"{what} did not happen within {timeout:.0f} s (daemon exit code {process.poll()}); "
                f"daemon log tail:\n{log.read_text()[-4000:]}")


@pytest.mark.postgres
@pytest.mark.slow
def test_the_daemon_ticks_sensor_and_schedule_and_launches_queued_runs(dagster_home, dagster_pg_env, tmp_path):
    """`dagster-daemon run -w workspace.yaml` on the production instance: real ticks, queued runs, run workers."""
    staging = tmp_path / "staging.sqlite"
    log = tmp_path / "daemon.log"
    with Sandbox(SandboxConfig(seed=32, tests=2, learners=3, attempts=0, degreed_rate_limit=6000)) as box:
        learner = next(x for x in box.world.learners if x.in_degreed)
        finished_attempt(box, learner, box.world.tests[0], 60.0)
        env = {**os.environ, **box.env(), **dagster_pg_env, "DAGSTER_HOME": str(dagster_home),
               "IMOCHA_PIPELINE_STAGING_DB_URL": f"sqlite:///{staging}",
               "IMOCHA_PIPELINE_POLL_INTERVAL_SECONDS": "5",
               # Every minute instead of hourly, so the scheduler has a tick to make during the test.
               "IMOCHA_PIPELINE_ASSESSMENT_SYNC_CRON": "* * * * *"}
        with log.open("w") as out:
            daemon = subprocess.Popen([str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"], cwd=REPO,
                                      env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        instance = dg.DagsterInstance.from_config(str(dagster_home))
        engine = pg_engine(dagster_pg_env)
        try:
            def finished(job_name: str):
                runs = [r for r in runs_in_postgres(engine).values() if r["job"] == job_name]
                return runs if runs and all(r["status"] in {"SUCCESS", "FAILURE", "CANCELED"} for r in runs) else None

            def ticks(name: str, kind: str):
                return [t for t in ticks_in_postgres(engine) if t["name"] == name and t["type"] == kind
                        and t["status"] == "SUCCESS" and t["run_ids"]]

            sensor_ticks = _wait_for(lambda: ticks("imocha_completions_sensor", "SENSOR"), 120,
                                     "a sensor tick with a run", daemon, log)
            completion_runs = _wait_for(lambda: finished("completion_sync_job"), 180,
                                        "the sensor's completion run", daemon, log)
            schedule_ticks = _wait_for(lambda: ticks("assessment_sync_schedule", "SCHEDULE"), 120,
                                       "a schedule tick with a run", daemon, log)
            assessment_runs = _wait_for(lambda: finished("assessment_sync_job"), 180,
                                        "the schedule's assessment run", daemon, log)
        finally:
            daemon.send_signal(signal.SIGINT)
            try:
                daemon.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
                daemon.wait(timeout=30)
            instance.dispose()

    try:
        assert {r["status"] for r in completion_runs} == {"SUCCESS"}, log.read_text()[-4000:]
        assert {r["status"] for r in assessment_runs} == {"SUCCESS"}, log.read_text()[-4000:]
        sensor_run = completion_runs[0]
        assert sensor_run["tags"]["dagster/sensor_name"] == "imocha_completions_sensor"
        assert sensor_run["tags"][ENTITY_TAG] == "completion"
        assert sensor_run["tags"]["dagster/partition"] == datetime.now(UTC).date().isoformat()
        assert assessment_runs[0]["tags"]["dagster/schedule_name"] == "assessment_sync_schedule"
        runs = runs_in_postgres(engine)
        assert {runs[r]["job"] for t in sensor_ticks for r in t["run_ids"]} == {"completion_sync_job"}
        assert {runs[r]["job"] for t in schedule_ticks for r in t["run_ids"]} == {"assessment_sync_job"}
        with engine.connect() as conn:
            # Every launched run went through the queue (QueuedRunCoordinator), then the run launcher.
            enqueued = set(conn.execute(sa.text(
                "SELECT run_id FROM event_logs WHERE dagster_event_type = 'PIPELINE_ENQUEUED'")).scalars())
            started = set(conn.execute(sa.text(
                "SELECT run_id FROM event_logs WHERE dagster_event_type = 'PIPELINE_START'")).scalars())
        assert {t_run for t in sensor_ticks + schedule_ticks for t_run in t["run_ids"]} <= enqueued & started
    finally:
        engine.dispose()

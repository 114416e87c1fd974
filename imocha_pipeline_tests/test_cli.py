"""The command line: the code location loads, `sandbox` serves documented answers, `doctor` diagnoses,
and `dagster job execute` runs a sync with only the environment settings."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import requests
from click.testing import CliRunner

from imocha_pipeline.cli import main
from imocha_pipeline.settings import DEGREED_REQUIRED_SCOPES
from imocha_pipeline.staging import dispose_engine
from imocha_pipeline_tests.conftest import compiled_text_part_missing
from imocha_sandbox.degreed import DEFAULT_CLIENT_SECRET, ApiClientSpec
from imocha_sandbox.runtime import Sandbox, SandboxConfig

BIN = Path(sys.executable).parent
IMOCHA_401 = {"statusCode": 401, "message": "Access denied due to invalid subscription key. Make sure to provide "
                                            "a valid key for an active subscription."}


def test_definitions_load_with_the_documented_names():
    from imocha_pipeline.definitions import defs

    dg.Definitions.validate_loadable(defs)
    assert defs.resolve_job_def("assessment_sync_job").name == "assessment_sync_job"
    assert defs.resolve_schedule_def("assessment_sync_schedule").cron_schedule == "0 * * * *"
    keys = {key.to_user_string() for key in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"imocha_assessments", "degreed_assessments", "desired_assessments", "assessment_sync_plan",
            "assessment_sync_apply"} <= keys


def test_sandbox_command_prints_exports_and_serves_documented_answers():
    process = subprocess.Popen(
        [str(BIN / "imocha-pipeline"), "sandbox", "--imocha-port", "0", "--degreed-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        env: dict[str, str] = {}
        deadline = time.monotonic() + 60
        while len(env) < 7 and time.monotonic() < deadline:
            line = process.stdout.readline()
            if line.startswith("export "):
                name, _, value = line[len("export "):].strip().partition("=")
                env[name] = value.strip("'")
        assert set(env) == {"IMOCHA_API_KEY", "IMOCHA_BASE_URL", "DEGREED_CLIENT_ID", "DEGREED_CLIENT_SECRET",
                            "DEGREED_API_BASE_URL", "DEGREED_TOKEN_URL", "DEGREED_RATE_LIMIT_PER_MINUTE"}
        assert env["DEGREED_RATE_LIMIT_PER_MINUTE"] == "70"

        bad = requests.get(f"{env['IMOCHA_BASE_URL']}/v3/tests", headers={"X-API-KEY": "wrong"}, timeout=10)
        assert bad.status_code == 401 and bad.json() == IMOCHA_401
        good = requests.get(f"{env['IMOCHA_BASE_URL']}/v3/tests", headers={"x-api-key": env["IMOCHA_API_KEY"]},
                            timeout=10)
        assert good.status_code == 200 and good.json()["count"] == 10

        token = requests.post(env["DEGREED_TOKEN_URL"], data={
            "grant_type": "client_credentials", "client_id": env["DEGREED_CLIENT_ID"],
            "client_secret": env["DEGREED_CLIENT_SECRET"], "scope": "content:read"}, timeout=10).json()
        headers = {"Authorization": f"Bearer {token['access_token']}"}
        statuses = []
        for _ in range(71):
            answer = requests.get(f"{env['DEGREED_API_BASE_URL']}/api/v2/content/assessments", headers=headers,
                                  timeout=10)
            statuses.append(answer.status_code)
            assert "X-Rate-Limit-Remaining" in answer.headers
        assert statuses[:70] == [200] * 70
        assert statuses[70] == 429 and int(answer.headers["Retry-After"]) >= 1
        assert answer.json()["errors"][0]["code"] == "quota-exceeded"
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0


@pytest.fixture(autouse=True)
def _staging_in_tmp(tmp_path, monkeypatch):
    """Commands open the staging database (the shared rate budgets live there): a fresh one per test, never a file
    left in the working directory."""
    url = f"sqlite:///{tmp_path / 'staging.sqlite'}"
    monkeypatch.setenv("IMOCHA_PIPELINE_STAGING_DB_URL", url)
    yield
    dispose_engine(url)


@pytest.fixture
def sandbox(make_sandbox):
    return make_sandbox(seed=3, tests=3, learners=3, attempts=2, degreed_rate_limit=6000)


def run_doctor(env: dict[str, str]):
    return CliRunner().invoke(main, ["doctor"], env=env)


def test_doctor_passes_against_the_sandbox(sandbox):
    result = run_doctor(sandbox.env())
    assert result.exit_code == 0, result.output
    assert "PASS  Degreed token" in result.output and "PASS  iMocha API" in result.output
    for scope in DEGREED_REQUIRED_SCOPES:
        assert f"PASS  scope {scope}: granted" in result.output
    assert "PASS  iMocha provider: visible as 'iMocha'" in result.output
    assert DEFAULT_CLIENT_SECRET not in result.output
    if compiled_text_part_missing() is None:
        assert "PASS  Diff engine: compiled part built: a large plan hashes and compares text on " in result.output


def test_doctor_says_when_plans_run_on_one_core_and_does_not_fail_for_it(sandbox):
    result = run_doctor(sandbox.env() | {"IMOCHA_PIPELINE_DIFF_NATIVE": "0"})
    assert result.exit_code == 0, result.output
    expected = ("SKIP  Diff engine: compiled part switched off (IMOCHA_PIPELINE_DIFF_NATIVE=0)" if
                compiled_text_part_missing() is None else "SKIP  Diff engine: compiled part not built")
    assert expected in result.output and "plans run in Python on one core" in result.output


def test_doctor_names_a_missing_scope(sandbox):
    scopes = frozenset(DEGREED_REQUIRED_SCOPES) - {"skill_ratings:write"}
    sandbox.degreed.add_client("limited-key", ApiClientSpec("limited-secret-123", scopes, "IMOCHA"))
    limited = {"DEGREED_CLIENT_ID": "limited-key", "DEGREED_CLIENT_SECRET": "limited-secret-123"}
    result = run_doctor(sandbox.env() | limited)
    assert result.exit_code == 1
    assert "FAIL  scope skill_ratings:write: the API key does not have this scope" in result.output
    assert "fix: ask a Degreed Technical Admin to add skill_ratings:write" in result.output
    assert "PASS  scope content:write: granted" in result.output
    assert "PASS  iMocha provider" in result.output


def test_doctor_says_what_each_scope_is_for_including_the_erasure_deletes(sandbox):
    result = run_doctor(sandbox.env())
    assert "PASS  scope content:write: granted (to create, update and retire the iMocha assessments" in result.output
    assert "PASS  scope completions:write: granted (to send and update completions; delete them when a " \
           "learner is erased)" in result.output
    assert "PASS  scope skill_ratings:write: granted (to send and update skill ratings; delete them when a " \
           "learner is erased)" in result.output
    table = CliRunner().invoke(main, ["doctor", "--scopes"], env={})  # no settings, no network needed
    assert table.exit_code == 0, table.output
    rows = [line for line in table.output.splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == list(DEGREED_REQUIRED_SCOPES)
    assert "users:read` | look learners up by email" in table.output
    assert "skill_ratings:write` | send and update skill ratings; delete them when a learner is erased " \
           "(also written skill_rating:write; Degreed documents skill_ratings:write, specs/degreed-api.md §2.3" \
           in table.output


def test_doctor_accepts_the_seed_spelling_and_names_the_documented_scope(sandbox):
    explained = CliRunner().invoke(main, ["doctor", "--scope", "skill_rating:write"], env={})
    assert explained.exit_code == 0
    assert explained.output.startswith("skill_ratings:write: needed to send and update skill ratings")
    assert "skill_rating:write is another spelling of it; Degreed documents skill_ratings:write, " \
           "specs/degreed-api.md §2.3 (Degreed's token reference, source S2)" in explained.output
    documented = CliRunner().invoke(main, ["doctor", "--scope", "skill_ratings:write"], env={})
    assert "another spelling" not in documented.output and "needed to send" in documented.output

    # A key set up with the seed's spelling: the doctor recognises it and says why the sync would still be
    # refused (the pipeline's token asks for the documented name, and a key grants only what it holds).
    scopes = (frozenset(DEGREED_REQUIRED_SCOPES) - {"skill_ratings:write"}) | {"skill_rating:write"}
    sandbox.degreed.add_client("seed-key", ApiClientSpec("seed-secret-123", scopes, "IMOCHA"))
    result = run_doctor(sandbox.env() | {"DEGREED_CLIENT_ID": "seed-key", "DEGREED_CLIENT_SECRET": "seed-secret-123"})
    assert result.exit_code == 1
    assert "FAIL  scope skill_ratings:write: the API key has skill_rating:write, another spelling of " \
           "skill_ratings:write; Degreed documents skill_ratings:write (specs/degreed-api.md §2.3" in result.output
    assert "fix: ask a Degreed Technical Admin to add skill_ratings:write" in result.output
    assert "PASS  scope skill_ratings:read: granted" in result.output


def test_doctor_reports_a_wrong_secret_and_an_unreachable_host(sandbox):
    wrong = run_doctor(sandbox.env() | {"DEGREED_CLIENT_SECRET": "not-the-secret"})
    assert wrong.exit_code == 1
    assert "FAIL  Degreed token: client imocha-sandbox was refused" in wrong.output
    assert "fix: check DEGREED_CLIENT_ID and DEGREED_CLIENT_SECRET" in wrong.output
    assert "not-the-secret" not in wrong.output

    unreachable = run_doctor(sandbox.env() | {"DEGREED_TOKEN_URL": "http://127.0.0.1:9/oauth/token",
                                              "IMOCHA_BASE_URL": "http://127.0.0.1:9"})
    assert unreachable.exit_code == 1
    assert "FAIL  Degreed token: cannot reach http://127.0.0.1:9/oauth/token" in unreachable.output
    assert "FAIL  iMocha API: cannot reach http://127.0.0.1:9" in unreachable.output
    assert "fix: check IMOCHA_BASE_URL" in unreachable.output


def test_doctor_names_a_missing_setting(sandbox):
    env = sandbox.env() | {"IMOCHA_API_KEY": ""}
    result = run_doctor(env)
    assert result.exit_code == 1
    assert "FAIL  iMocha settings: missing setting IMOCHA_API_KEY" in result.output


def test_dagster_job_execute_with_only_environment_settings(sandbox, tmp_path):
    staging_db = tmp_path / "staging.sqlite"
    env = {**os.environ, **sandbox.env(), "IMOCHA_PIPELINE_STAGING_DB_URL": f"sqlite:///{staging_db}",
           "DAGSTER_HOME": str(tmp_path)}
    completed = subprocess.run(
        [str(BIN / "dagster"), "job", "execute", "-m", "imocha_pipeline.definitions", "-j", "assessment_sync_job"],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    ours = [a for a in sandbox.degreed.state()["assessments"] if a["external_id"].startswith("imocha-")]
    assert len(ours) == 3
    assert staging_db.exists()


def test_a_missing_setting_fails_the_run_naming_it(sandbox, tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "DEGREED_CLIENT_SECRET"}
    env |= {k: v for k, v in sandbox.env().items() if k != "DEGREED_CLIENT_SECRET"}
    env |= {"IMOCHA_PIPELINE_STAGING_DB_URL": f"sqlite:///{tmp_path / 's.sqlite'}", "DAGSTER_HOME": str(tmp_path)}
    completed = subprocess.run(
        [str(BIN / "dagster"), "job", "execute", "-m", "imocha_pipeline.definitions", "-j", "assessment_sync_job"],
        env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert completed.returncode != 0
    assert "DEGREED_CLIENT_SECRET" in completed.stdout + completed.stderr


def test_completion_and_reconcile_jobs_run_through_the_dagster_cli(tmp_path):
    from datetime import UTC, datetime, timedelta

    config = SandboxConfig(seed=4, tests=3, learners=6, attempts=12, degreed_rate_limit=6000)
    with Sandbox(config) as box:
        env = {**os.environ, **box.env(), "IMOCHA_PIPELINE_STAGING_DB_URL": f"sqlite:///{tmp_path / 's.sqlite'}",
               "DAGSTER_HOME": str(tmp_path)}

        def dagster(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([str(BIN / "dagster"), "job", "execute", "-m", "imocha_pipeline.definitions",
                                   *args], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)

        assert dagster("-j", "assessment_sync_job").returncode == 0
        today = datetime.now(UTC).date()
        history = json.dumps({"dagster/asset_partition_range_start": str(today - timedelta(days=20)),
                              "dagster/asset_partition_range_end": str(today)})
        ran = dagster("-j", "completion_sync_job", "--tags", history)
        assert ran.returncode == 0, ran.stderr[-3000:]
        known = {x.email for x in box.world.learners if x.in_degreed}
        expected = {(a.email, a.test_id) for a in box.world.attempts if a.status == "Complete" and a.email in known}
        assert len(box.degreed.state()["completions"]) == len(expected)
        one_day = dagster("-j", "completion_sync_job", "--tags", json.dumps({"dagster/partition": str(today)}))
        assert one_day.returncode == 0, one_day.stderr[-3000:]
        assert dagster("-j", "reconcile_job").returncode == 0
        assert len(box.degreed.state()["completions"]) == len(expected)


def test_doctor_reports_an_unknown_region(sandbox):
    env = {k: v for k, v in sandbox.env().items() if k not in ("DEGREED_API_BASE_URL", "DEGREED_TOKEN_URL")}
    result = run_doctor(env | {"DEGREED_REGION": "mars", "DEGREED_API_BASE_URL": "", "DEGREED_TOKEN_URL": ""})
    assert result.exit_code == 1
    assert "FAIL  Degreed settings:" in result.output and "DEGREED_REGION" in result.output
    assert "eu-betatest" in result.output
    assert "Traceback" not in result.output


def test_the_documented_guard_override_works_from_the_command_line(sandbox, tmp_path):
    env = {**os.environ, **sandbox.env(), "IMOCHA_PIPELINE_STAGING_DB_URL": f"sqlite:///{tmp_path / 's.sqlite'}",
           "DAGSTER_HOME": str(tmp_path)}
    command = [str(BIN / "dagster"), "job", "execute", "-m", "imocha_pipeline.definitions", "-j", "assessment_sync_job"]
    assert subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path).returncode == 0
    for spec in sandbox.world.tests:
        sandbox.imocha.remove_test(spec.test_id)
    blocked = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert blocked.returncode != 0
    assert all(not a["obsolete"] for a in sandbox.degreed.state()["assessments"])
    confirm = tmp_path / "confirm.yaml"
    confirm.write_text("ops:\n  assessment_sync_plan:\n    config:\n      confirm_large_changes: true\n")
    confirmed = subprocess.run([*command, "-c", str(confirm)], env=env, capture_output=True, text=True, timeout=300,
                               cwd=tmp_path)
    assert confirmed.returncode == 0, confirmed.stderr[-2000:]
    ours = [a for a in sandbox.degreed.state()["assessments"] if a["external_id"].startswith("imocha-")]
    assert ours and all(a["obsolete"] for a in ours)

"""Nightly reconciliation against the sandbox: repair what Degreed lost, report what was edited or unknown."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from imocha_pipeline import staging
from imocha_sandbox.runtime import Sandbox, SandboxConfig
from sync_harness import definitions_for


@pytest.fixture
def synced(sqlite_url):
    """A sandbox whose assessments and a few completions are already synced."""
    with Sandbox(SandboxConfig(seed=31, tests=2, learners=6, attempts=0, degreed_rate_limit=6000)) as box, \
            dg.instance_for_test() as instance:
        defs = definitions_for(box, sqlite_url)
        assert defs.resolve_job_def("assessment_sync_job").execute_in_process(instance=instance).success
        learners = [x for x in box.world.learners if x.in_degreed][:3]
        for learner in learners:
            box.imocha.complete_attempt(box.world.tests[0].test_id, learner.email, learner.name, bank_scores=64.0)
        today = datetime.now(UTC).date().isoformat()
        result = defs.resolve_job_def("completion_sync_job").execute_in_process(
            instance=instance, tags={"dagster/partition": today})
        assert result.success and len(box.degreed.state()["completions"]) == 3
        yield box, defs, instance, learners


def reconcile(defs, instance):
    return defs.resolve_job_def("reconcile_job").execute_in_process(instance=instance, raise_on_error=False)


def check_result(result):
    return next(e for e in result.get_asset_check_evaluations() if e.check_name == "no_drift_after_repair")


def test_nothing_to_repair_passes_and_writes_nothing(synced, sqlite_url):
    box, defs, instance, _ = synced
    mark = box.degreed.log.last_seq
    result = reconcile(defs, instance)
    assert result.success and check_result(result).passed
    assert [e for e in box.degreed.log.entries(mark) if e.method != "GET" and e.path.startswith("/api/")] == []


def test_reconcile_restores_a_deleted_completion_and_reports_an_edited_one(synced, sqlite_url):
    box, defs, instance, learners = synced
    completions = {c["user_email"]: c for c in box.degreed.state()["completions"]}
    deleted = completions[learners[0].email]
    edited = completions[learners[1].email]
    box.degreed.delete_completion(deleted["id"])
    # A person moves the completion date (a field Degreed returns) and the percentile (one it does not return).
    moved = (datetime.now(UTC) - timedelta(days=5)).replace(hour=8, minute=0, second=0, microsecond=0)
    box.degreed.update_completion(edited["id"], completed_at=moved.strftime("%Y-%m-%dT%H:%M:%S"), percentile=12.0)
    stranger = next(x for x in box.world.learners if x.in_degreed and x not in learners)
    # Inside the 30-day reconcile window whatever the date (a fixed date fell out of it a month later).
    three_days_ago = (datetime.now(UTC) - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%S")
    box.degreed.add_completion(stranger.email, f"imocha-{box.world.tests[1].test_id}", three_days_ago)

    result = reconcile(defs, instance)
    check = check_result(result)
    assert not check.passed, "an edited record is drift that remains after repair"
    restored = [c for c in box.degreed.state()["completions"] if c["user_email"] == learners[0].email]
    assert len(restored) == 1 and restored[0]["id"] != deleted["id"]
    assert restored[0]["percentile"] == deleted["percentile"]
    assert restored[0]["completed_at"] == deleted["completed_at"]

    with staging.get_engine(sqlite_url).connect() as conn:
        drift = {(r["kind"], r["record_key"]): r for r in staging.read_rows(conn, staging.sync_drift)}
        ledger = {r["record_key"]: r for r in staging.read_rows(conn, staging.sync_ledger)}
    test_id = box.world.tests[0].test_id
    missing = drift[("missing_in_degreed", f"{learners[0].email.lower()}|imocha-{test_id}")]
    assert missing["repaired"] is True
    changed = drift[("changed_in_degreed", f"{learners[1].email.lower()}|imocha-{test_id}")]
    assert changed["repaired"] is False and "completed_at: ours" in changed["detail"]
    assert f"Degreed '{moved:%Y-%m-%dT%H:%M:%SZ}'" in changed["detail"] and "percentile" not in changed["detail"]
    assert sum(1 for kind, _ in drift if kind == "unknown_to_us") == 1
    assert ledger[f"{learners[0].email.lower()}|imocha-{test_id}"]["degreed_id"] == restored[0]["id"]
    assert check.metadata["remaining"].value == 2


def test_a_staged_attempt_degreed_never_acknowledged_is_never_delivered_drift_and_is_sent(synced, sqlite_url):
    """The truth side: a retake whose run failed on Degreed writes (and was never retried) is drift, compared
    with the staged attempts rather than with the ledger, and the reconcile sends it."""
    from imocha_sandbox.server import FaultConfig

    box, defs, instance, learners = synced
    test = box.world.tests[0]
    retake = box.imocha.complete_attempt(test.test_id, learners[2].email, learners[2].name, bank_scores=91.0)
    box.degreed.faults.set(FaultConfig(error_5xx_share=1.0, retry_after_seconds=0, path_prefix="/api/v2/"))
    today = datetime.now(UTC).date().isoformat()
    failed = defs.resolve_job_def("completion_sync_job").execute_in_process(
        instance=instance, tags={"dagster/partition": today}, raise_on_error=False)
    box.degreed.faults.clear()
    assert not failed.success, "the run that could not deliver is red"
    mine = next(c for c in box.degreed.state()["completions"] if c["user_email"] == learners[2].email)
    assert mine["percentile"] != 91.0

    result = reconcile(defs, instance)
    with staging.get_engine(sqlite_url).connect() as conn:
        drift = staging.read_rows(conn, staging.sync_drift)
    assert result.success and check_result(result).passed, drift
    never = [d for d in drift if d["kind"] == "never_delivered"]
    key = f"{learners[2].email.lower()}|imocha-{test.test_id}"
    assert any(d["record_key"] == key and d["entity"] == "completion" and d["repaired"] for d in never), drift
    assert all(d["repaired"] for d in never) and any(d["entity"] == "skill_rating" for d in never)
    assert f"attempt {retake} is staged and planned but Degreed never acknowledged it" in next(
        d["detail"] for d in never if d["record_key"] == key)
    mine = next(c for c in box.degreed.state()["completions"] if c["user_email"] == learners[2].email)
    assert mine["percentile"] == 91.0
    assert check_result(reconcile(defs, instance)).passed
    with staging.get_engine(sqlite_url).connect() as conn:
        assert [d for d in staging.read_rows(conn, staging.sync_drift) if d["kind"] == "never_delivered"] == []

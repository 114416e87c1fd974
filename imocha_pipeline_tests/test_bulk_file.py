"""Bulk backfill through Degreed's Completions Template: export, SFTP upload, the simulator's overnight ingest,
the reconcile's confirmation, API follow-ups for what a file cannot carry, and API re-sends of what Degreed did not
take after the grace period; nothing is sent twice."""

from __future__ import annotations

import csv
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner

from imocha_pipeline import staging
from imocha_pipeline.cli import main
from imocha_pipeline.sync.core.ledger import ACKNOWLEDGED, SENT_BY_FILE
from imocha_sandbox.sftp_drop import SftpDrop
from sync_harness import SyncHarness

COMPLETIONS = "/api/v2/completions"
NOW = datetime.now(UTC).replace(microsecond=0)


def stage_attempts(engine, pairs: list[tuple], start_id: int = 5_000_000) -> list[dict]:
    """Finished attempts as the extract step stages them (never planned yet): one per (learner, test, moment)."""
    rows = []
    for offset, (learner, test, at) in enumerate(pairs):
        rows.append({"test_invitation_id": start_id + offset, "test_id": test.test_id, "test_name": test.name,
                     "learner_email": learner.email, "learner_name": learner.name, "status": "Complete",
                     "attempted_on": at, "attempt_date": at.date(), "score_percentage": float(40 + offset % 60),
                     "candidate_points": None, "total_points": None, "performance_category": None,
                     "time_taken_seconds": 600, "has_skills": True, "extracted_at": NOW, "planned_at": None})
    with engine.begin() as conn:
        staging.upsert(conn, staging.imocha_completions, rows)
    return rows


def stage_skill_scores(engine, attempts: list[dict]) -> None:
    """One skill score ("Python", 7 of 10 points) for each of ``attempts``."""
    rows = [{"test_invitation_id": a["test_invitation_id"], "skill_id": 11, "skill_name": "Python",
             "learner_email": a["learner_email"], "test_id": a["test_id"], "attempted_on": a["attempted_on"],
             "attempt_date": a["attempt_date"], "points": 7.0, "max_points": 10.0, "percent": 70.0,
             "extracted_at": NOW} for a in attempts]
    with engine.begin() as conn:
        staging.upsert(conn, staging.imocha_skill_scores, rows)


def ledger_rows(engine) -> list[dict]:
    with engine.connect() as conn:
        return staging.read_rows(conn, staging.sync_ledger, staging.sync_ledger.c.entity == "completion")


def completion_writes(box, since: int) -> Counter:
    return Counter(e.method for e in box.degreed.log.writes(since) if e.path.startswith(COMPLETIONS))


def rating_writes(box, since: int) -> int:
    return sum(1 for e in box.degreed.log.writes(since) if not e.path.startswith(COMPLETIONS))


def export(env: dict[str, str]):
    result = CliRunner().invoke(main, ["bulk-export"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture
def drop(tmp_path):
    with SftpDrop(tmp_path / "sftp_root", tmp_path / "keys") as server:
        (server.root / "inbound").mkdir()
        yield server


@pytest.mark.slow
def test_bulk_backfill_end_to_end(make_sandbox, staging_url, instance, drop, tmp_path, monkeypatch):
    box = make_sandbox(seed=41, tests=5, learners=403, missing_in_degreed=3, attempts=0, degreed_rate_limit=60000)
    box.degreed.file_drop_folder = str(drop.root / "inbound")
    harness = SyncHarness(box, staging_url, instance)
    harness.assessments()
    engine = staging.get_engine(staging_url)
    present = [x for x in box.world.learners if x.in_degreed]
    missing = [x for x in box.world.learners if not x.in_degreed]
    assert len(present) == 400 and len(missing) == 3
    # 1,997 completions of learners Degreed knows, some older than the 30-day reconcile window, and three of
    # learners whose Degreed accounts do not exist yet when the overnight job runs.
    pairs = [(learner, test, NOW - timedelta(days=1 + (i % 60), hours=i % 7, minutes=i % 50))
             for i, (learner, test) in enumerate((x, t) for x in present for t in box.world.tests)][:1997]
    pairs += [(learner, box.world.tests[0], NOW - timedelta(days=2, hours=3)) for learner in missing]
    staged = stage_attempts(engine, pairs)
    stage_skill_scores(engine, staged[0:100:5] + staged[-1:])  # 20 learners Degreed knows, one it does not yet
    env = {**drop.settings(folder="inbound"), "IMOCHA_PIPELINE_STAGING_DB_URL": staging_url,
           "IMOCHA_PIPELINE_BULK_TARGET": "sftp", "IMOCHA_PIPELINE_BULK_DIRECTORY": str(tmp_path / "files"),
           "IMOCHA_PIPELINE_BULK_CLIENT_NAME": "Acme Corp", "DEGREED_PROVIDER_CODE": "IMOCHA"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    mark = box.degreed.log.last_seq

    output = export(env)
    assert "2000 completions in" in output and "uploaded to inbound/Acme-Corp_Completions_File_" in output
    (uploaded,) = (drop.root / "inbound").iterdir()
    assert uploaded.name.startswith("Acme-Corp_Completions_File_") and len(uploaded.stem.rsplit("_", 1)[1]) == 14
    with uploaded.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["UserID", "CourseID", "CompletionDate", "ContentType", "Provider"], "no score column"
    assert len(rows) == 2000 and {r["ContentType"] for r in rows} == {"Assessment"}
    assert {r["Provider"] for r in rows} == {"IMOCHA"}
    first = next(r for r in rows if r["UserID"] == pairs[0][0].email.lower())
    assert first["CompletionDate"] == f"{pairs[0][2]:%Y%m%d}" and first["CourseID"] == f"imocha-{pairs[0][1].test_id}"
    assert (tmp_path / "files" / uploaded.name).read_bytes() == uploaded.read_bytes()
    ledger = ledger_rows(engine)
    assert {r["state"] for r in ledger} == {SENT_BY_FILE} and len(ledger) == 2000
    assert {r["file_name"] for r in ledger} == {uploaded.name}
    assert box.degreed.log.writes(mark) == [], "the export sends nothing by API"

    # Within the grace period neither a catch-up run nor a second export sends the records again, nor the skill
    # ratings of their attempts (they follow their completion).
    assert harness.catch_up().success
    assert "no completion to export" in export(env)
    assert box.degreed.log.writes(mark) == [] and len(list((drop.root / "inbound").iterdir())) == 1

    # Degreed's overnight job: 1,997 created without a score; three rows rejected (unknown learners).
    report = box.degreed.ingest_completion_files()
    assert report["created"] == 1997
    assert sorted(r["user_id"] for r in report["rejected"]) == sorted(x.email.lower() for x in missing)
    assert all("unknown user" in r["reason"] for r in report["rejected"])
    assert all(c["percentile"] is None for c in box.degreed.state()["completions"])
    for learner in missing:  # their accounts arrive after the overnight job
        box.degreed.add_user(learner.email)

    # The reconcile confirms what Degreed shows and sends the scores (and times) by API; the three wait.
    result = harness.run("reconcile_job")
    assert result.success
    drift = next(m for m in result.get_asset_materialization_events() if m.asset_key.path == ["sync_drift"])
    metadata = {k: v.value for k, v in drift.materialization.metadata.items()}
    assert metadata["file_confirmed"] == 1997 and metadata["file_waiting"] == 3
    assert metadata["file_followup_updated"] == 1997 and metadata["remaining"] == 0
    assert completion_writes(box, mark) == {"PATCH": 1997}
    assert rating_writes(box, mark) == 20 and metadata["file_skill_ratings_created"] == 20
    states = Counter(r["state"] for r in ledger_rows(engine))
    assert states == {ACKNOWLEDGED: 1997, SENT_BY_FILE: 3}

    # Past the grace period the three go by API (after a read of Degreed), once.
    monkeypatch.setenv("IMOCHA_PIPELINE_BULK_GRACE_HOURS", "0")
    result = harness.run("reconcile_job")
    assert result.success
    assert completion_writes(box, mark) == {"PATCH": 1997, "POST": 3}
    assert rating_writes(box, mark) == 21
    assert {r["state"] for r in ledger_rows(engine)} == {ACKNOWLEDGED}

    # Nothing more to send, by any path; Degreed holds each completion once, with its score and time.
    assert harness.run("reconcile_job").success and harness.catch_up().success
    assert "no completion to export" in export(env)
    assert completion_writes(box, mark) == {"PATCH": 1997, "POST": 3}
    assert len(box.degreed.log.writes(mark)) == 2000 + 21
    assert len(box.degreed.state()["skill_ratings"]) == 21
    held = box.degreed.state()["completions"]
    assert len(held) == 2000 and len({(c["user_email"], c["content_external_id"]) for c in held}) == 2000
    assert all(c["percentile"] is not None for c in held)
    wanted = {(learner.email.lower(), f"imocha-{test.test_id}"): at for learner, test, at in pairs}
    assert all(datetime.fromisoformat(c["completed_at"].replace("Z", "+00:00"))
               == wanted[(c["user_email"].lower(), c["content_external_id"])] for c in held)

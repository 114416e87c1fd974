"""The parts of the bulk file path on their own: the simulator's overnight ingest (date updates, rejected rows,
files it must not read), the SFTP upload's refusals and what a failed upload leaves, the grace period in the
outstanding records, and the Dagster asset."""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta

import dagster as dg
import pandas as pd
import pytest
import requests
from click.testing import CliRunner

from imocha_pipeline import staging
from imocha_pipeline.cli import main
from imocha_pipeline.defs.bulk import degreed_completions_file
from imocha_pipeline.defs.resources import resources_from_settings
from imocha_pipeline.sync.bulk.template import file_name, template_row, to_csv
from imocha_pipeline.sync.core.ledger import PLANNED, SENT_BY_FILE, Ledger, Source
from imocha_pipeline.sync.core.outstanding import NOT_DUE_FILE, Scope, outstanding
from imocha_pipeline.sync.core.plan_store import stage_latest
from imocha_pipeline.sync.entities import COMPLETIONS, SKILL_RATINGS
from imocha_sandbox.degreed import DegreedSimulator
from imocha_sandbox.seed import generate_world
from imocha_sandbox.sftp_drop import SftpDrop
from sync_harness import UNREACHABLE_SETTINGS

T0 = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)


# -- the simulator's overnight job ---------------------------------------------------------------------------

def write_file(folder, name: str, rows: list[dict[str, str]]) -> None:
    (folder / name).write_text(to_csv(rows), newline="")


def row(user: str, course: str, day: str, provider: str = "IMOCHA", kind: str = "Assessment") -> dict[str, str]:
    return {"UserID": user, "CourseID": course, "CompletionDate": day, "ContentType": kind, "Provider": provider}


def test_the_simulator_ingests_template_files_like_degreed(tmp_path):
    world = generate_world(seed=11, tests=2, learners=6, attempts=0, missing_in_degreed=1)
    sim = DegreedSimulator(world, read_shape="echo")
    content = [sim.add_assessment(f"imocha-{t.test_id}")["external_id"] for t in world.tests]
    known = [x for x in world.learners if x.in_degreed]
    stranger = next(x for x in world.learners if not x.in_degreed)
    user = next(u for u in sim.users.values() if u.email == known[1].email)
    write_file(tmp_path, "Acme_Completions_File_20261120.csv", [
        row(known[0].email, content[0], "20261118"),
        row(user.employee_id, content[1], "20261119"),  # UserID as the employee id
        row(stranger.email, content[0], "20261118"),
        row(known[0].email, "imocha-999", "20261118"),
        row(known[0].email, content[1], "2026-11-18"),
        row(known[2].email, content[1], "20261118", provider="NOPE"),
    ])
    (tmp_path / ".Acme_Completions_File_20261121.csv.part").write_text("half a file")
    (tmp_path / "notes.csv").write_text("UserID\n")
    report = sim.ingest_completion_files(str(tmp_path))
    assert (report["created"], report["updated"], report["unchanged"]) == (2, 0, 0)
    reasons = sorted((r["line"], " ".join(r["reason"].split(" ")[:2])) for r in report["rejected"])
    assert reasons == [(4, "unknown user"), (5, "unknown content"), (6, "CompletionDate '2026-11-18'"),
                       (7, "unknown provider")]
    completions = {(c.user_email, c.content_external_id): c for c in sim.completions.values()}
    first = completions[(known[0].email, content[0])]
    assert first.completed_at == datetime(2026, 11, 18, tzinfo=UTC) and first.percentile is None
    assert (known[1].email, content[1]) in completions
    # Read once: the file moved to processed/; hidden, partial and non-template files stay unread.
    assert sorted(p.name for p in tmp_path.iterdir()) == [".Acme_Completions_File_20261121.csv.part", "notes.csv",
                                                          "processed"]
    assert sim.ingest_completion_files(str(tmp_path))["files"] == []
    # A re-upload with another date updates the date; the same date changes nothing; still one completion each.
    write_file(tmp_path, "Acme_Completions_File_20261122093000.csv", [
        row(known[0].email, content[0], "20261121"), row(known[1].email, content[1], "20261119")])
    again = sim.ingest_completion_files(str(tmp_path))
    assert (again["created"], again["updated"], again["unchanged"], again["rejected"]) == (0, 1, 1, [])
    assert first.completed_at == datetime(2026, 11, 21, tzinfo=UTC) and len(sim.completions) == 2
    assert sim.log.writes() == [], "an ingest is not an API request"


def test_the_ingest_control_call_over_http(make_sandbox, tmp_path):
    box = make_sandbox(seed=5, tests=1, learners=3, attempts=0, missing_in_degreed=0)
    external = f"imocha-{box.world.tests[0].test_id}"
    box.degreed.add_assessment(external)
    write_file(tmp_path, "Acme_Completions_File_20261120.csv", [row(box.world.learners[0].email, external, "20261120")])
    box.degreed.file_drop_folder = str(tmp_path)
    answer = requests.post(f"{box.degreed_url}/_sandbox/files/ingest", json={}, timeout=10).json()
    assert answer["created"] == 1 and answer["files"][0]["file"] == "Acme_Completions_File_20261120.csv"
    assert requests.get(f"{box.degreed_url}/_sandbox/files/reports", timeout=10).json()[0]["created"] == 1


# -- the template and the outstanding records ------------------------------------------------------------------

def test_template_rows_and_file_names():
    assert file_name("Acme Corp & Co.", T0) == "Acme-Corp-Co_Completions_File_20261120093000.csv"
    payload = {"user_id": "ana@example.com", "content_id": "imocha-7", "completed_at": "2026-11-20T23:59:59Z",
               "percentile": 88.0}
    assert template_row(payload, "IMOCHA") == {"UserID": "ana@example.com", "CourseID": "imocha-7",
                                               "CompletionDate": "20261120", "ContentType": "Assessment",
                                               "Provider": "IMOCHA"}
    header = to_csv([template_row(payload, "IMOCHA")]).splitlines()[0]
    assert header == "UserID,CourseID,CompletionDate,ContentType,Provider"


def plan_rows(engine) -> None:
    completion = {"record_key": "ana@example.com|imocha-7", "action": "create", "reason": "new", "changed_fields": [],
                  "degreed_id": None, "payload_hash": "h1", "user_id": "ana@example.com",
                  "user_identifier_type": "Email", "content_id": "imocha-7", "content_id_type": "ExternalId",
                  "content_type": "Assessment", "test_invitation_id": 71, "completed_at": "2026-11-20T09:30:00Z",
                  "percentile": 88.0, "source_id": 71, "source_at": T0, "source_day": T0.date()}
    rating = {"record_key": "ana@example.com|Python", "action": "create", "reason": "new", "changed_fields": [],
              "degreed_id": None, "payload_hash": "r1", "user_id": "ana@example.com", "user_identifier_type": "Email",
              "skill_name": "Python", "rating_type": "Evaluation", "test_invitation_id": 71, "percent": 70.0,
              "rating": 5, "rated_at": "2026-11-20T09:30:00Z", "source_id": 71, "source_at": T0,
              "source_day": T0.date()}
    stage_latest(engine, "completion", pd.DataFrame([completion]), COMPLETIONS.all_fields, "run-x")
    stage_latest(engine, "skill_rating", pd.DataFrame([rating]), SKILL_RATINGS.all_fields, "run-x")
    with engine.begin() as conn:
        staging.upsert(conn, staging.degreed_assessments, [{"degreed_id": "A-7", "external_id": "imocha-7",
                                                            "obsolete": False, "snapshot_at": staging.utcnow()}])


def test_a_record_in_a_file_waits_out_the_grace_period_then_goes_by_api_after_a_read(staging_url, monkeypatch):
    engine = staging.get_engine(staging_url)
    plan_rows(engine)
    due = outstanding(engine, COMPLETIONS, Scope()).due
    record = due.iloc[0].to_dict()
    ledger = Ledger(engine, "completion", "bulk-1")
    sent = staging.utcnow() - timedelta(hours=10)
    marked = ledger.mark_sent_by_file([{"record_key": record["record_key"], "payload_hash": "h1",
                                        "payload": {f: record[f] for f in COMPLETIONS.all_fields},
                                        "source": Source(T0, 71)}], "Acme_Completions_File_20261120093000.csv", sent)
    assert marked == {record["record_key"]}
    # A second export (or another run) cannot mark it again, nor can a claim for an older attempt.
    assert ledger.mark_sent_by_file([{"record_key": record["record_key"], "payload_hash": "h1", "payload": {},
                                      "source": Source(T0, 71)}], "other.csv", sent) == set()
    monkeypatch.setenv("IMOCHA_PIPELINE_BULK_GRACE_HOURS", "12")
    waiting = outstanding(engine, COMPLETIONS, Scope())
    assert waiting.due.empty and waiting.waiting[NOT_DUE_FILE] == 1
    ratings = outstanding(engine, SKILL_RATINGS, Scope())
    assert ratings.due.empty and ratings.waiting[NOT_DUE_FILE] == 1, "the attempt's skill rating follows it"
    monkeypatch.setenv("IMOCHA_PIPELINE_BULK_GRACE_HOURS", "9")
    late = outstanding(engine, COMPLETIONS, Scope()).due
    assert list(late["action"]) == ["create"] and "sent_by_file" in late.iloc[0]["reason"]
    assert ledger.get(record["record_key"])["attempts"] == 1, "the file counts: the API send reads Degreed first"
    assert len(outstanding(engine, SKILL_RATINGS, Scope()).due) == 1
    # A failed upload takes the marks back.
    assert ledger.unmark_file("Acme_Completions_File_20261120093000.csv") == 1
    assert ledger.get(record["record_key"])["state"] == PLANNED


def test_two_exports_in_the_same_second_write_two_files(staging_url, tmp_path):
    """Two exports whose file names fall in the same second (a command beside the asset's run, a new completion
    outstanding in between): the second takes the next second's name instead of writing over the first file, each
    record is in one file only, and each ledger row names the file it is in."""
    from imocha_pipeline.sync.bulk.export import BulkSettings, export_completions

    engine = staging.get_engine(staging_url)
    plan_rows(engine)
    bulk = BulkSettings(client_name="Acme", provider="IMOCHA", directory=tmp_path / "files")
    first = export_completions(engine, bulk, "bulk-1", now=T0)
    bob = {"record_key": "bob@example.com|imocha-7", "action": "create", "reason": "new", "changed_fields": [],
           "degreed_id": None, "payload_hash": "h2", "user_id": "bob@example.com", "user_identifier_type": "Email",
           "content_id": "imocha-7", "content_id_type": "ExternalId", "content_type": "Assessment",
           "test_invitation_id": 72, "completed_at": "2026-11-20T09:31:00Z", "percentile": 61.0, "source_id": 72,
           "source_at": T0, "source_day": T0.date()}
    stage_latest(engine, "completion", pd.DataFrame([bob]), COMPLETIONS.all_fields, "run-y")
    second = export_completions(engine, bulk, "bulk-2", now=T0)
    assert first.records == second.records == 1
    assert first.file_name == "Acme_Completions_File_20261120093000.csv"
    assert second.file_name == "Acme_Completions_File_20261120093001.csv"
    users = {}
    for path in sorted((tmp_path / "files").iterdir()):
        with path.open(newline="") as handle:
            users[path.name] = [r["UserID"] for r in csv.DictReader(handle)]
    assert users == {first.file_name: ["ana@example.com"], second.file_name: ["bob@example.com"]}
    ledger = Ledger(engine, "completion")
    assert ledger.get("ana@example.com|imocha-7")["file_name"] == first.file_name
    assert ledger.get("bob@example.com|imocha-7")["file_name"] == second.file_name
    # A third export in that second with nothing left to send reserves no name and writes no file.
    assert export_completions(engine, bulk, "bulk-3", now=T0).file_name is None
    assert len(list((tmp_path / "files").iterdir())) == 2
    # Another host (its own directory, the same SFTP folder): the names are reserved in the database, not by the files.
    stage_latest(engine, "completion", pd.DataFrame([{**bob, "record_key": "eve@example.com|imocha-7",
                                                      "user_id": "eve@example.com", "test_invitation_id": 73,
                                                      "source_id": 73}]), COMPLETIONS.all_fields, "run-z")
    elsewhere = BulkSettings(client_name="Acme", provider="IMOCHA", directory=tmp_path / "other-host")
    assert export_completions(engine, elsewhere, "bulk-4", now=T0).file_name == \
        "Acme_Completions_File_20261120093002.csv"


# -- the upload and the asset -----------------------------------------------------------------------------------

@pytest.fixture
def drop(tmp_path):
    with SftpDrop(tmp_path / "sftp_root", tmp_path / "keys") as server:
        yield server


def test_an_upload_the_server_refuses_leaves_the_records_outstanding(staging_url, drop, tmp_path):
    engine = staging.get_engine(staging_url)
    plan_rows(engine)
    stranger = SftpDrop(tmp_path / "other_root", tmp_path / "other_keys").start()  # another host key
    stranger.stop()
    env = {**drop.settings(), "DEGREED_SFTP_KNOWN_HOSTS": str(stranger.known_hosts),
           "IMOCHA_PIPELINE_STAGING_DB_URL": staging_url, "IMOCHA_PIPELINE_BULK_TARGET": "sftp",
           "IMOCHA_PIPELINE_BULK_DIRECTORY": str(tmp_path / "files")}
    result = CliRunner().invoke(main, ["bulk-export"], env=env)
    assert result.exit_code == 1 and "the records stay outstanding" in result.output
    assert "Host key is not trusted" in result.output or "not trusted" in result.output.lower()
    assert list(drop.root.iterdir()) == [] and list((tmp_path / "files").iterdir()) == []
    assert Ledger(engine, "completion").get("ana@example.com|imocha-7")["state"] == PLANNED
    # With the right known_hosts it goes, and a key the server does not know is refused.
    env["DEGREED_SFTP_KNOWN_HOSTS"] = str(drop.known_hosts)
    ok = CliRunner().invoke(main, ["bulk-export"], env=env)
    assert ok.exit_code == 0, ok.output
    (uploaded,) = drop.root.iterdir()
    assert Ledger(engine, "completion").get("ana@example.com|imocha-7")["file_name"] == uploaded.name
    with uploaded.open(newline="") as handle:
        assert [r["UserID"] for r in csv.DictReader(handle)] == ["ana@example.com"]


def test_the_asset_writes_the_file_to_the_directory_and_honours_the_dry_run(staging_url, tmp_path, monkeypatch,
                                                                            instance):
    engine = staging.get_engine(staging_url)
    plan_rows(engine)
    monkeypatch.setenv("IMOCHA_PIPELINE_BULK_CLIENT_NAME", "Acme")
    resources = resources_from_settings(UNREACHABLE_SETTINGS, staging_url)
    config = {"ops": {"degreed_completions_file": {"config": {"directory": str(tmp_path / "out")}}}}
    monkeypatch.setenv("IMOCHA_PIPELINE_DRY_RUN", "true")
    dry = dg.materialize([degreed_completions_file], resources=resources, run_config=config, instance=instance)
    meta = dry.asset_materializations_for_node("degreed_completions_file")[0].metadata
    assert meta["records"].value == 1 and meta["dry_run"].value is True and not (tmp_path / "out").exists()
    monkeypatch.setenv("IMOCHA_PIPELINE_DRY_RUN", "false")
    real = dg.materialize([degreed_completions_file], resources=resources, run_config=config, instance=instance)
    meta = real.asset_materializations_for_node("degreed_completions_file")[0].metadata
    (written,) = (tmp_path / "out").iterdir()
    assert meta["file_name"].value == written.name and written.name.startswith("Acme_Completions_File_")
    assert meta["target"].value == "directory" and meta["records"].value == 1
    assert Ledger(engine, "completion").get("ana@example.com|imocha-7")["state"] == SENT_BY_FILE

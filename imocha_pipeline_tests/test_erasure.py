"""Right to erasure (``imocha-pipeline forget``, ``forget_job``) against the sandbox, on SQLite and PostgreSQL: the
learner's personal data leaves every staging table (checked by scanning every text column of every table), iMocha
masks the attempts, Degreed's records are deleted once, the learner is not staged or sent again (sync run, catch-up)
until the erasure is lifted, a dry run changes nothing, and the key setting is required."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from imocha_pipeline import staging
from imocha_pipeline.cli import main
from imocha_pipeline.sync.erasure.registry import KEY_SETTING, email_hmac, marker
from sync_harness import SyncHarness

KEY = "test-erasure-key-0123456789"
FULL_REFRESH = {"ops": {"imocha_attempts": {"config": {"full_refresh": True}}}}


@pytest.fixture
def sandbox(make_sandbox):
    return make_sandbox(seed=41, tests=2, learners=6, attempts=0, missing_in_degreed=1, degreed_rate_limit=6000)


def _forget(sandbox, staging_url, *args, key: str | None = KEY):
    env = {**sandbox.env(), "IMOCHA_PIPELINE_STAGING_DB_URL": staging_url, KEY_SETTING: key}
    return CliRunner().invoke(main, ["forget", *args], env=env)


def _dump(engine) -> dict[str, list[tuple]]:
    """Every row of every table in the staging schema, as text (views apart)."""
    names = sa.inspect(engine).get_table_names()
    dump = {}
    with engine.connect() as conn:
        for name in sorted(names):
            table = sa.Table(name, sa.MetaData(), autoload_with=conn)
            dump[name] = sorted(tuple("" if v is None else str(v) for v in row)
                                for row in conn.execute(sa.select(table)))
    return dump


def _holding(engine, *needles: str) -> list[str]:
    """``table.column`` of every value in any table that contains one of ``needles`` (case-insensitive)."""
    found = []
    for table, rows in _dump(engine).items():
        for row in rows:
            if any(n.lower() in value.lower() for value in row for n in needles):
                found.append(f"{table}: {row}")
    return found


def _world(h: SyncHarness, sandbox):
    """Two learners synced today (completions and skill ratings in Degreed), the Degreed snapshot read, and a
    callback, a quarantine row and a drift row about the one to erase."""
    h.assessments()
    erasee, other = [learner for learner in sandbox.world.learners if learner.in_degreed][:2]
    test = sandbox.world.tests[0]
    first = sandbox.imocha.complete_attempt(test.test_id, erasee.email, erasee.name, bank_scores=81.0)
    sandbox.imocha.complete_attempt(test.test_id, other.email, other.name, bank_scores=64.0)
    assert h.completions().success
    assert h.run("reconcile_job").success
    engine = staging.get_engine(h.staging_url)
    now = datetime.now(UTC)
    key = f"{erasee.email.lower()}|imocha-{test.test_id}"
    with engine.begin() as conn:
        conn.execute(staging.callback_inbox.insert(), [
            {"test_invitation_id": first, "status": "Complete", "received_at": now, "processed_at": now,
             "payload": {"TestInvitationId": first, "CandidateEmailId": erasee.email.upper(), "Status": "Complete"}}])
        conn.execute(staging.sync_quarantine.insert(), [
            {"entity": "completion", "record_key": key + "-old", "kind": "rejected", "reason": "r", "status": "open",
             "attempts": 1, "first_seen_at": now, "last_seen_at": now, "bad_value": erasee.email}])
        conn.execute(staging.sync_drift.insert(), [
            {"entity": "completion", "record_key": key, "kind": "changed_in_degreed", "detail": "edited",
             "repaired": False, "found_at": now}])
    return erasee, other, test, first


def _ledger(h) -> list[dict]:
    return h.rows(staging.sync_ledger)


def _synced_with_the_key(sandbox, url, instance, monkeypatch):
    """The world of ``_world`` with the key and the sandbox's settings in the environment (the Degreed client is
    built from it); the learner to erase and their records in Degreed (Degreed id -> entity)."""
    monkeypatch.setenv(KEY_SETTING, KEY)
    for name, value in sandbox.env().items():
        monkeypatch.setenv(name, value)
    h = SyncHarness(sandbox, url, instance)
    erasee, *_ = _world(h, sandbox)
    ours = {r["degreed_id"]: r["entity"] for r in _ledger(h) if r["record_key"].startswith(erasee.email.lower())}
    return h, erasee, staging.get_engine(url), ours


def test_forget_everywhere_then_relisted_not_sent_until_undone(sandbox, staging_url, instance, monkeypatch):
    monkeypatch.setenv(KEY_SETTING, KEY)  # the pipeline's runs need the key to recognise an erased learner
    h = SyncHarness(sandbox, staging_url, instance)
    erasee, other, _, first = _world(h, sandbox)
    engine = staging.get_engine(staging_url)
    email = erasee.email
    assert _holding(engine, email)  # the world holds the email in many tables
    ours = [r for r in _ledger(h) if r["record_key"].startswith(email.lower() + "|")]
    ids = {r["degreed_id"] for r in ours}
    assert {r["entity"] for r in ours} == {"completion", "skill_rating"} and None not in ids
    gone_already = next(r["degreed_id"] for r in ours if r["entity"] == "skill_rating")
    sandbox.degreed.delete_skill_rating(gone_already)  # someone deleted one in Degreed: a 404, reported

    # A dry run reports and changes nothing, here or in either system.
    before, imocha_seq, degreed_seq = _dump(engine), sandbox.imocha.log.last_seq, sandbox.degreed.log.last_seq
    dry = _forget(sandbox, staging_url, "--email", email, "--in-imocha", "--in-degreed", "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "would erase" in dry.output and "nothing changed" in dry.output
    assert "sync_ledger" in dry.output and f"to_delete={{'completion': 1, 'skill_rating': {len(ours) - 1}}}" \
        in dry.output
    assert _dump(engine) == before
    assert sandbox.imocha.log.entries(imocha_seq) == [] and sandbox.degreed.log.entries(degreed_seq) == []

    result = _forget(sandbox, staging_url, "--email", f"  {email.upper()} ", "--in-imocha", "--in-degreed")
    assert result.exit_code == 0, result.output
    assert "accepted=True" in result.output and "already_gone={'skill_rating': 1}" in result.output

    # Local: the email, the name and the scores are nowhere; the ledger keeps the hashed identity.
    assert _holding(engine, email, erasee.name) == []
    hashed = marker(email_hmac(email, KEY.encode()))
    rows = [r for r in _ledger(h) if r["record_key"].startswith(hashed + "|")]
    assert len(rows) == len(ours) and {r["state"] for r in rows} == {"deleted"}
    assert {r["degreed_id"] for r in rows} == ids and all(r["payload"] is None for r in rows)
    (registered,) = h.rows(staging.erased_learners)
    assert registered["email_hmac"] == hashed.split(":")[1] and registered["degreed_deletion_requested_at"]
    tombstone = next(r for r in h.rows(staging.imocha_completions) if r["test_invitation_id"] == first)
    assert tombstone["learner_email"] == hashed and tombstone["score_percentage"] is None
    assert any(r["learner_email"] == other.email for r in h.rows(staging.imocha_completions))  # others untouched

    # Analyst views still work and show the learner as erased.
    with engine.connect() as conn:
        status = {r.learner_email: r.sync_status for r in conn.execute(sa.text("SELECT * FROM v_sync_status"))}
        ratings = {r.learner_email for r in conn.execute(sa.text("SELECT * FROM v_skill_ratings_current"))}
        for view in ("v_open_quarantine", "v_drift_last_reconcile", "v_unmapped_skills"):
            conn.execute(sa.text(f"SELECT * FROM {view}")).all()
    assert status[hashed] == "deleted" and status[other.email.lower()] == "synced"
    assert hashed in ratings and email.lower() not in ratings

    # iMocha masked the attempt; Degreed got exactly one DELETE per record still there.
    invitation = sandbox.imocha.invitations[first]
    assert invitation.email != email and invitation.name != erasee.name
    deletes = [(w.method, w.path) for w in h.writes(degreed_seq)]
    expected = {("DELETE", f"/api/v2/{'completions' if r['entity'] == 'completion' else 'skill-ratings'}/"
                           f"{r['degreed_id']}") for r in ours}
    assert sorted(deletes) == sorted(expected) and len(deletes) == len(ours)
    state = h.state()
    assert not ids & ({c["id"] for c in state["completions"]} | {r["id"] for r in state["skill_ratings"]})

    # A rerun deletes nothing twice; iMocha now has no records of the email: reported, not fatal.
    seq = sandbox.degreed.log.last_seq
    again = _forget(sandbox, staging_url, "--email", email, "--in-imocha", "--in-degreed")
    assert again.exit_code == 0, again.output
    assert "accepted=False" in again.output and "No records found" in again.output and email not in again.output
    assert h.writes(seq) == []

    # The masked attempts listed again, and a new attempt of the learner: neither staged nor sent, by any path.
    second_test = sandbox.world.tests[1]
    later = sandbox.imocha.complete_attempt(second_test.test_id, erasee.email, erasee.name, bank_scores=90.0)
    with engine.begin() as conn:  # its callback came in (the endpoint stores what iMocha sends)
        conn.execute(staging.callback_inbox.insert(), [
            {"test_invitation_id": later, "status": "Complete", "received_at": datetime.now(UTC),
             "payload": {"TestInvitationId": later, "CandidateEmailId": email, "CandidateName": erasee.name}}])
    seq = sandbox.degreed.log.last_seq
    assert h.completions(run_config=FULL_REFRESH).success
    assert h.catch_up().success
    assert h.writes(seq) == []
    assert later not in {r["test_invitation_id"] for r in h.rows(staging.imocha_completions)}
    assert _holding(engine, email, erasee.name, "masked") == []

    # Lifted by an operator: the learner's attempts are staged and sent again (the one iMocha masked stays erased).
    undo = _forget(sandbox, staging_url, "--undo", "--email", email)
    assert undo.exit_code == 0, undo.output
    assert "iMocha masked the erased attempts" in undo.output
    (lifted,) = h.rows(staging.erased_learners)  # the request to delete in Degreed ends with the erasure
    assert lifted["lifted_at"] and lifted["degreed_deletion_requested_at"] is None
    assert h.completions().success
    assert _holding(engine, "masked") == []
    sent = [(w.method, w.path) for w in h.writes(seq)]
    assert ("POST", "/api/v2/completions") in sent
    assert later in {r["test_invitation_id"] for r in h.rows(staging.imocha_completions)}
    assert any(r["record_key"] == f"{email.lower()}|imocha-{second_test.test_id}" and r["state"] == "acknowledged"
               for r in _ledger(h))


def test_local_erasure_holds_for_the_catch_up_and_a_relisted_attempt(sandbox, staging_url, instance,
                                                                     monkeypatch):
    """Without --in-imocha the old attempt comes back from Retrieve Invites with the real email: not re-staged. A
    record that waited for its learner is not sent by the catch-up once the learner appears in Degreed."""
    monkeypatch.setenv(KEY_SETTING, KEY)
    h = SyncHarness(sandbox, staging_url, instance)
    h.assessments()
    waiting = h.learner(in_degreed=False)
    test = sandbox.world.tests[0]
    attempt = sandbox.imocha.complete_attempt(test.test_id, waiting.email, waiting.name, bank_scores=70.0)
    assert h.completions().success
    assert any(r["kind"] == "waiting_for_learner" for r in h.rows(staging.sync_quarantine))
    engine = staging.get_engine(staging_url)

    result = _forget(sandbox, staging_url, "--email", waiting.email)
    assert result.exit_code == 0, result.output
    assert "iMocha: not asked" in result.output and "Degreed: not asked" in result.output
    assert _holding(engine, waiting.email, waiting.name) == []

    sandbox.degreed.add_user(waiting.email)
    seq = sandbox.degreed.log.last_seq
    assert h.catch_up().success
    assert h.completions(run_config=FULL_REFRESH).success  # the attempt listed again, with its real email
    assert h.catch_up().success
    assert h.writes(seq) == []
    assert _holding(engine, waiting.email, waiting.name) == []
    assert sandbox.imocha.invitations[attempt].email == waiting.email  # iMocha was not asked

    assert _forget(sandbox, staging_url, "--undo", "--email", waiting.email).exit_code == 0
    assert h.completions().success
    assert ("POST", "/api/v2/completions") in [(w.method, w.path) for w in h.writes(seq)]


def test_forget_refuses_without_the_key_and_changes_nothing(sandbox, sqlite_url, instance):
    h = SyncHarness(sandbox, sqlite_url, instance)
    erasee, *_ = _world(h, sandbox)
    engine = staging.get_engine(sqlite_url)
    before = _dump(engine)
    for key in (None, "short"):
        result = _forget(sandbox, sqlite_url, "--email", erasee.email, "--in-degreed", key=key)
        assert result.exit_code != 0
        assert KEY_SETTING in result.output
        assert "short" not in result.output  # a secret's value is never repeated
    bad = _forget(sandbox, sqlite_url, "--email", "not-an-email")
    assert bad.exit_code != 0 and "not an email address: 'not-an-email'" in bad.output
    assert _dump(engine) == before
    run = h.run("forget_job", run_config={"ops": {"forget_learner": {"config": {"email": erasee.email}}}})
    assert not run.success and KEY_SETTING in str(run.failure_data_for_node("forget_learner").error)

    # Once a learner is erased, a sync run without the key cannot tell who is erased: it stops, naming the setting.
    assert _forget(sandbox, sqlite_url, "--email", erasee.email).exit_code == 0
    run = h.completions()
    assert not run.success and KEY_SETTING in str(run.failure_data_for_node("imocha_attempts").error)


def test_forget_job_reports_in_its_metadata_and_unknown_email_is_not_fatal(sandbox, sqlite_url, instance,
                                                                             monkeypatch):
    monkeypatch.setenv(KEY_SETTING, KEY)
    h = SyncHarness(sandbox, sqlite_url, instance)
    erasee, *_ = _world(h, sandbox)
    engine = staging.get_engine(sqlite_url)

    def run(**config):
        result = h.run("forget_job", run_config={"ops": {"forget_learner": {"config": config}}})
        assert result.success
        output = next(e for e in result.all_events if e.event_type_value == "STEP_OUTPUT")
        return {k: v.value for k, v in output.event_specific_data.metadata.items()}

    before = _dump(engine)
    dry = run(email=erasee.email, dry_run=True, in_degreed=True)
    assert _dump(engine) == before
    assert dry["dry_run"] is True and dry["local.imocha_completions"] == 1 and dry["local.sync_ledger"] >= 2
    assert dry["degreed"]["to_delete"]["completion"] == 1

    unknown = run(email="nobody@example.org", in_imocha=True)
    assert unknown["imocha"] == {"requested": True, "accepted": False,
                                 "answer": "No records found for given Email address"}
    assert unknown["local.sync_ledger"] == 0

    done = run(email=erasee.email, in_degreed=True)
    assert done["local.imocha_completions"] == 1 and done["degreed"]["deleted"]["completion"] == 1
    assert done["learner"] == marker(email_hmac(erasee.email, KEY.encode()))
    assert _holding(engine, erasee.email) == []


def test_the_imocha_client_reports_an_unknown_email(sandbox):
    from imocha_pipeline.clients.imocha import ImochaClient

    env = sandbox.env()
    client = ImochaClient(env["IMOCHA_BASE_URL"], env["IMOCHA_API_KEY"])
    learner = sandbox.world.learners[0]
    attempt = sandbox.imocha.complete_attempt(sandbox.world.tests[0].test_id, learner.email, learner.name,
                                              bank_scores=50.0, attempted_on=datetime.now(UTC) - timedelta(hours=1))
    assert client.request_erasure(learner.email).accepted
    assert sandbox.imocha.invitations[attempt].email.startswith("masked-")
    again = client.request_erasure(learner.email)
    assert (again.accepted, again.found) == (False, False)
    assert learner.email not in again.message


def test_a_failed_degreed_delete_is_finished_by_a_rerun_and_nothing_is_deleted_twice(sandbox, sqlite_url, instance,
                                                                                        monkeypatch):
    """Degreed fails every skill-rating DELETE (503; one send each, to keep the test short): the completion is
    deleted and recorded, the failures reported (the command would exit 1); the rerun deletes the rest, nothing
    twice."""
    from imocha_pipeline.clients.http.policy import RetryPolicy
    from imocha_pipeline.connections import shared_degreed_client
    from imocha_pipeline.settings import DegreedSettings
    from imocha_pipeline.sync.erasure.forget import forget
    from imocha_sandbox.server import FaultConfig

    h, erasee, engine, ours = _synced_with_the_key(sandbox, sqlite_url, instance, monkeypatch)

    def client():
        return shared_degreed_client(DegreedSettings.from_env(), sqlite_url,
                                     session_options={"retry": RetryPolicy(max_attempts=1)})

    seq = sandbox.degreed.log.last_seq
    sandbox.degreed.faults.set(FaultConfig(error_5xx_share=1.0, path_prefix="/api/v2/skill-ratings/",
                                           methods=["DELETE"]))
    first = forget(engine, erasee.email, in_degreed=True, degreed_client=client)
    assert first.failed and len(first.degreed["failed"]) == len(ours) - 1
    assert first.degreed["deleted"] == {"completion": 1}
    states = {r["degreed_id"]: r["state"] for r in _ledger(h) if r["degreed_id"] in ours}
    assert states == {i: "deleted" if entity == "completion" else "erased" for i, entity in ours.items()}

    sandbox.degreed.faults.clear()
    again = forget(engine, erasee.email, in_degreed=True, degreed_client=client)
    assert not again.failed and again.degreed["deleted"] == {"skill_rating": len(ours) - 1}
    done = [w.path.rsplit("/", 1)[1] for w in h.writes(seq) if w.method == "DELETE" and w.status in (200, 204)]
    assert sorted(done) == sorted(ours)  # each record deleted once, over both runs
    assert {r["state"] for r in _ledger(h) if r["degreed_id"] in ours} == {"deleted"}


def test_a_malformed_email_listed_after_an_erasure_does_not_stop_the_run(sandbox, sqlite_url, instance,
                                                                          monkeypatch):
    """The erasure check hashes every listed email; one that no erasure can name (a space inside) is not a reason
    to fail the run: the other attempts are staged and sent, the malformed one is held back by validation."""
    monkeypatch.setenv(KEY_SETTING, KEY)
    h = SyncHarness(sandbox, sqlite_url, instance)
    erasee, other, test, _ = _world(h, sandbox)
    assert _forget(sandbox, sqlite_url, "--email", erasee.email).exit_code == 0
    bad_id = sandbox.imocha.complete_attempt(test.test_id, "not an@email.com", "Odd Entry", bank_scores=50.0)
    good_id = sandbox.imocha.complete_attempt(sandbox.world.tests[1].test_id, other.email, other.name,
                                              bank_scores=70.0)
    run = h.completions()
    assert run.success
    staged = {r["test_invitation_id"] for r in h.rows(staging.imocha_completions)}
    assert good_id in staged
    acknowledged = {r["record_key"] for r in _ledger(h) if r["state"] == "acknowledged"}
    assert f"{other.email.lower()}|imocha-{sandbox.world.tests[1].test_id}" in acknowledged
    assert not any("not an@email.com" in key for key in acknowledged)
    held = {r["record_key"]: r["reason"] for r in h.rows(staging.sync_quarantine) if r["kind"] == "validation"}
    assert "must be an email address (got 'not an@email.com')" in held[f"attempt:{bad_id}"]


def test_what_a_run_in_flight_writes_back_after_the_erasure_is_erased_again_by_the_reconcile(
        sandbox, staging_url, instance, monkeypatch):
    """The race the erasure cannot see: a completion run has planned the learner's new attempt and is sending it when
    ``forget --in-degreed`` commits (Degreed holds that POST for 6 s). The run writes the record back, under the
    email, here and in Degreed. The next reconcile finds it (level-triggered: from the ledger and staged attempts,
    not from anything the run remembered), erases it again and deletes the records written back, once each."""
    import threading
    import time

    from imocha_pipeline.connections import shared_degreed_client
    from imocha_pipeline.settings import DegreedSettings
    from imocha_pipeline.sync.erasure.forget import forget
    from imocha_sandbox.server import FaultConfig

    monkeypatch.setenv(KEY_SETTING, KEY)
    for name, value in sandbox.env().items():
        monkeypatch.setenv(name, value)
    h = SyncHarness(sandbox, staging_url, instance)
    erasee, other, _, _ = _world(h, sandbox)
    engine = staging.get_engine(staging_url)
    email = erasee.email.lower()
    second_test = sandbox.world.tests[1]
    sandbox.imocha.complete_attempt(second_test.test_id, erasee.email, erasee.name, bank_scores=90.0)
    new_key = f"{email}|imocha-{second_test.test_id}"
    sandbox.degreed.faults.set(FaultConfig(timeout_next=1, timeout_seconds=6, path_prefix="/api/v2/completions",
                                           methods=["POST"]))
    outcome = {}
    run = threading.Thread(target=lambda: outcome.setdefault("run", h.completions()))
    run.start()
    deadline = time.monotonic() + 120
    while not any(r["record_key"] == new_key and r["state"] == "sending" for r in _ledger(h)):
        assert time.monotonic() < deadline and run.is_alive(), "the run never started sending the new attempt"
        time.sleep(0.1)
    report = forget(engine, erasee.email, in_degreed=True, degreed_client=lambda: shared_degreed_client(
        DegreedSettings.from_env(), staging_url))
    assert not report.failed
    run.join(180)
    assert outcome["run"].success
    written_back = [r for r in _ledger(h) if r["record_key"].startswith(email + "|")]
    assert {r["record_key"] for r in written_back} >= {new_key}  # the race happened: the email is back
    back_ids = {r["degreed_id"] for r in written_back}
    state = h.state()
    assert back_ids <= {c["id"] for c in state["completions"]} | {r["id"] for r in state["skill_ratings"]}

    seq = sandbox.degreed.log.last_seq
    reconcile = h.run("reconcile_job")
    assert reconcile.success
    drift = next(m for m in reconcile.get_asset_materialization_events()
                 if m.asset_key == dg.AssetKey("sync_drift")).materialization.metadata
    assert drift["erasures_enforced_again"].value == 1
    assert _holding(engine, email, erasee.name) == []
    deletes = sorted(w.path.rsplit("/", 1)[1] for w in h.writes(seq) if w.method == "DELETE")
    assert deletes == sorted(back_ids)  # each record written back deleted once
    state = h.state()
    assert not back_ids & ({c["id"] for c in state["completions"]} | {r["id"] for r in state["skill_ratings"]})
    hashed = marker(email_hmac(email, KEY.encode()))
    assert {r["state"] for r in _ledger(h) if r["record_key"].startswith(hashed + "|")} == {"deleted"}
    assert any(r["record_key"].startswith(other.email.lower() + "|") for r in _ledger(h))  # others untouched

    seq = sandbox.degreed.log.last_seq
    again = h.run("reconcile_job")  # nothing left to enforce
    assert again.success and all(w.method != "DELETE" for w in h.writes(seq))
    drift = next(m for m in again.get_asset_materialization_events()
                 if m.asset_key == dg.AssetKey("sync_drift")).materialization.metadata
    assert "erasures_enforced_again" not in drift


def test_two_erasures_of_the_same_learner_at_once_keep_every_ledger_row(sandbox, staging_url, instance, monkeypatch):
    """Two operators (or a retried forget_job) erase the same learner at the same moment, both with --in-degreed:
    the erasures run one after the other (the learner's erased_learners row is the lock), so no ledger row is lost
    to the other's rename, every record ends hashed and deleted, Degreed holds none of them, and each was deleted
    successfully exactly once (the later DELETE of the same record, if any, is answered 404: already gone)."""
    import threading

    from imocha_pipeline.connections import shared_degreed_client
    from imocha_pipeline.settings import DegreedSettings
    from imocha_pipeline.sync.erasure.forget import forget

    h, erasee, engine, ours = _synced_with_the_key(sandbox, staging_url, instance, monkeypatch)
    seq = sandbox.degreed.log.last_seq
    start, reports, errors = threading.Barrier(2), [], []

    def erase():
        start.wait()
        try:
            reports.append(forget(engine, erasee.email, in_degreed=True, degreed_client=lambda: shared_degreed_client(
                DegreedSettings.from_env(), staging_url)))
        except Exception as exc:  # shown by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=erase) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == [] and len(reports) == 2 and not any(r.failed for r in reports)
    hashed = marker(email_hmac(erasee.email, KEY.encode()))
    rows = [r for r in _ledger(h) if r["record_key"].startswith(hashed + "|")]
    assert sorted(r["degreed_id"] for r in rows) == sorted(ours) and {r["state"] for r in rows} == {"deleted"}
    assert _holding(engine, erasee.email, erasee.name) == []
    done = [w.path.rsplit("/", 1)[1] for w in h.writes(seq) if w.method == "DELETE" and w.status in (200, 204)]
    assert sorted(done) == sorted(ours)
    state = h.state()
    assert not set(ours) & ({c["id"] for c in state["completions"]} | {r["id"] for r in state["skill_ratings"]})


def test_a_failed_forget_job_retried_by_dagster_deletes_the_rest_once(sandbox, sqlite_url, instance, monkeypatch):
    """What Dagster's run retry does to forget_job: the first run (launched as the run launcher does, in its own
    process) fails because Degreed answers 503 to every skill-rating DELETE; its re-execution from the failed step,
    under a new run id with the parent's config, deletes the rest. Each record is deleted once over both runs."""
    from types import SimpleNamespace

    from imocha_drills import dagster_runs
    from imocha_sandbox.server import FaultConfig

    monkeypatch.setenv(KEY_SETTING, KEY)
    h = SyncHarness(sandbox, sqlite_url, instance)
    erasee, *_ = _world(h, sandbox)
    ours = {r["degreed_id"] for r in _ledger(h) if r["record_key"].startswith(erasee.email.lower())}
    drill = SimpleNamespace(sandbox=sandbox, staging_url=sqlite_url, instance=instance)
    config = {"ops": {"forget_learner": {"config": {"email": erasee.email, "in_degreed": True}}}}
    seq = sandbox.degreed.log.last_seq
    sandbox.degreed.faults.set(FaultConfig(error_5xx_share=1.0, path_prefix="/api/v2/skill-ratings/",
                                           methods=["DELETE"]))
    failed = dagster_runs.execute(drill, "forget_job", run_config=config)
    assert not failed.success and "some Degreed deletes failed" in " ".join(failed.failures)
    sandbox.degreed.faults.clear()
    retried = dagster_runs.execute(drill, "forget_job", retry_of=failed.run_id)
    assert retried.success and retried.parent_run_id == failed.run_id and retried.run_id != failed.run_id
    done = [w.path.rsplit("/", 1)[1] for w in h.writes(seq) if w.method == "DELETE" and w.status in (200, 204)]
    assert sorted(done) == sorted(ours)
    hashed = marker(email_hmac(erasee.email, KEY.encode()))
    assert {r["state"] for r in _ledger(h) if r["record_key"].startswith(hashed + "|")} == {"deleted"}


def test_degreed_deletes_that_failed_are_finished_by_the_next_reconcile(sandbox, staging_url, instance,
                                                                       monkeypatch):
    """Level-triggered deletion in Degreed: ``forget --in-degreed`` records the request before deleting, so when every
    DELETE fails (Degreed answers 503; one send each) nobody has to remember to run it again: the next reconcile
    (the real reconcile_job, which first reads the records back into its Degreed snapshot) deletes each of them once
    and drops them from the snapshot, so no table names the learner. A learner erased without ``--in-degreed`` keeps
    their records in Degreed, and a second reconcile deletes nothing."""
    from imocha_pipeline.clients.http.policy import RetryPolicy
    from imocha_pipeline.connections import shared_degreed_client
    from imocha_pipeline.settings import DegreedSettings
    from imocha_pipeline.sync.erasure.forget import forget
    from imocha_sandbox.server import FaultConfig

    h, erasee, engine, ours = _synced_with_the_key(sandbox, staging_url, instance, monkeypatch)
    other = next(r["record_key"].split("|")[0] for r in _ledger(h) if not r["record_key"].startswith(
        (erasee.email.lower(), "imocha-")) and "|" in r["record_key"])
    theirs = {r["degreed_id"] for r in _ledger(h) if r["record_key"].startswith(other + "|")}
    assert ours and theirs

    seq = sandbox.degreed.log.last_seq
    sandbox.degreed.faults.set(FaultConfig(error_5xx_share=1.0, path_prefix="/api/v2/", methods=["DELETE"]))
    report = forget(engine, erasee.email, in_degreed=True, degreed_client=lambda: shared_degreed_client(
        DegreedSettings.from_env(), staging_url, session_options={"retry": RetryPolicy(max_attempts=1)}))
    assert report.failed and len(report.degreed["failed"]) == len(ours) and not report.degreed["deleted"]
    assert not forget(engine, other, in_degreed=False).failed  # erased here only: Degreed keeps their records
    sandbox.degreed.faults.clear()
    hashed = marker(email_hmac(erasee.email, KEY.encode()))
    assert {r["state"] for r in _ledger(h) if r["record_key"].startswith(hashed + "|")} == {"erased"}

    reconcile = h.run("reconcile_job")
    assert reconcile.success
    drift = next(m for m in reconcile.get_asset_materialization_events()
                 if m.asset_key == dg.AssetKey("sync_drift")).materialization.metadata
    assert drift["erasure_deletes_finished"].value == len(ours) and "erasure_deletes_failed" not in drift
    done = [w.path.rsplit("/", 1)[1] for w in h.writes(seq) if w.method == "DELETE" and w.status in (200, 204)]
    assert sorted(done) == sorted(ours)  # each once; none of the learner erased here only
    assert {r["state"] for r in _ledger(h) if r["record_key"].startswith(hashed + "|")} == {"deleted"}
    state = h.state()
    in_degreed = {c["id"] for c in state["completions"]} | {r["id"] for r in state["skill_ratings"]}
    assert not set(ours) & in_degreed and theirs <= in_degreed
    assert _holding(engine, erasee.email, erasee.name) == []  # read back into the snapshot, then dropped from it

    seq = sandbox.degreed.log.last_seq
    again = h.run("reconcile_job")
    assert again.success and all(w.method != "DELETE" for w in h.writes(seq))
    drift = next(m for m in again.get_asset_materialization_events()
                 if m.asset_key == dg.AssetKey("sync_drift")).materialization.metadata
    assert "erasure_deletes_finished" not in drift


def test_an_erasure_and_a_reconcile_at_once_send_one_delete_per_record(sandbox, staging_url, instance, monkeypatch):
    """The Degreed deletes of one erased learner finished by two processes at the same moment (an operator re-running
    ``forget --in-degreed`` while the reconcile finishes them, or two reconciles): each record is claimed in the
    ledger before its DELETE, so Degreed sees exactly one DELETE per record (no 404 for a second one) and every
    record ends ``deleted``; what one process found taken is reported as such by it."""
    import threading

    from imocha_pipeline.clients.http.policy import RetryPolicy
    from imocha_pipeline.connections import shared_degreed_client
    from imocha_pipeline.settings import DegreedSettings
    from imocha_pipeline.sync.erasure.forget import forget
    from imocha_pipeline.sync.erasure.sweep import finish_degreed_deletions
    from imocha_sandbox.server import FaultConfig

    h, erasee, engine, ours = _synced_with_the_key(sandbox, staging_url, instance, monkeypatch)

    def client():
        return shared_degreed_client(DegreedSettings.from_env(), staging_url,
                                     session_options={"retry": RetryPolicy(max_attempts=1)})

    sandbox.degreed.faults.set(FaultConfig(error_5xx_share=1.0, path_prefix="/api/v2/", methods=["DELETE"]))
    assert forget(engine, erasee.email, in_degreed=True, degreed_client=client).failed  # every delete left over
    # Slow deletes, so that both processes work on the learner's records at the same time.
    sandbox.degreed.faults.set(FaultConfig(latency_ms=400, path_prefix="/api/v2/", methods=["DELETE"]))
    seq = sandbox.degreed.log.last_seq
    start, outcomes, errors = threading.Barrier(2), [], []

    def by_erasure():
        start.wait()
        try:
            outcomes.append(forget(engine, erasee.email, in_degreed=True, degreed_client=client).degreed)
        except Exception as exc:  # shown by the assertion below
            errors.append(exc)

    def by_reconcile():
        start.wait()
        try:
            outcomes.extend({"deleted": o.deleted, "held_by_another_run": o.taken_elsewhere, "failed": o.failed}
                            for o in finish_degreed_deletions(engine, client).values())
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=by_erasure), threading.Thread(target=by_reconcile)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    sandbox.degreed.faults.clear()
    assert errors == [] and not any(o.get("failed") for o in outcomes)
    deletes = [w for w in h.writes(seq) if w.method == "DELETE"]
    assert sorted(w.path.rsplit("/", 1)[1] for w in deletes) == sorted(ours)  # one each, none answered 404
    assert {w.status for w in deletes} <= {200, 204}
    assert sum(sum(o.get("deleted", {}).values()) for o in outcomes) == len(ours)
    assert sum(o.get("held_by_another_run", 0) for o in outcomes) >= 1  # they did meet
    hashed = marker(email_hmac(erasee.email, KEY.encode()))
    rows = [r for r in _ledger(h) if r["record_key"].startswith(hashed + "|")]
    assert {r["state"] for r in rows} == {"deleted"} and all(r["claimed_at"] is None for r in rows)


def test_erasing_again_keeps_the_time_of_the_first_erasure(sandbox, sqlite_url, instance, monkeypatch):
    """``erased_at`` is when the learner was erased: a second ``forget`` while the erasure holds keeps it (and moves
    ``updated_at``, which the reconcile's look-out for runs in flight goes by); after ``--undo`` a new erasure holds
    from its own time."""
    from imocha_pipeline.sync.erasure.forget import forget, undo

    h, erasee, engine, _ = _synced_with_the_key(sandbox, sqlite_url, instance, monkeypatch)

    def row():
        (found,) = h.rows(staging.erased_learners)
        return found

    forget(engine, erasee.email)
    first = row()
    forget(engine, erasee.email.upper())
    again = row()
    assert again["erased_at"] == first["erased_at"] and again["updated_at"] > first["updated_at"]
    assert again["lifted_at"] is None
    undo(engine, erasee.email)
    assert row()["lifted_at"] is not None
    forget(engine, erasee.email)
    anew = row()
    assert anew["erased_at"] > first["erased_at"] and anew["lifted_at"] is None


def test_a_delete_claimed_by_a_process_that_stopped_is_finished_once_its_lease_has_run_out(sandbox, staging_url,
                                                                                         instance, monkeypatch):
    """A process claimed one of the learner's records for its DELETE and died before sending it: while the claim's
    lease runs, the reconcile leaves that record alone (reported as held) and deletes the rest; once the lease has
    run out, the next reconcile deletes it. One DELETE per record in all."""
    from imocha_pipeline.clients.http.policy import RetryPolicy
    from imocha_pipeline.connections import shared_degreed_client
    from imocha_pipeline.settings import DegreedSettings
    from imocha_pipeline.sync.core.ledger import Ledger
    from imocha_pipeline.sync.erasure.forget import forget
    from imocha_pipeline.sync.erasure.sweep import finish_degreed_deletions
    from imocha_sandbox.server import FaultConfig

    h, erasee, engine, ours = _synced_with_the_key(sandbox, staging_url, instance, monkeypatch)

    def client():
        return shared_degreed_client(DegreedSettings.from_env(), staging_url,
                                     session_options={"retry": RetryPolicy(max_attempts=1)})

    sandbox.degreed.faults.set(FaultConfig(error_5xx_share=1.0, path_prefix="/api/v2/", methods=["DELETE"]))
    assert forget(engine, erasee.email, in_degreed=True, degreed_client=client).failed
    sandbox.degreed.faults.clear()
    hashed = marker(email_hmac(erasee.email, KEY.encode()))
    stranded = next(r for r in _ledger(h) if r["record_key"].startswith(hashed + "|"))
    assert Ledger(engine, stranded["entity"], "dead-run").claim_deletion(stranded["record_key"])  # then it died
    seq = sandbox.degreed.log.last_seq

    (first,) = finish_degreed_deletions(engine, client).values()
    assert first.taken_elsewhere == 1 and sum(first.deleted.values()) == len(ours) - 1 and not first.failed
    assert stranded["degreed_id"] not in [w.path.rsplit("/", 1)[1] for w in h.writes(seq) if w.method == "DELETE"]

    with engine.begin() as conn:  # the lease (120 s by default) runs out
        conn.execute(staging.sync_ledger.update().where(
            staging.sync_ledger.c.record_key == stranded["record_key"]).values(
            claimed_at=datetime.now(UTC) - timedelta(minutes=3)))
    (second,) = finish_degreed_deletions(engine, client).values()
    assert second.deleted == {stranded["entity"]: 1} and second.taken_elsewhere == 0
    done = [w.path.rsplit("/", 1)[1] for w in h.writes(seq) if w.method == "DELETE"]
    assert sorted(done) == sorted(ours)
    assert {r["state"] for r in _ledger(h) if r["record_key"].startswith(hashed + "|")} == {"deleted"}
    assert finish_degreed_deletions(engine, client) == {}

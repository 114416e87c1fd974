"""Assessment content sync end to end: real Dagster runs against the sandbox over loopback HTTP."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from imocha_pipeline import staging
from imocha_sandbox.runtime import Sandbox
from sync_harness import SyncHarness

CONTENT_PATH = "/api/v2/content/assessments"


@pytest.fixture
def sandbox(make_sandbox):
    return make_sandbox(seed=11, tests=8, learners=6, attempts=4, degreed_rate_limit=6000)


def run_sync(sandbox: Sandbox, staging_url: str, instance, *, run_config=None, **sync_settings):
    return SyncHarness(sandbox, staging_url, instance, **sync_settings).run("assessment_sync_job",
                                                                            run_config=run_config)


def degreed_ours(sandbox: Sandbox) -> dict[str, dict]:
    return {a["external_id"]: a for a in sandbox.degreed.state()["assessments"]
            if str(a.get("external_id", "")).startswith("imocha-")}


def materialization(result, asset: str) -> dict:
    events = result.asset_materializations_for_node(asset)
    assert events, f"{asset} was not materialized"
    return {key: value.value for key, value in events[-1].metadata.items()}


def test_first_run_creates_everything_and_second_run_writes_nothing(sandbox, staging_url, instance):
    result = run_sync(sandbox, staging_url, instance)
    assert result.success
    tests = {t.test_id: t for t in sandbox.world.tests}
    ours = degreed_ours(sandbox)
    assert set(ours) == {f"imocha-{test_id}" for test_id in tests}
    for test_id, spec in tests.items():
        item = ours[f"imocha-{test_id}"]
        assert item["title"] == spec.name
        assert float(item["duration"]) == spec.duration and item["duration_type"] == "Minutes"
        active = next(link for link in spec.links if link.status == "active")
        assert item["url"] == f"https://test.imocha.io/{active.test_link}"
        assert item["obsolete"] is False
    assert materialization(result, "assessment_sync_apply")["assessment_created"] == len(tests)

    engine = staging.get_engine(staging_url)
    with engine.connect() as conn:
        ledger = staging.read_rows(conn, staging.sync_ledger)
    assert len(ledger) == len(tests) and {row["state"] for row in ledger} == {"acknowledged"}
    assert all(row["degreed_id"] == ours[row["record_key"]]["id"] for row in ledger)

    mark = sandbox.degreed.log.last_seq
    second = run_sync(sandbox, staging_url, instance)
    assert second.success
    assert sandbox.degreed.log.writes(mark) == []
    assert materialization(second, "assessment_sync_plan")["plan_unchanged"] == len(tests)


def test_a_send_left_in_flight_that_degreed_shows_done_is_acknowledged_with_the_hash_of_its_values(sandbox, sqlite_url,
                                                                                                    instance):
    # A run died after Degreed took the record but before the ledger heard: the next plan finds it unchanged
    # (an unchanged plan row carries no payload hash) and settles the ledger row with the hash of the values.
    from imocha_pipeline.sync.assessments.entity import ASSESSMENTS
    from imocha_pipeline.sync.core.diff import payload_hash

    assert run_sync(sandbox, sqlite_url, instance).success
    engine = staging.get_engine(sqlite_url)
    ledger = staging.sync_ledger
    with engine.begin() as conn:
        key, acknowledged_hash = conn.execute(sa.select(ledger.c.record_key, ledger.c.payload_hash)
                                              .order_by(ledger.c.record_key).limit(1)).one()
        conn.execute(ledger.update().where(ledger.c.record_key == key).values(
            state="sending", run_id="run-that-died", payload_hash="in-flight", claimed_at=staging.utcnow()))
    mark = sandbox.degreed.log.last_seq
    assert run_sync(sandbox, sqlite_url, instance).success
    assert sandbox.degreed.log.writes(mark) == []
    with engine.connect() as conn:
        row = conn.execute(sa.select(ledger).where(ledger.c.record_key == key)).one()._mapping
        planned = conn.execute(sa.select(staging.sync_plan).where(staging.sync_plan.c.record_key == key)).one()._mapping
    assert planned["action"] == "unchanged" and planned["payload_hash"] is None
    assert row["state"] == "acknowledged" and row["action"] == "resolved"
    assert row["payload_hash"] == payload_hash(planned["payload"], ASSESSMENTS) == acknowledged_hash
    assert row["payload"] == planned["payload"]


def test_rename_patches_only_the_title_and_removal_retires_then_readding_revives(sandbox, sqlite_url, instance):
    assert run_sync(sandbox, sqlite_url, instance).success
    renamed, removed = sandbox.world.tests[0].test_id, sandbox.world.tests[1].test_id
    sandbox.imocha.update_test(renamed, name="Python Fundamentals (2026 edition) & more")
    saved = sandbox.imocha.tests[removed]
    sandbox.imocha.remove_test(removed)
    mark = sandbox.degreed.log.last_seq

    assert run_sync(sandbox, sqlite_url, instance).success
    sent = sandbox.degreed.log.writes(mark)
    assert len(sent) == 2 and {e.method for e in sent} == {"PATCH"}
    bodies = {e.path.rsplit("/", 1)[-1]: json.loads(e.body)["data"]["attributes"] for e in sent}
    ours = degreed_ours(sandbox)
    assert bodies[ours[f"imocha-{renamed}"]["id"]] == {"title": "Python Fundamentals (2026 edition) & more"}
    assert bodies[ours[f"imocha-{removed}"]["id"]] == {"obsolete": True}
    assert ours[f"imocha-{removed}"]["obsolete"] is True, "retired, not deleted"

    with sandbox.imocha._lock:
        sandbox.imocha.tests[removed] = saved
    mark = sandbox.degreed.log.last_seq
    assert run_sync(sandbox, sqlite_url, instance).success
    sent = sandbox.degreed.log.writes(mark)
    assert len(sent) == 1 and json.loads(sent[0].body)["data"]["attributes"] == {"obsolete": False}
    assert degreed_ours(sandbox)[f"imocha-{removed}"]["obsolete"] is False


@pytest.mark.parametrize("conflict_body", ["error_with_id", "error_without_id", "empty"])
def test_content_created_by_someone_else_is_adopted_not_duplicated(sandbox, sqlite_url, instance, conflict_body):
    test_id = sandbox.world.tests[2].test_id
    # Degreed lists new content only after a while (the lag real APIs show after a write): the snapshot does not
    # see it, the plan says create, and the create answers a real 409 in the configured body.
    sandbox.degreed.configure(content_listing_lag_seconds=600, conflict_body=conflict_body)
    existing = sandbox.degreed.add_assessment(f"imocha-{test_id}", title="Made by hand", url="https://old.example/x")
    mark = sandbox.degreed.log.last_seq
    result = run_sync(sandbox, sqlite_url, instance)
    assert result.success
    calls = [(e.method, e.status) for e in sandbox.degreed.log.entries(mark)
             if e.path.startswith(f"/api/v2/content/assessments/{existing['id']}")
             or (e.method == "POST" and f"imocha-{test_id}" in (e.body or ""))]
    assert calls[0] == ("POST", 409), calls
    key = f"imocha-{test_id}"
    if conflict_body == "error_with_id":
        assert ("GET", 200) in calls and ("PATCH", 200) in calls, "read by the id the 409 named, then brought in step"
        assert materialization(result, "assessment_sync_apply")["assessment_adopted"] == 1
    else:
        # Nothing to read an id from, and the look-up by external id cannot see it yet: it waits, with the reason.
        assert calls == [("POST", 409)]
        assert "answered 409 (conflict)" in open_quarantine(sqlite_url)[key]
        sandbox.degreed.configure(content_listing_lag_seconds=0)  # the listing caught up
        with staging.get_engine(sqlite_url).begin() as conn:  # its retry time has come
            conn.execute(staging.sync_quarantine.update().values(next_retry_at=staging.utcnow()))
        assert run_sync(sandbox, sqlite_url, instance).success
        assert key not in open_quarantine(sqlite_url)
    same_key = [a for a in sandbox.degreed.state()["assessments"] if a["external_id"] == key]
    assert len(same_key) == 1 and same_key[0]["id"] == existing["id"]
    assert same_key[0]["title"] == sandbox.world.tests[2].name
    engine = staging.get_engine(sqlite_url)
    with engine.connect() as conn:
        row = conn.execute(sa.select(staging.sync_ledger).where(staging.sync_ledger.c.record_key == key)).one()
    assert row.degreed_id == existing["id"] and row.state == "acknowledged"


def test_invalid_tests_are_quarantined_with_reasons_while_valid_ones_sync(sandbox, sqlite_url, instance):
    nameless, marathon, linkless = (t.test_id for t in sandbox.world.tests[:3])
    sandbox.imocha.update_test(nameless, name="")
    sandbox.imocha.update_test(marathon, duration=5000)
    for link in sandbox.imocha.tests[linkless].links:
        sandbox.imocha.deactivate_test_link(linkless, link.test_link_id)
    result = run_sync(sandbox, sqlite_url, instance)
    assert result.success
    ours = degreed_ours(sandbox)
    assert {f"imocha-{t}" for t in (nameless, marathon, linkless)}.isdisjoint(ours)
    assert len(ours) == len(sandbox.world.tests) - 3
    engine = staging.get_engine(sqlite_url)
    with engine.connect() as conn:
        reasons = {r["record_key"]: r["reason"] for r in staging.read_rows(conn, staging.sync_quarantine)}
    assert reasons[f"imocha-{nameless}"] == "title is required (got empty)"
    assert reasons[f"imocha-{marathon}"] == "duration must be at most 600 (got 5000.0)"
    assert reasons[f"imocha-{linkless}"] == "url is required (got empty)"
    check = next(e for e in result.get_asset_check_evaluations() if e.check_name == "desired_assessments_valid")
    assert check.passed and check.metadata["quarantined"].value == 3


def test_retire_guard_blocks_mass_retirement_until_confirmed(sandbox, sqlite_url, instance):
    assert run_sync(sandbox, sqlite_url, instance).success
    for spec in sandbox.world.tests[:5]:
        sandbox.imocha.remove_test(spec.test_id)
    mark = sandbox.degreed.log.last_seq
    blocked = run_sync(sandbox, sqlite_url, instance)
    assert not blocked.success
    guard = next(e for e in blocked.get_asset_check_evaluations() if e.check_name == "assessment_plan_guard")
    assert not guard.passed
    assert "retires 5 of 8 active assessments" in guard.metadata["verdict"].value
    assert "confirm_large_changes" in guard.metadata["verdict"].value
    assert sandbox.degreed.log.writes(mark) == [], "a blocked plan sends nothing"
    assert not blocked.asset_materializations_for_node("assessment_sync_apply")

    confirmed = run_sync(sandbox, sqlite_url, instance,
                         run_config={"ops": {"assessment_sync_plan": {"config": {"confirm_large_changes": True}}}})
    assert confirmed.success
    assert sum(1 for a in degreed_ours(sandbox).values() if a["obsolete"]) == 5


def test_dry_run_writes_nothing_and_stages_the_plan(sandbox, sqlite_url, instance):
    mark = sandbox.degreed.log.last_seq
    result = run_sync(sandbox, sqlite_url, instance, dry_run=True)
    assert result.success
    assert sandbox.degreed.log.writes(mark) == [] and degreed_ours(sandbox) == {}
    assert materialization(result, "assessment_sync_apply")["assessment_writes_skipped"] == len(sandbox.world.tests)
    engine = staging.get_engine(sqlite_url)
    with engine.connect() as conn:
        planned = staging.read_rows(conn, staging.sync_plan)
    assert len(planned) == len(sandbox.world.tests) and {p["action"] for p in planned} == {"create"}
    assert all(p["reason"] == "not in Degreed yet" and p["payload"]["title"] for p in planned)


def open_quarantine(staging_url: str) -> dict[str, str]:
    with staging.get_engine(staging_url).connect() as conn:
        return {r["record_key"]: r["reason"] for r in staging.read_rows(conn, staging.sync_quarantine)
                if r["entity"] == "assessment" and r["status"] == "open"}


def list_position(sandbox: Sandbox, test_id: int) -> int:
    """The test's place (from 1) in GET /v3/tests (one page: the sandbox has fewer than 100 tests)."""
    return sorted(sandbox.imocha.tests).index(test_id) + 1


def test_malformed_test_list_entry_is_quarantined_not_retired_and_the_rest_sync(sandbox, sqlite_url, instance):
    fresh, synced = sandbox.world.tests[0].test_id, sandbox.world.tests[1].test_id
    sandbox.imocha.set_list_entry(fresh, fields={"testName": {"en": "Python"}})
    first = run_sync(sandbox, sqlite_url, instance)
    assert first.success
    ours = degreed_ours(sandbox)
    assert set(ours) == {f"imocha-{t.test_id}" for t in sandbox.world.tests[1:]}
    item = list_position(sandbox, fresh)
    assert open_quarantine(sqlite_url) == {f"imocha-{fresh}": (
        f"iMocha's answer for test {fresh} cannot be read (iMocha GET /v3/tests (HTTP 200): page 1 item {item}: "
        "test field 'testName' is not a text: {'en': 'Python'}); the test is neither created nor retired in Degreed "
        "until iMocha answers correctly (read again on every run)")}
    assert materialization(first, "imocha_assessments")["tests_unreadable"] == 1

    # The entry of a test that is already in Degreed turns malformed: held in quarantine, not retired.
    sandbox.imocha.clear_list_entries()
    sandbox.imocha.set_list_entry(synced, fields={"labels": "Technical"})
    mark = sandbox.degreed.log.last_seq
    second = run_sync(sandbox, sqlite_url, instance)
    assert second.success
    sent = sandbox.degreed.log.writes(mark)
    assert len(sent) == 1 and sent[0].method == "POST", "only the repaired test is created, nothing is retired"
    assert degreed_ours(sandbox)[f"imocha-{synced}"]["obsolete"] is False
    reasons = open_quarantine(sqlite_url)
    assert set(reasons) == {f"imocha-{synced}"}, "the repaired entry's quarantine was resolved"
    assert (f"page 1 item {list_position(sandbox, synced)}: test field 'labels' is a string, expected a list"
            in reasons[f"imocha-{synced}"])

    sandbox.imocha.clear_list_entries()
    mark = sandbox.degreed.log.last_seq
    assert run_sync(sandbox, sqlite_url, instance).success
    assert sandbox.degreed.log.writes(mark) == [] and open_quarantine(sqlite_url) == {}


def test_test_list_entry_without_id_holds_back_retirements_until_a_clean_read(sandbox, sqlite_url, instance):
    assert run_sync(sandbox, sqlite_url, instance).success
    tests = [t.test_id for t in sandbox.world.tests]
    garbled, removed, renamed = tests[3], tests[5], tests[0]
    sandbox.imocha.remove_test(removed)
    sandbox.imocha.set_list_entry(garbled, fields={"testId": "abc"})
    sandbox.imocha.update_test(renamed, name="Renamed while the list is broken")
    added = sandbox.imocha.add_test("Added while the list is broken", 20)
    mark = sandbox.degreed.log.last_seq
    # Two tests fewer in the extract (25%): the shrink guard is loosened so only the hold-back is at work.
    run = run_sync(sandbox, sqlite_url, instance, max_extract_shrink_share=0.5)
    assert run.success
    sent = sandbox.degreed.log.writes(mark)
    assert sorted(e.method for e in sent) == ["PATCH", "POST"], "the create and the update go through"
    ours = degreed_ours(sandbox)
    assert ours[f"imocha-{added}"]["obsolete"] is False
    assert ours[f"imocha-{renamed}"]["title"] == "Renamed while the list is broken"
    assert ours[f"imocha-{removed}"]["obsolete"] is False and ours[f"imocha-{garbled}"]["obsolete"] is False
    plan = materialization(run, "assessment_sync_plan")
    assert plan["retirements_held_back"] == 2 and plan["plan_retire"] == 0
    assert materialization(run, "imocha_assessments")["test_list_entries_without_id"] == 1
    item = list_position(sandbox, garbled)
    key = f"tests-list-page-1-item-{item}"
    assert open_quarantine(sqlite_url) == {key: (
        f"entry {item} on page 1 of iMocha's test list (GET /v3/tests) cannot be read and names no test "
        f"(iMocha GET /v3/tests (HTTP 200): page 1 item {item}: test field 'testId' is not a whole number: 'abc'). "
        "No assessment is retired in Degreed while the list has such an entry, because it may be a test that still "
        "exists; creates and updates go on. Ask iMocha to fix the entry; this clears itself on the first run that "
        "reads the list cleanly")}

    # The list reads cleanly again: the entry is resolved and the removed test (only that one) is retired.
    sandbox.imocha.clear_list_entries()
    mark = sandbox.degreed.log.last_seq
    clean = run_sync(sandbox, sqlite_url, instance)
    assert clean.success
    sent = sandbox.degreed.log.writes(mark)
    assert len(sent) == 1 and json.loads(sent[0].body)["data"]["attributes"] == {"obsolete": True}
    ours = degreed_ours(sandbox)
    assert ours[f"imocha-{removed}"]["obsolete"] is True and ours[f"imocha-{garbled}"]["obsolete"] is False
    assert open_quarantine(sqlite_url) == {}
    assert materialization(clean, "assessment_sync_plan")["retirements_held_back"] == 0


def test_a_test_detail_that_keeps_failing_is_read_again_after_the_others(sandbox, sqlite_url, instance):
    """Six refusals in a row (429, Retry-After 0) use up the HTTP layer's attempts for one test's detail: the
    test is read again after the others and the run creates every assessment; a second failure of the same
    read ends the run with the client's error."""
    from imocha_sandbox.server import FaultConfig

    unlucky = sandbox.world.tests[3].test_id
    sandbox.imocha.faults.set(FaultConfig(rate_429_next=6, retry_after_seconds=0, path_prefix=f"/v3/tests/{unlucky}",
                                          methods=["GET"]))
    result = run_sync(sandbox, sqlite_url, instance)
    assert result.success
    assert set(degreed_ours(sandbox)) == {f"imocha-{t.test_id}" for t in sandbox.world.tests}
    detail_reads = [e for e in sandbox.imocha.log.entries() if e.path == f"/v3/tests/{unlucky}"]
    assert [e.status for e in detail_reads] == [429] * 6 + [200]

    sandbox.imocha.faults.set(FaultConfig(rate_429_next=12, retry_after_seconds=0,
                                          path_prefix=f"/v3/tests/{unlucky}", methods=["GET"]))
    failed = run_sync(sandbox, sqlite_url, instance)
    assert not failed.success
    failure = next(e for e in failed.all_events if e.is_step_failure)
    assert "still rate limited after retries" in str(failure.step_failure_data.error.cause
                                                     or failure.step_failure_data.error)


def test_a_test_named_with_markup_reaches_degreed_under_its_plain_text_title(sandbox, sqlite_url, instance):
    marked, hostile = sandbox.world.tests[0].test_id, sandbox.world.tests[1].test_id
    sandbox.imocha.update_test(marked, name="<b>SQL</b> Basics")
    sandbox.imocha.update_test(hostile, name="SELECT * FROM t WHERE a<>1; -- ../../etc")
    result = run_sync(sandbox, sqlite_url, instance)
    assert result.success
    ours = degreed_ours(sandbox)
    assert ours[f"imocha-{marked}"]["title"] == "SQL Basics"
    assert ours[f"imocha-{hostile}"]["title"] == "SELECT * FROM t WHERE a<>1; -- ../../etc", "verbatim"
    assert open_quarantine(sqlite_url) == {}
    with staging.get_engine(sqlite_url).connect() as conn:
        plan = {r["record_key"]: r for r in staging.read_rows(conn, staging.sync_plan)}
    assert plan[f"imocha-{marked}"]["reason"] == (
        "not in Degreed yet; title sent as plain text: HTML tags removed from the iMocha name '<b>SQL</b> Basics'")
    assert plan[f"imocha-{hostile}"]["reason"] == "not in Degreed yet"


def test_a_launch_template_without_a_per_test_part_is_quarantined_before_degreed_refuses_it(sandbox, sqlite_url,
                                                                                            instance):
    """Degreed answers 409 to a second content item with the same URL; a template that gives every test the same
    link is caught by validation: every such test quarantined with the reason, the blocking check stops the plan,
    and nothing is sent."""
    mark = sandbox.degreed.log.last_seq
    result = run_sync(sandbox, sqlite_url, instance, launch_url_template="https://lms.example.com/imocha")
    assert not result.success
    check = next(e for e in result.get_asset_check_evaluations() if e.check_name == "desired_assessments_valid")
    assert not check.passed
    reasons = open_quarantine(sqlite_url)
    assert len(reasons) == len(sandbox.world.tests)
    assert all("url must be unique" in reason for reason in reasons.values()), reasons
    assert sandbox.degreed.log.writes(mark) == []

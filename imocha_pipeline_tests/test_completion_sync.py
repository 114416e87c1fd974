"""Completions and skill ratings end to end: real Dagster runs of completion_sync_job against the sandbox."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from imocha_pipeline import staging
from imocha_sandbox.runtime import Sandbox, SandboxConfig
from sync_harness import SyncHarness


@pytest.fixture
def sandbox(make_sandbox):
    return make_sandbox(seed=21, tests=3, learners=6, attempts=0, degreed_rate_limit=6000)


@pytest.fixture
def harness(sandbox, sqlite_url, instance, monkeypatch):
    monkeypatch.setenv("IMOCHA_PIPELINE_WAITING_RETRY_SECONDS", "0")
    return SyncHarness(sandbox, sqlite_url, instance)


def step_outcome(result, step: str) -> tuple[dict, str]:
    """(metadata, failure description) of a step: its materialization's metadata, or, when it failed with
    ``dg.Failure``, the failure's metadata and description."""
    for event in result.all_events:
        if event.step_key == step and event.is_step_failure:
            data = event.step_failure_data.user_failure_data
            return dict(data.metadata), data.description or ""
    return dict(result.asset_materializations_for_node(step)[0].metadata), ""


def percent_scores(test, percents: list[float]) -> dict[int, float]:
    return {bank.qb_id: round(bank.max_score * p / 100, 2) for bank, p in zip(test.banks, percents, strict=False)}


def completions_of(state: dict, email: str) -> list[dict]:
    return [c for c in state["completions"] if c.get("user_email", "").lower() == email.lower()]


def ratings_of(state: dict, email: str) -> dict[str, dict]:
    return {r["skill_name"]: r for r in state["skill_ratings"] if r.get("user_email", "").lower() == email.lower()}


def assert_one_completion_and_ratings(h: SyncHarness, learner, test, percents):
    state = h.state()
    mine = completions_of(state, learner.email)
    assert len(mine) == 1
    assert mine[0]["content_external_id"] == f"imocha-{test.test_id}"
    expected_percent = round(sum(b.max_score * p / 100 for b, p in zip(test.banks, percents, strict=False))
                             / test.total_points * 100)
    assert mine[0]["percentile"] == pytest.approx(expected_percent, abs=0.6)
    ratings = ratings_of(state, learner.email)
    for bank, percent in zip(test.banks, percents, strict=False):
        assert ratings[bank.qb_name]["rating"] == min(8, int(percent // 12.5) + 1), bank.qb_name
    return mine[0], ratings


@pytest.mark.parametrize("staging_kind", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_finished_attempt_becomes_one_completion_and_ratings(sandbox, instance, monkeypatch, request,
                                                               staging_kind):
    url = request.getfixturevalue(f"{staging_kind}_url")
    h = SyncHarness(sandbox, url, instance)
    h.assessments()
    learner, test = h.learner(), sandbox.world.tests[0]
    percents = [95.0, 40.0, 10.0][: len(test.banks)]
    invitation = sandbox.imocha.complete_attempt(test.test_id, learner.email, learner.name,
                                                 bank_scores=percent_scores(test, percents))
    result = h.completions()
    assert result.success
    completion, _ = assert_one_completion_and_ratings(h, learner, test, percents)
    report = sandbox.imocha.report(invitation, report_type=3)
    attempted = datetime.fromisoformat(report["attemptedOn"].replace("Z", "+00:00"))
    completed_at = datetime.fromisoformat(completion["completed_at"].replace("Z", "+00:00"))
    assert abs((completed_at - attempted).total_seconds()) < 1
    ledger = {(r["entity"], r["record_key"]): r for r in h.rows(staging.sync_ledger)}
    key = ("completion", f"{learner.email.lower()}|imocha-{test.test_id}")
    assert ledger[key]["state"] == "acknowledged" and ledger[key]["degreed_id"] == completion["id"]

    mark = sandbox.degreed.log.last_seq
    again = h.completions()
    assert again.success and h.writes(mark) == []


@pytest.mark.parametrize("duplicates", ["409", "update"])
def test_a_retake_updates_the_completion_and_rating_without_duplicates(sqlite_url, instance, duplicates):
    config = SandboxConfig(seed=22, tests=2, learners=4, attempts=0, degreed_rate_limit=6000,
                           completion_duplicates=duplicates)
    with Sandbox(config) as sandbox:
        h = SyncHarness(sandbox, sqlite_url, instance)
        h.assessments()
        learner, test = h.learner(), sandbox.world.tests[0]
        sandbox.imocha.complete_attempt(test.test_id, learner.email, learner.name,
                                        bank_scores=percent_scores(test, [30.0] * len(test.banks)))
        assert h.completions().success
        first, _ = assert_one_completion_and_ratings(h, learner, test, [30.0] * len(test.banks))
        sandbox.imocha.complete_attempt(test.test_id, learner.email, learner.name,
                                        bank_scores=percent_scores(test, [90.0] * len(test.banks)))
        mark = sandbox.degreed.log.last_seq
        assert h.completions().success
        second, ratings = assert_one_completion_and_ratings(h, learner, test, [90.0] * len(test.banks))
        assert second["id"] == first["id"]
        sent = h.writes(mark)
        assert {e.method for e in sent} == {"PATCH"}
        assert len(sent) == 1 + len(test.banks)
        assert all(r["rating"] == 8 for r in ratings.values())


def test_backfill_of_several_days_syncs_history_exactly_once(sqlite_url, instance):
    config = SandboxConfig(seed=23, tests=3, learners=10, attempts=25, degreed_rate_limit=6000)
    with Sandbox(config) as sandbox:
        h = SyncHarness(sandbox, sqlite_url, instance)
        h.assessments()
        today = datetime.now(UTC).date()
        start = (today - timedelta(days=15)).isoformat()
        result = h.completions(start, today.isoformat())
        assert result.success
        staged = h.rows(staging.imocha_completions)
        assert {r["test_invitation_id"] for r in staged} == {a.test_invitation_id for a in sandbox.world.attempts}
        known = {x.email for x in sandbox.world.learners if x.in_degreed}
        expected = {(a.email.lower(), a.test_id) for a in sandbox.world.attempts
                    if a.status == "Complete" and a.email in known}
        in_degreed = {(c["user_email"].lower(), int(c["content_external_id"].split("-")[1]))
                      for c in h.state()["completions"]}
        assert in_degreed == expected
        assert len(h.state()["completions"]) == len(expected)

        mark = sandbox.degreed.log.last_seq
        imocha_mark = sandbox.imocha.log.last_seq
        for day in range(16):  # the same days again, one partition at a time
            assert h.completions((today - timedelta(days=day)).isoformat()).success
        assert h.writes(mark) == []
        reports = [e for e in sandbox.imocha.log.entries(imocha_mark) if e.path.startswith("/v3/reports/")]
        assert reports == [], "a report is read once per attempt"


def test_a_missing_learner_waits_in_quarantine_then_syncs(harness):
    h = harness
    h.assessments()
    learner, test = h.learner(in_degreed=False), h.sandbox.world.tests[1]
    h.sandbox.imocha.complete_attempt(test.test_id, learner.email, learner.name, bank_scores=70.0)
    first = h.completions()
    assert first.success, "a missing learner never fails the run"
    assert completions_of(h.state(), learner.email) == []
    waiting = [q for q in h.rows(staging.sync_quarantine) if q["status"] == "open"]
    assert {q["kind"] for q in waiting} == {"waiting_for_learner"}
    assert all(learner.email in q["reason"] for q in waiting)
    assert len(waiting) == 1 + len(test.banks)

    h.sandbox.degreed.add_user(learner.email, employee_id=learner.employee_id)
    yesterday = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    assert h.completions(yesterday).success
    assert completions_of(h.state(), learner.email) == [], "a run of another day sends only its own days"
    assert h.catch_up().success, "the catch-up job retries the waiting records of every day"
    assert len(completions_of(h.state(), learner.email)) == 1
    assert len(ratings_of(h.state(), learner.email)) == len(test.banks)
    assert all(q["status"] == "resolved" for q in h.rows(staging.sync_quarantine))


def test_attempts_not_complete_are_staged_but_not_sent(harness):
    h = harness
    h.assessments()
    learner, test = h.learner(), h.sandbox.world.tests[0]
    left = h.sandbox.imocha.complete_attempt(test.test_id, learner.email, learner.name, status="Test Left")
    assert h.completions().success
    assert h.state()["completions"] == [] and h.state()["skill_ratings"] == []
    staged = {r["test_invitation_id"]: r for r in h.rows(staging.imocha_completions)}
    assert staged[left]["status"] == "Test Left"
    plan = {p["record_key"]: p for p in h.rows(staging.sync_plan)}
    assert plan[f"attempt:{left}"]["action"] == "skip"
    assert "status 'Test Left' is not sent" in plan[f"attempt:{left}"]["reason"]


def test_completions_wait_for_their_assessment(harness):
    h = harness
    learner, test = h.learner(), h.sandbox.world.tests[2]
    h.sandbox.imocha.complete_attempt(test.test_id, learner.email, learner.name, bank_scores=55.0)
    assert h.completions().success
    assert h.state()["completions"] == []
    plan = {p["record_key"]: p for p in h.rows(staging.sync_plan) if p["entity"] == "completion"}
    (row,) = plan.values()
    assert row["action"] == "wait" and "assessment" in row["reason"]
    h.assessments()
    assert h.completions().success
    assert len(completions_of(h.state(), learner.email)) == 1


def test_invalid_reports_are_quarantined_with_reasons_while_good_ones_sync(harness):
    h = harness
    h.assessments()
    good, bad = [x for x in h.sandbox.world.learners if x.in_degreed][:2]
    test = h.sandbox.world.tests[0]
    h.sandbox.imocha.complete_attempt(test.test_id, good.email, good.name, bank_scores=80.0)
    broken = h.sandbox.imocha.complete_attempt(test.test_id, bad.email, bad.name, bank_scores=80.0)
    report = h.sandbox.imocha.report(broken, report_type=3)
    report.update(scorePercentage=135.0, candidatePoints=50.0, totalTestPoints=40.0)
    report["skills"][0]["candidateQbScore"] = report["skills"][0]["qbScore"] + 5
    h.sandbox.imocha.set_canned_response("GET", f"/v3/reports/{broken}", json.dumps(report))
    assert h.completions().success
    assert len(completions_of(h.state(), good.email)) == 1
    assert completions_of(h.state(), bad.email) == []
    reasons = {q["record_key"]: q["reason"] for q in h.rows(staging.sync_quarantine)}
    assert reasons[f"attempt:{broken}"] == (
        "score_percentage must be at most 100 (got 135.0); "
        "candidate_points must not exceed total_points (got candidate_points=50.0, total_points=40.0)")


def test_learner_and_skill_mapping_tables(sandbox, sqlite_url, instance, tmp_path, monkeypatch):
    learner, test = next(x for x in sandbox.world.learners if x.in_degreed), sandbox.world.tests[0]
    learners_csv = tmp_path / "learners.csv"
    learners_csv.write_text(f"email,employee_id\n{learner.email.upper()},{learner.employee_id}\n")
    skills_csv = tmp_path / "skills.csv"
    skills_csv.write_text(f"imocha_skill,degreed_skill\n{test.banks[0].qb_name},Degreed {test.banks[0].qb_name}\n")
    monkeypatch.setenv("IMOCHA_PIPELINE_LEARNER_MAP", str(learners_csv))
    monkeypatch.setenv("IMOCHA_PIPELINE_SKILL_MAP", str(skills_csv))
    monkeypatch.setenv("IMOCHA_PIPELINE_SKILL_MAP_STRICT", "1")
    h = SyncHarness(sandbox, sqlite_url, instance)
    h.assessments()
    sandbox.imocha.complete_attempt(test.test_id, learner.email, learner.name, bank_scores=60.0)
    assert h.completions().success
    posted = [json.loads(e.body)["data"]["attributes"] for e in h.writes() if e.path == "/api/v2/completions"]
    assert posted[0]["user-id"] == learner.employee_id and posted[0]["user-identifier-type"] == "EmployeeId"
    ratings = ratings_of(h.state(), learner.email)
    assert set(ratings) == {f"Degreed {test.banks[0].qb_name}"}
    skipped = [p for p in h.rows(staging.sync_plan) if p["action"] == "skip"]
    assert len(skipped) == len(test.banks) - 1
    assert all("no Degreed skill mapped for iMocha skill" in p["reason"] for p in skipped)


@pytest.mark.parametrize("refusals", [6, 18])
def test_a_write_that_cannot_reach_degreed_gets_one_more_try_at_the_end_of_the_run(sqlite_url, instance, refusals):
    """Degreed answers 429 to the next `refusals` completion creates (Retry-After 0, so the test is quick): six
    use up the HTTP layer's attempts for the first completion, which the end-of-run try then delivers; with 18
    both completions miss the first pass and the first one its second try too: it is recorded as failed, the
    other delivered, and the next run sends the failed one. Nothing is ever created twice."""
    from imocha_sandbox.server import FaultConfig

    config = SandboxConfig(seed=26, tests=1, learners=3, attempts=0, degreed_rate_limit=6000)
    with Sandbox(config) as sandbox:
        h = SyncHarness(sandbox, sqlite_url, instance)
        h.assessments()
        test = sandbox.world.tests[0]
        learners = sorted((x for x in sandbox.world.learners if x.in_degreed), key=lambda x: x.email.lower())[:2]
        for learner in learners:
            sandbox.imocha.complete_attempt(test.test_id, learner.email, learner.name,
                                            bank_scores=percent_scores(test, [70.0] * len(test.banks)))
        sandbox.degreed.faults.set(FaultConfig(rate_429_next=refusals, retry_after_seconds=0,
                                               path_prefix="/api/v2/completions", methods=["POST"]))
        result = h.completions()
        assert result.success == (refusals == 6), "a run that could not deliver what was due is not green"
        meta, failure = step_outcome(result, "completion_sync_apply")
        assert meta["completion_retried_at_end"].value == (1 if refusals == 6 else 2)
        assert meta["completion_failed"].value == (0 if refusals == 6 else 1)
        emails = [c["user_email"].lower() for c in h.state()["completions"]]
        assert sorted(emails) == sorted({x.email.lower() for x in (learners if refusals == 6 else learners[1:])})
        if refusals == 18:
            assert "completion: 1 of 2 due writes failed" in failure
            assert f"{learners[0].email.lower()}|imocha-{test.test_id}: " in failure
            assert "still rate limited after retries" in meta["completion_errors"].value
            assert meta["skill_rating_created"].value == 2 * len(test.banks), "ratings still went out"
            sandbox.degreed.faults.clear()
            assert h.completions().success  # the next run sends it
            emails = [c["user_email"].lower() for c in h.state()["completions"]]
            assert sorted(emails) == sorted(x.email.lower() for x in learners)


def test_an_unlucky_report_is_read_again_after_the_others_and_an_outage_stops_the_run_early(sqlite_url, instance):
    """iMocha refuses the next six report reads (429, Retry-After 0): that report is read again after the
    others and the run syncs everything. Then iMocha refuses every report read: the run fails with the
    client's error after a bounded number of reads, instead of trying every queued report."""
    from imocha_sandbox.server import FaultConfig

    config = SandboxConfig(seed=27, tests=2, learners=12, attempts=120, degreed_rate_limit=6000)
    with Sandbox(config) as sandbox:
        h = SyncHarness(sandbox, sqlite_url, instance)
        h.assessments()
        today = datetime.now(UTC).date()
        first_half = (today - timedelta(days=15)).isoformat(), (today - timedelta(days=8)).isoformat()
        unlucky = next(a.test_invitation_id for a in sandbox.world.attempts
                       if today - timedelta(days=14) <= a.attempted_on.date() <= today - timedelta(days=9))
        sandbox.imocha.faults.set(FaultConfig(rate_429_next=6, retry_after_seconds=0,
                                              path_prefix=f"/v3/reports/{unlucky}"))
        mark = sandbox.imocha.log.last_seq
        assert h.completions(*first_half).success
        staged = {r["test_invitation_id"] for r in h.rows(staging.imocha_completions)}
        assert unlucky in staged
        reads = [e.path for e in sandbox.imocha.log.entries(mark) if e.path.startswith("/v3/reports/")]
        assert len(reads) == len(staged) + 6  # six refused reads, then every report read once
        assert {p for p in reads if reads.count(p) > 1} == {f"/v3/reports/{unlucky}"}

        sandbox.imocha.faults.set(FaultConfig(rate_429_next=10_000, retry_after_seconds=0,
                                              path_prefix="/v3/reports/"))
        mark = sandbox.imocha.log.last_seq
        result = h.completions((today - timedelta(days=7)).isoformat(), today.isoformat())
        assert not result.success
        failure = next(e for e in result.all_events if e.is_step_failure)
        assert "still rate limited after retries" in str(failure.step_failure_data.error.cause or
                                                         failure.step_failure_data.error)
        reads = [e for e in sandbox.imocha.log.entries(mark) if e.path.startswith("/v3/reports/")]
        todo = sum(1 for a in sandbox.world.attempts if a.attempted_on.date() >= today - timedelta(days=7))
        # the retried-later limit and the failing one, plus what the four workers took on before the error
        # surfaced in order (at most two rounds of them)
        assert len(reads) <= 6 * (10 + 1 + 2 * 4)
        assert todo * 6 > len(reads), "an outage must not be met with every queued report's retries"


VARIANTS = [
    {"read_shape": "documented", "relationships_style": "array", "conflict_body": "empty"},  # the default
    {"read_shape": "documented", "relationships_style": "object", "conflict_body": "error_without_id"},
    {"read_shape": "echo", "relationships_style": "object", "conflict_body": "error_with_id"},
    {"read_shape": "echo", "relationships_style": "array", "conflict_body": "empty"},
]


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(v.values()))
def test_the_sync_and_the_reconcile_converge_with_every_shape_degreed_may_answer_in(sqlite_url, instance, variant,
                                                                                    monkeypatch):
    """Each combination of read shape, relationships form and 409 body: first sync, a retake that Degreed answers
    with 409 (one completion per learner and content), a lost answer resolved by reading the learner's list, then a
    reconcile that finds no drift for what we wrote and the date a person moved."""
    from imocha_sandbox.server import FaultConfig

    monkeypatch.setenv("IMOCHA_PIPELINE_WAITING_RETRY_SECONDS", "0")
    config = SandboxConfig(seed=28, tests=2, learners=4, attempts=0, degreed_rate_limit=6000)
    with Sandbox(config) as sandbox:
        sandbox.degreed.configure(completion_duplicates="409", **variant)
        h = SyncHarness(sandbox, sqlite_url, instance)
        h.assessments()
        test = sandbox.world.tests[0]
        learners = [x for x in sandbox.world.learners if x.in_degreed][:2]
        for learner in learners:
            sandbox.imocha.complete_attempt(test.test_id, learner.email, learner.name, bank_scores=40.0)
        assert h.completions().success
        # A retake; the first write's answer is lost, so the run must read Degreed before sending it again.
        sandbox.imocha.complete_attempt(test.test_id, learners[0].email, learners[0].name, bank_scores=90.0)
        with staging.get_engine(sqlite_url).begin() as conn:  # the ledger forgot it (a crash): Degreed answers 409
            conn.execute(staging.sync_ledger.delete().where(staging.sync_ledger.c.entity == "completion"))
        sandbox.degreed.faults.set(FaultConfig(lost_ack_next=1, path_prefix="/api/v2/skill-ratings", methods=["POST"]))
        assert h.completions().success
        sandbox.degreed.faults.clear()
        state = h.state()
        mine = completions_of(state, learners[0].email)
        assert len(mine) == 1 and mine[0]["percentile"] == pytest.approx(90.0, abs=0.6), "adopted after a 409"
        assert len(state["completions"]) == 2 and len(ratings_of(state, learners[0].email)) == len(test.banks)
        assert all(len([r for r in state["skill_ratings"] if r["user_email"] == learners[0].email
                        and r["skill_name"] == bank.qb_name]) == 1 for bank in test.banks)

        reconcile = h.defs.resolve_job_def("reconcile_job").execute_in_process(instance=instance,
                                                                               raise_on_error=False)
        check = next(e for e in reconcile.get_asset_check_evaluations() if e.check_name == "no_drift_after_repair")
        assert reconcile.success and check.passed, check.metadata["details"].value
        moved = (datetime.now(UTC) - timedelta(days=3)).replace(microsecond=0)
        sandbox.degreed.update_completion(completions_of(state, learners[1].email)[0]["id"],
                                          completed_at=moved.strftime("%Y-%m-%dT%H:%M:%S"))
        again = h.defs.resolve_job_def("reconcile_job").execute_in_process(instance=instance, raise_on_error=False)
        check = next(e for e in again.get_asset_check_evaluations() if e.check_name == "no_drift_after_repair")
        assert not check.passed and f"{learners[1].email.lower()}|imocha-{test.test_id}: changed_in_degreed: " \
            f"completed_at" in check.metadata["details"].value

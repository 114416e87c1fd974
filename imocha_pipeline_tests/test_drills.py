"""Reliability drills (issue 5) at CI sizes: each seeds the sandbox, runs the real jobs, injects a fault,
recovers the way an operator would and compares Degreed's final state with the truth computed from iMocha
(every record exactly once, right values, nothing extra). ``bench/drills.py`` runs them at full size."""

from __future__ import annotations

import pytest

from imocha_drills import convergence, inputs, scenarios
from imocha_drills.catalogue import TRANSPORT_KINDS
from imocha_drills.harness import Drill, scan_for_secrets
from imocha_drills.outcome import DrillOutcome
from imocha_drills.proxy import proxied_postgres_schema
from imocha_sandbox.runtime import SandboxConfig

SMALL = SandboxConfig(tests=3, learners=10, attempts=16, seed=501, history_days=4)
TINY = SandboxConfig(tests=3, learners=6, attempts=8, seed=502, history_days=3)
NO_ATTEMPTS = SandboxConfig(tests=6, learners=4, attempts=0, seed=504, history_days=2)


@pytest.fixture
def make_drill(tmp_path):
    made: list[Drill] = []

    def make(size: SandboxConfig = SMALL, url: str | None = None, **kwargs) -> Drill:
        drill = Drill(size, url or f"sqlite:///{tmp_path / f'staging-{len(made)}.sqlite'}",
                      workdir=str(tmp_path), **kwargs)
        made.append(drill)
        return drill

    yield make
    for drill in made:
        drill.close()


def assert_exact(outcome: DrillOutcome) -> None:
    comparison = outcome.comparison
    assert comparison.expected > 0
    assert comparison.exact, comparison.summary()


def test_drill1_sigkill_at_twenty_points_loses_and_duplicates_nothing(make_drill):
    drill = make_drill()
    outcome = scenarios.drill_kill(drill, scenarios.kill_points(22, drill.size.tests))
    facts = outcome.facts
    assert facts["kills"] >= 20, [k for k in facts["killed"] if not k["reached"]]
    assert all(count >= 5 for count in facts["kills_by_position"].values()), facts["kills_by_position"]
    assert facts["after_ack_kills"] >= 6, "killed between Degreed's acknowledgement and the ledger write"
    assert facts["stuck_records"] >= 10, "runs died with records in 'sending'"
    assert_exact(outcome)
    assert facts["resent_after_ack"] == [], "a record Degreed had already acknowledged was created again"
    assert facts["lookups"] >= facts["after_ack_kills"], "'sending' records are resolved by reading Degreed"
    assert facts["still_sending"] == [] and all(facts["recovery_success"])


def test_drill2_api_faults_on_both_apis_end_in_the_exact_state(make_drill):
    size = SandboxConfig(tests=2, learners=6, attempts=10, seed=503, history_days=3)
    baseline = make_drill(size)
    baseline.sync_all()
    clean = baseline.compare()
    assert clean.exact, clean.summary()
    drill = make_drill(size)
    outcome = scenarios.drill_faults(drill, baseline_requests=clean.requests["total"])
    assert outcome.ok, outcome.facts
    assert_exact(outcome)
    faults = sum(outcome.facts["faults"].values())
    assert {"error_5xx", "rate_429"} <= set(outcome.facts["faults"]) and faults >= 10
    assert 0 < outcome.extra_requests <= 3 * faults + 10, (outcome.extra_requests, outcome.facts)


def test_drill3_token_expiry_is_transparent_and_revocation_stops_cleanly(make_drill):
    drill = make_drill()
    outcome = scenarios.drill_tokens(drill)
    facts = outcome.facts
    assert facts["revoked_run_failed"]
    (message,) = facts["revoked_failures"]
    assert message.startswith("completion_sync_apply: ApplyAborted: ")
    assert "imocha_pipeline.sync.core.apply.ApplyAborted: Degreed refused our credentials; stopping" in message
    assert "Degreed refused a token for client 'imocha-sandbox'" in message and "revoked" in message
    assert facts["sending_after_revocation"] == [], "no row is left 'sending' with a live claim"
    assert facts["ledger_acknowledged"] == facts["degreed_holds"], "ledger and Degreed agree"
    assert facts["unauthorized_in_recovery"] >= 1 and all(facts["recovery_success"])
    assert_exact(outcome)


def test_drill4_cursor_expiry_restarts_the_window_and_sees_every_record(make_drill):
    outcome = scenarios.drill_cursors(make_drill(TINY))
    facts = outcome.facts
    assert facts["completions_restarted"] and facts["ratings_restarted"] and facts["cursor_expired_answers"] == 2
    windows = facts["first_page_reads_per_window"]
    assert windows.count(2) == 1 and windows.count(1) == len(windows) - 1, "only the interrupted window restarts"
    assert outcome.comparison.expected > 3000
    assert outcome.comparison.lost == [] and outcome.comparison.extra == [], outcome.comparison.summary()
    assert outcome.ok


def test_drill5_overlapping_runs_write_each_record_once(make_drill):
    outcome = scenarios.drill_concurrent(make_drill())
    assert outcome.facts["backfill_paused_while_sensor_ran"]
    assert all(outcome.facts["runs_succeeded"]), outcome.facts
    assert outcome.facts["records_created_more_than_once"] == []
    assert_exact(outcome)


@pytest.mark.postgres
def test_drill6_postgres_lost_mid_run_fails_cleanly_and_the_next_run_completes(make_drill, postgres_server_url):
    with proxied_postgres_schema(postgres_server_url, "t") as pg:
        drill = make_drill(url=pg.url)
        outcome = scenarios.drill_database_lost(drill, pg.proxy, pg.admin_url, pg.application)
        facts = outcome.facts
        assert facts["failed_run"]
        (message,) = facts["failures"]
        assert "imocha_pipeline.sync.core.apply.StagingDatabaseError: lost the staging database" in message, message
        assert "the next run reads Degreed before sending it again" in message
        assert all(facts["recovery_success"]) and facts["created_twice"] == []
        assert_exact(outcome)


def test_drill7_bad_input_catalogue_quarantines_with_reasons_and_good_records_sync(make_drill):
    outcome = inputs.drill_bad_input(make_drill(TINY))
    verdicts = outcome.facts["verdicts"]
    assert len(verdicts) >= 25 and {v[1] for v in verdicts} >= {"assessment", "completion", "skill_rating",
                                                                  "transport"}
    failed = [v for v in verdicts if not v[-1]]
    assert failed == [], failed
    transport = [v for v in verdicts if v[1] == "transport"]
    assert len(transport) == len(TRANSPORT_KINDS)
    assert all(v[3].startswith("imocha_pipeline.clients.imocha.ImochaPayloadError: iMocha ") for v in transport)
    assert all(outcome.facts["runs"]) and all(outcome.facts["after_transport"])
    assert_exact(outcome)


@pytest.mark.postgres
def test_drill8_hostile_strings_pass_through_as_plain_data(make_drill, postgres_url):
    outcome = inputs.drill_hostile(make_drill(TINY, url=postgres_url))
    facts = outcome.facts
    assert all(facts["runs"])
    assert all(facts["staged_verbatim"].values()) and all(facts["sent_verbatim"].values()), facts
    assert facts["tables_intact"] and facts["odd_request_lines"] == []
    assert any("%2f" in path for path in facts["learner_lookups"]), "a hostile email went into a URL path, encoded"
    assert_exact(outcome)


def test_drill9_no_secret_appears_in_logs_metadata_errors_or_tables(make_drill):
    drill = make_drill(TINY)
    tokens = scenarios.drill_tokens(drill)  # a refused token, a revoked key and an expired token on the way
    assert tokens.facts["revoked_run_failed"]
    scenarios.finish_today(drill, 2)
    assert all(r.success for r in inputs.run_production_path(drill)), "secrets from the environment"
    scenarios.finish_today(drill, 2, offset=2)
    kill = scenarios.drill_kill(drill, [scenarios.KillPoint("completion_sync_job", 1, "after")])
    assert kill.facts["kills"] == 1
    _, method, path, body, content_type, job, _ = TRANSPORT_KINDS[0]
    drill.sandbox.imocha.set_canned_response(method, path, body, content_type=content_type)
    assert not drill.run(job).success
    outcome = inputs.drill_secrets([drill])
    assert outcome.facts["secrets"] >= 6, "both credentials and several issued tokens"
    assert outcome.facts["leaks"] == [], outcome.facts
    texts = inputs.secret_texts(drill)
    assert any(name.startswith("job snapshot") for name in texts) and any(".log" in name for name in texts)
    assert "DEBUG" in texts["debug log"], "the scan covers DEBUG logging"
    planted = {"control": "x " + drill.sandbox.degreed_secret + " y"}
    assert scan_for_secrets(planted, drill.sandbox.secrets()), "the scanner finds a secret where there is one"


# ------------------------------------------------------------------------------------------------------------
# Convergence drills (issue 11): what Dagster and operators do to runs, and nobody re-runs a partition after.


@pytest.mark.parametrize("outage_path", ["/api/v2/completions", "/api/v2/skill-ratings"])
def test_drill10_dagster_run_retry_after_a_degreed_outage_sends_everything(make_drill, outage_path):
    outcome = convergence.drill_run_retry(make_drill(TINY), outage_path)
    facts = outcome.facts
    assert facts["failed_run_red"], "a run that delivered nothing that was due is not green"
    (failure,) = facts["failures"]
    entity = "completion" if outage_path.endswith("completions") else "skill_rating"
    assert failure.startswith("completion_sync_apply: ")
    assert "writes in a row could not reach Degreed; stopping" in failure, failure
    assert f"{entity}: " in failure and " due writes, so far " in failure and "failed " in failure
    assert facts["retry_is_new_run"] and facts["retry_parent"] and facts["retry_succeeded"]
    assert facts["retry_steps"] == ["completion_sync_apply"], "re-executed from the failed step only"
    assert facts["writes_in_retry"] > 0 and facts["created_twice"] == []
    assert_exact(outcome)


@pytest.mark.parametrize("order", convergence.RETAKE_ORDERS)
def test_drill11_a_retake_during_a_backfill_leaves_the_newest_attempt_in_degreed(make_drill, order):
    outcome = convergence.drill_retake_during_backfill(make_drill(), order)
    facts = outcome.facts
    assert facts["paused"] and all(facts["runs"].values()), facts
    assert facts["degreed_percentile"] == facts["retake_percentile"] != facts["old_percentile"], facts
    assert_exact(outcome)


def test_drill12_the_sensor_forgets_no_attempt_whose_run_did_not_stage_it(make_drill):
    outcome = convergence.drill_sensor_forgets_nothing(make_drill(TINY))
    facts = outcome.facts
    assert facts["failed_run_red"] and facts["reports_not_ready"] >= 1 and facts["run_keys_unique"]
    assert facts["runs"] >= 2, "re-requested after the failed run and after the report was ready"
    assert outcome.ok, facts
    assert_exact(outcome)


def test_drill13_past_day_waiting_and_failed_records_converge_without_a_partition_run(make_drill):
    outcome = convergence.drill_catch_up(make_drill())
    facts = outcome.facts
    assert facts["backfill_red"] and facts["failed_rows"] >= 1 and facts["waiting_for_assessment"] >= 1
    assert facts["catch_up_succeeded"] and facts["next_tick_skipped"]
    assert facts["partition_runs_after_backfill"] == 0
    assert_exact(outcome)


def test_drill14_a_blocked_plan_is_never_sent_by_apply_alone_a_rerun_or_a_retry(make_drill):
    outcome = convergence.drill_blocked_plan(make_drill(NO_ATTEMPTS))
    facts = outcome.facts
    assert facts["blocked_red"] and facts["apply_alone_red"] and facts["apply_alone_says_blocked"]
    assert facts["again_blocked"] and facts["retry_red"] and facts["retry_parent"]
    assert facts["writes_while_blocked"] == []
    assert facts["confirmed"] and facts["after_confirm"] and facts["retired"] == facts["removed"]
    assert outcome.ok, facts
    assert_exact(outcome)

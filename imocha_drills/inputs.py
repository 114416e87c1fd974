"""Drills 7-9: bad input of every kind, hostile strings, and secrets searched for everywhere.

Shared by ``test_drills.py`` (small sizes) and ``bench/drills.py`` (full size); see ``scenarios.py``.
"""

from __future__ import annotations

import os
import time

from imocha_drills.gate import GateRule
from imocha_drills.harness import Comparison, Drill
from imocha_drills.outcome import DrillOutcome, failure_errors
from imocha_drills.scenarios import history

# ---------------------------------------------------------------------------------------------------------
# Drill 7: the bad-input catalogue


def drill_bad_input(drill: Drill) -> DrillOutcome:
    from imocha_drills.catalogue import TRANSPORT_KINDS, assessment_kinds, attempt_kinds

    sim = drill.sandbox.imocha
    # The catalogue adds more bad tests than a small world has good ones; the invalid-share guard would rightly
    # stop the run (an operator confirms by raising the limit).
    drill.env["IMOCHA_PIPELINE_MAX_INVALID_SHARE"] = os.environ["IMOCHA_PIPELINE_MAX_INVALID_SHARE"] = "0.95"
    kinds = assessment_kinds(sim)
    first = drill.run("assessment_sync_job")
    kinds += attempt_kinds(drill.sandbox)
    results = [first, drill.run_completions(), drill.run("reconcile_job")]
    quarantine = {(q["entity"], q["record_key"]): q for q in drill.quarantine() if q["status"] == "open"}
    verdicts = []
    for kind in kinds:
        entity = "completion" if kind.entity == "completion" else kind.entity
        found = quarantine.get((entity, kind.key)) if kind.key else next(
            (q for (e, _), q in quarantine.items() if e == entity and kind.reason in q["reason"]
             and kind.facts.get("email", "") in q["record_key"]), None)
        if kind.expect == "quarantine":
            ok = found is not None and kind.reason in found["reason"]
            verdicts.append((kind.name, kind.entity, "quarantined" if found else "NOT quarantined",
                             found["reason"] if found else "", ok))
        else:
            ok = found is None
            verdicts.append((kind.name, kind.entity, "synced" if ok else "quarantined",
                             found["reason"] if found else "", ok))
    # Transport-level problems fail the run with the typed error's text; the next run completes.
    for name, method, path, body, content_type, job, fragment in TRANSPORT_KINDS:
        sim.set_canned_response(method, path, body, content_type=content_type, times=1)
        result = drill.run(job, None if job == "assessment_sync_job" else history(drill))
        failures = failure_errors(result)
        typed = [f for f in failures if fragment in f.message and f.cls_name.endswith("PayloadError")]
        verdicts.append((name, "transport", "run failed" if not result.success else "run passed",
                         typed[0].message.strip()[:200] if typed else "; ".join(f.message[:200] for f in failures),
                         not result.success and bool(typed)))
    after = [drill.run("assessment_sync_job"), drill.run_completions()]
    overrides = {k.invitation: k.report for k in kinds if k.invitation is not None}
    held = {k.facts.get("external_id", k.key) for k in kinds if k.entity == "assessment" and k.expect == "quarantine"}
    outcome = DrillOutcome("7 bad input catalogue", drill.compare(drill.truth(overrides, held)))
    outcome.facts = {"kinds": len(verdicts), "verdicts": verdicts,
                     "runs": [r.success for r in results], "after_transport": [r.success for r in after]}
    outcome.ok = all(v[-1] for v in verdicts) and all(r.success for r in results + after)
    return outcome


# ---------------------------------------------------------------------------------------------------------
# Drill 8: hostile strings pass through as plain data

HOSTILE_TITLES = [
    "Robert'); DROP TABLE sync_ledger;--",
    "' OR '1'='1'; UPDATE sync_ledger SET state='acknowledged' --",
    "../../../../etc/passwd",
    "Title\r\nX-Injected-Header: yes",
    "%0d%0aSet-Cookie: evil=1 ? & # %2F..%2F",
]
HOSTILE_SKILLS = ["'; DELETE FROM imocha_skill_scores; --", "..\\..\\windows\\system32", "Skill\r\nX-Evil: 1"]
HOSTILE_LEARNERS = [
    ("o'brien+drop'--@example.com", "Robert'); DROP TABLE imocha_completions;--"),
    ("..%2f..%2fadmin@example.com", "../../etc/passwd"),
    ("x@example.com", "Name\r\nX-Injected: 1"),
]
ALLOWED_PATH = r"^/(api/v2|v3|oauth)(/[^\r\n\s]*)?$"


def drill_hostile(drill: Drill) -> DrillOutcome:
    import re

    import sqlalchemy as sa

    from imocha_pipeline import staging

    sim, degreed = drill.sandbox.imocha, drill.sandbox.degreed
    test_ids = [sim.add_test(title, 30, skills=HOSTILE_SKILLS) for title in HOSTILE_TITLES]
    for email, name in HOSTILE_LEARNERS:
        degreed.add_user(email)
        for test_id in test_ids[:2]:
            sim.complete_attempt(test_id, email, name, bank_scores=66.0, time_taken_seconds=90)
    # One create whose answer is lost, so a learner is looked up by email in a URL path too.
    slow = float(drill.env.get("IMOCHA_PIPELINE_HTTP_READ_TIMEOUT_SECONDS", "3")) + 1.0
    drill.sandbox.degreed_gate.arm(GateRule(nth=1, when="before", methods=frozenset({"POST"}),
                                            path_prefix="/api/v2/completions", hold=False,
                                            action=lambda: time.sleep(slow)))
    results = drill.sync_all()
    drill.sandbox.degreed_gate.disarm()
    comparison = drill.compare()
    engine = staging.get_engine(drill.staging_url)
    with engine.connect() as conn:
        names = {r["test_name"] for r in staging.read_rows(conn, staging.imocha_assessments)}
        skills = {r["skill_name"] for r in staging.read_rows(conn, staging.imocha_skill_scores)}
        learners = {r["learner_name"] for r in staging.read_rows(conn, staging.imocha_completions)}
        tables = set(sa.inspect(conn).get_table_names())
        ledger_states = {r["state"] for r in staging.read_rows(conn, staging.sync_ledger)}
    state = degreed.state()
    titles = {a["title"] for a in state["assessments"]}
    rated = {r["skill_name"] for r in state["skill_ratings"]}
    emails = {c["user_email"] for c in state["completions"]}
    bad_lines = [f"{e.method} {e.path}?{e.query}" for sim_ in (sim, degreed) for e in sim_.log.entries()
                 if not re.match(ALLOWED_PATH, e.path) or any(ch in e.query for ch in "\r\n ")]
    lookups = [e.path for e in degreed.log.entries() if e.path.startswith("/api/v2/users/")]
    facts = {
        "runs": [r.success for r in results],
        "staged_verbatim": {"titles": set(HOSTILE_TITLES) <= names, "skills": set(HOSTILE_SKILLS) <= skills,
                            "learner_names": {n for _, n in HOSTILE_LEARNERS} <= learners},
        "sent_verbatim": {"titles": set(HOSTILE_TITLES) <= titles, "skills": set(HOSTILE_SKILLS) <= rated,
                          "learners": {e for e, _ in HOSTILE_LEARNERS} <= emails},
        "tables_intact": {"sync_ledger", "imocha_completions", "imocha_skill_scores"} <= tables,
        "ledger_states": sorted(ledger_states), "odd_request_lines": bad_lines, "learner_lookups": lookups,
    }
    outcome = DrillOutcome("8 hostile strings", comparison)
    outcome.facts = facts
    outcome.ok = (all(facts["runs"]) and all(facts["staged_verbatim"].values())
                  and all(facts["sent_verbatim"].values()) and facts["tables_intact"] and not bad_lines)
    return outcome


# ---------------------------------------------------------------------------------------------------------
# Drill 9: secrets appear nowhere


def secret_texts(drill: Drill) -> dict[str, str]:
    """Everything a secret could leak into: Dagster event logs and run records of every in-process run, the
    child processes' logs, the DEBUG log of this process, and every staged table (quarantine included)."""
    import sqlalchemy as sa
    from dagster._serdes import serialize_value

    from imocha_pipeline import staging

    texts: dict[str, str] = {}
    for result in drill.results:
        run_id = result.run_id
        records = drill.instance.all_logs(run_id)
        texts[f"event log {run_id}"] = "\n".join(serialize_value(r) for r in records)
        run = drill.instance.get_run_by_id(run_id)
        texts[f"run {run_id}"] = serialize_value(run)
        texts[f"job snapshot {run_id}"] = serialize_value(drill.instance.get_job_snapshot(run.job_snapshot_id))
        texts[f"plan snapshot {run_id}"] = serialize_value(
            drill.instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id))
        for event in result.all_events:
            if event.is_step_failure and event.step_failure_data.error:
                texts[f"failure {run_id} {event.step_key}"] = serialize_value(event.step_failure_data.error)
    for child in drill.children:
        texts[str(child.log_path)] = child.log_text()
    texts["debug log"] = drill.debug_log()
    with staging.get_engine(drill.staging_url).connect() as conn:
        for name in sa.inspect(conn).get_table_names():
            rows = conn.execute(sa.text(f'SELECT * FROM "{name}"')).fetchall()
            texts[f"table {name}"] = "\n".join(repr(tuple(row)) for row in rows)
    return texts


def drill_secrets(drills: list[Drill]) -> DrillOutcome:
    from imocha_drills.harness import scan_for_secrets

    leaks, places, secrets_count = [], 0, 0
    for drill in drills:
        secrets = drill.sandbox.secrets()
        secrets_count += len(secrets)
        texts = secret_texts(drill)
        places += len(texts)
        leaks += scan_for_secrets(texts, secrets)
    outcome = DrillOutcome("9 secrets in logs/metadata/tables", Comparison(expected=0))
    outcome.facts = {"leaks": leaks, "places_scanned": places, "secrets": secrets_count}
    outcome.ok = not leaks and secrets_count > 2
    return outcome


def run_production_path(drill: Drill) -> list:
    """Both sync jobs built the way the code location builds them (secrets from the environment, dg.EnvVar)."""
    from imocha_pipeline.definitions import build_definitions
    from imocha_pipeline.defs.resources import resources_from_env

    values = {**drill.sandbox.env(), "IMOCHA_PIPELINE_STAGING_DB_URL": drill.staging_url}
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        defs = build_definitions(resources_from_env())
        return [drill.run("assessment_sync_job", defs=defs),
                drill.run("completion_sync_job", history(drill), defs=defs)]
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

"""Drills 1-6: processes killed, API faults, tokens, cursors, concurrent runs, the database lost. Shared by
``test_drills.py`` (small sizes) and ``bench/drills.py`` (full size).

Each drill takes a ``Drill`` (a seeded sandbox and a staging database), injects its fault, recovers the way
an operator would, and returns a ``DrillOutcome``: the comparison with the truth plus what the drill saw.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from urllib.parse import unquote

from imocha_drills.gate import GateRule
from imocha_drills.harness import (
    Comparison,
    Drill,
    create_key,
    history_tags,
    ledger_key,
    processed,
    processed_creates,
)
from imocha_drills.outcome import DrillOutcome, failure_texts

# ---------------------------------------------------------------------------------------------------------
# Drill 1: SIGKILL at chosen points of the apply step


@dataclass(frozen=True)
class KillPoint:
    job: str  # "assessment_sync_job" | "completion_sync_job"
    nth: int  # the n-th Degreed write of that run (when ``position`` is None)
    when: str  # "before" (request in flight, not processed), "after" (processed, answer not yet read),
    #            "random" (killed as soon as the request log shows the n-th processed write: anywhere)
    position: str | None = None  # "early" | "middle" | "last": the n-th write is chosen from what is still due


POSITIONS = ("early", "middle", "last")


def kill_points(count: int, assessment_writes: int, seed: int = 5) -> list[KillPoint]:
    """``count`` kill points across runs: a few in the assessment apply, the rest spread over the whole completion
    apply (its early, middle and last writes, in turn), each mode at each position."""
    rng = random.Random(seed)
    points = [KillPoint("assessment_sync_job", 1 + i % max(1, assessment_writes - 1), w)
              for i, w in enumerate(("after", "before")[: max(1, min(2, assessment_writes))])]
    modes = ("after", "before", "after", "random")
    while len(points) < count:
        index = len(points)
        points.append(KillPoint("completion_sync_job", rng.randint(1, 4), modes[index % len(modes)],
                                POSITIONS[(index // len(modes)) % len(POSITIONS)]))
    return points


def due_writes(drill: Drill) -> int:
    """Completion and skill-rating writes a history run still has to make, at least: truth records the ledger has
    neither acknowledged nor left ``sending`` (a killed run's record may need no write once Degreed is read)."""
    truth = drill.truth()
    ledger = {(r["entity"], r["record_key"]): r for r in drill.ledger()}
    # A completion waits (no write) while its assessment is not in Degreed (a kill in the assessment apply).
    assessments = {key for (entity, key), row in ledger.items()
                   if entity == "assessment" and row["state"] == "acknowledged"}
    wanted = [(("completion", f"{email}|{content}"), values) for (email, content), values in truth.completions.items()
              if content in assessments]
    wanted += [(("skill_rating", f"{email}|{skill}"), values) for (email, skill), values in truth.ratings.items()]

    def settled(key, values) -> bool:
        row = ledger.get(key)
        if row is None:
            return False
        if row["state"] == "sending":
            return True
        payload = row.get("payload") or {}
        return row["state"] == "acknowledged" and all(
            str(payload.get(name)) == str(value) or _close(payload.get(name), value) for name, value in values.items())

    return sum(1 for key, values in wanted if not settled(key, values))


def _close(left, right) -> bool:
    try:
        return abs(float(left) - float(right)) < 1e-6
    except (TypeError, ValueError):
        return False


MIN_DUE_FOR_A_KILL = 8


def nth_write(point: KillPoint, drill: Drill) -> int:
    """The write a kill point aims at: fixed, or early / in the middle / the last of what is due now."""
    if point.position is None or point.job != "completion_sync_job":
        return point.nth
    due = max(1, due_writes(drill))
    return {"early": min(point.nth, due), "middle": max(1, due // 2), "last": due}[point.position]


def _wait_for_writes(drill: Drill, child, since: int, nth: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and child.process.is_alive():
        seen = sum(1 for e in drill.sandbox.degreed.log.writes(since) if processed(e))
        if seen >= nth:
            return True
        time.sleep(0.002)
    return False


def drill_kill(drill: Drill, points: list[KillPoint], timeout: float = 120) -> DrillOutcome:
    """Run jobs in child processes and SIGKILL each at its point; then recover by running everything again."""
    gate = drill.sandbox.degreed_gate
    killed: list[dict] = []
    first_mark = drill.sandbox.degreed.log.last_seq
    topped_up = 0
    for point in points:
        began = time.monotonic()
        if point.job == "completion_sync_job" and point.position is not None:
            while due_writes(drill) < MIN_DUE_FOR_A_KILL:  # fresh attempts, so every kill has a whole apply to hit
                finish_today(drill, 2, offset=topped_up)
                topped_up += 2
        mark = drill.sandbox.degreed.log.last_seq
        nth = nth_write(point, drill)
        if point.when != "random":
            gate.arm(GateRule(nth=nth, when=point.when))
        child = drill.start_child(point.job, None if point.job == "assessment_sync_job" else
                                  history(drill))
        if point.when == "random":
            reached = _wait_for_writes(drill, child, mark, nth, timeout)
        else:
            deadline = time.monotonic() + timeout
            reached = False
            while time.monotonic() < deadline and child.process.is_alive():
                if gate.wait(0.05):
                    reached = True
                    break
        sending = []
        if reached:
            child.kill()
            gate.release()
            sending = [r for r in drill.ledger() if r["state"] == "sending"]
        else:
            gate.disarm()
            child.wait(timeout)
        gate.disarm()
        stuck_after = []
        if point.when == "after" and reached:
            last = [e for e in drill.sandbox.degreed.log.entries(mark) if create_key(e) is not None]
            stuck_after = [create_key(last[-1])] if last else []
        killed.append({"point": point, "nth": nth, "reached": reached, "seconds": round(time.monotonic() - began, 2),
                       "sending": [(r["entity"], r["record_key"]) for r in sending],
                       "acknowledged_by_degreed": stuck_after})
    recovery_mark = drill.sandbox.degreed.log.last_seq
    results = drill.sync_all()
    comparison = drill.compare()
    creates = processed_creates(drill.sandbox)
    # Every record Degreed had acknowledged when its run died must not have been created again.
    resent = [key for k in killed for key in k["acknowledged_by_degreed"] if creates[key] > 1]
    left_sending = [k for k in killed for key in k["sending"]]
    stuck_keys = {ledger_key(e, k) for kill in killed for e, k in kill["sending"]}
    # Look-ups of single records (a learner's completions or ratings, an assessment by external id): what a run
    # does for a record an earlier run left unresolved, before it sends anything.
    lookups = [e for e in drill.sandbox.degreed.log.entries(first_mark) if e.method == "GET"
               and (e.path.startswith("/api/v2/users/") or "filter[external_id]" in unquote(e.query))]
    recovery_lookups = [e for e in lookups if e.seq > recovery_mark]
    outcome = DrillOutcome("1 process killed (SIGKILL)", comparison)
    outcome.facts = {
        "kill_points": len(points), "kills": sum(1 for k in killed if k["reached"]), "attempts_added": topped_up,
        "kills_by_position": {position: sum(1 for k in killed if k["reached"] and k["point"].position == position)
                              for position in POSITIONS},
        "after_ack_kills": sum(1 for k in killed if k["reached"] and k["point"].when == "after"),
        "rows_left_sending": len(left_sending), "stuck_records": len(stuck_keys), "resent_after_ack": resent,
        "lookups": len(lookups), "lookups_in_recovery": len(recovery_lookups),
        "recovery_success": [r.success for r in results],
        "still_sending": [r["record_key"] for r in drill.ledger() if r["state"] == "sending"],
        "killed": killed,
    }
    outcome.ok = (not resent and all(r.success for r in results) and not outcome.facts["still_sending"])
    return outcome


def history(drill: Drill) -> dict[str, str]:
    """The tags of a run over the drill's whole history."""
    return history_tags(drill.size.history_days)


# ---------------------------------------------------------------------------------------------------------
# Drill 2: API faults on both APIs at once


def fault_config(seed: int = 2, read_timeout: float = 3.0):
    from imocha_sandbox.server import FaultConfig

    return FaultConfig(error_5xx_share=0.10, rate_429_share=0.05, drop_share=0.02, timeout_share=0.01,
                       retry_after_seconds=1, timeout_seconds=read_timeout + 1.5, seed=seed)


def drill_faults(drill: Drill, baseline_requests: int | None = None) -> DrillOutcome:
    """10% 5xx, 5% 429 with Retry-After, 2% dropped connections, 1% read timeouts on both APIs; one full sync."""
    drill.sandbox.imocha.faults.set(fault_config(seed=21))
    drill.sandbox.degreed.faults.set(fault_config(seed=22))
    # Make sure one read timeout lands on a create that Degreed then processes (the ambiguous case).
    slow = float(drill.env.get("IMOCHA_PIPELINE_HTTP_READ_TIMEOUT_SECONDS", "3")) + 1.0
    drill.sandbox.degreed_gate.arm(GateRule(nth=3, when="before", methods=frozenset({"POST"}),
                                            path_prefix="/api/v2/skill-ratings", hold=False,
                                            action=lambda: time.sleep(slow)))
    try:
        results = drill.sync_all()
    finally:
        drill.sandbox.imocha.faults.clear()
        drill.sandbox.degreed.faults.clear()
        drill.sandbox.degreed_gate.disarm()
    comparison = drill.compare()
    outcome = DrillOutcome("2 API faults (5xx/429/drop/timeout)", comparison, baseline_requests)
    by_kind: dict[str, int] = {}
    for sim in (drill.sandbox.imocha, drill.sandbox.degreed):
        for entry in sim.log.entries():
            if entry.fault:
                by_kind[entry.fault] = by_kind.get(entry.fault, 0) + 1
    outcome.facts = {"runs_succeeded": [r.success for r in results], "faults": by_kind,
                     "failures": [failure_texts(r) for r in results if not r.success]}
    outcome.ok = all(r.success for r in results[:2])
    return outcome


# ---------------------------------------------------------------------------------------------------------
# Drill 3: token expiry (refreshed transparently) and revocation (a clear stop, no ledger corruption)


def token_requests(drill: Drill, since: int = 0) -> int:
    return sum(1 for e in drill.sandbox.degreed.log.entries(since) if e.path == "/oauth/token")


def drill_tokens(drill: Drill, revoke_at: int = 8, expire_at: int = 5) -> DrillOutcome:
    degreed, gate = drill.sandbox.degreed, drill.sandbox.degreed_gate
    assert drill.run("assessment_sync_job").success
    # Revocation in the middle of the completion apply: the run stops with a clear error.
    gate.arm(GateRule(nth=revoke_at, when="after", hold=False,
                      action=lambda: degreed.revoke_client(DEFAULT_CLIENT)))
    revoked = drill.run_completions()
    gate.disarm()
    ledger = drill.ledger()
    acknowledged = {(r["entity"], r["record_key"]) for r in ledger if r["state"] == "acknowledged"
                    and r["entity"] != "assessment"}
    _, completions, ratings = _ours(drill)
    held_by_degreed = len(completions) + len(ratings)
    facts = {
        "revoked_run_failed": not revoked.success,
        "revoked_failures": failure_texts(revoked),
        "sending_after_revocation": [r["record_key"] for r in ledger if r["state"] == "sending"],
        "ledger_acknowledged": len(acknowledged), "degreed_holds": held_by_degreed,
    }
    # The operator restores the key; a later run refreshes an expired token on its own.
    degreed.add_client(DEFAULT_CLIENT, _spec(drill))
    mark = drill.sandbox.degreed.log.last_seq
    gate.arm(GateRule(nth=expire_at, when="after", hold=False, action=degreed.expire_tokens))
    results = drill.sync_all()
    gate.disarm()
    facts["recovery_success"] = [r.success for r in results]
    facts["token_requests_in_recovery"] = token_requests(drill, mark)
    facts["unauthorized_in_recovery"] = sum(1 for e in drill.sandbox.degreed.log.entries(mark) if e.status == 401)
    outcome = DrillOutcome("3 token expiry and revocation", drill.compare())
    outcome.facts = facts
    outcome.ok = (facts["revoked_run_failed"] and not facts["sending_after_revocation"]
                  and facts["ledger_acknowledged"] == held_by_degreed and all(facts["recovery_success"])
                  and facts["unauthorized_in_recovery"] >= 1)
    return outcome


DEFAULT_CLIENT = "imocha-sandbox"


def _spec(drill: Drill):
    from imocha_pipeline.settings import DEGREED_REQUIRED_SCOPES
    from imocha_sandbox.degreed import ApiClientSpec

    return ApiClientSpec(drill.sandbox.degreed_secret, frozenset(DEGREED_REQUIRED_SCOPES), "IMOCHA")


def _ours(drill: Drill):
    from imocha_drills.harness import degreed_records

    return degreed_records(drill.sandbox)


# ---------------------------------------------------------------------------------------------------------
# Drill 4: cursor expiry in the middle of a page chain


def drill_cursors(drill: Drill, completions: int = 2200, ratings: int = 1100) -> DrillOutcome:
    """Degreed holds more than a page (1000) per window; a cursor expires mid-chain in the completions read
    and in the skill-ratings read. The read restarts that window (not the whole read) and sees everything."""
    from datetime import UTC, datetime, timedelta

    from imocha_pipeline import staging

    degreed, gate = drill.sandbox.degreed, drill.sandbox.degreed_gate
    results = drill.sync_all(reconcile=False)
    users = [u["email"] for u in degreed.state()["users"]][:20]
    contents = [f"imocha-{t.test_id}" for t in drill.sandbox.world.tests]
    now = datetime.now(UTC).replace(microsecond=0)
    for i in range(completions):  # two 7-day windows with more than a page each
        degreed.add_completion(users[i % len(users)], contents[i % len(contents)],
                               now - timedelta(days=1 + (i % 12), minutes=i))
    for i in range(ratings):
        degreed.add_skill_rating(users[i % len(users)], f"Drill skill {i}", 1 + i % 8,
                                 rated_at=now - timedelta(days=i % 20))
    before_clean = degreed.log.last_seq
    clean = drill.run("reconcile_job")  # the same read without a fault: the reference for extra requests
    clean_requests = len(degreed.log.entries(before_clean))
    mark = degreed.log.last_seq
    gate.arm(GateRule(nth=1, when="before", methods=frozenset({"GET"}), path_prefix="/api/v2/completions",
                      query_contains="next=", hold=False, action=degreed.expire_cursors))
    first = drill.run("reconcile_job")
    completions_restarted = bool(gate.reached.is_set())
    between = degreed.log.last_seq
    gate.arm(GateRule(nth=1, when="before", methods=frozenset({"GET"}), path_prefix="/api/v2/skill-ratings",
                      query_contains="next=", hold=False, action=degreed.expire_cursors))
    second = drill.run("reconcile_job")
    ratings_restarted = bool(gate.reached.is_set())
    gate.disarm()
    reads = [e for e in degreed.log.entries(mark) if e.method == "GET" and e.path == "/api/v2/completions"
             and e.seq <= between]
    first_pages = [e.query for e in reads if "next=" not in e.query]
    expired = [e for e in degreed.log.entries(mark) if e.status == 400]
    with staging.get_engine(drill.staging_url).connect() as conn:
        staged_completions = {r["degreed_id"] for r in staging.read_rows(conn, staging.degreed_completions)}
        staged_ratings = {r["degreed_id"] for r in staging.read_rows(conn, staging.degreed_skill_ratings)}
    state = degreed.state()
    cutoff = (now - timedelta(days=29)).date()
    want_completions = {c["id"] for c in state["completions"] if c["provider_code"] == "IMOCHA"
                        and datetime.fromisoformat(c["completed_at"].replace("Z", "+00:00")).date() >= cutoff}
    want_ratings = {r["id"] for r in state["skill_ratings"] if r["provider_code"] == "IMOCHA"}
    comparison = Comparison(expected=len(want_completions) + len(want_ratings))
    comparison.lost = sorted((want_completions - staged_completions) | (want_ratings - staged_ratings))
    comparison.extra = sorted((staged_completions - want_completions) | (staged_ratings - want_ratings))
    from imocha_drills.harness import request_counts

    comparison.requests = request_counts(drill.sandbox, (drill.sandbox.imocha.log.last_seq, mark))
    windows = {}
    for query in first_pages:
        windows[query] = windows.get(query, 0) + 1
    outcome = DrillOutcome("4 cursor expiry mid page chain", comparison, baseline_requests=2 * clean_requests)
    outcome.facts = {
        "sync_success": [r.success for r in results],
        "reconcile_success": [clean.success, first.success, second.success],
        "cursor_expired_answers": len(expired), "completions_restarted": completions_restarted,
        "ratings_restarted": ratings_restarted, "first_page_reads_per_window": sorted(windows.values()),
        "windows": len(windows), "staged_completions": len(staged_completions),
        "staged_ratings": len(staged_ratings),
    }
    outcome.ok = (clean.success and first.success and second.success and len(expired) == 2 and completions_restarted
                  and ratings_restarted and sorted(windows.values()) == [1] * (len(windows) - 1) + [2])
    return outcome


# ---------------------------------------------------------------------------------------------------------
# Drill 5: two runs at once for the same entity


def drill_concurrent(drill: Drill, fresh_today: int = 6, timeout: float = 180) -> DrillOutcome:
    """Two overlaps, each in separate processes, proven with the request log (no record created twice):

    1. a sensor-style run of today starts while a backfill of the whole history is in its apply step (the
       backfill is paused on its first write until the sensor run is done, then carries on with its plan);
    2. two backfills of the whole history start at the same moment.
    """
    from imocha_drills.harness import today_tags

    gate = drill.sandbox.degreed_gate
    # The backfill waits on its paused write as long as it takes (no read timeout while it is paused).
    drill.env["IMOCHA_PIPELINE_HTTP_READ_TIMEOUT_SECONDS"] = "120"
    assert drill.run("assessment_sync_job").success
    finish_today(drill, fresh_today)
    mark = drill.sandbox.degreed.log.last_seq
    gate.arm(GateRule(nth=1, when="before", methods=frozenset({"POST"}), path_prefix="/api/v2/completions",
                      hold=True, resume=True))
    backfill = drill.child_completions()
    paused = False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and backfill.process.is_alive() and not paused:
        paused = gate.wait(0.05)
    sensor = drill.start_child("completion_sync_job", today_tags()).wait(timeout)
    gate.release()
    backfill_result = backfill.wait(timeout)
    gate.disarm()
    finish_today(drill, fresh_today, offset=fresh_today)
    both = [drill.child_completions(), drill.child_completions()]
    finished = [backfill_result, sensor] + [child.wait(timeout) for child in both]
    reconcile = drill.run("reconcile_job")
    creates = processed_creates(drill.sandbox, mark)
    outcome = DrillOutcome("5 concurrent runs, same entity", drill.compare())
    outcome.facts = {"backfill_paused_while_sensor_ran": paused,
                     "runs_succeeded": [f.get("success") for f in finished], "reconcile": reconcile.success,
                     "records_created_more_than_once": [k for k, n in creates.items() if n > 1],
                     "creates": sum(creates.values())}
    outcome.ok = (paused and all(f.get("success") for f in finished)
                  and not outcome.facts["records_created_more_than_once"])
    return outcome


def finish_today(drill: Drill, count: int, offset: int = 0) -> None:
    """Attempts finished today by learners Degreed knows (so today's partition has work)."""
    learners = [x for x in drill.sandbox.world.learners if x.in_degreed]
    tests = drill.sandbox.world.tests
    for i in range(offset, offset + count):
        learner, test = learners[i % len(learners)], tests[(i // len(learners) + i) % len(tests)]
        drill.sandbox.imocha.complete_attempt(test.test_id, learner.email, learner.name,
                                              bank_scores=20.0 + (7 * i) % 80, time_taken_seconds=60)


# ---------------------------------------------------------------------------------------------------------
# Drill 6: the staging database is lost in the middle of a run (PostgreSQL)


def drill_database_lost(drill: Drill, proxy, admin_url: str, application_name: str, at: int = 6) -> DrillOutcome:
    """The completion apply loses PostgreSQL right after Degreed acknowledged a write: the run fails with a
    clear error; once the database is back the next run completes exactly, sending nothing twice."""
    import sqlalchemy as sa

    def lose_database() -> None:
        proxy.cut()
        engine = sa.create_engine(admin_url)
        with engine.begin() as conn:
            conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE application_name = :name AND pid <> pg_backend_pid()"),
                         {"name": application_name})
        engine.dispose()

    assert drill.run("assessment_sync_job").success
    gate = drill.sandbox.degreed_gate
    gate.arm(GateRule(nth=at, when="after", hold=False, action=lose_database))
    lost = drill.run_completions()
    gate.disarm()
    failures = failure_texts(lost)
    proxy.restore()
    results = drill.sync_all()
    creates = processed_creates(drill.sandbox)
    outcome = DrillOutcome("6 staging database lost mid-run", drill.compare())
    outcome.facts = {"failed_run": not lost.success, "failures": failures,
                     "recovery_success": [r.success for r in results],
                     "created_twice": [k for k, n in creates.items() if n > 1]}
    outcome.ok = (not lost.success and all(r.success for r in results) and not outcome.facts["created_twice"])
    return outcome



"""``imocha-pipeline demo``: the whole sync against the built-in sandbox, with a readable summary."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg

from imocha_pipeline import settings, staging
from imocha_pipeline.clients.degreed import DegreedClient
from imocha_pipeline.clients.imocha import ImochaClient
from imocha_pipeline.connections import shared_degreed_client, shared_imocha_client
from imocha_pipeline.definitions import build_definitions
from imocha_pipeline.defs.resources import resources_from_settings
from imocha_sandbox.runtime import Sandbox, SandboxConfig


def _metadata(result: dg.ExecuteInProcessResult, node: str) -> dict:
    events = result.asset_materializations_for_node(node)
    return {key: value.value for key, value in events[-1].metadata.items()} if events else {}


def sandbox_clients(box: Sandbox, staging_url: str) -> tuple[ImochaClient, DegreedClient]:
    """The demo's own clients, drawing from the shared budgets in the demo's staging database like the runs'."""
    env = box.env()
    degreed = settings.DegreedSettings(
        client_id=env["DEGREED_CLIENT_ID"], client_secret=env["DEGREED_CLIENT_SECRET"],
        api_base_url=env["DEGREED_API_BASE_URL"], token_url=env["DEGREED_TOKEN_URL"],
        rate_limit_per_minute=settings.DEGREED_RATE_LIMIT_PER_MINUTE.from_values(env))
    return (shared_imocha_client(env["IMOCHA_BASE_URL"], env["IMOCHA_API_KEY"], staging_url),
            shared_degreed_client(degreed, staging_url))


def show_sandbox(box: Sandbox, echo: Callable[[str], None], staging_url: str) -> None:
    """Run both clients against the sandbox and print what they fetched."""
    imocha, degreed = sandbox_clients(box, staging_url)
    try:
        _show(imocha, degreed, echo)
    finally:
        imocha.close()
        degreed.close()


def _show(imocha: ImochaClient, degreed: DegreedClient, echo: Callable[[str], None]) -> None:
    tests = imocha.list_tests()
    echo(f"iMocha: {len(tests)} tests, e.g.")
    for test in tests[:3]:
        links = imocha.list_test_links(test.test_id)
        active = [link for link in links if link.is_active]
        echo(f"  - {test.test_id} {test.name!r}, {test.duration_minutes} min, "
             f"{len(active)} active link(s) of {len(links)}")
    now = datetime.now(UTC)
    attempts = imocha.list_attempts(now - timedelta(days=30), now)
    echo(f"iMocha: {len(attempts)} finished attempts in the last 30 days")
    if attempts:
        report = imocha.get_report(attempts[-1].test_invitation_id)
        skills = ", ".join(f"{s.qb_name} {s.percent:.0f}%" for s in (report.skills or []) if s.percent is not None)
        echo(f"  latest: {report.candidate_email} scored {report.score_percentage}% on {report.test_name!r} "
             f"({report.status}); skills: {skills}")
    providers = degreed.list_providers()
    echo(f"Degreed: provider(s) visible: {', '.join(p.name for p in providers)}; "
         f"{sum(1 for _ in degreed.iter_assessments())} assessments before the sync")


def _finish_attempts(box: Sandbox, count: int) -> dict[int, datetime]:
    """Finish ``count`` new attempts now; returns invitation id -> finish time."""
    finished: dict[int, datetime] = {}
    learners = [x for x in box.world.learners if x.in_degreed]
    for index in range(count):
        learner = learners[index % len(learners)]
        test = box.world.tests[index % len(box.world.tests)]
        invitation = box.imocha.complete_attempt(test.test_id, learner.email, learner.name,
                                                 bank_scores=55.0 + 8 * index)
        finished[invitation] = datetime.now(UTC)
    return finished


def _sync_new_attempts(defs: dg.Definitions, instance: dg.DagsterInstance, echo) -> int:
    """One tick of the polling sensor, then the runs it asked for (what the daemon would do)."""
    from imocha_pipeline.defs.sensors import imocha_completions_sensor

    resources = {"imocha": defs.resources["imocha"], "staging_db": defs.resources["staging_db"]}
    context = dg.build_sensor_context(instance=instance, resources=resources)
    tick = imocha_completions_sensor(context)
    requests = tick.run_requests or []
    echo(f"  sensor tick: {len(requests)} run(s) requested"
         + (f" for {', '.join(r.partition_key for r in requests)}" if requests else f" ({tick.skip_reason})"))
    job = defs.resolve_job_def("completion_sync_job")
    failures = 0
    for request in requests:
        result = job.execute_in_process(instance=instance, partition_key=request.partition_key,
                                        tags=dict(request.tags), raise_on_error=False)
        failures += 0 if result.success else 1
    return failures


def _delays(staging_url: str, box: Sandbox, finished: dict[int, datetime]) -> list[float]:
    """Seconds from each attempt finishing to Degreed acknowledging its completion."""
    with staging.get_engine(staging_url).connect() as conn:
        ledger = staging.read_rows(conn, staging.sync_ledger, staging.sync_ledger.c.entity == "completion")
    acknowledged = {(row["payload"] or {}).get("test_invitation_id"): row["acknowledged_at"] for row in ledger
                    if row["state"] == "acknowledged"}
    return [(acknowledged[i] - done).total_seconds() for i, done in finished.items() if i in acknowledged]


def run_demo(seed: int = 7, workdir: str = ".imocha_demo", echo: Callable[[str], None] = print,
             new_attempts: int = 5) -> int:
    folder = Path(workdir).resolve()
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    staging_url = f"sqlite:///{folder / 'staging.sqlite'}"
    failures = 0
    (folder / "dagster_home").mkdir()
    with Sandbox(SandboxConfig(seed=seed)) as box, \
            dg.DagsterInstance.local_temp(str(folder / "dagster_home")) as instance:
        echo(f"Sandbox: iMocha simulator at {box.imocha_url}, Degreed simulator at {box.degreed_url} "
             f"({box.config.degreed_rate_limit} requests/min)")
        show_sandbox(box, echo, staging_url)
        defs = build_definitions(resources_from_settings(box.env(), staging_url))

        echo("\n1. assessment_sync_job ...")
        started = time.monotonic()
        result = defs.resolve_job_def("assessment_sync_job").execute_in_process(instance=instance,
                                                                                raise_on_error=False)
        failures += 0 if result.success else 1
        plan = _metadata(result, "assessment_sync_plan")
        applied = _metadata(result, "assessment_sync_apply")
        desired = _metadata(result, "desired_assessments")
        echo(f"   assessments: created {applied.get('assessment_created', 0)}, "
             f"updated {applied.get('assessment_updated', 0)}, retired {applied.get('assessment_retired', 0)}, "
             f"unchanged {plan.get('plan_unchanged', 0)}, quarantined {desired.get('quarantined', 0)}, "
             f"failed {applied.get('assessment_failed', 0)} "
             f"({time.monotonic() - started:.1f} s)")
        in_degreed = [a for a in box.degreed.state()["assessments"] if a["external_id"].startswith("imocha-")]
        if in_degreed:
            echo(f"   e.g. {in_degreed[0]['external_id']} {in_degreed[0]['title']!r} -> {in_degreed[0]['url']}")

        today = datetime.now(UTC).date()
        first = min((a.attempted_on.date() for a in box.world.attempts), default=today)
        echo(f"\n2. completion_sync_job backfill {first}..{today} (history, one run) ...")
        started = time.monotonic()
        result = defs.resolve_job_def("completion_sync_job").execute_in_process(
            instance=instance, raise_on_error=False,
            tags={"dagster/asset_partition_range_start": str(first), "dagster/asset_partition_range_end": str(today)})
        failures += 0 if result.success else 1
        state = box.degreed.state()
        echo(f"   Degreed now holds {len(state['completions'])} completions and {len(state['skill_ratings'])} "
             f"skill ratings ({time.monotonic() - started:.1f} s)")

        echo(f"\n3. {new_attempts} learners finish attempts now; the polling sensor picks them up ...")
        before = len(box.degreed.state()["completions"])
        finished = _finish_attempts(box, new_attempts)
        time.sleep(1.5)  # the tick's window ends at a whole second; let it cover the attempts just finished
        failures += _sync_new_attempts(defs, instance, echo)
        delays = sorted(_delays(staging_url, box, finished))
        state = box.degreed.state()
        echo(f"   completions created: {len(state['completions']) - before}; skill ratings in Degreed: "
             f"{len(state['skill_ratings'])}")
        if delays:
            echo(f"   attempt finished -> Degreed acknowledged: median {delays[len(delays) // 2]:.1f} s, "
                 f"max {delays[-1]:.1f} s (one sensor tick, evaluated at once here; the daemon polls every 30 s)")

        with staging.get_engine(staging_url).connect() as conn:
            quarantine = [r for r in staging.read_rows(conn, staging.sync_quarantine) if r["status"] == "open"]
        kinds: dict[str, int] = {}
        for row in quarantine:
            kinds[row["kind"]] = kinds.get(row["kind"], 0) + 1
        echo(f"\nQuarantine (open): {kinds or 'empty'}")
        for row in quarantine[:3]:
            echo(f"   {row['entity']} {row['record_key']}: {row['reason']}")
    engine = staging.get_engine(staging_url)
    echo(f"\nStaged tables ({staging_url}): " + ", ".join(sorted(staging.table_names())))
    engine.dispose()
    echo("Query them with any SQL client, e.g. sqlite3 " + str(folder / "staging.sqlite")
         + " 'select entity, state, count(*) from sync_ledger group by 1, 2'")
    if failures:
        echo(f"{failures} run(s) FAILED; see the log above.")
        return 1
    return 0

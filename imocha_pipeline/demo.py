"""``imocha-pipeline demo``: the whole sync against the built-in sandbox, with a readable summary."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg

from imocha_pipeline.clients.degreed import DegreedClient
from imocha_pipeline.clients.imocha import ImochaClient
from imocha_pipeline.definitions import build_definitions
from imocha_pipeline.defs.resources import resources_from_settings
from imocha_pipeline.sandbox.runtime import Sandbox, SandboxConfig
from imocha_pipeline.sync import staging


def _metadata(result: dg.ExecuteInProcessResult, node: str) -> dict:
    events = result.asset_materializations_for_node(node)
    return {key: value.value for key, value in events[-1].metadata.items()} if events else {}


def show_sandbox(box: Sandbox, echo: Callable[[str], None]) -> None:
    """Run both clients against the sandbox and print what they fetched."""
    env = box.env()
    imocha = ImochaClient(env["IMOCHA_BASE_URL"], env["IMOCHA_API_KEY"])
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
    degreed = DegreedClient(env["DEGREED_API_BASE_URL"], env["DEGREED_TOKEN_URL"], env["DEGREED_CLIENT_ID"],
                            env["DEGREED_CLIENT_SECRET"])
    providers = degreed.list_providers()
    echo(f"Degreed: provider(s) visible: {', '.join(p.name for p in providers)}; "
         f"{sum(1 for _ in degreed.iter_assessments())} assessments before the sync")


def run_demo(seed: int = 7, workdir: str = ".imocha_demo", echo: Callable[[str], None] = print) -> int:
    folder = Path(workdir).resolve()
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    staging_url = f"sqlite:///{folder / 'staging.sqlite'}"
    with Sandbox(SandboxConfig(seed=seed)) as box:
        echo(f"Sandbox: iMocha simulator at {box.imocha_url}, Degreed simulator at {box.degreed_url} "
             f"({box.config.degreed_rate_limit} requests/min)")
        show_sandbox(box, echo)
        echo("\nRunning assessment_sync_job ...")
        started = time.monotonic()
        job = build_definitions(resources_from_settings(box.env(), staging_url)).resolve_job_def(
            "assessment_sync_job")
        result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
        elapsed = time.monotonic() - started
        plan = _metadata(result, "assessment_sync_plan")
        applied = _metadata(result, "assessment_sync_apply")
        desired = _metadata(result, "desired_assessments")
        echo(f"Assessments: created {applied.get('created', 0)}, updated {applied.get('updated', 0)}, "
             f"retired {applied.get('retired', 0)}, unchanged {plan.get('plan_unchanged', 0)}, "
             f"quarantined {desired.get('quarantined', 0)}, failed {applied.get('failed', 0)} "
             f"({elapsed:.1f} s)")
        in_degreed = [a for a in box.degreed.state()["assessments"] if a["external_id"].startswith("imocha-")]
        if in_degreed:
            sample = in_degreed[0]
            echo(f"  e.g. {sample['external_id']} {sample['title']!r} -> {sample['url']}")
    engine = staging.get_engine(staging_url)
    echo(f"\nStaged tables ({staging_url}): " + ", ".join(sorted(staging.table_names())))
    engine.dispose()
    echo("Query them with any SQL client, e.g. sqlite3 " + str(folder / "staging.sqlite")
         + " 'select * from sync_ledger'")
    if not result.success:
        echo("The sync run FAILED; see the log above.")
        return 1
    return 0

"""``imocha-pipeline demo``: the whole sync against the built-in sandbox, told as a short story.

By default the output is what a first-time reader needs: what each run fetched, planned and sent, how long it
took, and what is waiting and why, with a progress line while the history backfill runs at the rate budget.
Dagster's own console stream (the DEBUG events, the sensor's log, beta warnings) goes to ``dagster.log`` in
the work folder; ``--verbose`` shows it on the console instead.
"""

from __future__ import annotations

import contextlib
import shutil
import statistics
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg

from imocha_pipeline import settings, staging
from imocha_pipeline.clients.degreed import DegreedClient
from imocha_pipeline.clients.imocha import ImochaClient
from imocha_pipeline.connections import shared_degreed_client, shared_imocha_client
from imocha_pipeline.demo_progress import ProgressLine
from imocha_pipeline.demo_story import RunFigures, Staged, acknowledged_counts, counts_text, waiting_lines
from imocha_pipeline.sync.core.progress import format_duration
from imocha_sandbox.runtime import Sandbox, SandboxConfig

LOG_FILE = "dagster.log"
# The demo's instance: telemetry off, so Dagster prints no telemetry banner on its first run.
INSTANCE_OVERRIDES = {"telemetry": {"enabled": False}}
DEGREED_STATE = {"assessment": "assessments", "completion": "completions", "skill_rating": "skill_ratings"}


def console_run_config(verbose: bool) -> dict:
    """Run config of the demo's runs: Dagster's console logger at DEBUG with ``--verbose``, else at INFO (the
    pipeline's own lines, no event stream), and those go to ``dagster.log``."""
    return {"loggers": {"console": {"config": {"log_level": "DEBUG" if verbose else "INFO"}}}}


@contextlib.contextmanager
def dagster_console(folder: Path, verbose: bool) -> Iterator[Path | None]:
    """Where Dagster's console output goes: the terminal with ``verbose``; else ``dagster.log`` in the work folder
    (Dagster's loggers write to ``sys.stderr``), with its beta and preview warnings silenced."""
    if verbose:
        yield None
        return
    path = folder / LOG_FILE
    with open(path, "a", encoding="utf-8") as log, contextlib.redirect_stderr(log), warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        warnings.simplefilter("ignore", dg.PreviewWarning)
        yield path


def _from_imocha(record: dict) -> bool:
    """A record of the Degreed simulator's state that came from iMocha (other providers' content is there too)."""
    return not record.get("external_id") or str(record["external_id"]).startswith("imocha-")


def _new_run_id() -> str:
    """A run id chosen before the run starts, so the progress line can follow the run's rows."""
    return str(uuid.uuid4())


def _failed(result: dg.ExecuteInProcessResult, echo: Callable[[str], None]) -> int:
    """0 for a successful run; else 1, after printing the first failed step's error."""
    if result.success:
        return 0
    failures = [event for event in result.all_events if event.is_step_failure]
    first = failures[0] if failures else None
    message = first.step_failure_data.error.message.strip().splitlines()[0] if first and \
        first.step_failure_data.error else "see the log"
    echo(f"   run {result.run_id} FAILED" + (f" at {first.step_key}" if first else "") + f": {message}")
    return 1


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
    """Finish ``count`` new attempts now, the last one by a learner with no Degreed account (when the world has
    one: the story's "waiting"); returns invitation id -> finish time."""
    finished: dict[int, datetime] = {}
    learners = [x for x in box.world.learners if x.in_degreed]
    missing = [x for x in box.world.learners if not x.in_degreed]
    for index in range(count):
        learner = missing[0] if missing and index == count - 1 else learners[index % len(learners)]
        test = box.world.tests[index % len(box.world.tests)]
        invitation = box.imocha.complete_attempt(test.test_id, learner.email, learner.name,
                                                 bank_scores=55.0 + 8 * index)
        finished[invitation] = datetime.now(UTC)
    return finished


def _sync_new_attempts(defs: dg.Definitions, instance: dg.DagsterInstance, echo, run_config: dict,
                       ) -> tuple[int, list[str]]:
    """One tick of the polling sensor, then the runs it asked for (what the daemon would do); returns the number
    of failed runs and the ids of the runs."""
    from imocha_pipeline.defs.sensors import imocha_completions_sensor

    resources = {"imocha": defs.resources["imocha"], "staging_db": defs.resources["staging_db"]}
    context = dg.build_sensor_context(instance=instance, resources=resources)
    tick = imocha_completions_sensor(context)
    requests = tick.run_requests or []
    echo(f"   sensor tick: {len(requests)} run(s) requested"
         + (f" for {', '.join(r.partition_key for r in requests)}" if requests else f" ({tick.skip_reason})"))
    job = defs.resolve_job_def("completion_sync_job")
    failures, run_ids = 0, []
    for request in requests:
        run_id = _new_run_id()
        result = job.execute_in_process(instance=instance, partition_key=request.partition_key, run_id=run_id,
                                        tags=dict(request.tags), raise_on_error=False, run_config=run_config)
        failures += _failed(result, echo)
        run_ids.append(run_id)
    return failures, run_ids


def _delays(staging_url: str, box: Sandbox, finished: dict[int, datetime]) -> list[float]:
    """Seconds from each attempt finishing to Degreed acknowledging its completion."""
    with staging.get_engine(staging_url).connect() as conn:
        ledger = staging.read_rows(conn, staging.sync_ledger, staging.sync_ledger.c.entity == "completion")
    acknowledged = {(row["payload"] or {}).get("test_invitation_id"): row["acknowledged_at"] for row in ledger
                    if row["state"] == "acknowledged"}
    return [(acknowledged[i] - done).total_seconds() for i, done in finished.items() if i in acknowledged]


def _story(engine, run_id: str, before: Staged, started: float, echo: Callable[[str], None],
           fetched: str) -> RunFigures:
    figures = RunFigures.read(engine, run_id)
    echo(f"   fetched  {fetched.format(delta=Staged.read(engine) - before)}")
    echo(f"   planned  {figures.planned_line()}")
    for line in figures.held_lines():
        echo(f"            {line}")
    echo(f"   sent     {figures.sent_line()} in {format_duration(time.monotonic() - started)}")
    return figures


def _sent_reader(engine, run_id: str) -> Callable[[], tuple[int, int]]:
    """(writes of the run that are done: acknowledged, quarantined or failed; writes the run planned) for the
    progress line."""
    def read() -> tuple[int, int]:
        figures = RunFigures.read(engine, run_id)
        done = sum(figures.sent.values()) + sum(figures.waiting.values()) + sum(figures.failed.values())
        return done, figures.writes
    return read


def run_demo(seed: int = 7, workdir: str = ".imocha_demo", echo: Callable[[str], None] = print,
             new_attempts: int = 5, verbose: bool = False, degreed_rate_limit: int = 70) -> int:
    """Run the demo in ``workdir`` (recreated); returns the exit code (1 when a run failed)."""
    folder = Path(workdir).resolve()
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    staging_url = f"sqlite:///{folder / 'staging.sqlite'}"
    run_config = console_run_config(verbose)
    failures = 0
    (folder / "dagster_home").mkdir()
    config = SandboxConfig(seed=seed, degreed_rate_limit=degreed_rate_limit)
    home = str(folder / "dagster_home")
    with dagster_console(folder, verbose) as log_path, Sandbox(config) as box, \
            dg.DagsterInstance.local_temp(home, overrides=INSTANCE_OVERRIDES) as instance:
        from imocha_pipeline.definitions import build_definitions
        from imocha_pipeline.defs.resources import resources_from_settings

        rate = box.config.degreed_rate_limit
        echo(f"Sandbox: iMocha simulator at {box.imocha_url}, Degreed simulator at {box.degreed_url} "
             f"({rate} requests/min)")
        show_sandbox(box, echo, staging_url)
        defs = build_definitions(resources_from_settings(box.env(), staging_url))
        engine = staging.get_engine(staging_url)

        echo("\n1. assessment_sync_job: every iMocha test as Degreed Assessment content ...")
        started, before, run_id = time.monotonic(), Staged.read(engine), _new_run_id()
        result = defs.resolve_job_def("assessment_sync_job").execute_in_process(
            instance=instance, raise_on_error=False, run_id=run_id, run_config=run_config)
        failures += _failed(result, echo)
        _story(engine, run_id, before, started, echo,
               "{delta.counts[imocha_assessments]} iMocha tests, {delta.counts[degreed_assessments]} Degreed "
               "assessments")
        in_degreed = [a for a in box.degreed.state()["assessments"] if a["external_id"].startswith("imocha-")]
        if in_degreed:
            echo(f"   e.g. {in_degreed[0]['external_id']} {in_degreed[0]['title']!r} -> {in_degreed[0]['url']}")

        today = datetime.now(UTC).date()
        first = min((a.attempted_on.date() for a in box.world.attempts), default=today)
        echo(f"\n2. completion_sync_job: the history {first}..{today} as one backfill run ...")
        started, before, run_id = time.monotonic(), Staged.read(engine), _new_run_id()
        with ProgressLine(_sent_reader(engine, run_id), "sending", rate):
            result = defs.resolve_job_def("completion_sync_job").execute_in_process(
                instance=instance, raise_on_error=False, run_id=run_id, run_config=run_config,
                tags={"dagster/asset_partition_range_start": str(first),
                      "dagster/asset_partition_range_end": str(today)})
        failures += _failed(result, echo)
        _story(engine, run_id, before, started, echo, "{delta.attempts}")
        state = box.degreed.state()
        echo(f"   Degreed now holds {len(state['completions'])} completions and {len(state['skill_ratings'])} "
             f"skill ratings")

        missing = " (one has no Degreed account yet)" if any(not x.in_degreed for x in box.world.learners) else ""
        echo(f"\n3. {new_attempts} learners finish attempts now{missing}; the polling sensor picks them up ...")
        finished = _finish_attempts(box, new_attempts)
        time.sleep(1.5)  # the tick's window ends at a whole second; let it cover the attempts just finished
        started, before = time.monotonic(), Staged.read(engine)
        failed, run_ids = _sync_new_attempts(defs, instance, echo, run_config)
        failures += failed
        for run_id in run_ids:
            _story(engine, run_id, before, started, echo, "{delta.attempts}")
        delays = _delays(staging_url, box, finished)
        if delays:
            echo(f"   attempt finished -> Degreed acknowledged: median {statistics.median(delays):.1f} s, "
                 f"max {max(delays):.1f} s (one sensor tick, evaluated at once here; the daemon polls every 30 s)")

        echo("\nNot in Degreed, and why:")
        for line in waiting_lines(engine) or ["nothing: Degreed holds everything that is due"]:
            echo(f"   {line}")
        acknowledged = acknowledged_counts(engine)
        echo(f"Ledger, acknowledged by Degreed: {counts_text(acknowledged)}")
        state = box.degreed.state()
        held = {entity: sum(map(_from_imocha, state[key])) for entity, key in DEGREED_STATE.items()}
        echo(f"Degreed (the simulator) holds:   {counts_text(held)}")
    staging.dispose_engine(staging_url)
    echo(f"\nStaged tables ({staging_url}): " + ", ".join(sorted(staging.table_names())))
    echo("Query them with any SQL client, e.g. sqlite3 " + str(folder / "staging.sqlite")
         + " 'select entity, state, count(*) from sync_ledger group by 1, 2'")
    if log_path is not None:
        echo(f"Dagster's own log of the runs: {log_path} (or run with --verbose)")
    if failures:
        echo(f"{failures} run(s) FAILED; see the lines above" + (f" and {log_path}" if log_path else "") + ".")
        return 1
    return 0

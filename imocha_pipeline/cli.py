"""The ``imocha-pipeline`` command: sandbox, demo, doctor, callbacks, bulk-export and db."""

from __future__ import annotations

import signal
import sys
import threading

import click

from imocha_sandbox.runtime import DEFAULT_DEGREED_PORT, DEFAULT_IMOCHA_PORT, Sandbox, SandboxConfig


@click.group()
def main() -> None:
    """Keep Degreed in step with iMocha: assessments, completions and skill ratings."""


@main.command()
@click.option("--imocha-port", default=DEFAULT_IMOCHA_PORT, show_default=True, help="Port of the iMocha simulator.")
@click.option("--degreed-port", default=DEFAULT_DEGREED_PORT, show_default=True,
              help="Port of the Degreed simulator.")
@click.option("--seed", default=7, show_default=True, help="Seed of the generated world.")
@click.option("--degreed-rate-limit", default=70, show_default=True, help="Degreed requests per minute.")
@click.option("--tests", default=10, show_default=True, help="Number of iMocha tests.")
@click.option("--learners", default=30, show_default=True, help="Number of learners.")
@click.option("--attempts", default=40, show_default=True, help="Number of finished attempts.")
def sandbox(imocha_port, degreed_port, seed, degreed_rate_limit, tests, learners, attempts) -> None:
    """Serve both simulators on 127.0.0.1 and print the settings to use them, until interrupted."""
    config = SandboxConfig(seed=seed, tests=tests, learners=learners, attempts=attempts,
                           degreed_rate_limit=degreed_rate_limit, imocha_port=imocha_port,
                           degreed_port=degreed_port)
    box = Sandbox(config).start()
    for line in box.export_lines():
        click.echo(line)
    click.echo(f"# iMocha simulator on {box.imocha_url}, Degreed simulator on {box.degreed_url}; "
               f"control surface under /_sandbox/. Ctrl-C to stop.", err=True)
    sys.stdout.flush()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    finally:
        box.stop()


@main.command()
@click.option("--seed", default=7, show_default=True, help="Seed of the generated world.")
@click.option("--workdir", default=".imocha_demo", show_default=True,
              help="Folder for the demo's staging database and Dagster log (recreated on each run).")
@click.option("--degreed-rate-limit", default=70, show_default=True,
              help="Degreed requests per minute in the sandbox (the history backfill takes about 2 min at 70).")
@click.option("--verbose", is_flag=True,
              help="Also show Dagster's console stream (DEBUG events, warnings) instead of writing it to the log.")
def demo(seed: int, workdir: str, degreed_rate_limit: int, verbose: bool) -> None:
    """Start the sandbox, run the sync against it, and print what happened."""
    from imocha_pipeline.demo import run_demo

    sys.exit(run_demo(seed=seed, workdir=workdir, echo=click.echo, verbose=verbose,
                      degreed_rate_limit=degreed_rate_limit))


@main.command()
@click.option("--scopes", "show_scopes", is_flag=True,
              help="Only print which Degreed scope is needed for what (no network).")
@click.option("--scope", "scope_name", default=None,
              help="Only explain one Degreed scope, in any known spelling (e.g. skill_rating:write).")
def doctor(show_scopes: bool, scope_name: str | None) -> None:
    """Check the configured iMocha and Degreed set-up: token, scopes, provider, iMocha key."""
    from imocha_pipeline.doctor import FAIL, doctor_clients, explain_scope, run_doctor, scope_table

    if show_scopes or scope_name:
        click.echo(explain_scope(scope_name) if scope_name else "\n".join(scope_table()))
        return

    make_degreed, make_imocha = doctor_clients()
    checks = run_doctor(make_degreed, make_imocha)
    for check in checks:
        click.echo(check.line())
    failed = sum(1 for check in checks if check.status == FAIL)
    click.echo(f"\n{len(checks) - failed} of {len(checks)} checks passed" if not failed
               else f"\n{failed} check(s) failed")
    sys.exit(1 if failed else 0)


@main.group(invoke_without_command=True)
@click.option("--host", default=None, help="Interface to listen on (IMOCHA_PIPELINE_CALLBACK_HOST, 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port (IMOCHA_PIPELINE_CALLBACK_PORT, 8790).")
@click.pass_context
def callbacks(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Serve the endpoint for iMocha's completion callbacks (POST /imocha/callbacks/<token>)."""
    if ctx.invoked_subcommand is not None:
        return
    from imocha_pipeline.callbacks_server import serve
    from imocha_pipeline.settings import MissingSettingError

    try:
        serve(host=host, port=port)
    except (MissingSettingError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc


@callbacks.command("replay")
@click.option("--since", "since_hours", default=24.0, show_default=True, help="Look back this many hours.")
@click.option("--dry-run", is_flag=True, help="Only list the attempts whose final callback is missing.")
def callbacks_replay(since_hours: float, dry_run: bool) -> None:
    """Ask iMocha to send again the final callbacks that never reached the inbox."""
    from datetime import timedelta

    from imocha_pipeline.connections import shared_imocha_client
    from imocha_pipeline.settings import ImochaSettings, InvalidSettingError, MissingSettingError, staging_db_url
    from imocha_pipeline.staging import get_engine
    from imocha_pipeline.sync.triggers.callbacks import replay_missed_callbacks

    try:
        cfg = ImochaSettings.from_env()
        url = staging_db_url()
    except (MissingSettingError, InvalidSettingError) as exc:
        raise click.ClickException(str(exc)) from exc
    report = replay_missed_callbacks(shared_imocha_client(cfg.base_url, cfg.api_key, url), get_engine(url),
                                     since=timedelta(hours=since_hours), dry_run=dry_run)
    click.echo(report.summary())


@main.command("bulk-export")
@click.option("--target", type=click.Choice(["directory", "sftp"]), default=None,
              help="Where the file goes (default: IMOCHA_PIPELINE_BULK_TARGET, directory).")
@click.option("--directory", default=None, help="Folder for the file (default: IMOCHA_PIPELINE_BULK_DIRECTORY).")
@click.option("--dry-run", is_flag=True, help="Only count what would go in the file; write and mark nothing.")
def bulk_export(target: str | None, directory: str | None, dry_run: bool) -> None:
    """Write every completion Degreed does not have yet into a Completions Template file (and upload it by SFTP);
    Degreed processes it overnight, the reconcile confirms it. Scores and skill ratings still go by API."""
    import uuid

    from imocha_pipeline.clients.sftp import SftpUploadError
    from imocha_pipeline.settings import InvalidSettingError, MissingSettingError, staging_db_url
    from imocha_pipeline.staging import get_engine
    from imocha_pipeline.staging import versions as schema
    from imocha_pipeline.sync.bulk.export import BulkSettings, export_completions
    from imocha_pipeline.sync.completions.mapping import CompletionMapping
    from imocha_pipeline.sync.completions.plan import plan_unplanned

    run_id = f"bulk-export-{uuid.uuid4().hex[:12]}"
    try:
        bulk = BulkSettings.from_env(target=target, directory=directory)
        url = staging_db_url()
        mapping = CompletionMapping.from_env()
    except (MissingSettingError, InvalidSettingError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        engine = get_engine(url)
    except schema.SchemaOutOfDate as exc:
        raise click.ClickException(str(exc)) from exc
    if not dry_run:
        days = plan_unplanned(engine, mapping, run_id)
        if days:
            click.echo(f"planned {len(days)} day(s) with staged attempts no plan had seen")
    try:
        report = export_completions(engine, bulk, run_id, dry_run=dry_run)
    except (SftpUploadError, OSError) as exc:
        raise click.ClickException(f"{exc}; the records stay outstanding") from exc
    click.echo(report.summary())


@main.command()
@click.option("--email", required=True, help="The learner's email address (any case).")
@click.option("--in-imocha", is_flag=True, help="Also ask iMocha to mask the candidate (POST /v3/gdpr/requests).")
@click.option("--in-degreed", is_flag=True,
              help="Also delete the completions and skill ratings we created in Degreed (by the ledger's ids).")
@click.option("--dry-run", is_flag=True, help="Print what would go, per table and system; change nothing.")
@click.option("--undo", is_flag=True, help="Lift the learner's erasure: their attempts are staged and sent again.")
def forget(email: str, in_imocha: bool, in_degreed: bool, dry_run: bool, undo: bool) -> None:
    """Erase one learner's personal data from the staging tables (and, when asked, in iMocha and Degreed); the
    learner is never staged or sent again until an operator lifts the erasure with --undo."""
    from imocha_pipeline.connections import shared_degreed_client, shared_imocha_client
    from imocha_pipeline.settings import (
        DegreedSettings,
        ImochaSettings,
        InvalidSettingError,
        MissingSettingError,
        staging_db_url,
    )
    from imocha_pipeline.staging import get_engine
    from imocha_pipeline.staging import versions as schema
    from imocha_pipeline.sync.erasure import forget as erasure

    if undo and (in_imocha or in_degreed):
        raise click.UsageError("--undo lifts the erasure here only: it does not go with --in-imocha or --in-degreed")
    try:
        url = staging_db_url()
        engine = get_engine(url)
        imocha = ImochaSettings.from_env() if in_imocha and not dry_run else None
        degreed = DegreedSettings.from_env() if in_degreed and not dry_run else None
        if undo:
            report = erasure.undo(engine, email, dry_run=dry_run)
        else:
            report = erasure.forget(
                engine, email, in_imocha=in_imocha, in_degreed=in_degreed, dry_run=dry_run,
                imocha_client=lambda: shared_imocha_client(imocha.base_url, imocha.api_key, url),
                degreed_client=lambda: shared_degreed_client(degreed, url))
    except (MissingSettingError, InvalidSettingError, ValueError, LookupError, schema.SchemaOutOfDate) as exc:
        raise click.ClickException(str(exc)) from exc
    for line in report.lines():
        click.echo(line)
    if report.failed:
        raise click.ClickException("some Degreed deletes failed (listed above); the next reconcile deletes the "
                                   "rest, or run the same command again to delete them now")


@main.group()
def db() -> None:
    """The staging database's schema: create or upgrade it, show its revision, set up its roles."""


_URL_HELP = "SQLAlchemy URL of the staging database (default: IMOCHA_PIPELINE_STAGING_DB_URL)."


@db.command("upgrade")
@click.option("--url", default=None, help=_URL_HELP)
@click.option("--revision", default="head", show_default=True, help="Revision to upgrade to.")
@click.option("--sql", "as_sql", is_flag=True, help="Print the SQL instead of running it (e.g. for a DBA's review).")
@click.option("--from", "from_revision", default=None,
              help="With --sql: the revision the database is at (default: an empty database).")
def db_upgrade(url: str | None, revision: str, as_sql: bool, from_revision: str | None) -> None:
    """Create the staging tables and views, or upgrade them to this version's schema revision."""
    from imocha_pipeline.settings import staging_db_url
    from imocha_pipeline.staging import describe_url
    from imocha_pipeline.staging import versions as schema

    url = url or staging_db_url()
    if as_sql:
        click.echo(schema.upgrade_sql(url, revision, start=from_revision), nl=False)
        return
    try:
        before, after = schema.upgrade(url, revision)
    except schema.SchemaOutOfDate as exc:
        raise click.ClickException(str(exc)) from exc
    except Exception as exc:
        raise click.ClickException(f"upgrade of {describe_url(url)} failed: {type(exc).__name__}: {exc}") from exc
    if before == after:
        click.echo(f"staging database {describe_url(url)}: already at schema revision {after}")
    else:
        click.echo(f"staging database {describe_url(url)}: schema revision {before or 'none'} -> {after}")


@db.command("current")
@click.option("--url", default=None, help=_URL_HELP)
def db_current(url: str | None) -> None:
    """Show the staging database's schema revision; exit 1 when the pipeline would refuse it."""
    from imocha_pipeline.settings import staging_db_url
    from imocha_pipeline.staging import create_engine, describe_url
    from imocha_pipeline.staging import versions as schema

    url = url or staging_db_url()
    engine = create_engine(url)
    try:
        found = schema.status(engine)
    except Exception as exc:
        raise click.ClickException(f"cannot read {describe_url(url)}: {type(exc).__name__}: {exc}") from exc
    finally:
        engine.dispose()
    click.echo(f"staging database {describe_url(url)}: schema revision {found.current or 'none'} "
               f"(this version needs {found.head})")
    if found.empty:
        click.echo("empty: the first run (or `imocha-pipeline db upgrade`) creates the tables")
        return
    problem = found.problem(describe_url(url))
    if problem:
        click.echo(problem)
        sys.exit(1)
    click.echo("up to date")


@db.command("roles")
@click.option("--analyst", required=True, help="Read-only role: SELECT on the analyst views, nothing else.")
@click.option("--writer", required=True, help="The pipeline's role: read/write on the pipeline's tables.")
@click.option("--url", default=None, help=_URL_HELP)
def db_roles(analyst: str, writer: str, url: str | None) -> None:
    """Create (or update) the pipeline's writer role and a read-only analyst role on PostgreSQL, in the URL's
    schema. New roles get LOGIN and no password: set one with ALTER ROLE ... PASSWORD. Safe to run again."""
    from imocha_pipeline.settings import staging_db_url
    from imocha_pipeline.staging import describe_url
    from imocha_pipeline.staging import versions as schema
    from imocha_pipeline.staging.roles import RolesUnsupported, create_roles

    url = url or staging_db_url()
    try:
        report = create_roles(url, analyst=analyst, writer=writer)
    except (RolesUnsupported, ValueError, schema.SchemaOutOfDate) as exc:
        raise click.ClickException(str(exc)) from exc
    except Exception as exc:
        raise click.ClickException(f"roles on {describe_url(url)} failed: {type(exc).__name__}: {exc}") from exc
    click.echo(report.summary())


if __name__ == "__main__":  # pragma: no cover
    main()

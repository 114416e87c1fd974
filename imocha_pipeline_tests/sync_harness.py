"""The one way tests build the code location against a sandbox and run its jobs.

``definitions_for`` is the product's own wiring (settings read from the sandbox's environment, resources, the
Definitions object); ``SyncHarness`` adds one-line job runs and the reads tests make afterwards.
"""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from imocha_pipeline import staging
from imocha_pipeline.definitions import build_definitions
from imocha_pipeline.defs.resources import SyncSettingsResource, resources_from_settings
from imocha_sandbox.runtime import Sandbox

UNREACHABLE = "http://127.0.0.1:9"
UNREACHABLE_SETTINGS = {"IMOCHA_API_KEY": "k", "IMOCHA_BASE_URL": UNREACHABLE, "DEGREED_CLIENT_ID": "c",
                        "DEGREED_CLIENT_SECRET": "s", "DEGREED_API_BASE_URL": UNREACHABLE,
                        "DEGREED_TOKEN_URL": f"{UNREACHABLE}/oauth/token"}
"""Settings whose APIs refuse every connection: for runs and ticks that must not (or need not) reach either."""


def definitions_for(env: dict[str, str] | Sandbox, staging_url: str, **sync_settings) -> dg.Definitions:
    """The code location's definitions for a sandbox (or a settings mapping) and a staging database."""
    settings = env.env() if isinstance(env, Sandbox) else env
    sync = SyncSettingsResource(**sync_settings) if sync_settings else None
    return build_definitions(resources_from_settings(settings, staging_url, sync))


def today_partition() -> str:
    return datetime.now(UTC).date().isoformat()


class SyncHarness:
    """A sandbox, a staging database and a Dagster instance, with one-line job runs."""

    def __init__(self, sandbox: Sandbox, staging_url: str, instance, **sync_settings):
        self.sandbox = sandbox
        self.staging_url = staging_url
        self.instance = instance
        self.defs = definitions_for(sandbox, staging_url, **sync_settings)

    def run(self, job_name: str, **kwargs) -> dg.ExecuteInProcessResult:
        """Run a job in process on this harness's instance; failures are returned, not raised."""
        kwargs.setdefault("raise_on_error", False)
        return self.defs.resolve_job_def(job_name).execute_in_process(instance=self.instance, **kwargs)

    def assessments(self, run_config=None) -> dg.ExecuteInProcessResult:
        result = self.run("assessment_sync_job", run_config=run_config)
        assert result.success
        return result

    def completions(self, start: str | None = None, end: str | None = None, run_config=None):
        tags = {"dagster/asset_partition_range_start": start or today_partition(),
                "dagster/asset_partition_range_end": end or start or today_partition()}
        return self.run("completion_sync_job", tags=tags, run_config=run_config)

    def catch_up(self):
        return self.run("catch_up_job")

    def writes(self, since: int = 0) -> list:
        return self.sandbox.degreed.log.writes(since)

    def state(self) -> dict:
        return self.sandbox.degreed.state()

    def rows(self, table) -> list[dict]:
        with staging.get_engine(self.staging_url).connect() as conn:
            return staging.read_rows(conn, table)

    def learner(self, in_degreed: bool = True):
        return next(learner for learner in self.sandbox.world.learners if learner.in_degreed == in_degreed)

"""Dagster resources: the iMocha and Degreed clients, the staging database, and the sync settings.

Secrets arrive through ``dg.EnvVar`` (resolved at run time, never shown in the UI). Optional settings
left empty fall back to the environment and then to DESIGN.md's defaults when the run starts.
"""

from __future__ import annotations

import os
import uuid

import dagster as dg
from pydantic import PrivateAttr
from sqlalchemy.engine import Engine

from imocha_pipeline import settings
from imocha_pipeline.clients.degreed import DegreedClient
from imocha_pipeline.clients.http import RateBudget, RequestMetrics
from imocha_pipeline.clients.imocha import ImochaClient
from imocha_pipeline.connections import shared_degreed_budget, shared_degreed_client, shared_imocha_client
from imocha_pipeline.staging import describe_url, get_engine
from imocha_pipeline.sync.assessments.mapping import AssessmentMapping
from imocha_pipeline.sync.completions.mapping import CompletionMapping


def _rate_budget(client_id: str, per_minute: int, staging_url: str | None = None) -> RateBudget:
    """The Degreed budget for a client id: shared by every process through the staging database at
    ``staging_url``; without one, shared by every client built in this process."""
    return shared_degreed_budget(client_id, per_minute, staging_url or None)


class ImochaResource(dg.ConfigurableResource):
    """Connection to the iMocha Assessment API (X-API-KEY)."""

    api_key: str
    base_url: str = ""
    page_size: int = 100
    max_parallel_requests: int = 4
    attempts_window_days: int = 7
    staging_db_url: str = ""
    """Where the optional iMocha rate budget lives (IMOCHA_RATE_LIMIT_PER_MINUTE; default unlimited)."""

    def resolved_base_url(self) -> str:
        return self.base_url or settings.optional("IMOCHA_BASE_URL", settings.IMOCHA_DEFAULT_BASE_URL)

    def client(self, metrics: RequestMetrics | None = None) -> ImochaClient:
        return shared_imocha_client(self.resolved_base_url(), self.api_key, self.staging_db_url, metrics=metrics,
                                    page_size=self.page_size, attempts_window_days=self.attempts_window_days)


class DegreedResource(dg.ConfigurableResource):
    """Connection to the Degreed API v2 (OAuth2 client credentials), inside one shared rate budget."""

    client_id: str
    client_secret: str
    api_base_url: str = ""
    token_url: str = ""
    region: str = ""
    """Degreed region (us, us-betatest, eu, eu-betatest, ca, ca-betatest; default DEGREED_REGION, else us):
    fills the token and API URLs that are not given explicitly."""
    rate_limit_per_minute: int = 0
    organization_code: str = ""
    """X-Degreed-Organization-Code for a tenant organization (default DEGREED_ORGANIZATION_CODE)."""
    staging_db_url: str = ""
    """Where the shared rate budget lives (the staging database; default IMOCHA_PIPELINE_STAGING_DB_URL)."""

    def resolved(self) -> settings.DegreedSettings:
        region, api_base_url, token_url = settings.degreed_endpoints(
            self.region or None, self.api_base_url or None, self.token_url or None)
        return settings.DegreedSettings(
            client_id=self.client_id,
            client_secret=self.client_secret,
            api_base_url=api_base_url,
            token_url=token_url,
            rate_limit_per_minute=self.rate_limit_per_minute
            or settings.optional_int("DEGREED_RATE_LIMIT_PER_MINUTE", settings.DEGREED_DEFAULT_RATE_LIMIT_PER_MINUTE),
            region=region,
            organization_code=self.organization_code or settings.optional("DEGREED_ORGANIZATION_CODE", ""),
        )

    def client(self, metrics: RequestMetrics | None = None) -> DegreedClient:
        return shared_degreed_client(self.resolved(), self.staging_db_url, metrics=metrics)


class StagingDatabaseResource(dg.ConfigurableResource):
    """The SQL database holding the staged tables, the ledger and the quarantine."""

    url: str = ""
    _engine: Engine | None = PrivateAttr(default=None)

    def resolved_url(self) -> str:
        return self.url or settings.staging_db_url()

    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = get_engine(self.resolved_url())
        return self._engine

    def describe(self) -> str:
        return describe_url(self.resolved_url())


class SyncSettingsResource(dg.ConfigurableResource):
    """Mapping rules and safety guards (each also settable from the environment)."""

    launch_url_template: str = ""
    sso_url_template: str = ""
    summary_template: str = ""
    max_retire_share: float = -1.0
    max_extract_shrink_share: float = -1.0
    max_invalid_share: float = -1.0
    dry_run: bool | None = None

    def assessment_mapping(self) -> AssessmentMapping:
        base = AssessmentMapping.from_env()
        return AssessmentMapping(
            launch_url_template=self.launch_url_template or base.launch_url_template,
            sso_url_template=self.sso_url_template or base.sso_url_template,
            summary_template=self.summary_template or base.summary_template,
            external_id_prefix=base.external_id_prefix,
            language=base.language,
            title_max_length=base.title_max_length,
        )

    def completion_mapping(self) -> CompletionMapping:
        return CompletionMapping.from_env()

    def _share(self, value: float, env: str, default: float) -> float:
        if value >= 0:
            return value
        raw = settings.optional(env, str(default))
        try:
            return float(raw)
        except ValueError as exc:
            raise ValueError(f"setting {env} must be a number between 0 and 1, got {raw!r}") from exc

    def retire_share_limit(self) -> float:
        return self._share(self.max_retire_share, "IMOCHA_PIPELINE_MAX_RETIRE_SHARE", 0.2)

    def shrink_share_limit(self) -> float:
        return self._share(self.max_extract_shrink_share, "IMOCHA_PIPELINE_MAX_EXTRACT_SHRINK_SHARE", 0.2)

    def invalid_share_limit(self) -> float:
        return self._share(self.max_invalid_share, "IMOCHA_PIPELINE_MAX_INVALID_SHARE", 0.5)

    def is_dry_run(self) -> bool:
        if self.dry_run is not None:
            return self.dry_run
        return settings.optional("IMOCHA_PIPELINE_DRY_RUN", "0").lower() in {"1", "true", "yes", "on"}


def resources_from_env() -> dict[str, dg.ConfigurableResource]:
    """The resources of the code location: secrets from the environment at run time."""
    return {
        "imocha": ImochaResource(api_key=dg.EnvVar("IMOCHA_API_KEY")),
        "degreed": DegreedResource(client_id=dg.EnvVar("DEGREED_CLIENT_ID"),
                                   client_secret=dg.EnvVar("DEGREED_CLIENT_SECRET")),
        "staging_db": StagingDatabaseResource(),
        "sync_settings": SyncSettingsResource(),
    }


def _secret_ref(name: str, value: str) -> dg.EnvVar:
    """An ``EnvVar`` holding ``value`` for this process, so the value itself stays out of Dagster's storage."""
    variable = f"IMOCHA_PIPELINE_SECRET_{name}_{uuid.uuid4().hex.upper()}"
    os.environ[variable] = value
    return dg.EnvVar(variable)


def resources_from_settings(values: dict[str, str], staging_url: str,
                            sync_settings: SyncSettingsResource | None = None) -> dict[str, dg.ConfigurableResource]:
    """Resources from explicit setting values (the sandbox's ``env()``), for tests, the demo and benchmarks.

    The two secrets are handed over as ``dg.EnvVar`` references (to process environment variables with random
    names), never as plain strings: a plain string would be stored in the run's job snapshot
    in Dagster's run storage (drill 9 found the client secret there).
    """
    return {
        "imocha": ImochaResource(api_key=_secret_ref("IMOCHA_API_KEY", values["IMOCHA_API_KEY"]),
                                 base_url=values["IMOCHA_BASE_URL"], staging_db_url=staging_url),
        "degreed": DegreedResource(
            client_id=values["DEGREED_CLIENT_ID"],
            client_secret=_secret_ref("DEGREED_CLIENT_SECRET", values["DEGREED_CLIENT_SECRET"]),
            api_base_url=values["DEGREED_API_BASE_URL"], token_url=values["DEGREED_TOKEN_URL"],
            rate_limit_per_minute=int(values.get("DEGREED_RATE_LIMIT_PER_MINUTE") or 70),
            region=values.get("DEGREED_REGION", ""), organization_code=values.get("DEGREED_ORGANIZATION_CODE", ""),
            staging_db_url=staging_url,
        ),
        "staging_db": StagingDatabaseResource(url=staging_url),
        "sync_settings": sync_settings or SyncSettingsResource(),
    }

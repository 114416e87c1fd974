"""Dagster resources: the iMocha and Degreed clients, the staging database, and the sync settings.

Every field holds a plain value with the setting's real default. A field the resource was not given takes its
setting's value (``imocha_pipeline.settings``) when the resource uses it, so a setting changed after the
definitions were built is seen by the next run. Dagster rebuilds a resource for each run from the values that
differ from the field's default only, so in a run a field given its default value counts as not given.

``resources_from_env`` (the code location) fills the fields from the settings when it loads; the secrets stay
``dg.EnvVar`` (resolved at run time, never shown in the UI), and so does the staging URL in effect (it may carry a
password: read from the setting when used, never copied into the resource). ``resources_from_settings`` (tests,
the demo, benchmarks) takes the values of a settings mapping; what the mapping does not give follows the settings.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping
from typing import Any

import dagster as dg
from pydantic import PrivateAttr
from sqlalchemy.engine import Engine

from imocha_pipeline import settings
from imocha_pipeline.clients.degreed import DegreedClient
from imocha_pipeline.clients.http import RateBudget, RequestMetrics
from imocha_pipeline.clients.imocha import ImochaClient
from imocha_pipeline.connections import shared_degreed_budget, shared_degreed_client, shared_imocha_client
from imocha_pipeline.settings import Setting
from imocha_pipeline.staging import describe_url, get_engine
from imocha_pipeline.sync.assessments.mapping import AssessmentMapping
from imocha_pipeline.sync.completions.mapping import CompletionMapping


def _rate_budget(client_id: str, per_minute: int, staging_url: str | None = None) -> RateBudget:
    """The Degreed budget for a client id: shared by every process through the staging database at
    ``staging_url``; without one, shared by every client built in this process."""
    return shared_degreed_budget(client_id, per_minute, staging_url or None)


def _given_or_setting(resource: dg.ConfigurableResource, field: str, setting: Setting) -> Any:
    """The value ``resource`` was given for ``field`` (held to the setting's rules), else the setting's value now."""
    if field in resource.model_fields_set:
        return setting.check(getattr(resource, field))
    return setting.value()


class ImochaResource(dg.ConfigurableResource):
    """Connection to the iMocha Assessment API (X-API-KEY)."""

    api_key: str
    base_url: str = settings.IMOCHA_BASE_URL.default
    page_size: int = 100
    max_parallel_requests: int = 4
    attempts_window_days: int = 7
    staging_db_url: str = ""
    """Where the optional iMocha rate budget lives (IMOCHA_RATE_LIMIT_PER_MINUTE; default unlimited). Empty: the
    staging database of IMOCHA_PIPELINE_STAGING_DB_URL, read when used."""

    def resolved_base_url(self) -> str:
        return _given_or_setting(self, "base_url", settings.IMOCHA_BASE_URL)

    def client(self, metrics: RequestMetrics | None = None) -> ImochaClient:
        return shared_imocha_client(self.resolved_base_url(), self.api_key, self.staging_db_url, metrics=metrics,
                                    page_size=self.page_size, attempts_window_days=self.attempts_window_days)


class DegreedResource(dg.ConfigurableResource):
    """Connection to the Degreed API v2 (OAuth2 client credentials), inside one shared rate budget."""

    client_id: str
    client_secret: str
    api_base_url: str = ""
    """Degreed API host; empty: the region's."""
    token_url: str = ""
    """Degreed OAuth token URL; empty: the region's."""
    region: str = settings.DEGREED_REGION.default
    """Degreed region (us, us-betatest, eu, eu-betatest, ca, ca-betatest): fills the token and API URLs that are
    not given explicitly (a URL the resource was not given comes from DEGREED_API_BASE_URL / DEGREED_TOKEN_URL
    first)."""
    rate_limit_per_minute: int = settings.DEGREED_RATE_LIMIT_PER_MINUTE.default
    organization_code: str = ""
    """X-Degreed-Organization-Code for a tenant organization (DEGREED_ORGANIZATION_CODE); empty: none."""
    staging_db_url: str = ""
    """Where the shared rate budget lives; empty: the staging database of IMOCHA_PIPELINE_STAGING_DB_URL, read
    when used."""

    def resolved(self) -> settings.DegreedSettings:
        region = _given_or_setting(self, "region", settings.DEGREED_REGION)
        api_base_url, token_url = settings.region_endpoints(
            region, _given_or_setting(self, "api_base_url", settings.DEGREED_API_BASE_URL),
            _given_or_setting(self, "token_url", settings.DEGREED_TOKEN_URL))
        return settings.DegreedSettings(
            client_id=self.client_id,
            client_secret=self.client_secret,
            api_base_url=api_base_url,
            token_url=token_url,
            rate_limit_per_minute=_given_or_setting(self, "rate_limit_per_minute",
                                                    settings.DEGREED_RATE_LIMIT_PER_MINUTE),
            region=region,
            organization_code=_given_or_setting(self, "organization_code", settings.DEGREED_ORGANIZATION_CODE),
        )

    def client(self, metrics: RequestMetrics | None = None) -> DegreedClient:
        return shared_degreed_client(self.resolved(), self.staging_db_url, metrics=metrics)


class StagingDatabaseResource(dg.ConfigurableResource):
    """The SQL database holding the staged tables, the ledger and the quarantine."""

    url: str = ""
    """SQLAlchemy URL; empty: IMOCHA_PIPELINE_STAGING_DB_URL (else the SQLite file under $DAGSTER_HOME), read when
    used, so a password in it never reaches Dagster's configuration."""
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
    """Mapping rules and safety guards; a field not given follows its setting when used."""

    launch_url_template: str = settings.IMOCHA_PIPELINE_LAUNCH_URL_TEMPLATE.default
    sso_url_template: str = settings.IMOCHA_PIPELINE_SSO_URL_TEMPLATE.default
    summary_template: str = settings.IMOCHA_PIPELINE_SUMMARY_TEMPLATE.default
    max_retire_share: float = settings.IMOCHA_PIPELINE_MAX_RETIRE_SHARE.default
    max_extract_shrink_share: float = settings.IMOCHA_PIPELINE_MAX_EXTRACT_SHRINK_SHARE.default
    max_invalid_share: float = settings.IMOCHA_PIPELINE_MAX_INVALID_SHARE.default
    dry_run: bool = settings.IMOCHA_PIPELINE_DRY_RUN.default

    def assessment_mapping(self) -> AssessmentMapping:
        return AssessmentMapping(
            launch_url_template=_given_or_setting(self, "launch_url_template",
                                                  settings.IMOCHA_PIPELINE_LAUNCH_URL_TEMPLATE),
            sso_url_template=_given_or_setting(self, "sso_url_template", settings.IMOCHA_PIPELINE_SSO_URL_TEMPLATE),
            summary_template=_given_or_setting(self, "summary_template", settings.IMOCHA_PIPELINE_SUMMARY_TEMPLATE),
            language=settings.IMOCHA_PIPELINE_CONTENT_LANGUAGE.value(),
            title_max_length=settings.IMOCHA_PIPELINE_TITLE_MAX_LENGTH.value(),
        )

    def completion_mapping(self) -> CompletionMapping:
        return CompletionMapping.from_env()

    def retire_share_limit(self) -> float:
        return _given_or_setting(self, "max_retire_share", settings.IMOCHA_PIPELINE_MAX_RETIRE_SHARE)

    def shrink_share_limit(self) -> float:
        return _given_or_setting(self, "max_extract_shrink_share", settings.IMOCHA_PIPELINE_MAX_EXTRACT_SHRINK_SHARE)

    def invalid_share_limit(self) -> float:
        return _given_or_setting(self, "max_invalid_share", settings.IMOCHA_PIPELINE_MAX_INVALID_SHARE)

    def is_dry_run(self) -> bool:
        return _given_or_setting(self, "dry_run", settings.IMOCHA_PIPELINE_DRY_RUN)


# (resource field, setting) of every non-secret value the code location fills from the settings
_IMOCHA_FIELDS = (("base_url", settings.IMOCHA_BASE_URL),)
_DEGREED_FIELDS = (("region", settings.DEGREED_REGION), ("api_base_url", settings.DEGREED_API_BASE_URL),
                   ("token_url", settings.DEGREED_TOKEN_URL),
                   ("rate_limit_per_minute", settings.DEGREED_RATE_LIMIT_PER_MINUTE),
                   ("organization_code", settings.DEGREED_ORGANIZATION_CODE))
_SYNC_FIELDS = (("launch_url_template", settings.IMOCHA_PIPELINE_LAUNCH_URL_TEMPLATE),
                ("sso_url_template", settings.IMOCHA_PIPELINE_SSO_URL_TEMPLATE),
                ("summary_template", settings.IMOCHA_PIPELINE_SUMMARY_TEMPLATE),
                ("max_retire_share", settings.IMOCHA_PIPELINE_MAX_RETIRE_SHARE),
                ("max_extract_shrink_share", settings.IMOCHA_PIPELINE_MAX_EXTRACT_SHRINK_SHARE),
                ("max_invalid_share", settings.IMOCHA_PIPELINE_MAX_INVALID_SHARE),
                ("dry_run", settings.IMOCHA_PIPELINE_DRY_RUN))


def _from_settings(fields: tuple[tuple[str, Setting], ...]) -> dict[str, Any]:
    return {field: setting.value() for field, setting in fields}


def _from_values(values: Mapping[str, str], fields: tuple[tuple[str, Setting], ...]) -> dict[str, Any]:
    """The fields ``values`` gives a (non-empty) value, parsed by their settings' rules."""
    return {field: setting.parse(values[setting.name]) for field, setting in fields
            if str(values.get(setting.name) or "").strip()}


def resources_from_env() -> dict[str, dg.ConfigurableResource]:
    """The resources of the code location: values from the settings, secrets from the environment at run time."""
    return {
        "imocha": ImochaResource(api_key=dg.EnvVar(settings.IMOCHA_API_KEY.name), **_from_settings(_IMOCHA_FIELDS)),
        "degreed": DegreedResource(client_id=dg.EnvVar(settings.DEGREED_CLIENT_ID.name),
                                   client_secret=dg.EnvVar(settings.DEGREED_CLIENT_SECRET.name),
                                   **_from_settings(_DEGREED_FIELDS)),
        "staging_db": StagingDatabaseResource(),
        "sync_settings": SyncSettingsResource(**_from_settings(_SYNC_FIELDS)),
    }


def _secret_ref(name: str, value: str) -> dg.EnvVar:
    """An ``EnvVar`` holding ``value`` for this process, so the value itself stays out of Dagster's storage."""
    variable = f"IMOCHA_PIPELINE_SECRET_{name}_{uuid.uuid4().hex.upper()}"
    os.environ[variable] = value
    return dg.EnvVar(variable)


def resources_from_settings(values: Mapping[str, str], staging_url: str,
                            sync_settings: SyncSettingsResource | None = None) -> dict[str, dg.ConfigurableResource]:
    """Resources from explicit setting values (the sandbox's ``env()``), for tests, the demo and benchmarks.

    What ``values`` does not give follows the settings when used (``sync_settings`` when not given: every mapping
    rule and guard). The two secrets are handed over as ``dg.EnvVar`` references (to process environment
    variables with random names), never as plain strings: a plain string would be stored in the run's job
    snapshot in Dagster's run storage (drill 9 found the client secret there).
    """
    return {
        "imocha": ImochaResource(api_key=_secret_ref("IMOCHA_API_KEY", settings.IMOCHA_API_KEY.from_values(values)),
                                 staging_db_url=staging_url, **_from_values(values, _IMOCHA_FIELDS)),
        "degreed": DegreedResource(
            client_id=settings.DEGREED_CLIENT_ID.from_values(values),
            client_secret=_secret_ref("DEGREED_CLIENT_SECRET", settings.DEGREED_CLIENT_SECRET.from_values(values)),
            staging_db_url=staging_url, **_from_values(values, _DEGREED_FIELDS),
        ),
        "staging_db": StagingDatabaseResource(url=staging_url),
        "sync_settings": sync_settings or SyncSettingsResource(),
    }

"""Environment settings: the names in DESIGN.md §3, their defaults, and clear errors for missing ones.

Everything the pipeline needs to reach iMocha, Degreed and the staging database comes from the
environment. A required setting that is missing at run time raises ``MissingSettingError`` naming it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

IMOCHA_DEFAULT_BASE_URL = "https://apiv3.imocha.io"
DEGREED_DEFAULT_API_BASE_URL = "https://api.degreed.com"
DEGREED_DEFAULT_TOKEN_URL = "https://degreed.com/oauth/token"
DEGREED_DEFAULT_RATE_LIMIT_PER_MINUTE = 70
DEGREED_DEFAULT_REGION = "us"

# DEGREED_REGION -> (OAuth token URL, API base URL): the data centres and environments of the Degreed spec's
# table (specs/degreed-api.md §1). Explicit DEGREED_TOKEN_URL / DEGREED_API_BASE_URL win over the region.
DEGREED_REGIONS: dict[str, tuple[str, str]] = {
    "us": ("https://degreed.com/oauth/token", "https://api.degreed.com"),
    "us-betatest": ("https://betatest.degreed.com/oauth/token", "https://api.betatest.degreed.com"),
    "eu": ("https://eu.degreed.com/oauth/token", "https://api.eu.degreed.com"),
    "eu-betatest": ("https://eu.betatest.degreed.com/oauth/token", "https://api.eu.betatest.degreed.com"),
    "ca": ("https://ca.degreed.com/oauth/token", "https://api.ca.degreed.com"),
    # Assumption ([A] in the spec): no source lists the CA betatest API host; it follows the other regions'
    # pattern. Set DEGREED_API_BASE_URL if Degreed gives you another one.
    "ca-betatest": ("https://ca.betatest.degreed.com/oauth/token", "https://api.ca.betatest.degreed.com"),
}

# The scopes the integration asks for (DESIGN.md; the seed's "skill-ratings write" is spelled
# skill_ratings:write in Degreed's scope list).
DEGREED_REQUIRED_SCOPES = (
    "content:read",
    "content:write",
    "providers:read",
    "completions:read",
    "completions:write",
    "users:read",
    "skill_ratings:read",
    "skill_ratings:write",
)


class MissingSettingError(RuntimeError):
    """A required environment setting is not set."""

    def __init__(self, name: str, hint: str = ""):
        self.setting = name
        message = f"missing setting {name}: set the environment variable {name}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)


class InvalidSettingError(ValueError):
    """An environment setting has a value the pipeline cannot use."""

    def __init__(self, name: str, message: str):
        self.setting = name
        super().__init__(message)


def required(name: str, hint: str = "") -> str:
    """Return the value of a required environment setting or raise ``MissingSettingError``."""
    value = os.environ.get(name, "").strip()
    if not value:
        raise MissingSettingError(name, hint)
    return value


def optional(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


def optional_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"setting {name} must be a whole number, got {raw!r}") from exc


def degreed_region(value: str | None = None) -> str:
    """The Degreed region: ``value`` if given, else DEGREED_REGION, else ``us``; an unknown one is an error."""
    raw = (value if value else os.environ.get("DEGREED_REGION", "")).strip()
    if not raw:
        return DEGREED_DEFAULT_REGION
    region = raw.lower().replace("_", "-")
    if region not in DEGREED_REGIONS:
        raise InvalidSettingError(
            "DEGREED_REGION", f"setting DEGREED_REGION must be one of {', '.join(DEGREED_REGIONS)}; got {raw!r} "
            "(or leave it unset and set DEGREED_TOKEN_URL and DEGREED_API_BASE_URL)")
    return region


def degreed_endpoints(region: str | None = None, api_base_url: str | None = None,
                      token_url: str | None = None) -> tuple[str, str, str]:
    """(region, API base URL, token URL): explicit URLs first (arguments, then DEGREED_API_BASE_URL /
    DEGREED_TOKEN_URL), else the region's hosts."""
    region = degreed_region(region)
    region_token_url, region_api_base_url = DEGREED_REGIONS[region]
    return (region,
            api_base_url or optional("DEGREED_API_BASE_URL", region_api_base_url),
            token_url or optional("DEGREED_TOKEN_URL", region_token_url))


def default_staging_db_url() -> str:
    """SQLite file under $DAGSTER_HOME when set, else under the working directory."""
    home = os.environ.get("DAGSTER_HOME", "").strip()
    folder = Path(home) if home else Path.cwd()
    return f"sqlite:///{(folder / 'imocha_pipeline_staging.sqlite').resolve()}"


def staging_db_url() -> str:
    return optional("IMOCHA_PIPELINE_STAGING_DB_URL", default_staging_db_url())


@dataclass(frozen=True)
class ImochaSettings:
    api_key: str
    base_url: str = IMOCHA_DEFAULT_BASE_URL

    @classmethod
    def from_env(cls) -> ImochaSettings:
        return cls(
            api_key=required("IMOCHA_API_KEY", "the iMocha API key, sent as X-API-KEY"),
            base_url=optional("IMOCHA_BASE_URL", IMOCHA_DEFAULT_BASE_URL),
        )

    def __repr__(self) -> str:  # never show the key
        return f"ImochaSettings(base_url={self.base_url!r}, api_key=<redacted>)"


@dataclass(frozen=True)
class DegreedSettings:
    client_id: str
    client_secret: str
    api_base_url: str = DEGREED_DEFAULT_API_BASE_URL
    token_url: str = DEGREED_DEFAULT_TOKEN_URL
    rate_limit_per_minute: int = DEGREED_DEFAULT_RATE_LIMIT_PER_MINUTE
    region: str = DEGREED_DEFAULT_REGION
    organization_code: str = ""
    """X-Degreed-Organization-Code: the tenant organization to act in (organization API keys only)."""

    @classmethod
    def from_env(cls) -> DegreedSettings:
        region, api_base_url, token_url = degreed_endpoints()
        return cls(
            client_id=required("DEGREED_CLIENT_ID", "the Degreed API client id"),
            client_secret=required("DEGREED_CLIENT_SECRET", "the Degreed API client secret"),
            api_base_url=api_base_url,
            token_url=token_url,
            rate_limit_per_minute=optional_int(
                "DEGREED_RATE_LIMIT_PER_MINUTE", DEGREED_DEFAULT_RATE_LIMIT_PER_MINUTE
            ),
            region=region,
            organization_code=optional("DEGREED_ORGANIZATION_CODE", ""),
        )

    def __repr__(self) -> str:  # never show the secret
        return (
            f"DegreedSettings(client_id={self.client_id!r}, api_base_url={self.api_base_url!r}, "
            f"token_url={self.token_url!r}, rate_limit_per_minute={self.rate_limit_per_minute}, "
            f"region={self.region!r}, organization_code={self.organization_code!r}, client_secret=<redacted>)"
        )


def number_setting(name: str, default: float, *, minimum: float, whole: bool = False) -> float:
    """A numeric environment setting, at least ``minimum``; a clear error names a bad value."""
    raw = optional(name, "")
    if not raw:
        return default
    try:
        value = int(raw) if whole else float(raw)
    except ValueError as exc:
        kind = "a whole number" if whole else "a number"
        raise ValueError(f"setting {name} must be {kind}, got {raw!r}") from exc
    if value < minimum:
        raise ValueError(f"setting {name} must be at least {minimum:g}, got {raw!r}")
    return value

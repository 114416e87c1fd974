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

    @classmethod
    def from_env(cls) -> DegreedSettings:
        return cls(
            client_id=required("DEGREED_CLIENT_ID", "the Degreed API client id"),
            client_secret=required("DEGREED_CLIENT_SECRET", "the Degreed API client secret"),
            api_base_url=optional("DEGREED_API_BASE_URL", DEGREED_DEFAULT_API_BASE_URL),
            token_url=optional("DEGREED_TOKEN_URL", DEGREED_DEFAULT_TOKEN_URL),
            rate_limit_per_minute=optional_int(
                "DEGREED_RATE_LIMIT_PER_MINUTE", DEGREED_DEFAULT_RATE_LIMIT_PER_MINUTE
            ),
        )

    def __repr__(self) -> str:  # never show the secret
        return (
            f"DegreedSettings(client_id={self.client_id!r}, api_base_url={self.api_base_url!r}, "
            f"token_url={self.token_url!r}, rate_limit_per_minute={self.rate_limit_per_minute}, "
            "client_secret=<redacted>)"
        )

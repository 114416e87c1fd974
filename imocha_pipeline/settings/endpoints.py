"""What the clients need to reach iMocha, Degreed and the staging database, read from the catalogue.

``ImochaSettings`` / ``DegreedSettings`` hold one connection's values (never showing a secret); the Degreed
region fills the token and API URLs that are not given explicitly.
"""

from __future__ import annotations

from dataclasses import dataclass

from imocha_pipeline.settings.catalogue import (
    DEGREED_API_BASE_URL,
    DEGREED_CLIENT_ID,
    DEGREED_CLIENT_SECRET,
    DEGREED_ORGANIZATION_CODE,
    DEGREED_RATE_LIMIT_PER_MINUTE,
    DEGREED_REGION,
    DEGREED_TOKEN_URL,
    IMOCHA_API_KEY,
    IMOCHA_BASE_URL,
    IMOCHA_PIPELINE_STAGING_DB_URL,
)
from imocha_pipeline.settings.constants import (
    DEGREED_DEFAULT_API_BASE_URL,
    DEGREED_DEFAULT_RATE_LIMIT_PER_MINUTE,
    DEGREED_DEFAULT_REGION,
    DEGREED_DEFAULT_TOKEN_URL,
    DEGREED_REGIONS,
    IMOCHA_DEFAULT_BASE_URL,
)


def staging_db_url() -> str:
    """IMOCHA_PIPELINE_STAGING_DB_URL, else the SQLite file under $DAGSTER_HOME (or the working directory)."""
    return IMOCHA_PIPELINE_STAGING_DB_URL.value()


def degreed_region(value: str | None = None) -> str:
    """The Degreed region: ``value`` if given, else DEGREED_REGION, else ``us``; an unknown one is an error."""
    return DEGREED_REGION.parse(value) if value else DEGREED_REGION.value()


def region_endpoints(region: str, api_base_url: str = "", token_url: str = "") -> tuple[str, str]:
    """(API base URL, token URL): the explicit ones, else the region's hosts (``region`` already checked)."""
    region_token_url, region_api_base_url = DEGREED_REGIONS[region]
    return api_base_url or region_api_base_url, token_url or region_token_url


def degreed_endpoints(region: str | None = None, api_base_url: str | None = None,
                      token_url: str | None = None) -> tuple[str, str, str]:
    """(region, API base URL, token URL): explicit URLs first (arguments, then DEGREED_API_BASE_URL /
    DEGREED_TOKEN_URL), else the region's hosts."""
    region = degreed_region(region)
    api, token = region_endpoints(region, api_base_url or DEGREED_API_BASE_URL.value(),
                                  token_url or DEGREED_TOKEN_URL.value())
    return region, api, token


@dataclass(frozen=True)
class ImochaSettings:
    api_key: str
    base_url: str = IMOCHA_DEFAULT_BASE_URL

    @classmethod
    def from_env(cls) -> ImochaSettings:
        return cls(api_key=IMOCHA_API_KEY.value(), base_url=IMOCHA_BASE_URL.value())

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
            client_id=DEGREED_CLIENT_ID.value(),
            client_secret=DEGREED_CLIENT_SECRET.value(),
            api_base_url=api_base_url,
            token_url=token_url,
            rate_limit_per_minute=DEGREED_RATE_LIMIT_PER_MINUTE.value(),
            region=region,
            organization_code=DEGREED_ORGANIZATION_CODE.value(),
        )

    def __repr__(self) -> str:  # never show the secret
        return (
            f"DegreedSettings(client_id={self.client_id!r}, api_base_url={self.api_base_url!r}, "
            f"token_url={self.token_url!r}, rate_limit_per_minute={self.rate_limit_per_minute}, "
            f"region={self.region!r}, organization_code={self.organization_code!r}, client_secret=<redacted>)"
        )

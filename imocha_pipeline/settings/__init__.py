"""The pipeline's settings, all from the environment: one typed catalogue, read only through it.

- ``setting``: ``Setting`` (name, default, parser, rules, required/secret, one line of documentation, README group)
  and ``read_environment``, the pipeline's only read of ``os.environ``.
- ``parsers``: text, URL, whole number, number, share, flag, cron, date, comma list, file path, choice, template.
- ``catalogue``: every setting, named like its environment variable (``IMOCHA_PIPELINE_DRY_RUN.value()``).
- ``endpoints``: ``ImochaSettings``, ``DegreedSettings``, the Degreed region's URLs, ``staging_db_url``.
- ``readme``: the README's settings tables, generated (``python -m imocha_pipeline.settings --write``).

A required setting that is missing raises ``MissingSettingError`` naming it; a value the pipeline cannot use raises
``InvalidSettingError`` naming the setting and the value. This package imports nothing else of imocha_pipeline.
"""

from __future__ import annotations

from imocha_pipeline.settings.catalogue import *  # noqa: F403  (every Setting, by its environment name)
from imocha_pipeline.settings.catalogue import BY_NAME, CATALOGUE, default_staging_db_url
from imocha_pipeline.settings.constants import (
    DEGREED_DEFAULT_API_BASE_URL,
    DEGREED_DEFAULT_RATE_LIMIT_PER_MINUTE,
    DEGREED_DEFAULT_REGION,
    DEGREED_DEFAULT_TOKEN_URL,
    DEGREED_REGIONS,
    DEGREED_REQUIRED_SCOPES,
    IMOCHA_DEFAULT_BASE_URL,
)
from imocha_pipeline.settings.endpoints import (
    DegreedSettings,
    ImochaSettings,
    degreed_endpoints,
    degreed_region,
    region_endpoints,
    staging_db_url,
)
from imocha_pipeline.settings.errors import InvalidSettingError, MissingSettingError
from imocha_pipeline.settings.setting import GROUPS, Setting, read_environment

__all__ = [
    *BY_NAME,
    "BY_NAME",
    "CATALOGUE",
    "DEGREED_DEFAULT_API_BASE_URL",
    "DEGREED_DEFAULT_RATE_LIMIT_PER_MINUTE",
    "DEGREED_DEFAULT_REGION",
    "DEGREED_DEFAULT_TOKEN_URL",
    "DEGREED_REGIONS",
    "DEGREED_REQUIRED_SCOPES",
    "GROUPS",
    "IMOCHA_DEFAULT_BASE_URL",
    "DegreedSettings",
    "ImochaSettings",
    "InvalidSettingError",
    "MissingSettingError",
    "Setting",
    "default_staging_db_url",
    "degreed_endpoints",
    "degreed_region",
    "read_environment",
    "region_endpoints",
    "staging_db_url",
]

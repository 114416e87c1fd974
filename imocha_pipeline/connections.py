"""Connections to iMocha and Degreed: every client of every command, sensor and job is built here.

The one place that wires a client to the rate budget of its API and client id in a staging database, so that
separate processes, runs and hosts draw from one budget (DESIGN.md §2 "One rate budget"; the rules are in
``clients/http/shared_budget.py``, the row in ``staging/rate_budget_store.py``). A layer above ``clients`` and
``staging``: it uses both.

- **Budgets.** ``degreed_rate_budget`` / ``imocha_rate_budget`` build a budget in a given engine (None: this
  process only); ``shared_degreed_budget`` / ``shared_imocha_budget`` keep one per (database, name, limit) in
  this process, so every client built here shares it.
- **Clients.** ``shared_degreed_client`` / ``shared_imocha_client`` build clients drawing from those budgets.
- **Token requests [assumption].** Whether Degreed's token endpoint counts against the 70 a minute is not
  documented (specs/degreed-api.md §2, §5). ``DEGREED_TOKEN_REQUESTS_COUNT`` (default false) says it does:
  each token request then takes a slot of the client's budget in lane ``auth``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy.engine import Engine

from imocha_pipeline import settings
from imocha_pipeline.clients.degreed import API_NAME as DEGREED_API_NAME
from imocha_pipeline.clients.degreed import DegreedClient
from imocha_pipeline.clients.http import ApiSession, RateBudget, RequestMetrics, Unlimited
from imocha_pipeline.clients.http.shared_budget import SharedRateBudget
from imocha_pipeline.clients.imocha import API_NAME as IMOCHA_API_NAME
from imocha_pipeline.clients.imocha import ImochaClient
from imocha_pipeline.clients.imocha.contract import imocha_root_url
from imocha_pipeline.staging import get_engine
from imocha_pipeline.staging.rate_budget_store import DatabaseBudgetStore

IMOCHA_RATE_LIMIT_SETTING = settings.IMOCHA_RATE_LIMIT_PER_MINUTE.name
TOKEN_REQUESTS_COUNT_SETTING = settings.DEGREED_TOKEN_REQUESTS_COUNT.name


# ---------------------------------------------------------------------------------------------------------
# Budgets
# ---------------------------------------------------------------------------------------------------------


def shared_rate_budget(engine: Engine | None, name: str, per_minute: int, *,
                       clock: Callable[[], float] | None = None, **options: Any) -> SharedRateBudget:
    """The budget ``name`` kept in the ``rate_budget`` table of ``engine``'s database (None: this process only).

    ``options`` go to ``SharedRateBudget`` (window, margin, lanes, reserve, linger, sleep); ``clock`` overrides
    the clock of the budget's times (default: the database's, or ``time.monotonic`` in process).
    """
    store = None if engine is None else DatabaseBudgetStore(engine, name, clock)
    return SharedRateBudget(store, name, per_minute, clock=clock, **options)


def degreed_budget_name(client_id: str) -> str:
    """The budget row every process using this Degreed API client shares."""
    return f"degreed:{client_id}"


def degreed_rate_budget(client_id: str, per_minute: int = settings.DEGREED_DEFAULT_RATE_LIMIT_PER_MINUTE,
                        engine: Engine | None = None, **options: Any) -> SharedRateBudget:
    """Degreed's budget for one client id: in the staging database when ``engine`` is given."""
    return shared_rate_budget(engine, degreed_budget_name(client_id), per_minute, **options)


def imocha_rate_budget(engine: Engine | None = None, per_minute: int | None = None,
                       name: str = "imocha") -> RateBudget:
    """iMocha's optional budget: ``IMOCHA_RATE_LIMIT_PER_MINUTE`` (unset or 0: unlimited, its limit is unknown)."""
    if per_minute is None:
        per_minute = settings.IMOCHA_RATE_LIMIT_PER_MINUTE.value()
    if per_minute <= 0:
        return Unlimited()
    return shared_rate_budget(engine, name, per_minute)


# One budget object per (database, name, limit) in this process: every client built here shares it.
_shared: dict[tuple[str | None, str, int], SharedRateBudget] = {}
_shared_lock = threading.Lock()


def _staging(staging_url: str | None) -> str | None:
    """``""``: the pipeline's staging database (IMOCHA_PIPELINE_STAGING_DB_URL, else the default file);
    None: no database, the budget is shared by this process only (tests)."""
    if staging_url is None:
        return None
    return staging_url or settings.staging_db_url()


def _shared_budget(staging_url: str | None, name: str, per_minute: int) -> SharedRateBudget:
    """One budget object per (database, name, limit) in this process, so every client built here shares it
    (the only sharing there is without a database)."""
    url = _staging(staging_url)
    with _shared_lock:
        key = (url, name, per_minute)
        if key not in _shared:
            _shared[key] = shared_rate_budget(get_engine(url) if url else None, name, per_minute)
        return _shared[key]


def shared_degreed_budget(client_id: str, per_minute: int = settings.DEGREED_DEFAULT_RATE_LIMIT_PER_MINUTE,
                          staging_url: str | None = "") -> SharedRateBudget:
    """The Degreed budget of ``client_id``, kept in the staging database at ``staging_url`` (``""``: the
    pipeline's; None: this process only)."""
    return _shared_budget(staging_url, degreed_budget_name(client_id), per_minute)


def shared_imocha_budget(staging_url: str | None = "", per_minute: int | None = None) -> RateBudget:
    """iMocha's budget (``IMOCHA_RATE_LIMIT_PER_MINUTE``) in the staging database at ``staging_url``;
    unlimited, and no database opened, while the setting is unset or 0."""
    if per_minute is None:
        per_minute = settings.IMOCHA_RATE_LIMIT_PER_MINUTE.value()
    if per_minute <= 0:
        return Unlimited()
    return _shared_budget(staging_url, "imocha", per_minute)


def token_requests_count() -> bool:
    """``DEGREED_TOKEN_REQUESTS_COUNT``: whether a Degreed token request draws a slot of the client's budget.

    **Assumption**, to be confirmed against the tenant: Degreed documents 70 requests a minute per API client
    (specs/degreed-api.md §5) but not whether ``POST /oauth/token`` is one of them (§2). Default false: a
    token request (one per token lifetime and process, and one per scope in ``doctor``) goes outside the
    budget. True: it takes a slot in lane ``auth`` of the same shared budget, before any other lane.
    """
    return settings.DEGREED_TOKEN_REQUESTS_COUNT.value()


# ---------------------------------------------------------------------------------------------------------
# Clients with the shared budget: every construction of an iMocha or Degreed client goes through these
# ---------------------------------------------------------------------------------------------------------


def shared_degreed_client(
    cfg: settings.DegreedSettings,
    staging_url: str | None = "",
    *,
    metrics: RequestMetrics | None = None,
    session_options: Mapping[str, Any] | None = None,
    api_names: tuple[str, str] = (DEGREED_API_NAME, f"{DEGREED_API_NAME}-oauth"),
    **client_options: Any,
) -> DegreedClient:
    """A Degreed client drawing from the shared budget of ``cfg.client_id`` in the staging database at
    ``staging_url`` (``""``: the pipeline's, IMOCHA_PIPELINE_STAGING_DB_URL or the default file; None: this
    process only). Token requests draw from it too when ``DEGREED_TOKEN_REQUESTS_COUNT`` is on.

    ``session_options`` go to both ``ApiSession``s (API and token host; e.g. ``doctor``'s ``RetryPolicy`` and
    short ``Timeouts``), ``api_names`` names them in errors and metrics; ``client_options`` go to ``DegreedClient``.
    """
    budget = shared_degreed_budget(cfg.client_id, cfg.rate_limit_per_minute, staging_url)
    options = dict(session_options or {})
    session = ApiSession(cfg.api_base_url, api_name=api_names[0], rate_budget=budget, metrics=metrics,
                         secrets=[cfg.client_secret], **options)
    token_session = ApiSession(cfg.token_url, api_name=api_names[1],
                               rate_budget=budget if token_requests_count() else Unlimited(),
                               metrics=session.metrics, secrets=[cfg.client_secret], **options)
    client_options.setdefault("organization_code", cfg.organization_code or None)
    return DegreedClient(cfg.api_base_url, cfg.token_url, cfg.client_id, cfg.client_secret, session=session,
                         token_session=token_session, **client_options)


def shared_imocha_client(
    base_url: str,
    api_key: str,
    staging_url: str | None = "",
    *,
    metrics: RequestMetrics | None = None,
    session_options: Mapping[str, Any] | None = None,
    **client_options: Any,
) -> ImochaClient:
    """An iMocha client drawing from iMocha's shared budget (``IMOCHA_RATE_LIMIT_PER_MINUTE``) in the staging
    database at ``staging_url`` (``""``: the pipeline's; None: this process only).

    ``session_options`` go to its ``ApiSession`` (``retry``, ``timeouts``); ``client_options`` to ``ImochaClient``.
    """
    root = imocha_root_url(base_url)
    session = ApiSession(root, api_name=IMOCHA_API_NAME, rate_budget=shared_imocha_budget(staging_url),
                         metrics=metrics, secrets=[api_key], **dict(session_options or {}))
    return ImochaClient(root, api_key, session=session, **client_options)

"""``DegreedSimulator``: the facade that builds the simulator's parts and serves them as one ASGI app."""

from __future__ import annotations

import time
from collections.abc import Callable

from imocha_sandbox.degreed.auth import ApiClientSpec, OAuthServer, SecretRedactingRequestLog, default_clients
from imocha_sandbox.degreed.control import DegreedControl
from imocha_sandbox.degreed.paging import Pager
from imocha_sandbox.degreed.rate_limit import RateLimiter
from imocha_sandbox.degreed.routes import DegreedRoutes
from imocha_sandbox.degreed.serialise import Serialiser
from imocha_sandbox.degreed.settings import (
    DEFAULT_CONFLICT_BODY,
    DEFAULT_CURSOR_EXPIRY,
    DEFAULT_READ_SHAPE,
    DEFAULT_RELATIONSHIPS_STYLE,
    DegreedSimSettings,
)
from imocha_sandbox.degreed.store import (
    DegreedStore,
    SimAssessment,
    SimCompletion,
    SimProvider,
    SimSkillRating,
    SimUser,
)
from imocha_sandbox.seed import World
from imocha_sandbox.server import FaultInjector, RequestLog


class DegreedSimulator(DegreedControl):
    """Degreed API v2 in memory. Serve ``.app`` with ``ServerThread``; drive it via methods or ``/_sandbox/``.

    ``clients`` maps client id to ``ApiClientSpec`` (default: one iMocha provider key, ``default_clients()``).
    ``other_provider_assessments`` seeds content from an unrelated provider, which a provider key never
    sees and an organization key does (so a sync must not retire what it does not own).
    ``clock`` (epoch seconds) drives token expiry, rate windows, cursors and timestamps.

    The control methods (``configure``, ``add_assessment``, ``state`` …) come from ``DegreedControl``; the
    records are the store's tables (``users``, ``providers``, ``assessments``, ``completions``,
    ``skill_ratings``, keyed by Degreed id).
    """

    def __init__(
        self,
        world: World,
        *,
        clients: dict[str, ApiClientSpec] | None = None,
        rate_limit_per_minute: int = 70,
        rate_window: str = "fixed",
        token_ttl_seconds: int = 3600,
        completion_duplicates: str = "409",
        skill_rating_duplicates: str = "upsert",
        completion_date_field: str = "completed-at",
        cursor_idle_seconds: float = 120.0,
        default_page_limit: int = 100,
        max_date_range_days: int = 7,
        relationships_style: str = DEFAULT_RELATIONSHIPS_STYLE,
        content_listing_lag_seconds: float = 0.0,
        read_shape: str = DEFAULT_READ_SHAPE,
        conflict_body: str = DEFAULT_CONFLICT_BODY,
        cursor_expiry: str = DEFAULT_CURSOR_EXPIRY,
        token_requests_count: bool = False,
        provider_code: str = "IMOCHA",
        provider_name: str = "iMocha",
        other_provider_assessments: int = 2,
        web_base_url: str = "https://sandbox.degreed.example",
        clock: Callable[[], float] = time.time,
    ):
        settings = DegreedSimSettings(
            rate_limit_per_minute=rate_limit_per_minute, rate_window=rate_window,
            token_ttl_seconds=token_ttl_seconds, completion_duplicates=completion_duplicates,
            skill_rating_duplicates=skill_rating_duplicates, completion_date_field=completion_date_field,
            cursor_idle_seconds=cursor_idle_seconds, default_page_limit=default_page_limit,
            max_date_range_days=max_date_range_days, relationships_style=relationships_style,
            content_listing_lag_seconds=content_listing_lag_seconds, read_shape=read_shape,
            conflict_body=conflict_body, cursor_expiry=cursor_expiry, token_requests_count=token_requests_count,
        )
        settings.validate()
        self.world = world
        self.web_base_url = web_base_url.rstrip("/")
        store = DegreedStore(world.seed)
        oauth = OAuthServer(clients if clients is not None else default_clients(provider_code), settings, clock)
        limiter = RateLimiter(settings)
        pager = Pager(settings, store.ids, clock)
        store.seed(world, provider_code, provider_name, other_provider_assessments)
        log: RequestLog = SecretRedactingRequestLog()
        super().__init__(store=store, settings=settings, oauth=oauth, limiter=limiter, pager=pager, log=log,
                         faults=FaultInjector(), clock=clock, provider_code=provider_code)
        routes = DegreedRoutes(store=store, settings=settings, oauth=oauth, limiter=limiter, pager=pager,
                               serialiser=Serialiser(store, settings, self.web_base_url, store.ids), clock=clock)
        self.app = routes.app(self.log, self.faults, self.control_routes())

    @property
    def users(self) -> dict[str, SimUser]:
        return self._store.users

    @property
    def providers(self) -> dict[str, SimProvider]:
        return self._store.providers

    @property
    def assessments(self) -> dict[str, SimAssessment]:
        return self._store.assessments

    @property
    def completions(self) -> dict[str, SimCompletion]:
        return self._store.completions

    @property
    def skill_ratings(self) -> dict[str, SimSkillRating]:
        return self._store.skill_ratings

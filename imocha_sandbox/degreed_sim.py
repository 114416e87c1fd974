"""A local simulator of Degreed's REST API v2, built from ``/work/shared/specs/degreed-api.md``.

It serves what the pipeline talks to: OAuth2 client-credentials tokens with scopes, assessment content,
completions, skill ratings (the spec's proposed §9.4 contract), users and providers, with JSON:API
envelopes, cursor paging, the 70-a-minute rate limit with its headers, organization vs provider keys,
and the ``X-Degreed-Organization-Code`` rules. Wherever the spec marks behaviour as an assumption
(``[A]``) the simulator makes it a setting (``DegreedSimSettings``) so the client can be tested against
every variant.

``content_listing_lag_seconds`` (default 0; a constructor argument, ``configure`` or ``PUT /_sandbox/settings``)
reproduces the lag real APIs show between a write and the item appearing in list and search results: an
assessment created less than that many seconds ago (by the simulator's clock, through ``POST
/api/v2/content/assessments`` or ``add_assessment``) is left out of every listing of
``GET /api/v2/content/assessments`` (the paged list and the ``filter[external_id]`` lookup) and of
``GET /api/v2/content``, while ``GET .../{id}`` finds it at once and a create with the same external id
still answers 409 (naming it when ``conflict_body="error_with_id"``). It makes the "409 on create, yet the
lookup finds nothing" path reachable in tests. Negative values are refused.

Every setting below is a ``DegreedSimSettings`` field: a constructor argument, ``configure(...)`` and
``PUT /_sandbox/settings``; ``GET /_sandbox/settings`` reads them. The ``DEFAULT_*`` constants hold the
defaults of the first four (today's answers; see the note at the constants for flipping them).

``read_shape`` — "echo" (default) | "documented". What a completion or skill rating answer carries. "echo"
echoes what was posted: ``user-id`` (the email), ``user-identifier-type``, ``content-id`` (the external
id), ``content-id-type``, ``content-type``, ``percentile``, ``provider-code`` and the rest. "documented" is
spec §8.3 (captured real answers): a completion (list items of ``GET /api/v2/completions`` and
``GET /api/v2/users/{id}/completions``, ``GET /api/v2/completions/{id}``, the POST/PATCH answer) has ONLY
``employee-id``, ``completed-at``, ``added-at``, ``points-earned`` (a decimal string, "0.0643720"),
``is-verified``, ``rating``, ``access-method``; learner, content and provider come only as Degreed ids in
``relationships`` (``user``/``users``, ``content``/``content``, ``provider``/``providers``), and the two
list answers add ``included``: one content summary per referenced content item (``type: "content"``,
``id``, attributes ``content-type``, ``url``, ``title``, ``provider``, ``content-duration``,
``content-duration-type``, ``is-internal``). A skill rating (§9.2) has ``employee-id``, ``skill-name``,
``rating``, ``rating-type``, ``certifiable-skill-guid``, ``rated-at`` and the user as a relationship.
Timestamps in that shape are .NET style: no zone, 0-7 fraction digits without trailing zeros
("2021-11-11T20:56:41.093"; ``format_dotnet_timestamp``). Content answers are the same in both shapes
(§7.6 documents ``external-id`` on content), and ``state()`` always holds the whole truth (``user_email``,
``content_external_id``, ``percentile`` ...), whatever the API shows.

``relationships_style`` — "object" (default; JSON:API) | "array" (``[{"content": {"data": ...}},
{"provider": ...}, {"user": ...}]``, as captured in §3/§8.3). Applies to content, completions and skill
ratings in both read shapes.

``conflict_body`` — "error_with_id" (default) | "error_without_id" | "empty". The body of every 409: content
created or PATCHed onto an external id or url already in use, and a duplicate completion under
``completion_duplicates="409"``. "empty" is ``{}`` (edX's only public fixture, §8.4); "error_without_id" is a
JSON:API error (code "conflict", status 409, title "Conflict") whose detail and source do not name the
existing record; "error_with_id" names its Degreed id in ``detail`` and ``source``.

``cursor_expiry`` — "code" (default) | "bare_400" | "not_found". The answer to a ``next=`` cursor whose
snapshot expired (idle longer than ``cursor_idle_seconds``, or expired with ``expire_cursors`` /
``schedule_cursor_expiry``), or that was never issued: "code" is a 400 with code "cursor-expired", "bare_400"
a generic 400 bad-request ("Invalid request.", nothing about cursors), "not_found" a 404 not-found error.

``token_requests_count`` — False (default) | True. [A] Degreed does not say whether the token endpoint counts
against the per-client limit. When True, ``POST /oauth/token`` naming a known client id is charged to that
client (and refused with 429 over budget) and its answers carry the rate-limit headers; when False it is
free and answers without them.

Rate limit (not variants): every ``/api/v2`` answer carries ``X-Rate-Limit-Limit``,
``X-Rate-Limit-Remaining`` and ``X-Rate-Limit-Reset`` — errors, 401s, unknown paths, and the 429 and 503
answers injected through ``/_sandbox/faults`` too (``SimulatorMiddleware``'s ``fault_answer`` hook), and every
429 adds ``Retry-After`` and says "Maximum N requests allowed per 1m." with the limit in force at that moment.
``rate_window`` "fixed" opens a window at a client's first request and resets it 60 s later (so up to twice
the limit can fall in one rolling minute); "sliding" accepts a request only while fewer than the limit were
accepted in the 60 s before it, so no rolling minute ever holds more. ``max_requests_in_any_minute(client)``
(HTTP: ``GET /_sandbox/rate-limit/max-in-any-minute/{client_id}``) reports the most requests accepted from a
client in any rolling 60 s, for tests and benchmarks.

Content urls (not a variant): a create or PATCH whose ``url`` equals another content item's url answers 409,
like a duplicate external id. The url is compared as an exact string against every content item of the
organisation — every provider's, obsolete ones included (a retired item is still a resource: it can be
read by id and revived, and completions point at it) — [A] where Degreed draws the line is not documented.
``add_assessment``/``update_assessment`` (control methods) bypass both checks on purpose.

Date filters (not a variant): ``filter[start_date]``/``filter[end_date]`` are calendar days, both included,
at most ``max_date_range_days`` (7) of them: 2024-05-01..2024-05-07 is allowed, 2024-05-01..2024-05-08 (8
days) is a 400. ``GET /api/v2/completions`` without filters reads the last 7 days up to today [A];
``GET /api/v2/users/{id}/completions``, ``GET /api/v2/users/{id}/skill-ratings`` and
``GET /api/v2/skill-ratings`` without filters list everything (paged with ``limit``/``next``).

State lives in memory behind one lock: request handlers run on uvicorn's event loop while tests call the
control methods from their own threads. Every control method also has an HTTP twin under ``/_sandbox/``.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import secrets
import string
import threading
import time
import uuid
import zlib
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from imocha_pipeline.settings import DEGREED_REQUIRED_SCOPES
from imocha_sandbox.seed import World
from imocha_sandbox.server import (
    CONTROL_PREFIX,
    FaultConfig,
    FaultInjector,
    RequestLog,
    SimulatorMiddleware,
    json_bytes,
)

API_PREFIX = "/api/v2"
TOKEN_PATH = "/oauth/token"
DEFAULT_CLIENT_ID = "imocha-sandbox"
DEFAULT_CLIENT_SECRET = "sandbox-secret-do-not-use-in-production"
OTHER_PROVIDER_CODE = "ACMELEARN"
ORG_CODE_HEADER = "x-degreed-organization-code"
MAX_PAGE_LIMIT = 1000

# Defaults of the settings that choose between today's answers and the documented ones. They keep today's
# behaviour while the client learns the documented shapes; flipping to the documented answers means setting
# DEFAULT_READ_SHAPE = "documented", DEFAULT_RELATIONSHIPS_STYLE = "array", DEFAULT_CONFLICT_BODY = "empty"
# (and, if wanted, DEFAULT_CURSOR_EXPIRY = "bare_400" or "not_found"). Constructor and settings use these.
DEFAULT_READ_SHAPE = "documented"
DEFAULT_RELATIONSHIPS_STYLE = "array"
DEFAULT_CONFLICT_BODY = "empty"
DEFAULT_CURSOR_EXPIRY = "code"

# Spec §8.3 and §9.2: the only attributes a documented completion / skill rating answer carries.
DOCUMENTED_COMPLETION_ATTRIBUTES = ("employee-id", "completed-at", "added-at", "points-earned", "is-verified",
                                    "rating", "access-method")
DOCUMENTED_CONTENT_SUMMARY_ATTRIBUTES = ("content-type", "url", "title", "provider", "content-duration",
                                         "content-duration-type", "is-internal")
DOCUMENTED_SKILL_RATING_ATTRIBUTES = ("employee-id", "skill-name", "rating", "rating-type",
                                      "certifiable-skill-guid", "rated-at")

# The resources a scope family guards: GET needs ``<family>:read`` (or ``:write``), anything else ``:write``.
READ_ONLY_FAMILIES = {"providers"}
ERROR_TITLES = {
    400: ("bad-request", "Bad Request"),
    401: ("unauthorized", "Unauthorized"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not Found"),
    405: ("method-not-allowed", "Method Not Allowed"),
    406: ("not-acceptable", "Not Acceptable"),
    409: ("conflict", "Conflict"),
    429: ("quota-exceeded", "API calls quota exceeded."),
    500: ("server-error", "Internal Server Error"),
    503: ("server-error", "Service Unavailable"),
}
DURATION_TYPES = {"seconds": "Seconds", "minutes": "Minutes", "hours": "Hours", "days": "Days"}
USER_IDENTIFIER_TYPES = {"email": "Email", "employeeid": "EmployeeId", "userid": "UserId"}
CONTENT_ID_TYPES = {"externalid": "ExternalId", "id": "Id", "contenturl": "ContentUrl"}
CONTENT_TYPES = {"article", "book", "course", "event", "video", "assessment", "podcast"}
_TIMESTAMP = re.compile(
    r"^(\d{4}-\d{2}-\d{2})(?:[T ](\d{2}:\d{2}(?::\d{2})?)(?:\.(\d{1,7}))?)?(Z|[+-]\d{2}:?\d{2})?$"
)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
SERVICE_UNAVAILABLE = "The service is temporarily unavailable."


# ---------------------------------------------------------------------------------------------------------
# Settings, API clients and records
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiClientSpec:
    """One Degreed API key: its secret, the scopes it may be granted, and its provider (None = org key)."""

    secret: str = field(repr=False)
    scopes: frozenset[str] = frozenset(DEGREED_REQUIRED_SCOPES)
    provider_code: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "scopes", frozenset(self.scopes))


def default_clients(provider_code: str = "IMOCHA") -> dict[str, ApiClientSpec]:
    """The sandbox's one API key: a provider key for iMocha holding every scope the pipeline needs."""
    return {DEFAULT_CLIENT_ID: ApiClientSpec(DEFAULT_CLIENT_SECRET, frozenset(DEGREED_REQUIRED_SCOPES),
                                             provider_code)}


@dataclass
class DegreedSimSettings:
    """Behaviour that the spec leaves open ([A]) or that tests change at run time."""

    rate_limit_per_minute: int = 70
    rate_window: str = "fixed"  # "fixed": window from the first request, reset = start + 60 s; or "sliding"
    token_ttl_seconds: int = 3600
    completion_duplicates: str = "409"  # "409": conflict error; "update": 200, same id, fields updated
    skill_rating_duplicates: str = "upsert"  # "upsert": same (user, skill, type) replaces; "always-new"
    completion_date_field: str = "completed-at"  # which field filter[start_date]/[end_date] apply to
    cursor_idle_seconds: float = 120.0
    default_page_limit: int = 100
    max_date_range_days: int = 7  # calendar days a date filter may cover, both ends inclusive
    # "object" (JSON:API) or "array" (a list of single-key objects, as in captured samples)
    relationships_style: str = DEFAULT_RELATIONSHIPS_STYLE
    # Seconds after its creation during which an assessment is missing from list/search results (0 = none).
    content_listing_lag_seconds: float = 0.0
    # "documented": completions and skill ratings answer with the spec's §8.3/§9.2 attributes only;
    # "echo": they echo everything that was posted (user email, external content id, percentile, ...).
    read_shape: str = DEFAULT_READ_SHAPE
    # Body of a 409 on create/update: "empty" ({}), "error_without_id" or "error_with_id" (names the record).
    conflict_body: str = DEFAULT_CONFLICT_BODY
    # Answer to a next= cursor whose snapshot expired: "code" (400 cursor-expired), "bare_400", "not_found".
    cursor_expiry: str = DEFAULT_CURSOR_EXPIRY
    # [A] Whether POST /oauth/token is charged to the client's per-minute budget.
    token_requests_count: bool = False

    CHOICES = {
        "rate_window": ("fixed", "sliding"),
        "completion_duplicates": ("409", "update"),
        "skill_rating_duplicates": ("upsert", "always-new"),
        "completion_date_field": ("completed-at", "added-at"),
        "relationships_style": ("object", "array"),
        "read_shape": ("documented", "echo"),
        "conflict_body": ("empty", "error_without_id", "error_with_id"),
        "cursor_expiry": ("code", "bare_400", "not_found"),
    }

    def validate(self) -> None:
        for name, allowed in self.CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"setting {name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.rate_limit_per_minute < 1:
            raise ValueError("setting rate_limit_per_minute must be at least 1")
        if isinstance(self.max_date_range_days, bool) or not isinstance(self.max_date_range_days, int) \
                or self.max_date_range_days < 1:
            raise ValueError(f"setting max_date_range_days must be a whole number of days, 1 or more, "
                             f"got {self.max_date_range_days!r}")
        if not isinstance(self.token_requests_count, bool):
            raise ValueError(f"setting token_requests_count must be true or false, got {self.token_requests_count!r}")
        if not 1 <= self.default_page_limit <= MAX_PAGE_LIMIT:
            raise ValueError(f"setting default_page_limit must be within 1..{MAX_PAGE_LIMIT}")
        if self.token_ttl_seconds < 1 or self.cursor_idle_seconds <= 0:
            raise ValueError("token_ttl_seconds and cursor_idle_seconds must be positive")
        lag = self.content_listing_lag_seconds
        if isinstance(lag, bool) or not isinstance(lag, int | float) or not math.isfinite(lag) or lag < 0:
            raise ValueError(f"setting content_listing_lag_seconds must be a number of seconds, 0 or more, "
                             f"got {lag!r}")


@dataclass
class SimUser:
    id: str
    employee_id: str
    first_name: str
    last_name: str
    email: str
    created_at: datetime


@dataclass
class SimProvider:
    id: str
    code: str
    name: str
    url: str


@dataclass
class SimAssessment:
    id: str
    external_id: str
    title: str
    url: str
    provider_code: str | None
    created_at: datetime
    modified_at: datetime
    summary: str | None = None
    duration: float | None = None
    duration_type: str | None = None
    language: str | None = None
    image_url: str | None = None
    format: str | None = None
    obsolete: bool = False


@dataclass
class SimCompletion:
    id: str
    user_id: str
    user_email: str
    employee_id: str
    content_id: str
    content_external_id: str
    content_type: str
    completed_at: datetime
    added_at: datetime
    modified_at: datetime
    provider_code: str | None
    percentile: float | None = None
    is_verified: bool = True


@dataclass
class SimSkillRating:
    id: str
    user_id: str
    user_email: str
    employee_id: str
    skill_name: str
    rating: int
    rating_type: str
    rated_at: datetime
    created_at: datetime
    modified_at: datetime
    provider_code: str | None


@dataclass
class _Token:
    client_id: str
    scopes: frozenset[str]
    expires_at: float
    revoked: bool = False


@dataclass
class _Snapshot:
    """A list result frozen at its first request; cursors point into it by offset."""

    id: str
    path: str
    items: list[dict[str, Any]]
    last_used: float
    # For each item, the resources it brings into ``included`` (None: the list answers without ``included``).
    included: list[list[dict[str, Any]]] | None = None


@dataclass
class _RateDecision:
    allowed: bool
    remaining: int
    reset_at: float
    retry_after: int = 0


class _Problem(Exception):
    """An API error answer in JSON:API form."""

    def __init__(self, status: int, detail: str, *, code: str | None = None, source: str | None = None,
                 headers: dict[str, str] | None = None, body: dict[str, Any] | None = None):
        super().__init__(detail)
        self.status = status
        self.code = code or ERROR_TITLES.get(status, ("error", "Error"))[0]
        self.title = ERROR_TITLES.get(status, ("error", "Error"))[1]
        self.detail = detail
        self.source = source
        self.headers = headers or {}
        self.body = body  # answer this body instead of the JSON:API error (e.g. the bare {} of a 409)


@dataclass
class _Ctx:
    """What a handler needs about one authorised API request."""

    request: Request
    client_id: str
    client: ApiClientSpec
    base: str
    now: datetime
    body: dict[str, Any] | None = None

    @property
    def query(self):
        return self.request.query_params

    def path_param(self, name: str) -> str:
        return self.request.path_params[name]

    @property
    def attributes(self) -> dict[str, Any]:
        data = (self.body or {}).get("data") or {}
        return data.get("attributes") or {}


# ---------------------------------------------------------------------------------------------------------
# Timestamps
# ---------------------------------------------------------------------------------------------------------


def format_degreed_timestamp(value: datetime | None) -> str | None:
    """Degreed's .NET style: UTC without a zone, 7 fraction digits when there is a fraction."""
    if value is None:
        return None
    value = value.astimezone(UTC) if value.tzinfo else value
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{value.microsecond:06d}0" if value.microsecond else text


def format_dotnet_timestamp(value: datetime | None) -> str | None:
    """The documented read shape: UTC without a zone, 0-7 fraction digits with trailing zeros dropped.

    This is how .NET writes ``DateTime`` values (``yyyy-MM-ddTHH:mm:ss.FFFFFFF``) and matches every sample in
    the spec: ``2021-11-11T00:00:00``, ``2021-11-11T20:56:41.093``, ``2021-10-19T10:01:40.2467123``.
    """
    if value is None:
        return None
    value = value.astimezone(UTC) if value.tzinfo else value
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{value.microsecond:06d}".rstrip("0")
    return f"{text}.{fraction}" if fraction else text


def parse_timestamp(value: Any) -> datetime:
    """Parse an incoming timestamp (zone optional, treated as UTC when absent, 0-7 fraction digits)."""
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    match = _TIMESTAMP.match(str(value).strip()) if isinstance(value, str) else None
    if not match:
        raise ValueError(f"not a date-time: {value!r}")
    day, clock, fraction, zone = match.groups()
    parsed = datetime.fromisoformat(f"{day}T{clock or '00:00'}")
    if fraction:
        parsed = parsed.replace(microsecond=int(fraction[:6].ljust(6, "0")))
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        parsed -= sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return parsed.replace(tzinfo=UTC)


def _iso_z(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _rate_reset_header(epoch: float) -> str:
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{moment.microsecond:06d}0Z"


class _RedactingRequestLog(RequestLog):
    """The shared request log, minus the client secret of token requests (form bodies are logged)."""

    def add(self, **kwargs: Any):
        if kwargs.get("path") == TOKEN_PATH and kwargs.get("body"):
            kwargs["body"] = re.sub(r"(client_secret=)[^&]*", r"\1***", kwargs["body"])
        return super().add(**kwargs)


# ---------------------------------------------------------------------------------------------------------
# Rate limiting
# ---------------------------------------------------------------------------------------------------------


class _RateLimiter:
    """Per-client budget of N requests a minute; rejected requests do not consume budget."""

    PERIOD = 60.0

    def __init__(self, settings: DegreedSimSettings):
        self.settings = settings
        self._fixed: dict[str, tuple[float, int]] = {}
        self._sliding: dict[str, deque[float]] = {}

    def reset(self) -> None:
        self._fixed.clear()
        self._sliding.clear()

    def check(self, client_id: str, now: float) -> _RateDecision:
        if self.settings.rate_window == "sliding":
            return self._check_sliding(client_id, now)
        return self._check_fixed(client_id, now)

    def idle(self, now: float) -> _RateDecision:
        """Headers for an answer that is not charged to any client (bad or missing token)."""
        limit = self.settings.rate_limit_per_minute
        return _RateDecision(True, limit, now + self.PERIOD)

    def peek(self, client_id: str | None, now: float) -> _RateDecision:
        """The client's budget as it stands, without charging anything (for answers that cost nothing)."""
        limit = self.settings.rate_limit_per_minute
        if client_id is None:
            return self.idle(now)
        if self.settings.rate_window == "sliding":
            stamps = [stamp for stamp in self._sliding.get(client_id, ()) if stamp > now - self.PERIOD]
            reset_at = stamps[0] + self.PERIOD if stamps else now + self.PERIOD
            return _RateDecision(len(stamps) < limit, max(0, limit - len(stamps)), reset_at)
        start, used = self._fixed.get(client_id, (now, 0))
        if now >= start + self.PERIOD:
            start, used = now, 0
        return _RateDecision(used < limit, max(0, limit - used), start + self.PERIOD)

    def _check_fixed(self, client_id: str, now: float) -> _RateDecision:
        limit = self.settings.rate_limit_per_minute
        start, used = self._fixed.get(client_id, (now, 0))
        if now >= start + self.PERIOD:
            start, used = now, 0
        reset_at = start + self.PERIOD
        if used >= limit:
            self._fixed[client_id] = (start, used)
            return _RateDecision(False, 0, reset_at, max(1, math.ceil(reset_at - now)))
        self._fixed[client_id] = (start, used + 1)
        return _RateDecision(True, limit - used - 1, reset_at)

    def _check_sliding(self, client_id: str, now: float) -> _RateDecision:
        limit = self.settings.rate_limit_per_minute
        stamps = self._sliding.setdefault(client_id, deque())
        while stamps and stamps[0] <= now - self.PERIOD:
            stamps.popleft()
        if len(stamps) >= limit:
            # The oldest request frees the next slot.
            reset_at = stamps[len(stamps) - limit] + self.PERIOD
            return _RateDecision(False, 0, reset_at, max(1, math.ceil(reset_at - now)))
        stamps.append(now)
        return _RateDecision(True, limit - len(stamps), stamps[0] + self.PERIOD)


# ---------------------------------------------------------------------------------------------------------
# The simulator
# ---------------------------------------------------------------------------------------------------------


class DegreedSimulator:
    """Degreed API v2 in memory. Serve ``.app`` with ``ServerThread``; drive it via methods or ``/_sandbox/``.

    ``clients`` maps client id to ``ApiClientSpec`` (default: one iMocha provider key, ``default_clients()``).
    ``other_provider_assessments`` seeds content from an unrelated provider, which a provider key never
    sees and an organization key does (so a sync must not retire what it does not own).
    ``clock`` (epoch seconds) drives token expiry, rate windows, cursors and timestamps.
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
        self.settings = DegreedSimSettings(
            rate_limit_per_minute=rate_limit_per_minute, rate_window=rate_window,
            token_ttl_seconds=token_ttl_seconds, completion_duplicates=completion_duplicates,
            skill_rating_duplicates=skill_rating_duplicates, completion_date_field=completion_date_field,
            cursor_idle_seconds=cursor_idle_seconds, default_page_limit=default_page_limit,
            max_date_range_days=max_date_range_days, relationships_style=relationships_style,
            content_listing_lag_seconds=content_listing_lag_seconds, read_shape=read_shape,
            conflict_body=conflict_body, cursor_expiry=cursor_expiry, token_requests_count=token_requests_count,
        )
        self.settings.validate()
        self.world = world
        self.provider_code = provider_code
        self.web_base_url = web_base_url.rstrip("/")
        self._clock = clock
        self._lock = threading.RLock()
        # Record ids come from their own seeded stream, so reads (cursors) and errors never shift them.
        self._rng = random.Random(f"degreed-sim-{world.seed}")
        self._aux_rng = random.Random(f"degreed-sim-aux-{world.seed}")
        self._used_ids: set[str] = set()
        self._clients: dict[str, ApiClientSpec] = dict(clients if clients is not None
                                                       else default_clients(provider_code))
        self._revoked: set[str] = set()
        self._tokens: dict[str, _Token] = {}
        self._issued: list[str] = []
        self._limiter = _RateLimiter(self.settings)
        # Simulator-clock times of every request charged to each client (kept across rate-limit resets).
        self._accepted: dict[str, list[float]] = {}
        self._snapshots: dict[str, _Snapshot] = {}
        self._cursors: dict[str, tuple[str, int]] = {}
        self._forced_cursor_skip = 0
        self._forced_cursor_count = 0
        self.users: dict[str, SimUser] = {}
        self.providers: dict[str, SimProvider] = {}
        self.assessments: dict[str, SimAssessment] = {}
        self.completions: dict[str, SimCompletion] = {}
        self.skill_ratings: dict[str, SimSkillRating] = {}
        self._seed(world, provider_code, provider_name, other_provider_assessments)
        self.log: RequestLog = _RedactingRequestLog()
        self.faults = FaultInjector()
        # The fixed fault bodies are only a fallback: ``_fault_answer`` builds each injected 429/503 when it
        # is sent, with the rate-limit headers and the live limit in the 429 detail.
        self.app = SimulatorMiddleware(
            self._build_app(), self.log, self.faults,
            error_body_5xx=json_bytes(self._error_body(_Problem(503, SERVICE_UNAVAILABLE))),
            error_body_429=json_bytes(self._error_body(self._quota_problem(0))),
            client_of=self._client_of,
            fault_answer=self._fault_answer,
        )

    # -- seeding --------------------------------------------------------------------------------------

    def _new_id(self, length: int, rng: random.Random | None = None) -> str:
        alphabet = string.ascii_letters + string.digits
        rng = rng or self._rng
        while True:
            candidate = "".join(rng.choice(alphabet) for _ in range(length))
            if candidate not in self._used_ids:
                self._used_ids.add(candidate)
                return candidate

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def _seed(self, world: World, provider_code: str, provider_name: str, foreign: int) -> None:
        for code, name, url in (
            (provider_code, provider_name, "https://www.imocha.io"),
            (OTHER_PROVIDER_CODE, "Acme Learning", "https://learn.acme.example"),
        ):
            provider = SimProvider(self._new_id(6), code, name, url)
            self.providers[provider.id] = provider
        for index, learner in enumerate(world.learners):
            if learner.in_degreed:
                first, _, last = learner.name.partition(" ")
                self._insert_user(learner.email, learner.employee_id, first, last,
                                  world.now - timedelta(days=400 - index))
        for index in range(foreign):
            self._insert_assessment(
                {"external-id": f"acme-{index + 1:03d}", "title": f"Acme Skills Check {index + 1}",
                 "url": f"https://learn.acme.example/check/{index + 1}", "duration": 15,
                 "duration-type": "Minutes"},
                OTHER_PROVIDER_CODE, world.now - timedelta(days=90),
            )

    def _insert_user(self, email: str, employee_id: str, first: str, last: str, created: datetime) -> SimUser:
        user = SimUser(self._new_id(6), employee_id, first, last, email, created)
        self.users[user.id] = user
        return user

    def _insert_assessment(self, attrs: dict[str, Any], provider_code: str | None,
                           now: datetime) -> SimAssessment:
        record = SimAssessment(
            id=self._new_id(7), external_id=attrs["external-id"], title=attrs["title"], url=attrs["url"],
            provider_code=provider_code, created_at=now, modified_at=now,
        )
        self._apply_assessment_attributes(record, attrs)
        self.assessments[record.id] = record
        return record

    # -- control surface (Python) ---------------------------------------------------------------------

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change settings at run time (e.g. ``rate_limit_per_minute``, ``completion_duplicates``)."""
        with self._lock:
            known = {f.name for f in fields(DegreedSimSettings)}
            unknown = set(changes) - known
            if unknown:
                raise ValueError(f"unknown simulator settings: {sorted(unknown)}")
            candidate = DegreedSimSettings(**{**asdict(self.settings), **changes})
            candidate.validate()
            window_changed = candidate.rate_window != self.settings.rate_window
            for name in known:
                setattr(self.settings, name, getattr(candidate, name))
            if window_changed:
                self._limiter.reset()
            return asdict(self.settings)

    def reset_rate_limits(self) -> None:
        """Forget every client's used budget (``max_requests_in_any_minute`` keeps its history)."""
        with self._lock:
            self._limiter.reset()

    def max_requests_in_any_minute(self, client_id: str, since: float | None = None) -> int:
        """The most requests accepted from ``client_id`` within any rolling 60 s, by the simulator's clock.

        Counts what the rate limiter charged: every API request with a live token that was not refused
        with 429 (whatever it answered), plus token requests when ``token_requests_count`` is on. Not counted:
        429 refusals, 401s, and injected faults (they never reach the simulator). A window is half-open,
        ``[t, t + 60)``, as in the sliding limiter: requests at t and t + 60 are never in the same minute.
        ``since`` (epoch seconds) ignores requests accepted before it.
        """
        with self._lock:
            times = sorted(t for t in self._accepted.get(client_id, ()) if since is None or t >= since)
        best, first = 0, 0
        for last, moment in enumerate(times):
            while times[first] <= moment - _RateLimiter.PERIOD:
                first += 1
            best = max(best, last - first + 1)
        return best

    def add_client(self, client_id: str, spec: ApiClientSpec) -> None:
        """Create or replace an API key (also un-revokes it)."""
        with self._lock:
            self._clients[client_id] = spec
            self._revoked.discard(client_id)

    def revoke_client(self, client_id: str) -> None:
        """The key's secret stops working and every token issued to it dies."""
        with self._lock:
            if client_id not in self._clients:
                raise KeyError(f"unknown client {client_id}")
            self._revoked.add(client_id)
            for token in self._tokens.values():
                if token.client_id == client_id:
                    token.revoked = True

    def expire_tokens(self) -> int:
        """Expire every live token now; returns how many were live."""
        with self._lock:
            now = self._clock()
            live = [t for t in self._tokens.values() if t.expires_at > now and not t.revoked]
            for token in live:
                token.expires_at = now
            return len(live)

    def issued_tokens(self) -> list[str]:
        """Every access and refresh token handed out (for tests that prove tokens never leak)."""
        with self._lock:
            return list(self._issued)

    def expire_cursors(self) -> None:
        """Drop every paging snapshot now: the next ``next=`` request answers ``cursor-expired``."""
        with self._lock:
            self._snapshots.clear()
            self._cursors.clear()

    def schedule_cursor_expiry(self, skip: int = 0, count: int = 1) -> None:
        """Let ``skip`` cursor requests pass, then answer the following ``count`` with ``cursor-expired``."""
        with self._lock:
            self._forced_cursor_skip = skip
            self._forced_cursor_count = count

    def add_user(self, email: str, employee_id: str | None = None, first_name: str = "Sandbox",
                 last_name: str = "Learner") -> dict[str, Any]:
        """Provision a learner in Degreed (e.g. one who was missing)."""
        with self._lock:
            if self._user_by_email(email):
                raise ValueError(f"a user with email {email} already exists")
            employee_id = employee_id or f"X{len(self.users) + 90000}"
            user = self._insert_user(email, employee_id, first_name, last_name, self._now())
            return _state_of(user)

    def remove_user(self, key: str) -> None:
        """Remove a user by Degreed id or email; completions and ratings stay."""
        with self._lock:
            user = self.users.get(key) or self._user_by_email(key)
            if user is None:
                raise KeyError(f"unknown user {key}")
            del self.users[user.id]

    def add_assessment(self, external_id: str, title: str | None = None, url: str | None = None, *,
                       provider_code: str | None = "__default__", **attributes: Any) -> dict[str, Any]:
        """Add content directly, as if someone else created it (bypasses the 409 check on purpose)."""
        with self._lock:
            code = self.provider_code if provider_code == "__default__" else provider_code
            attrs = {"external-id": external_id, "title": title or f"Content {external_id}",
                     "url": url or f"https://content.example/{external_id}", **_kebab(attributes)}
            return _state_of(self._insert_assessment(attrs, code, self._now()))

    def update_assessment(self, assessment_id: str, **changes: Any) -> dict[str, Any]:
        with self._lock:
            record = self._get(self.assessments, assessment_id)
            self._apply_assessment_attributes(record, _kebab(changes))
            record.modified_at = self._now()
            return _state_of(record)

    def delete_assessment(self, assessment_id: str) -> None:
        with self._lock:
            self._get(self.assessments, assessment_id)
            del self.assessments[assessment_id]

    def add_completion(self, user: str, content: str, completed_at: datetime | str,
                       percentile: float | None = None, *, provider_code: str | None = "__default__",
                       ) -> dict[str, Any]:
        """Add a completion directly. ``user`` is a Degreed id or email; ``content`` an id or external id."""
        with self._lock:
            person = self.users.get(user) or self._user_by_email(user)
            item = self.assessments.get(content) or next(
                (a for a in self.assessments.values() if a.external_id == content), None)
            if person is None or item is None:
                raise KeyError(f"unknown user {user!r} or content {content!r}")
            code = self.provider_code if provider_code == "__default__" else provider_code
            now = self._now()
            moment = parse_timestamp(completed_at)
            record = self._insert_completion(person, item, moment, percentile, code, now)
            return _state_of(record)

    def update_completion(self, completion_id: str, **changes: Any) -> dict[str, Any]:
        """Edit a completion directly: ``percentile``, ``completed_at``, ``is_verified``."""
        with self._lock:
            record = self._get(self.completions, completion_id)
            for name, value in changes.items():
                if name == "completed_at":
                    value = parse_timestamp(value)
                if name not in {"percentile", "completed_at", "is_verified"}:
                    raise ValueError(f"cannot change completion field {name}")
                setattr(record, name, value)
            record.modified_at = self._now()
            return _state_of(record)

    def delete_completion(self, completion_id: str) -> None:
        with self._lock:
            self._get(self.completions, completion_id)
            del self.completions[completion_id]

    def add_skill_rating(self, user: str, skill_name: str, rating: int, rating_type: str = "Evaluation",
                         rated_at: datetime | str | None = None) -> dict[str, Any]:
        """Add a skill rating directly (always a new record)."""
        with self._lock:
            person = self.users.get(user) or self._user_by_email(user)
            if person is None:
                raise KeyError(f"unknown user {user!r}")
            now = self._now()
            moment = parse_timestamp(rated_at) if rated_at else now
            record = self._insert_skill_rating(person, skill_name, rating, rating_type, moment,
                                               self.provider_code, now)
            return _state_of(record)

    def update_skill_rating(self, rating_id: str, **changes: Any) -> dict[str, Any]:
        with self._lock:
            record = self._get(self.skill_ratings, rating_id)
            for name, value in changes.items():
                if name not in {"rating", "rating_type", "rated_at", "skill_name"}:
                    raise ValueError(f"cannot change skill rating field {name}")
                setattr(record, name, parse_timestamp(value) if name == "rated_at" else value)
            record.modified_at = self._now()
            return _state_of(record)

    def delete_skill_rating(self, rating_id: str) -> None:
        with self._lock:
            self._get(self.skill_ratings, rating_id)
            del self.skill_ratings[rating_id]

    def state(self) -> dict[str, Any]:
        """Everything Degreed holds, JSON-ready, snake_case, UTC ISO timestamps."""
        with self._lock:
            return {
                "users": [_state_of(u) for u in self.users.values()],
                "providers": [_state_of(p) for p in self.providers.values()],
                "assessments": [_state_of(a) for a in self.assessments.values()],
                "completions": [_state_of(c) for c in self.completions.values()],
                "skill_ratings": [_state_of(r) for r in self.skill_ratings.values()],
                "settings": asdict(self.settings),
                "clients": sorted(self._clients),
                "revoked_clients": sorted(self._revoked),
            }

    # -- record helpers -------------------------------------------------------------------------------

    @staticmethod
    def _get(table: dict[str, Any], key: str) -> Any:
        if key not in table:
            raise KeyError(f"unknown id {key}")
        return table[key]

    def _user_by_email(self, email: str) -> SimUser | None:
        wanted = email.strip().casefold()
        return next((u for u in self.users.values() if u.email.casefold() == wanted), None)

    def _insert_completion(self, user: SimUser, item: SimAssessment, completed_at: datetime,
                           percentile: float | None, provider_code: str | None,
                           now: datetime) -> SimCompletion:
        record = SimCompletion(
            id=self._new_id(8), user_id=user.id, user_email=user.email, employee_id=user.employee_id,
            content_id=item.id, content_external_id=item.external_id, content_type="Assessment",
            completed_at=completed_at, added_at=now, modified_at=now, provider_code=provider_code,
            percentile=percentile,
        )
        self.completions[record.id] = record
        return record

    def _insert_skill_rating(self, user: SimUser, skill_name: str, rating: int, rating_type: str,
                             rated_at: datetime, provider_code: str | None, now: datetime) -> SimSkillRating:
        record = SimSkillRating(
            id=self._new_id(8), user_id=user.id, user_email=user.email, employee_id=user.employee_id,
            skill_name=skill_name, rating=rating, rating_type=rating_type, rated_at=rated_at,
            created_at=now, modified_at=now, provider_code=provider_code,
        )
        self.skill_ratings[record.id] = record
        return record

    @staticmethod
    def _apply_assessment_attributes(record: SimAssessment, attrs: dict[str, Any]) -> None:
        """Validate and copy the writable assessment attributes present in ``attrs``."""
        text_fields = {"external-id": "external_id", "title": "title", "url": "url", "summary": "summary",
                       "language": "language", "image-url": "image_url", "format": "format"}
        for name, attr in text_fields.items():
            if name in attrs:
                value = attrs[name]
                if value is not None and not isinstance(value, str):
                    raise _Problem(400, f"Attribute {name} must be a string.", source=name)
                if name in {"external-id", "title", "url"} and not (value or "").strip():
                    raise _Problem(400, f"Attribute {name} is required.", source=name)
                setattr(record, attr, value)
        if "duration" in attrs:
            value = attrs["duration"]
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                      or value < 0):
                raise _Problem(400, "Attribute duration must be a non-negative number.", source="duration")
            record.duration = value
        if "duration-type" in attrs:
            value = attrs["duration-type"]
            if value is not None and str(value).lower() not in DURATION_TYPES:
                raise _Problem(400, f"Invalid duration-type: {value}", source="duration-type")
            record.duration_type = None if value is None else DURATION_TYPES[str(value).lower()]
        if "obsolete" in attrs:
            if not isinstance(attrs["obsolete"], bool):
                raise _Problem(400, "Attribute obsolete must be a boolean.", source="obsolete")
            record.obsolete = attrs["obsolete"]

    # -- serialisation (API view) ---------------------------------------------------------------------

    def _relationships(self, links: dict[str, dict[str, Any] | None]) -> Any:
        present = {name: {"data": data} for name, data in links.items() if data is not None}
        if self.settings.relationships_style == "array":
            return [{name: value} for name, value in present.items()]
        return present

    def _provider_ref(self, code: str | None) -> dict[str, str] | None:
        provider = next((p for p in self.providers.values() if p.code == code), None)
        return {"id": provider.id, "type": "providers"} if provider else None

    def _assessment_resource(self, record: SimAssessment, base: str) -> dict[str, Any]:
        return {
            "type": "content/assessments",
            "id": record.id,
            "attributes": {
                "provider-code": record.provider_code,
                "external-id": record.external_id,
                "degreed-url": f"{self.web_base_url}/assessments/?d={record.id}",
                "title": record.title,
                "summary": record.summary,
                "url": record.url,
                "obsolete": record.obsolete,
                "image-url": record.image_url,
                "language": record.language,
                "duration": record.duration,
                "duration-type": record.duration_type,
                "format": record.format,
                "created-at": format_degreed_timestamp(record.created_at),
                "modified-at": format_degreed_timestamp(record.modified_at),
            },
            "links": {"self": f"{base}{API_PREFIX}/content/assessments/{record.id}"},
            "relationships": self._relationships({"provider": self._provider_ref(record.provider_code)}),
        }

    def _content_resource(self, record: SimAssessment, base: str) -> dict[str, Any]:
        provider = next((p for p in self.providers.values() if p.code == record.provider_code), None)
        minutes = _duration_minutes(record.duration, record.duration_type)
        return {
            "type": "content",
            "id": record.id,
            "attributes": {
                "content-type": "Assessment",
                "external-id": record.external_id,
                "title": record.title,
                "summary": record.summary,
                "url": record.url,
                "degreed-url": f"{self.web_base_url}/assessments/?d={record.id}",
                "format": record.format,
                "is-obsolete": record.obsolete,
                "image-url": record.image_url,
                "language": record.language,
                "duration": record.duration,
                "duration-type": record.duration_type,
                "provider": provider.name if provider else None,
                "is-internal": record.provider_code is None,
                "owner": None,
                "learning-minutes": minutes,
                "publish-date": None,
                "created-at": format_degreed_timestamp(record.created_at),
                "modified-at": format_degreed_timestamp(record.modified_at),
            },
            "links": {"self": f"{base}{API_PREFIX}/content/{record.id}"},
        }

    def _completion_resource(self, record: SimCompletion, base: str) -> dict[str, Any]:
        if self.settings.read_shape == "documented":
            return self._documented_completion(record, base)
        user = self.users.get(record.user_id)
        return {
            "type": "completions",
            "id": record.id,
            "attributes": {
                "employee-id": user.employee_id if user else record.employee_id,
                "user-id": user.email if user else record.user_email,
                "user-identifier-type": "Email",
                "content-id": record.content_external_id,
                "content-id-type": "ExternalId",
                "content-type": record.content_type,
                "completed-at": format_degreed_timestamp(record.completed_at),
                "added-at": format_degreed_timestamp(record.added_at),
                "percentile": record.percentile,
                "provider-code": record.provider_code,
                "points-earned": "0.0000000",
                "is-verified": record.is_verified,
                "rating": 0,
                "access-method": None,
            },
            "links": {"self": f"{base}{API_PREFIX}/completions/{record.id}"},
            "relationships": self._relationships({
                "content": {"id": record.content_id, "type": "content"},
                "provider": self._provider_ref(record.provider_code),
                "user": {"id": record.user_id, "type": "users"},
            }),
        }

    def _documented_completion(self, record: SimCompletion, base: str) -> dict[str, Any]:
        """Spec §8.3: only Degreed's own attributes; learner, content and provider by Degreed id."""
        user = self.users.get(record.user_id)
        attributes = {
            "employee-id": user.employee_id if user else record.employee_id,
            "completed-at": format_dotnet_timestamp(record.completed_at),
            "added-at": format_dotnet_timestamp(record.added_at),
            "points-earned": _points_earned(record.id),
            "is-verified": record.is_verified,
            "rating": 0,
            "access-method": None,
        }
        return {
            "type": "completions",
            "id": record.id,
            "attributes": {name: attributes[name] for name in DOCUMENTED_COMPLETION_ATTRIBUTES},
            "links": {"self": f"{base}{API_PREFIX}/completions/{record.id}"},
            "relationships": self._relationships({
                "content": {"id": record.content_id, "type": "content"},
                "provider": self._provider_ref(record.provider_code),
                "user": {"id": record.user_id, "type": "users"},
            }),
        }

    def _content_summary(self, content_id: str) -> list[dict[str, Any]]:
        """The ``included`` entry for one referenced content item (none when it no longer exists)."""
        record = self.assessments.get(content_id)
        if record is None:
            return []
        provider = next((p for p in self.providers.values() if p.code == record.provider_code), None)
        attributes = {
            "content-type": "Assessment",
            "url": record.url,
            "title": record.title,
            "provider": provider.name if provider else None,
            "content-duration": record.duration,
            "content-duration-type": record.duration_type,
            "is-internal": record.provider_code is None,
        }
        return [{"type": "content", "id": record.id,
                 "attributes": {name: attributes[name] for name in DOCUMENTED_CONTENT_SUMMARY_ATTRIBUTES}}]

    def _skill_rating_resource(self, record: SimSkillRating, base: str) -> dict[str, Any]:
        if self.settings.read_shape == "documented":
            return self._documented_skill_rating(record, base)
        user = self.users.get(record.user_id)
        return {
            "type": "skill-ratings",
            "id": record.id,
            "attributes": {
                "employee-id": user.employee_id if user else record.employee_id,
                "user-id": user.email if user else record.user_email,
                "skill-name": record.skill_name,
                "rating": record.rating,
                "rating-type": record.rating_type,
                "rated-at": format_degreed_timestamp(record.rated_at),
                "certifiable-skill-guid": None,
                "provider-code": record.provider_code,
                "created-at": format_degreed_timestamp(record.created_at),
                "modified-at": format_degreed_timestamp(record.modified_at),
            },
            "links": {"self": f"{base}{API_PREFIX}/skill-ratings/{record.id}"},
            "relationships": self._relationships({"user": {"id": record.user_id, "type": "users"}}),
        }

    def _documented_skill_rating(self, record: SimSkillRating, base: str) -> dict[str, Any]:
        """Spec §9.2: the rated user's employee id, the skill by name, the rating; the user by Degreed id."""
        user = self.users.get(record.user_id)
        attributes = {
            "employee-id": user.employee_id if user else record.employee_id,
            "skill-name": record.skill_name,
            "rating": record.rating,
            "rating-type": record.rating_type,
            "certifiable-skill-guid": None,
            "rated-at": format_dotnet_timestamp(record.rated_at),
        }
        return {
            "type": "skill-ratings",
            "id": record.id,
            "attributes": {name: attributes[name] for name in DOCUMENTED_SKILL_RATING_ATTRIBUTES},
            "links": {"self": f"{base}{API_PREFIX}/skill-ratings/{record.id}"},
            "relationships": self._relationships({"user": {"id": record.user_id, "type": "users"}}),
        }

    def _user_resource(self, user: SimUser, base: str) -> dict[str, Any]:
        return {
            "type": "users",
            "id": user.id,
            "attributes": {
                "employee-id": user.employee_id,
                "first-name": user.first_name,
                "last-name": user.last_name,
                "full-name": f"{user.first_name} {user.last_name}".strip(),
                "organization-email": user.email,
                "personal-email": None,
                "profile-visibility": "Organization",
                "permission-role": "Member",
                "login-disabled": False,
                "restricted": False,
                "is-active-learner": True,
                "created-at": format_degreed_timestamp(user.created_at),
                "last-login-at": None,
                "total-points": 0,
                "daily-logins": 0,
            },
            "links": {"self": f"{base}{API_PREFIX}/users/{user.id}"},
        }

    def _provider_resource(self, provider: SimProvider, base: str) -> dict[str, Any]:
        return {
            "type": "providers",
            "id": provider.id,
            "attributes": {"name": provider.name, "url": provider.url, "code": provider.code},
            "links": {"self": f"{base}{API_PREFIX}/providers/{provider.id}"},
        }

    def _error_body(self, problem: _Problem) -> dict[str, Any]:
        if problem.body is not None:
            return problem.body
        error_id = str(uuid.UUID(int=self._aux_rng.getrandbits(128), version=4))
        return {"errors": [{"id": error_id, "code": problem.code, "status": problem.status,
                            "title": problem.title, "detail": problem.detail, "source": problem.source}]}

    # -- app and request pipeline ---------------------------------------------------------------------

    def _build_app(self) -> Starlette:
        api = self._api_route
        routes = [
            Route(TOKEN_PATH, self._token_endpoint, methods=["POST"]),
            api("GET", "/content/assessments", "content", self._list_assessments),
            api("POST", "/content/assessments", "content", self._create_assessment),
            api("GET", "/content/assessments/{id}", "content", self._get_assessment),
            api("PATCH", "/content/assessments/{id}", "content", self._patch_assessment),
            api("DELETE", "/content/assessments/{id}", "content", self._delete_assessment),
            api("GET", "/content", "content", self._list_content),
            api("GET", "/content/{id}", "content", self._get_content),
            api("GET", "/completions", "completions", self._list_completions),
            api("POST", "/completions", "completions", self._create_completion),
            api("GET", "/completions/{id}", "completions", self._get_completion),
            api("PATCH", "/completions/{id}", "completions", self._patch_completion),
            api("DELETE", "/completions/{id}", "completions", self._delete_completion),
            api("GET", "/skill-ratings", "skill_ratings", self._list_skill_ratings),
            api("POST", "/skill-ratings", "skill_ratings", self._create_skill_rating),
            api("GET", "/skill-ratings/{id}", "skill_ratings", self._get_skill_rating),
            api("PATCH", "/skill-ratings/{id}", "skill_ratings", self._patch_skill_rating),
            api("DELETE", "/skill-ratings/{id}", "skill_ratings", self._delete_skill_rating),
            api("GET", "/users", "users", self._list_users),
            api("GET", "/users/{id}/skill-ratings", "skill_ratings", self._list_user_skill_ratings),
            api("GET", "/users/{id}/completions", "completions", self._list_user_completions),
            api("GET", "/users/{id}", "users", self._get_user),
            api("GET", "/providers", "providers", self._list_providers),
            api("GET", "/providers/{id}", "providers", self._get_provider),
            *self._control_routes(),
        ]
        return Starlette(routes=routes, exception_handlers={HTTPException: self._http_exception})

    async def _http_exception(self, request: Request, exc: HTTPException) -> Response:
        """Unknown path or wrong method: a JSON:API error, authenticated and rate-counted like any API call."""
        detail = "No such endpoint." if exc.status_code == 404 else str(exc.detail)
        problem = _Problem(exc.status_code, detail)
        if not request.url.path.startswith(API_PREFIX):
            return _json(problem.status, self._error_body(problem))

        def refuse(ctx: _Ctx):
            raise problem

        with self._lock:
            return self._dispatch(request, b"", request.method, None, refuse)

    def _api_route(self, method: str, path: str, family: str, handler: Callable[[_Ctx], Any]) -> Route:
        async def endpoint(request: Request) -> Response:
            body = await request.body()
            with self._lock:
                return self._dispatch(request, body, method, family, handler)

        return Route(f"{API_PREFIX}{path}", endpoint, methods=[method])

    def _dispatch(self, request: Request, body: bytes, method: str, family: str | None,
                  handler: Callable[[_Ctx], Any]) -> Response:
        """Authenticate, rate-limit, authorise, parse, run the handler, and stamp rate-limit headers.

        ``family`` names the scope family (``content`` …); None skips the scope check and body parsing.
        """
        now = self._clock()
        token = self._live_token(request, now)
        if token is None:
            detail = "The access token is missing, invalid, expired or revoked."
            return self._problem_response(_Problem(401, detail), self._limiter.idle(now))
        decision = self._charge(token.client_id, now)
        if not decision.allowed:
            return self._problem_response(self._quota_problem(decision.retry_after), decision)
        try:
            client = self._clients[token.client_id]
            self._check_org_code(request, client)
            if family is not None:
                self._check_scope(token.scopes, family, method)
            self._check_accept(request)
            ctx = _Ctx(request=request, client_id=token.client_id, client=client,
                       base=str(request.base_url).rstrip("/"), now=self._now())
            if family is not None and method in {"POST", "PATCH"}:
                ctx.body = self._parse_body(request, body)
            status, payload = handler(ctx)
        except _Problem as problem:
            return self._problem_response(problem, decision)
        except Exception:  # a simulator bug still answers like Degreed would: a JSON:API 500 with headers
            logging.getLogger(__name__).exception("Degreed simulator failed on %s %s", method, request.url.path)
            return self._problem_response(_Problem(500, "An unexpected error occurred."), decision)
        response = Response(status_code=status) if payload is None else _json(status, payload)
        response.headers.update(_rate_headers(decision))
        return response

    def _charge(self, client_id: str, now: float) -> _RateDecision:
        """Ask the limiter for one request of ``client_id``; remember the time when it is accepted."""
        decision = self._limiter.check(client_id, now)
        if decision.allowed:
            self._accepted.setdefault(client_id, []).append(now)
        return decision

    def _quota_problem(self, retry_after: int) -> _Problem:
        """The 429 answer, worded with the limit in force now."""
        return _Problem(429, f"Maximum {self.settings.rate_limit_per_minute} requests allowed per 1m.",
                        headers={"Retry-After": str(retry_after)})

    def _fault_answer(self, kind: str, scope: dict[str, Any], client: str | None,
                      config: FaultConfig) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        """Body and headers of an injected 429 or 503 (``SimulatorMiddleware``'s ``fault_answer`` hook).

        API answers carry the rate-limit headers like every other answer: an injected 429 says no budget is
        left until ``retry_after_seconds`` from now; an injected 503 shows the client's budget as it stands
        (a faulted request never reaches the limiter, so it is not charged). Token answers carry them only
        when ``token_requests_count`` is on. The 429 body names the live ``rate_limit_per_minute``.
        """
        with self._lock:
            now = self._clock()
            path = scope.get("path", "")
            if path == TOKEN_PATH:
                with_rate = self.settings.token_requests_count
                client = client if client in self._clients else None
            else:
                with_rate = path.startswith(API_PREFIX)
            if kind == "rate_429":
                retry_after = max(0, int(config.retry_after_seconds))
                problem = self._quota_problem(retry_after)
                decision = _RateDecision(False, 0, now + retry_after, retry_after)
            else:
                problem = _Problem(503, SERVICE_UNAVAILABLE)
                decision = self._limiter.peek(client, now)
            headers = {**(_rate_headers(decision) if with_rate else {}), **problem.headers}
            body = json_bytes(self._error_body(problem))
        return body, [(name.lower().encode(), value.encode()) for name, value in headers.items()]

    def _problem_response(self, problem: _Problem, decision: _RateDecision) -> Response:
        response = _json(problem.status, self._error_body(problem))
        response.headers.update(_rate_headers(decision))
        response.headers.update(problem.headers)
        return response

    def _live_token(self, request: Request, now: float) -> _Token | None:
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return None
        token = self._tokens.get(value.strip())
        if token is None or token.revoked or token.expires_at <= now or token.client_id in self._revoked:
            return None
        return token

    @staticmethod
    def _check_scope(granted: frozenset[str], family: str, method: str) -> None:
        needed = f"{family}:write" if method != "GET" else f"{family}:read"
        accepted = {needed}
        if method == "GET" and family not in READ_ONLY_FAMILIES:
            accepted.add(f"{family}:write")
        if not granted & accepted:
            raise _Problem(403, f"The access token does not have the scope {needed}.", source=needed)

    @staticmethod
    def _check_org_code(request: Request, client: ApiClientSpec) -> None:
        if ORG_CODE_HEADER not in request.headers:
            return
        if client.provider_code is not None:
            raise _Problem(403, "X-Degreed-Organization-Code can only be used with an organization API key.",
                           source="X-Degreed-Organization-Code")

    @staticmethod
    def _check_accept(request: Request) -> None:
        accept = request.headers.get("accept", "").lower()
        if accept and not any(kind in accept for kind in ("json", "*/*", "application/*")):
            raise _Problem(406, "Only application/json is supported.")

    @staticmethod
    def _parse_body(request: Request, body: bytes) -> dict[str, Any]:
        content_type = request.headers.get("content-type", "").lower()
        if "json" not in content_type:
            raise _Problem(406, "The request body must be application/json or application/vnd.api+json.")
        try:
            parsed = json.loads(body or b"null")
        except ValueError as exc:
            raise _Problem(400, "The request body is not valid JSON.") from exc
        data = parsed.get("data") if isinstance(parsed, dict) else None
        if not isinstance(data, dict) or not isinstance(data.get("attributes", {}), dict):
            raise _Problem(400, 'The request body must be {"data": {"attributes": {...}}}.', source="data")
        return parsed

    def _client_of(self, scope: dict[str, Any], body: bytes) -> str | None:
        """Name the API client of a request for the log: the token's owner, or the token form's client_id."""
        if scope["path"] == TOKEN_PATH:
            values = parse_qs(body.decode("utf-8", "replace")).get("client_id")
            return values[0] if values else None
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                token = value.decode("latin-1").partition(" ")[2].strip()
                with self._lock:
                    record = self._tokens.get(token)
                return record.client_id if record else None
        return None

    # -- OAuth ----------------------------------------------------------------------------------------

    async def _token_endpoint(self, request: Request) -> Response:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        value = {name: values[0] for name, values in form.items() if values}
        with self._lock:
            decision = None
            client_id = value.get("client_id", "")
            if self.settings.token_requests_count and client_id in self._clients:
                # [A] The token request is charged to the client it names, whatever the outcome.
                decision = self._charge(client_id, self._clock())
                if not decision.allowed:
                    response = self._problem_response(self._quota_problem(decision.retry_after), decision)
                    response.headers["Cache-Control"] = "no-store"
                    return response
            status, payload = self._issue_token(value)
        response = _json(status, payload)
        response.headers["Cache-Control"] = "no-store"
        if decision is not None:
            response.headers.update(_rate_headers(decision))
        return response

    def _issue_token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type",
                         "error_description": "Only grant_type=client_credentials is supported."}
        client_id = form.get("client_id", "")
        spec = self._clients.get(client_id)
        if spec is None or client_id in self._revoked or not secrets.compare_digest(
                spec.secret.encode(), form.get("client_secret", "").encode()):
            return 401, {"error": "invalid_client", "error_description": "Unknown client or wrong secret."}
        wanted = _parse_scopes(form.get("scope", ""))
        if not wanted:
            return 400, {"error": "invalid_request", "error_description": "The scope parameter is required."}
        missing = sorted(wanted - spec.scopes)
        if missing:
            return 403, {"error": "invalid_scope",
                         "error_description": f"The API key is not granted: {', '.join(missing)}"}
        access, refresh = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        ttl = self.settings.token_ttl_seconds
        self._tokens[access] = _Token(client_id, frozenset(wanted), self._clock() + ttl)
        self._issued.extend([access, refresh])
        return 200, {"access_token": access, "token_type": "bearer", "expires_in": ttl,
                     "refresh_token": refresh}

    # -- paging and filters ---------------------------------------------------------------------------

    def _page(self, ctx: _Ctx, build: Callable[[], list[Any]], *,
              with_included: bool = False) -> tuple[int, dict[str, Any]]:
        """Serve one page of a snapshotted list; ``build`` runs only for the first page of a chain.

        With ``with_included``, ``build`` returns ``(resource, included resources)`` pairs and every page of
        the chain answers with ``included``: the distinct included resources of that page's items, frozen
        with the snapshot like the items themselves.
        """
        limit = _parse_limit(ctx.query.get("limit"), self.settings.default_page_limit)
        now = self._clock()
        path = ctx.request.url.path
        cursor = ctx.query.get("next")
        if cursor:
            snapshot, offset = self._resume(cursor, path, now)
        else:
            self._drop_idle_snapshots(now)
            built = build()
            items = [item for item, _ in built] if with_included else built
            included = [extra for _, extra in built] if with_included else None
            snapshot, offset = _Snapshot(self._new_id(12, self._aux_rng), path, items, now, included), 0
            self._snapshots[snapshot.id] = snapshot
        snapshot.last_used = now
        page = snapshot.items[offset: offset + limit]
        links = {"self": str(ctx.request.url)}
        if offset + len(page) < len(snapshot.items):
            next_cursor = self._new_id(10, self._aux_rng)
            self._cursors[next_cursor] = (snapshot.id, offset + len(page))
            links["next"] = f"{ctx.base}{path}?limit={limit}&next={next_cursor}"
        payload: dict[str, Any] = {"links": links, "data": page}
        if snapshot.included is not None:
            seen: set[tuple[str, str]] = set()
            payload["included"] = []
            for extras in snapshot.included[offset: offset + len(page)]:
                for extra in extras:
                    if (extra["type"], extra["id"]) not in seen:
                        seen.add((extra["type"], extra["id"]))
                        payload["included"].append(extra)
        return 200, payload

    def _cursor_expired(self) -> _Problem:
        """The answer to a cursor whose snapshot is gone, as ``cursor_expiry`` says."""
        if self.settings.cursor_expiry == "bare_400":
            return _Problem(400, "Invalid request.")
        if self.settings.cursor_expiry == "not_found":
            return _Problem(404, "The requested resource was not found.")
        return _Problem(400, "The paging cursor has expired; start again from the first page.",
                        code="cursor-expired", source="next")

    def _resume(self, cursor: str, path: str, now: float) -> tuple[_Snapshot, int]:
        expired = self._cursor_expired()
        if self._forced_cursor_skip > 0:
            self._forced_cursor_skip -= 1
        elif self._forced_cursor_count > 0:
            self._forced_cursor_count -= 1
            self._forget_cursor_snapshot(cursor)
            raise expired
        position = self._cursors.get(cursor)
        snapshot = self._snapshots.get(position[0]) if position else None
        if snapshot is None or now - snapshot.last_used > self.settings.cursor_idle_seconds:
            self._forget_cursor_snapshot(cursor)
            raise expired
        if snapshot.path != path:
            raise _Problem(400, "The paging cursor belongs to another list.", source="next")
        return snapshot, position[1]

    def _forget_cursor_snapshot(self, cursor: str) -> None:
        position = self._cursors.get(cursor)
        if position:
            self._snapshots.pop(position[0], None)
            for key in [k for k, v in self._cursors.items() if v[0] == position[0]]:
                del self._cursors[key]

    def _drop_idle_snapshots(self, now: float) -> None:
        idle = [key for key, snap in self._snapshots.items()
                if now - snap.last_used > self.settings.cursor_idle_seconds]
        for key in idle:
            del self._snapshots[key]
        if idle:
            gone = set(idle)
            self._cursors = {k: v for k, v in self._cursors.items() if v[0] not in gone}

    def _date_range(self, ctx: _Ctx, *, default_window: bool) -> tuple[date, date] | None:
        """Read filter[start_date]/filter[end_date]: calendar days, both ends inclusive, at most
        ``max_date_range_days`` of them (7: 2024-05-01..2024-05-07 is allowed, ..2024-05-08 is not).

        With only one end given the window runs ``max_date_range_days`` days from it. With neither,
        ``default_window`` picks the most recent ``max_date_range_days`` days up to today ([A]: Degreed's
        default for completions is not documented); without it there is no date filter at all.
        """
        raw_start, raw_end = ctx.query.get("filter[start_date]"), ctx.query.get("filter[end_date]")
        days = self.settings.max_date_range_days
        span = timedelta(days=days - 1)  # end - start of the longest allowed window
        if raw_start is None and raw_end is None:
            if not default_window:
                return None
            today = ctx.now.date()
            return today - span, today
        start = _parse_day(raw_start, "filter[start_date]") if raw_start is not None else None
        end = _parse_day(raw_end, "filter[end_date]") if raw_end is not None else None
        start = start or end - span
        end = end or start + span
        if end < start:
            raise _Problem(400, "filter[end_date] must not be before filter[start_date].",
                           source="filter[end_date]")
        covered = (end - start).days + 1
        if covered > days:
            raise _Problem(
                400, f"The date range cannot exceed {days} days: filter[start_date] {start.isoformat()} to "
                     f"filter[end_date] {end.isoformat()} covers {covered} days (both dates are included).",
                source="filter[end_date]")
        return start, end

    def _visible(self, ctx: _Ctx, provider_code: str | None) -> bool:
        """A provider key sees only its provider's records; an organization key sees everything."""
        return ctx.client.provider_code is None or ctx.client.provider_code == provider_code

    # -- content handlers -----------------------------------------------------------------------------

    def _visible_assessment(self, ctx: _Ctx, assessment_id: str) -> SimAssessment:
        record = self.assessments.get(assessment_id)
        if record is None or not self._visible(ctx, record.provider_code):
            raise _Problem(404, f"Content {assessment_id} was not found.", source=assessment_id)
        return record

    def _listed(self, record: SimAssessment) -> bool:
        """False while ``content_listing_lag_seconds`` have not passed since the record was created."""
        lag = self.settings.content_listing_lag_seconds
        return not lag or record.created_at.timestamp() <= self._clock() - lag

    def _list_assessments(self, ctx: _Ctx):
        wanted = ctx.query.get("filter[external_id]")

        def build():
            return [self._assessment_resource(a, ctx.base) for a in self.assessments.values()
                    if self._visible(ctx, a.provider_code) and (wanted is None or a.external_id == wanted)
                    and self._listed(a)]

        return self._page(ctx, build)

    def _create_assessment(self, ctx: _Ctx):
        attrs = dict(ctx.attributes)
        _require_type(ctx, {"content/assessments", "assessments", "content", "assessment"})
        for name in ("external-id", "title", "url"):
            if not isinstance(attrs.get(name), str) or not attrs[name].strip():
                raise _Problem(400, f"Attribute {name} is required.", source=name)
        code = ctx.client.provider_code if ctx.client.provider_code else attrs.get("provider-code")
        if code is not None and not any(p.code == code for p in self.providers.values()):
            raise _Problem(400, f"Unknown provider-code: {code}", source="provider-code")
        self._ensure_unique_external_id(attrs["external-id"], code, None)
        self._ensure_unique_url(attrs["url"], None)
        record = SimAssessment(id="", external_id="", title="", url="", provider_code=code,
                               created_at=ctx.now, modified_at=ctx.now)
        self._apply_assessment_attributes(record, attrs)
        record.id = self._new_id(7)
        self.assessments[record.id] = record
        return 201, {"data": self._assessment_resource(record, ctx.base)}

    def _conflict(self, with_id: str, without_id: str, existing_id: str, source: str | None) -> _Problem:
        """A 409 shaped by ``conflict_body``: ``{}``, an error without the existing id, or one naming it."""
        style = self.settings.conflict_body
        if style == "empty":
            return _Problem(409, without_id, body={})
        if style == "error_without_id":
            return _Problem(409, without_id, source=source)
        return _Problem(409, with_id, source=existing_id)

    def _ensure_unique_external_id(self, external_id: str, code: str | None, own_id: str | None) -> None:
        for other in self.assessments.values():
            if other.id != own_id and other.external_id == external_id and other.provider_code == code:
                raise self._conflict(f"Content with external-id {external_id} already exists: {other.id}",
                                     "Content with the same external-id already exists.", other.id,
                                     "external-id")

    def _ensure_unique_url(self, url: Any, own_id: str | None) -> None:
        """No two content items of the organisation share a url (spec §6: 409 for "same ExternalID or URL
        used for multiple resources"): every provider's items count, obsolete ones included, compared as
        exact strings."""
        for other in self.assessments.values():
            if other.id != own_id and other.url == url:
                raise self._conflict(f"Content with url {url} already exists: {other.id}",
                                     "Content with the same url already exists.", other.id, "url")

    def _get_assessment(self, ctx: _Ctx):
        record = self._visible_assessment(ctx, ctx.path_param("id"))
        return 200, {"data": self._assessment_resource(record, ctx.base)}

    def _patch_assessment(self, ctx: _Ctx):
        record = self._visible_assessment(ctx, ctx.path_param("id"))
        _require_type(ctx, {"content/assessments", "assessments", "content", "assessment"})
        _require_matching_id(ctx, record.id)
        attrs = dict(ctx.attributes)
        code = record.provider_code
        requested_code = attrs.pop("provider-code", code)
        if not ctx.client.provider_code and requested_code != code:  # a provider key cannot move content
            known = {p.code for p in self.providers.values()}
            if requested_code is not None and requested_code not in known:
                raise _Problem(400, f"Unknown provider-code: {requested_code}", source="provider-code")
            code = requested_code
        if "external-id" in attrs or code != record.provider_code:
            self._ensure_unique_external_id(attrs.get("external-id", record.external_id), code, record.id)
        if "url" in attrs:
            self._ensure_unique_url(attrs["url"], record.id)
        scratch = SimAssessment(**asdict(record))
        self._apply_assessment_attributes(scratch, attrs)  # validate everything before changing anything
        self._apply_assessment_attributes(record, attrs)
        record.provider_code = code
        record.modified_at = ctx.now
        return 200, {"data": self._assessment_resource(record, ctx.base)}

    def _delete_assessment(self, ctx: _Ctx):
        record = self._visible_assessment(ctx, ctx.path_param("id"))
        del self.assessments[record.id]
        return 204, None

    def _list_content(self, ctx: _Ctx):
        def build():
            return [self._content_resource(a, ctx.base) for a in self.assessments.values()
                    if self._visible(ctx, a.provider_code) and not a.obsolete and self._listed(a)]

        return self._page(ctx, build)

    def _get_content(self, ctx: _Ctx):
        record = self._visible_assessment(ctx, ctx.path_param("id"))
        return 200, {"data": self._content_resource(record, ctx.base)}

    # -- completion handlers --------------------------------------------------------------------------

    def _resolve_user(self, value: Any, identifier_type: Any) -> SimUser:
        """Find a user by identifier type; unknown → 400 ``Invalid user identifier: <value>``."""
        kind = USER_IDENTIFIER_TYPES.get(str(identifier_type or "").replace("-", "").lower())
        if kind is None:
            raise _Problem(400, f"Invalid user-identifier-type: {identifier_type}",
                           source="user-identifier-type")
        text = str(value or "").strip()
        user = None
        if kind == "Email":
            user = self._user_by_email(text)
        elif kind == "EmployeeId":
            user = next((u for u in self.users.values() if u.employee_id == text), None)
        else:
            user = self.users.get(text)
        if user is None:
            raise _Problem(400, f"Invalid user identifier: {value}", source=str(value))
        return user

    def _resolve_content(self, ctx: _Ctx, attrs: dict[str, Any]) -> SimAssessment:
        kind = CONTENT_ID_TYPES.get(str(attrs.get("content-id-type") or "").replace("-", "").lower())
        if kind is None:
            raise _Problem(400, f"Invalid content-id-type: {attrs.get('content-id-type')}",
                           source="content-id-type")
        content_type = str(attrs.get("content-type") or "").lower()
        if content_type not in CONTENT_TYPES:
            raise _Problem(400, f"Invalid content-type: {attrs.get('content-type')}", source="content-type")
        value = str(attrs.get("content-id"))
        field_of = {"ExternalId": "external_id", "Id": "id", "ContentUrl": "url"}[kind]
        for record in self.assessments.values():
            if (getattr(record, field_of) == value and content_type == "assessment"
                    and self._visible(ctx, record.provider_code)):
                return record
        raise _Problem(400, f"Content not found: {value} ({kind}, {attrs.get('content-type')})", source=value)

    def _create_completion(self, ctx: _Ctx):
        _require_type(ctx, {"completions", "completion"})
        attrs = ctx.attributes
        for name in ("user-id", "user-identifier-type", "content-id", "content-id-type", "content-type",
                     "completed-at"):
            if attrs.get(name) in (None, ""):
                raise _Problem(400, f"Attribute {name} is required.", source=name)
        user = self._resolve_user(attrs["user-id"], attrs["user-identifier-type"])
        content = self._resolve_content(ctx, attrs)
        completed_at = _parse_attr_timestamp(attrs, "completed-at")
        percentile = _parse_percentile(attrs)
        existing = next((c for c in self.completions.values()
                         if c.user_id == user.id and c.content_id == content.id), None)
        if existing is not None:
            if self.settings.completion_duplicates == "409":
                raise self._conflict(f"A completion for this user and content already exists: {existing.id}",
                                     "A completion for this user and content already exists.", existing.id,
                                     None)
            existing.completed_at = completed_at
            if "percentile" in attrs:
                existing.percentile = percentile
            existing.modified_at = ctx.now
            return 200, {"data": self._completion_resource(existing, ctx.base)}
        record = self._insert_completion(user, content, completed_at, percentile, ctx.client.provider_code,
                                         ctx.now)
        return 201, {"data": self._completion_resource(record, ctx.base)}

    def _visible_completion(self, ctx: _Ctx) -> SimCompletion:
        completion_id = ctx.path_param("id")
        record = self.completions.get(completion_id)
        if record is None or not self._visible(ctx, record.provider_code):
            raise _Problem(404, f"Completion {completion_id} was not found.", source=completion_id)
        return record

    def _get_completion(self, ctx: _Ctx):
        return 200, {"data": self._completion_resource(self._visible_completion(ctx), ctx.base)}

    def _patch_completion(self, ctx: _Ctx):
        record = self._visible_completion(ctx)
        _require_type(ctx, {"completions", "completion"})
        _require_matching_id(ctx, record.id)
        attrs = ctx.attributes
        completed_at = _parse_attr_timestamp(attrs, "completed-at") if "completed-at" in attrs else None
        percentile = _parse_percentile(attrs)
        if "is-verified" in attrs and not isinstance(attrs["is-verified"], bool):
            raise _Problem(400, "Attribute is-verified must be a boolean.", source="is-verified")
        if completed_at is not None:
            record.completed_at = completed_at
        if "percentile" in attrs:
            record.percentile = percentile
        if "is-verified" in attrs:
            record.is_verified = attrs["is-verified"]
        record.modified_at = ctx.now
        return 200, {"data": self._completion_resource(record, ctx.base)}

    def _delete_completion(self, ctx: _Ctx):
        record = self._visible_completion(ctx)
        del self.completions[record.id]
        return 204, None

    def _completion_list(self, ctx: _Ctx, user_id: str | None):
        # The organisation-wide list falls back to the latest window; one learner's list to all of it.
        window = self._date_range(ctx, default_window=user_id is None)
        by_added = self.settings.completion_date_field == "added-at"
        documented = self.settings.read_shape == "documented"

        def build():
            chosen = []
            for record in self.completions.values():
                moment = record.added_at if by_added else record.completed_at
                if (self._visible(ctx, record.provider_code)
                        and (user_id is None or record.user_id == user_id)
                        and (window is None or window[0] <= moment.date() <= window[1])):
                    chosen.append(record)
            chosen.sort(key=lambda c: (c.added_at if by_added else c.completed_at, c.id))
            if documented:
                return [(self._completion_resource(c, ctx.base), self._content_summary(c.content_id))
                        for c in chosen]
            return [self._completion_resource(c, ctx.base) for c in chosen]

        return self._page(ctx, build, with_included=documented)

    def _list_completions(self, ctx: _Ctx):
        return self._completion_list(ctx, None)

    def _list_user_completions(self, ctx: _Ctx):
        return self._completion_list(ctx, self._user_by_id(ctx).id)

    # -- skill rating handlers ------------------------------------------------------------------------

    def _create_skill_rating(self, ctx: _Ctx):
        _require_type(ctx, {"skill-ratings", "skill_ratings", "skillratings", "skill-rating"})
        attrs = ctx.attributes
        for name in ("user-id", "user-identifier-type", "skill-name", "rating"):
            if attrs.get(name) in (None, ""):
                raise _Problem(400, f"Attribute {name} is required.", source=name)
        user = self._resolve_user(attrs["user-id"], attrs["user-identifier-type"])
        skill_name = str(attrs["skill-name"]).strip()
        rating = _parse_rating(attrs["rating"])
        rating_type = str(attrs.get("rating-type") or "Evaluation")
        rated_at = _parse_attr_timestamp(attrs, "rated-at") if attrs.get("rated-at") else ctx.now
        if self.settings.skill_rating_duplicates == "upsert":
            existing = next((r for r in self.skill_ratings.values()
                             if r.user_id == user.id and r.skill_name.casefold() == skill_name.casefold()
                             and r.rating_type.casefold() == rating_type.casefold()), None)
            if existing is not None:
                existing.rating, existing.rated_at, existing.modified_at = rating, rated_at, ctx.now
                return 200, {"data": self._skill_rating_resource(existing, ctx.base)}
        record = self._insert_skill_rating(user, skill_name, rating, rating_type, rated_at,
                                           ctx.client.provider_code, ctx.now)
        return 201, {"data": self._skill_rating_resource(record, ctx.base)}

    def _visible_skill_rating(self, ctx: _Ctx) -> SimSkillRating:
        rating_id = ctx.path_param("id")
        record = self.skill_ratings.get(rating_id)
        if record is None or not self._visible(ctx, record.provider_code):
            raise _Problem(404, f"Skill rating {rating_id} was not found.", source=rating_id)
        return record

    def _get_skill_rating(self, ctx: _Ctx):
        return 200, {"data": self._skill_rating_resource(self._visible_skill_rating(ctx), ctx.base)}

    def _patch_skill_rating(self, ctx: _Ctx):
        record = self._visible_skill_rating(ctx)
        _require_type(ctx, {"skill-ratings", "skill_ratings", "skillratings", "skill-rating"})
        _require_matching_id(ctx, record.id)
        attrs = ctx.attributes
        rating = _parse_rating(attrs["rating"]) if "rating" in attrs else record.rating
        rated_at = _parse_attr_timestamp(attrs, "rated-at") if "rated-at" in attrs else record.rated_at
        record.rating, record.rated_at = rating, rated_at
        if attrs.get("rating-type"):
            record.rating_type = str(attrs["rating-type"])
        record.modified_at = ctx.now
        return 200, {"data": self._skill_rating_resource(record, ctx.base)}

    def _delete_skill_rating(self, ctx: _Ctx):
        record = self._visible_skill_rating(ctx)
        del self.skill_ratings[record.id]
        return 204, None

    def _skill_rating_list(self, ctx: _Ctx, user_id: str | None):
        window = self._date_range(ctx, default_window=False)

        def build():
            chosen = [r for r in self.skill_ratings.values()
                      if self._visible(ctx, r.provider_code) and (user_id is None or r.user_id == user_id)
                      and (window is None or window[0] <= r.rated_at.date() <= window[1])]
            chosen.sort(key=lambda r: (r.rated_at, r.id))
            return [self._skill_rating_resource(r, ctx.base) for r in chosen]

        return self._page(ctx, build)

    def _list_skill_ratings(self, ctx: _Ctx):
        return self._skill_rating_list(ctx, None)

    def _list_user_skill_ratings(self, ctx: _Ctx):
        return self._skill_rating_list(ctx, self._user_by_id(ctx).id)

    # -- users and providers --------------------------------------------------------------------------

    def _user_by_id(self, ctx: _Ctx) -> SimUser:
        user_id = ctx.path_param("id")
        if user_id not in self.users:
            raise _Problem(404, f"User {user_id} was not found.", source=user_id)
        return self.users[user_id]

    def _list_users(self, ctx: _Ctx):
        return self._page(ctx, lambda: [self._user_resource(u, ctx.base) for u in self.users.values()])

    def _get_user(self, ctx: _Ctx):
        identifier = ctx.query.get("identifier")
        if identifier is None:
            return 200, {"data": self._user_resource(self._user_by_id(ctx), ctx.base)}
        kinds = {"email": "Email", "employee-id": "EmployeeId", "employeeid": "EmployeeId", "id": "UserId"}
        if identifier.lower() not in kinds:
            raise _Problem(400, f"Invalid identifier: {identifier}", source="identifier")
        user = self._resolve_user(ctx.path_param("id"), kinds[identifier.lower()])
        return 200, {"data": self._user_resource(user, ctx.base)}

    def _list_providers(self, ctx: _Ctx):
        return self._page(ctx, lambda: [self._provider_resource(p, ctx.base)
                                        for p in self.providers.values()])

    def _get_provider(self, ctx: _Ctx):
        provider_id = ctx.path_param("id")
        provider = self.providers.get(provider_id)
        if provider is None:
            raise _Problem(404, f"Provider {provider_id} was not found.", source=provider_id)
        return 200, {"data": self._provider_resource(provider, ctx.base)}

    # -- control surface (HTTP) -----------------------------------------------------------------------

    def _control_routes(self) -> list[Route]:
        c = CONTROL_PREFIX
        table: list[tuple[str, str, Callable[[Request, dict[str, Any]], Any]]] = [
            ("GET", "/state", lambda r, b: self.state()),
            ("GET", "/settings", lambda r, b: asdict(self.settings)),
            ("PUT", "/settings", lambda r, b: self.configure(**b)),
            ("POST", "/users", lambda r, b: self.add_user(**b)),
            ("DELETE", "/users/{key}", lambda r, b: self.remove_user(r.path_params["key"])),
            ("POST", "/tokens/expire", lambda r, b: {"expired": self.expire_tokens()}),
            ("POST", "/clients/{client_id}/revoke",
             lambda r, b: self.revoke_client(r.path_params["client_id"])),
            ("PUT", "/clients/{client_id}", lambda r, b: self.add_client(
                r.path_params["client_id"], ApiClientSpec(b["secret"], frozenset(b.get("scopes", ())),
                                                          b.get("provider_code")))),
            ("POST", "/rate-limit/reset", lambda r, b: self.reset_rate_limits()),
            ("GET", "/rate-limit/max-in-any-minute/{client_id}", lambda r, b: {
                "client_id": r.path_params["client_id"],
                "max_requests_in_any_minute": self.max_requests_in_any_minute(
                    r.path_params["client_id"],
                    float(r.query_params["since"]) if r.query_params.get("since") else None)}),
            ("POST", "/cursors/expire", lambda r, b: self.expire_cursors()),
            ("POST", "/cursors/schedule-expiry", lambda r, b: self.schedule_cursor_expiry(**b)),
            ("POST", "/assessments", lambda r, b: self.add_assessment(**b)),
            ("PATCH", "/assessments/{id}", lambda r, b: self.update_assessment(r.path_params["id"], **b)),
            ("DELETE", "/assessments/{id}", lambda r, b: self.delete_assessment(r.path_params["id"])),
            ("POST", "/completions", lambda r, b: self.add_completion(**b)),
            ("PATCH", "/completions/{id}", lambda r, b: self.update_completion(r.path_params["id"], **b)),
            ("DELETE", "/completions/{id}", lambda r, b: self.delete_completion(r.path_params["id"])),
            ("POST", "/skill-ratings", lambda r, b: self.add_skill_rating(**b)),
            ("PATCH", "/skill-ratings/{id}", lambda r, b: self.update_skill_rating(r.path_params["id"], **b)),
            ("DELETE", "/skill-ratings/{id}", lambda r, b: self.delete_skill_rating(r.path_params["id"])),
            ("GET", "/requests", lambda r, b: [e.to_dict() for e in self.log.entries(
                int(r.query_params.get("since", "0")))]),
            ("DELETE", "/requests", lambda r, b: self.log.clear()),
            ("GET", "/faults", lambda r, b: asdict(self.faults.config)),
            ("PUT", "/faults", lambda r, b: self.faults.set(FaultConfig.from_dict(b))),
            ("DELETE", "/faults", lambda r, b: self.faults.clear()),
        ]
        return [Route(f"{c}{path}", _control_endpoint(action), methods=[method])
                for method, path, action in table]


# ---------------------------------------------------------------------------------------------------------
# Module helpers
# ---------------------------------------------------------------------------------------------------------


def _control_endpoint(action: Callable[[Request, dict[str, Any]], Any]):
    """Wrap a control action: JSON body in, JSON out; KeyError → 404, ValueError/TypeError → 400."""

    async def endpoint(request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw.strip() else {}
            result = action(request, body)
        except KeyError as exc:
            return _json(404, {"error": str(exc.args[0]) if exc.args else "not found"})
        except (ValueError, TypeError, _Problem) as exc:
            return _json(400, {"error": str(exc)})
        return _json(200, {"ok": True} if result is None else result)

    return endpoint


def _json(status: int, payload: Any) -> Response:
    return Response(json.dumps(payload), status_code=status, media_type="application/json")


def _rate_headers(decision: _RateDecision) -> dict[str, str]:
    return {
        "X-Rate-Limit-Limit": "1m",
        "X-Rate-Limit-Remaining": str(max(0, decision.remaining)),
        "X-Rate-Limit-Reset": _rate_reset_header(decision.reset_at),
    }


def _parse_scopes(raw: str) -> set[str]:
    """Comma- or space-delimited; the old underscore form (``users_read``) maps to ``users:read``."""
    scopes = set()
    for item in re.split(r"[\s,]+", raw.strip()):
        if not item:
            continue
        if ":" not in item and re.search(r"_(read|write|all)$", item):
            head, _, tail = item.rpartition("_")
            item = f"{head}:{tail}"
        scopes.add(item)
    return scopes


def _parse_limit(raw: str | None, default: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        limit = int(raw)
    except ValueError as exc:
        raise _Problem(400, f"limit must be a whole number, got {raw}", source="limit") from exc
    if not 1 <= limit <= MAX_PAGE_LIMIT:
        raise _Problem(400, f"limit must be between 1 and {MAX_PAGE_LIMIT}.", source="limit")
    return limit


def _parse_day(raw: str, name: str) -> date:
    if not _DATE.match(raw):
        raise _Problem(400, f"{name} must be a date in YYYY-MM-DD form.", source=name)
    try:
        return date.fromisoformat(raw)
    except ValueError as exc:
        raise _Problem(400, f"{name} is not a valid date.", source=name) from exc


def _parse_attr_timestamp(attrs: dict[str, Any], name: str) -> datetime:
    try:
        return parse_timestamp(attrs.get(name))
    except ValueError as exc:
        raise _Problem(400, f"Attribute {name} must be a date-time (yyyy-mm-ddTHH:MM:SS).",
                       source=name) from exc


def _parse_percentile(attrs: dict[str, Any]) -> float | None:
    value = attrs.get("percentile")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
        raise _Problem(400, "Attribute percentile must be a number from 0 to 100.", source="percentile")
    return value


def _parse_rating(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 8:
        raise _Problem(400, f"Attribute rating must be a whole number from 1 to 8, got {value!r}.",
                       source="rating")
    return value


def _require_type(ctx: _Ctx, allowed: Iterable[str]) -> None:
    kind = ((ctx.body or {}).get("data") or {}).get("type")
    if kind is not None and str(kind).lower() not in allowed:
        raise _Problem(400, f"Unexpected resource type: {kind}", source="type")


def _require_matching_id(ctx: _Ctx, record_id: str) -> None:
    body_id = ((ctx.body or {}).get("data") or {}).get("id")
    if body_id is not None and str(body_id) != record_id:
        raise _Problem(400, f"The id in the body ({body_id}) does not match the URL ({record_id}).",
                       source="id")


def _duration_minutes(duration: float | None, duration_type: str | None) -> float | None:
    factors = {"Seconds": 1 / 60, "Minutes": 1, "Hours": 60, "Days": 1440}
    if duration is None or duration_type not in factors:
        return None
    return round(duration * factors[duration_type], 2)


def _points_earned(record_id: str) -> str:
    """A stable decimal string in Degreed's form (``"0.0643720"``), derived from the record id."""
    return f"{zlib.crc32(record_id.encode()) % 1_000_000 / 10_000_000:.7f}"


def _kebab(values: dict[str, Any]) -> dict[str, Any]:
    return {name.replace("_", "-"): value for name, value in values.items()}


def _state_of(record: Any) -> dict[str, Any]:
    return {name: _iso_z(value) if isinstance(value, datetime) else value
            for name, value in asdict(record).items()}

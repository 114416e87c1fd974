"""The production client for Degreed's REST API v2, and the typed records it returns.

Built on ``ApiSession`` (retries, backoff, ``Retry-After``, rate budget, metrics, secret redaction):
this module adds the OAuth2 client-credentials token, JSON:API envelopes, cursor paging, date windows,
and the mapping of Degreed's error answers to the typed errors in ``errors.py``.

Facts and assumptions come from ``specs/degreed-api.md``. Where the spec says Degreed's behaviour is
unknown, the client copes with every variant the simulator can be set to: relationships as an object or
an array, timestamps with 0-7 fraction digits and no zone, ``"None"``/``"True"`` strings, duplicate
completions answered with 409 or with an update, and end dates read as inclusive or exclusive.

The client id may appear in logs and errors; the client secret and tokens never do.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import requests

from imocha_pipeline.clients.errors import (
    ApiError,
    AuthError,
    BadRequestError,
    ConflictError,
    CursorExpiredError,
    DuplicateCompletionError,
    LearnerNotFoundError,
    NotFoundError,
    PayloadError,
)
from imocha_pipeline.clients.http import ApiSession, LocalRateBudget, RateBudget, RequestMetrics, Unlimited
from imocha_pipeline.settings import DEGREED_DEFAULT_RATE_LIMIT_PER_MINUTE, DEGREED_REQUIRED_SCOPES

logger = logging.getLogger("imocha_pipeline.degreed")

API_NAME = "degreed"
V2 = "/api/v2"
MAX_PAGE_LIMIT = 1000
LANE_READS = "reads"
LANE_CONTENT = "content"
LANE_COMPLETIONS = "completions"
_NULL_STRINGS = {"", "none", "null"}
_TIMESTAMP = re.compile(
    r"^(\d{4}-\d{2}-\d{2})(?:[T ](\d{2}:\d{2}(?::\d{2})?)(?:\.(\d{1,7})\d*)?)?\s*(Z|[+-]\d{2}:?\d{2})?$"
)


# ---------------------------------------------------------------------------------------------------------
# Tolerant value parsing
# ---------------------------------------------------------------------------------------------------------


def parse_degreed_datetime(value: Any) -> datetime | None:
    """A Degreed timestamp as a tz-aware UTC datetime.

    Accepts 0-7 fraction digits (.NET style), no zone (read as UTC) or an explicit zone. ``None``,
    ``""``, ``"None"`` and .NET's empty value ``0001-01-01T00:00:00`` all mean "no value".
    """
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    text = str(value).strip()
    if text.lower() in _NULL_STRINGS:
        return None
    match = _TIMESTAMP.match(text)
    if not match:
        raise ValueError(f"not a Degreed timestamp: {text!r}")
    day, clock, fraction, zone = match.groups()
    parsed = datetime.fromisoformat(f"{day}T{clock or '00:00'}")
    if parsed.year == 1:
        return None
    if fraction:
        parsed = parsed.replace(microsecond=int(fraction[:6].ljust(6, "0")))
    parsed = parsed.replace(tzinfo=UTC)
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        parsed -= sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return parsed


def format_degreed_datetime(value: datetime) -> str:
    """What Degreed's callers send: ``yyyy-mm-ddTHH:MM:SS`` in UTC (a naive value is taken as UTC).

    Sub-second precision is dropped, so compare Degreed's values with ours at whole seconds.
    """
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S")


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value)
    return None if text.strip().lower() in _NULL_STRINGS else text


def _bool(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"true", "1", "yes"}:
        return True
    if text in {"false", "0", "no"}:
        return False
    return None


def _number(value: Any) -> float | int | None:
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    text = str(value).strip()
    if text.lower() in _NULL_STRINGS:
        return None
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) if number.is_integer() and "." not in text else number


def _int(value: Any) -> int | None:
    number = _number(value)
    return None if number is None else int(number)


def relationship_ids(resource: Mapping[str, Any], name: str) -> list[str]:
    """Ids in a resource's relationship ``name``, whether ``relationships`` is an object or an array.

    Degreed's samples show both ``{"user": {"data": {...}}}`` and ``[{"user": {"data": {...}}}]``;
    ``data`` itself may be one object or a list. Names match case-insensitively.
    """
    raw = resource.get("relationships")
    entries: list[tuple[str, Any]] = []
    if isinstance(raw, Mapping):
        entries = list(raw.items())
    elif isinstance(raw, list):
        entries = [item for element in raw if isinstance(element, Mapping) for item in element.items()]
    ids: list[str] = []
    for key, value in entries:
        if str(key).lower() != name.lower() or not isinstance(value, Mapping):
            continue
        data = value.get("data")
        for item in data if isinstance(data, list) else [data]:
            if isinstance(item, Mapping) and _text(item.get("id")) is not None:
                ids.append(str(item["id"]))
    return ids


def _first_relationship(resource: Mapping[str, Any], name: str) -> str | None:
    ids = relationship_ids(resource, name)
    return ids[0] if ids else None


# ---------------------------------------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------------------------------------


def _attributes(resource: Mapping[str, Any]) -> Mapping[str, Any]:
    attributes = resource.get("attributes")
    if not isinstance(attributes, Mapping) or not resource.get("id"):
        raise ValueError("a JSON:API resource needs an id and an attributes object")
    return attributes


@dataclass(frozen=True)
class DegreedAssessment:
    """Assessment content (``content/assessments``) as Degreed holds it."""

    id: str
    external_id: str | None
    title: str | None
    summary: str | None
    url: str | None
    duration: float | int | None
    duration_type: str | None
    language: str | None
    obsolete: bool
    provider_code: str | None
    degreed_url: str | None
    modified_at: datetime | None
    created_at: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)

    @classmethod
    def from_resource(cls, resource: Mapping[str, Any]) -> DegreedAssessment:
        a = _attributes(resource)
        obsolete = _bool(a.get("obsolete"))
        if obsolete is None:
            obsolete = _bool(a.get("is-obsolete"))
        return cls(
            id=str(resource["id"]),
            external_id=_text(a.get("external-id")),
            title=_text(a.get("title")),
            summary=_text(a.get("summary")),
            url=_text(a.get("url")),
            duration=_number(a.get("duration")),
            duration_type=_text(a.get("duration-type")),
            language=_text(a.get("language")),
            obsolete=bool(obsolete),
            provider_code=_text(a.get("provider-code")),
            degreed_url=_text(a.get("degreed-url")),
            modified_at=parse_degreed_datetime(a.get("modified-at")),
            created_at=parse_degreed_datetime(a.get("created-at")),
            raw=dict(resource),
        )


@dataclass(frozen=True)
class DegreedCompletion:
    """A completion. ``user_id``/``content_id`` are the identifiers Degreed echoes (email, external id);
    when it does not echo them, the Degreed ids from ``relationships`` with types ``UserId``/``Id``."""

    id: str
    user_id: str | None
    user_identifier_type: str | None
    employee_id: str | None
    content_id: str | None
    completed_at: datetime | None
    percentile: float | int | None
    added_at: datetime | None
    content_id_type: str | None = None
    content_type: str | None = None
    provider_code: str | None = None
    degreed_user_id: str | None = None
    degreed_content_id: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)

    @classmethod
    def from_resource(cls, resource: Mapping[str, Any]) -> DegreedCompletion:
        a = _attributes(resource)
        degreed_user = _first_relationship(resource, "user")
        degreed_content = _first_relationship(resource, "content")
        user_id = _text(a.get("user-id"))
        content_id = _text(a.get("content-id"))
        return cls(
            id=str(resource["id"]),
            user_id=user_id or degreed_user,
            user_identifier_type=_text(a.get("user-identifier-type")) or (None if user_id else
                                                                          degreed_user and "UserId"),
            employee_id=_text(a.get("employee-id")),
            content_id=content_id or degreed_content,
            completed_at=parse_degreed_datetime(a.get("completed-at")),
            percentile=_number(a.get("percentile")),
            added_at=parse_degreed_datetime(a.get("added-at")),
            content_id_type=_text(a.get("content-id-type")) or (None if content_id else
                                                               degreed_content and "Id"),
            content_type=_text(a.get("content-type")),
            provider_code=_text(a.get("provider-code")),
            degreed_user_id=degreed_user,
            degreed_content_id=degreed_content,
            raw=dict(resource),
        )


@dataclass(frozen=True)
class DegreedSkillRating:
    """A skill rating on Degreed's 1-8 scale."""

    id: str
    user_id: str | None
    employee_id: str | None
    skill_name: str | None
    rating: int | None
    rating_type: str | None
    rated_at: datetime | None
    provider_code: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)

    @classmethod
    def from_resource(cls, resource: Mapping[str, Any]) -> DegreedSkillRating:
        a = _attributes(resource)
        return cls(
            id=str(resource["id"]),
            user_id=_text(a.get("user-id")) or _first_relationship(resource, "user"),
            employee_id=_text(a.get("employee-id")),
            skill_name=_text(a.get("skill-name")),
            rating=_int(a.get("rating")),
            rating_type=_text(a.get("rating-type")),
            rated_at=parse_degreed_datetime(a.get("rated-at")),
            provider_code=_text(a.get("provider-code")),
            raw=dict(resource),
        )


@dataclass(frozen=True)
class DegreedUser:
    id: str
    employee_id: str | None
    email: str | None
    first_name: str | None
    last_name: str | None
    full_name: str | None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)

    @classmethod
    def from_resource(cls, resource: Mapping[str, Any]) -> DegreedUser:
        a = _attributes(resource)
        return cls(
            id=str(resource["id"]),
            employee_id=_text(a.get("employee-id")),
            email=_text(a.get("organization-email")),
            first_name=_text(a.get("first-name")),
            last_name=_text(a.get("last-name")),
            full_name=_text(a.get("full-name")),
            raw=dict(resource),
        )


@dataclass(frozen=True)
class DegreedProvider:
    id: str
    name: str | None
    url: str | None
    code: str | None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)

    @classmethod
    def from_resource(cls, resource: Mapping[str, Any]) -> DegreedProvider:
        a = _attributes(resource)
        return cls(id=str(resource["id"]), name=_text(a.get("name")), url=_text(a.get("url")),
                   code=_text(a.get("code")), raw=dict(resource))


# ---------------------------------------------------------------------------------------------------------
# Date windows
# ---------------------------------------------------------------------------------------------------------


def date_windows(start: date, end: date, days: int = 7) -> list[tuple[date, date]]:
    """Split ``[start, end]`` into windows of at most ``days`` calendar days, both ends included, that share their
    boundary day: ``2024-05-01..2024-05-07``, ``2024-05-07..2024-05-13``, ...

    Degreed allows a range of at most 7 days and does not say whether ``end_date`` is inclusive; public clients
    send ``start..start+6`` (tap-degreed). A window of 7 calendar days counted inclusively is accepted under either
    reading, and sharing the boundary day reads every day under either; the caller drops repeats by id.
    """
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    if days < 2:
        raise ValueError(f"a window needs at least 2 days to share its boundary day, got {days}")
    windows = []
    cursor = start
    while True:
        stop = min(end, cursor + timedelta(days=days - 1))
        windows.append((cursor, stop))
        if stop >= end:
            return windows
        cursor = stop


# ---------------------------------------------------------------------------------------------------------
# The client
# ---------------------------------------------------------------------------------------------------------


class DegreedClient:
    """Degreed API v2 over OAuth2 client credentials.

    The token is fetched lazily, renewed ``refresh_skew_seconds`` before it expires, and renewed once
    when a call answers 401 (the call is then repeated). Lists are read a whole page chain at a time
    (``page_limit`` per page, Degreed's maximum 1000) so a chain finishes inside the cursor's life; a
    chain whose cursor expires anyway is read again from its first page.

    ``session``: a prepared ``ApiSession`` for the API host (its auth hook is set here); by default
    one is built with ``rate_budget`` (default: this process's 70-a-minute ``LocalRateBudget``).
    """

    def __init__(
        self,
        api_base_url: str,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        scopes: tuple[str, ...] | list[str] = DEGREED_REQUIRED_SCOPES,
        session: ApiSession | None = None,
        token_session: ApiSession | None = None,
        rate_budget: RateBudget | None = None,
        metrics: RequestMetrics | None = None,
        page_limit: int = MAX_PAGE_LIMIT,
        organization_code: str | None = None,
        refresh_skew_seconds: float = 60.0,
        date_window_days: int = 7,
        max_chain_restarts: int = 3,
    ):
        if not 1 <= page_limit <= MAX_PAGE_LIMIT:
            raise ValueError(f"page_limit must be within 1..{MAX_PAGE_LIMIT}")
        self.api_base_url = api_base_url.rstrip("/")
        self.token_url = token_url
        self.client_id = client_id
        self._client_secret = client_secret
        self.scopes = tuple(scopes)
        self.page_limit = page_limit
        self.organization_code = organization_code
        self.refresh_skew_seconds = refresh_skew_seconds
        self.date_window_days = date_window_days
        self.max_chain_restarts = max_chain_restarts
        self._token: str | None = None
        self._token_deadline = 0.0
        self._token_lock = threading.Lock()
        self.session = session or ApiSession(
            self.api_base_url, api_name=API_NAME, metrics=metrics,
            rate_budget=rate_budget or LocalRateBudget(DEGREED_DEFAULT_RATE_LIMIT_PER_MINUTE),
        )
        self.session.auth_headers = self._auth_headers
        self.session.add_secret(client_secret)
        # The token endpoint is not rate limited and lives on another host: its own session.
        self.token_session = token_session or ApiSession(
            token_url, api_name=f"{API_NAME}-oauth", rate_budget=Unlimited(), metrics=self.session.metrics,
        )
        self.token_session.add_secret(client_secret)

    def __repr__(self) -> str:
        return f"DegreedClient(client_id={self.client_id!r}, api_base_url={self.api_base_url!r})"

    @property
    def metrics(self) -> RequestMetrics:
        return self.session.metrics

    def close(self) -> None:
        self.session.close()
        self.token_session.close()

    # -- token --------------------------------------------------------------------------------------

    def _request_token(self, scopes: tuple[str, ...]) -> requests.Response:
        form = {"grant_type": "client_credentials", "client_id": self.client_id,
                "client_secret": self._client_secret, "scope": ",".join(scopes)}
        return self.token_session.request("POST", self.token_url, endpoint="POST /oauth/token", data=form,
                                          lane="auth", idempotent=True)

    def _token_error(self, response: requests.Response, scopes: tuple[str, ...]) -> AuthError:
        """A safe, specific error for a refused token request: names the client id, never the secret."""
        try:
            body = response.json()
        except ValueError:
            body = {}
        code = str(body.get("error") or "unknown_error") if isinstance(body, dict) else "unknown_error"
        description = body.get("error_description") if isinstance(body, dict) else None
        reasons = {
            "invalid_client": "unknown client id or wrong client secret (or the key was revoked)",
            "invalid_scope": f"the API key is not granted all of the scopes {', '.join(scopes)}",
            "unsupported_grant_type": "the token endpoint refused the client-credentials grant",
        }
        message = (f"Degreed refused a token for client {self.client_id!r} at {self.token_url}: "
                   f"{reasons.get(code, code)}")
        if description:
            message += f" ({self.session.redact(str(description))})"
        return AuthError(message, api=API_NAME, endpoint="POST /oauth/token", status=response.status_code,
                         detail=code)

    def _fetch_token(self) -> None:
        response = self._request_token(self.scopes)
        if response.status_code != 200:
            raise self._token_error(response, self.scopes)
        payload = self.token_session.decode_json(response, "POST /oauth/token")
        token = payload.get("access_token") if isinstance(payload, dict) else None
        if not token:
            raise PayloadError("token answer has no access_token", api=API_NAME, endpoint="POST /oauth/token",
                               status=response.status_code)
        for secret in (token, payload.get("refresh_token")):
            self.session.add_secret(secret)
            self.token_session.add_secret(secret)
        lifetime = float(_number(payload.get("expires_in")) or 3600)
        skew = min(self.refresh_skew_seconds, lifetime / 2)
        self._token = token
        self._token_deadline = time.monotonic() + lifetime - skew
        logger.info("Degreed token obtained for client %s (valid %.0f s)", self.client_id, lifetime)

    def _auth_headers(self) -> dict[str, str]:
        """Called before every attempt: a current token, fetched or renewed when needed."""
        with self._token_lock:
            if self._token is None or time.monotonic() >= self._token_deadline:
                self._fetch_token()
            headers = {"Authorization": f"Bearer {self._token}"}
        if self.organization_code:
            headers["X-Degreed-Organization-Code"] = self.organization_code
        return headers

    def _forget_token(self) -> None:
        with self._token_lock:
            self._token = None

    def check_scope(self, scope: str) -> bool:
        """Whether the API key is granted ``scope``: asks for a token with only that scope (403 = no)."""
        response = self._request_token((scope,))
        if response.status_code == 200:
            payload = self.token_session.decode_json(response, "POST /oauth/token")
            for secret in (payload.get("access_token"), payload.get("refresh_token")):
                self.session.add_secret(secret)
                self.token_session.add_secret(secret)
            return True
        if response.status_code == 403:
            return False
        raise self._token_error(response, (scope,))

    def token_works(self) -> bool:
        """Health check: a fresh token with every configured scope is issued and the API accepts it."""
        self._forget_token()
        try:
            if "providers:read" in self.scopes:
                self._send("GET", f"{V2}/providers", endpoint="GET /api/v2/providers", lane=LANE_READS,
                           params={"limit": 1})
            else:
                self._auth_headers()
        except AuthError as exc:
            logger.warning("Degreed token check failed for client %s: %s", self.client_id, exc)
            return False
        return True

    # -- requests and errors ------------------------------------------------------------------------

    def _send(self, method: str, path: str, *, endpoint: str, lane: str, params: Mapping[str, Any] | None = None,
              body: Any = None, expect: tuple[int, ...] = (200,)) -> Any:
        """One API call: renew the token once on 401, map error answers to typed errors, decode JSON."""
        response = self.session.request(method, path, endpoint=endpoint, params=params, json_body=body,
                                        lane=lane)
        if response.status_code == 401:
            logger.info("Degreed answered 401 for %s; renewing the token for client %s", endpoint,
                        self.client_id)
            self._forget_token()
            response = self.session.request(method, path, endpoint=endpoint, params=params, json_body=body,
                                            lane=lane)
        if response.status_code not in expect:
            raise self._api_error(response, endpoint)
        if response.status_code == 204 or not response.content:
            return None
        return self.session.decode_json(response, endpoint)

    def _api_error(self, response: requests.Response, endpoint: str) -> ApiError:
        """Turn a JSON:API error answer into the matching typed error (messages are redacted)."""
        status = response.status_code
        error = _first_error(response)
        code = _text(error.get("code")) or ""
        detail = self.session.redact(_text(error.get("detail")) or _text(error.get("title"))
                                     or response.text[:200] or f"HTTP {status}")
        source = _text(error.get("source")) if not isinstance(error.get("source"), Mapping) else None
        common = {"api": API_NAME, "endpoint": endpoint, "status": status, "detail": detail}
        if status == 400 and detail.lower().startswith("invalid user identifier"):
            identifier = source or detail.partition(":")[2].strip() or None
            return LearnerNotFoundError(detail, identifier=identifier, **common)
        if status == 400 and code == "cursor-expired":
            return CursorExpiredError(detail, **common)
        if status == 400:
            return BadRequestError(detail, **common)
        if status in (401, 403):
            return AuthError(f"client {self.client_id!r} is not allowed: {detail}", **common)
        if status in (404, 410):
            return NotFoundError(detail, **common)
        if status == 409:
            return ConflictError(detail, existing_id=_existing_id(detail, source), **common)
        return ApiError(f"unexpected answer: {detail}", **common)

    def _read_chain(self, path: str, *, endpoint: str, params: Mapping[str, Any] | None = None
                    ) -> list[dict[str, Any]]:
        """Every resource of one list, following ``links.next``; restart on an expired cursor."""
        restarts = 0
        while True:
            try:
                return self._read_pages(path, endpoint=endpoint, params=params)
            except CursorExpiredError:
                restarts += 1
                if restarts > self.max_chain_restarts:
                    raise
                logger.warning("Degreed cursor expired while reading %s; reading the chain again (%d/%d)",
                               endpoint, restarts, self.max_chain_restarts)

    def _read_pages(self, path: str, *, endpoint: str, params: Mapping[str, Any] | None) -> list[dict[str, Any]]:
        first = {**(params or {}), "limit": self.page_limit}
        payload = self._send("GET", path, endpoint=endpoint, lane=LANE_READS, params=first)
        items: list[dict[str, Any]] = []
        seen_links: set[str] = set()
        while True:
            items.extend(_data_list(payload, endpoint))
            next_link = _next_link(payload)
            if not next_link or next_link in seen_links:
                return items
            seen_links.add(next_link)
            try:
                payload = self._send("GET", self._same_host(next_link), endpoint=endpoint, lane=LANE_READS)
            except (BadRequestError, NotFoundError) as exc:
                # How Degreed answers an expired cursor is not documented (spec §4.1): the snapshot lives 2 minutes
                # without a `next` request. The first page was accepted, so a 400 or 404 on a follow-up page means
                # the cursor is gone, whatever its code: read the chain again.
                raise CursorExpiredError(f"the page after {len(items)} records was refused ({exc}); the cursor "
                                         "has most likely expired", api=API_NAME, endpoint=endpoint,
                                         status=exc.status, detail=exc.detail) from exc

    def _same_host(self, link: str) -> str:
        """Keep paging on the configured API host, so the bearer token never goes anywhere else."""
        parts = urlsplit(link)
        if not parts.scheme:
            return link
        base = urlsplit(self.api_base_url)
        return urlunsplit((base.scheme, base.netloc, parts.path, parts.query, ""))

    def _windowed(self, path: str, endpoint: str, start: date, end: date) -> Iterator[dict[str, Any]]:
        """Resources of a date-filtered list, window by window, each record once."""
        seen: set[str] = set()
        for window_start, window_end in date_windows(start, end, self.date_window_days):
            params = {"filter[start_date]": window_start.isoformat(), "filter[end_date]": window_end.isoformat()}
            for resource in self._read_chain(path, endpoint=endpoint, params=params):
                if resource.get("id") not in seen:
                    seen.add(resource.get("id"))
                    yield resource

    # -- content ------------------------------------------------------------------------------------

    def iter_assessments(self, external_id: str | None = None) -> Iterator[DegreedAssessment]:
        """Every assessment this key sees (obsolete ones included), optionally one external id."""
        params = {"filter[external_id]": external_id} if external_id is not None else None
        for resource in self._read_chain(f"{V2}/content/assessments", endpoint="GET /api/v2/content/assessments",
                                         params=params):
            yield DegreedAssessment.from_resource(resource)

    def find_assessment(self, external_id: str) -> DegreedAssessment | None:
        """The assessment with exactly this external id, or None."""
        matches = [a for a in self.iter_assessments(external_id) if a.external_id == external_id]
        return matches[0] if matches else None

    def get_assessment(self, assessment_id: str) -> DegreedAssessment:
        payload = self._send("GET", f"{V2}/content/assessments/{quote(assessment_id, safe='')}",
                             endpoint="GET /api/v2/content/assessments/{id}", lane=LANE_READS)
        return DegreedAssessment.from_resource(_data_one(payload, "GET /api/v2/content/assessments/{id}"))

    def create_assessment(self, attributes: Mapping[str, Any]) -> DegreedAssessment:
        """Create assessment content (kebab- or snake_case attribute names). 409 → ``ConflictError``."""
        body = {"data": {"type": "content/assessments", "attributes": _kebab(attributes)}}
        endpoint = "POST /api/v2/content/assessments"
        payload = self._send("POST", f"{V2}/content/assessments", endpoint=endpoint, lane=LANE_CONTENT,
                             body=body, expect=(200, 201))
        return DegreedAssessment.from_resource(_data_one(payload, endpoint))

    def update_assessment(self, assessment_id: str, attributes: Mapping[str, Any]) -> DegreedAssessment:
        """PATCH only the given attributes (e.g. ``{"obsolete": True}`` to retire)."""
        body = {"data": {"type": "content/assessments", "id": assessment_id, "attributes": _kebab(attributes)}}
        endpoint = "PATCH /api/v2/content/assessments/{id}"
        payload = self._send("PATCH", f"{V2}/content/assessments/{quote(assessment_id, safe='')}",
                             endpoint=endpoint, lane=LANE_CONTENT, body=body)
        return DegreedAssessment.from_resource(_data_one(payload, endpoint))

    def delete_assessment(self, assessment_id: str) -> None:
        self._send("DELETE", f"{V2}/content/assessments/{quote(assessment_id, safe='')}",
                   endpoint="DELETE /api/v2/content/assessments/{id}", lane=LANE_CONTENT, expect=(200, 204))

    # -- completions --------------------------------------------------------------------------------

    def create_completion(
        self,
        user_id: str,
        content_id: str,
        completed_at: datetime,
        *,
        percentile: float | None = None,
        user_identifier_type: str = "Email",
        content_id_type: str = "ExternalId",
        content_type: str = "Assessment",
    ) -> DegreedCompletion:
        """Record a completion.

        Raises ``LearnerNotFoundError`` when Degreed does not know the learner, and
        ``DuplicateCompletionError`` (with ``existing_id`` when Degreed names it) when it already
        holds one for this learner and content. Some tenants update instead; then this returns it.
        """
        attributes: dict[str, Any] = {
            "user-id": user_id, "user-identifier-type": user_identifier_type,
            "content-id": content_id, "content-id-type": content_id_type, "content-type": content_type,
            "completed-at": format_degreed_datetime(completed_at),
        }
        if percentile is not None:
            attributes["percentile"] = percentile
        endpoint = "POST /api/v2/completions"
        try:
            payload = self._send("POST", f"{V2}/completions", endpoint=endpoint, lane=LANE_COMPLETIONS,
                                 body={"data": {"type": "completions", "attributes": attributes}},
                                 expect=(200, 201))
        except ConflictError as exc:
            raise DuplicateCompletionError(exc.detail or str(exc), existing_id=exc.existing_id, api=API_NAME,
                                           endpoint=endpoint, status=409, detail=exc.detail) from None
        return DegreedCompletion.from_resource(_data_one(payload, endpoint))

    def get_completion(self, completion_id: str) -> DegreedCompletion:
        endpoint = "GET /api/v2/completions/{id}"
        payload = self._send("GET", f"{V2}/completions/{quote(completion_id, safe='')}", endpoint=endpoint,
                             lane=LANE_READS)
        return DegreedCompletion.from_resource(_data_one(payload, endpoint))

    def iter_completions(self, start: date, end: date) -> Iterator[DegreedCompletion]:
        """Completions dated ``start``..``end`` (inclusive), read in windows of at most 7 days."""
        for resource in self._windowed(f"{V2}/completions", "GET /api/v2/completions", start, end):
            yield DegreedCompletion.from_resource(resource)

    def iter_user_completions_all(self, user_id: str) -> Iterator[DegreedCompletion]:
        """Every completion of one learner (Degreed user id), without a date filter, page by page."""
        path = f"{V2}/users/{quote(user_id, safe='')}/completions"
        for resource in self._read_chain(path, endpoint="GET /api/v2/users/{id}/completions"):
            yield DegreedCompletion.from_resource(resource)

    def iter_user_completions(self, user_id: str, start: date, end: date) -> Iterator[DegreedCompletion]:
        """One learner's completions dated ``start``..``end`` (Degreed user id; windows of at most 7 days)."""
        path = f"{V2}/users/{quote(user_id, safe='')}/completions"
        for resource in self._windowed(path, "GET /api/v2/users/{id}/completions", start, end):
            yield DegreedCompletion.from_resource(resource)

    def update_completion(self, completion_id: str, *, completed_at: datetime | None = None,
                          percentile: float | None = None, **attributes: Any) -> DegreedCompletion:
        """PATCH only what is given (``completed_at``, ``percentile``, or other attributes by name)."""
        changes = _kebab(attributes)
        if completed_at is not None:
            changes["completed-at"] = format_degreed_datetime(completed_at)
        if percentile is not None:
            changes["percentile"] = percentile
        if not changes:
            raise ValueError("update_completion needs at least one attribute to change")
        endpoint = "PATCH /api/v2/completions/{id}"
        payload = self._send("PATCH", f"{V2}/completions/{quote(completion_id, safe='')}", endpoint=endpoint,
                             lane=LANE_COMPLETIONS,
                             body={"data": {"type": "completions", "id": completion_id, "attributes": changes}})
        return DegreedCompletion.from_resource(_data_one(payload, endpoint))

    def delete_completion(self, completion_id: str) -> None:
        self._send("DELETE", f"{V2}/completions/{quote(completion_id, safe='')}",
                   endpoint="DELETE /api/v2/completions/{id}", lane=LANE_COMPLETIONS, expect=(200, 204))

    # -- skill ratings ------------------------------------------------------------------------------

    def create_skill_rating(
        self,
        user_id: str,
        skill_name: str,
        rating: int,
        *,
        rating_type: str = "Evaluation",
        rated_at: datetime | None = None,
        user_identifier_type: str = "Email",
    ) -> DegreedSkillRating:
        """Post a rating (1-8). Degreed may replace the learner's rating for the skill (200) or add one."""
        if isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 8:
            raise ValueError(f"a Degreed skill rating is a whole number from 1 to 8, got {rating!r}")
        attributes: dict[str, Any] = {"user-id": user_id, "user-identifier-type": user_identifier_type,
                                      "skill-name": skill_name, "rating": rating, "rating-type": rating_type}
        if rated_at is not None:
            attributes["rated-at"] = format_degreed_datetime(rated_at)
        endpoint = "POST /api/v2/skill-ratings"
        payload = self._send("POST", f"{V2}/skill-ratings", endpoint=endpoint, lane=LANE_COMPLETIONS,
                             body={"data": {"type": "skill-ratings", "attributes": attributes}},
                             expect=(200, 201))
        return DegreedSkillRating.from_resource(_data_one(payload, endpoint))

    def iter_skill_ratings(self, start: date | None = None, end: date | None = None
                           ) -> Iterator[DegreedSkillRating]:
        """All skill ratings this key sees, or those rated ``start``..``end`` (7-day windows)."""
        endpoint = "GET /api/v2/skill-ratings"
        if start is None and end is None:
            resources: Iterator[dict[str, Any]] = iter(self._read_chain(f"{V2}/skill-ratings", endpoint=endpoint))
        else:
            start = start or end
            end = end or datetime.now(UTC).date()
            resources = self._windowed(f"{V2}/skill-ratings", endpoint, start, end)
        for resource in resources:
            yield DegreedSkillRating.from_resource(resource)

    def iter_user_skill_ratings(self, user_id: str) -> Iterator[DegreedSkillRating]:
        """One learner's skill ratings (Degreed user id)."""
        path = f"{V2}/users/{quote(user_id, safe='')}/skill-ratings"
        for resource in self._read_chain(path, endpoint="GET /api/v2/users/{id}/skill-ratings"):
            yield DegreedSkillRating.from_resource(resource)

    def update_skill_rating(self, rating_id: str, *, rating: int | None = None, rated_at: datetime | None = None,
                            **attributes: Any) -> DegreedSkillRating:
        """PATCH only what is given (``rating``, ``rated_at``, or other attributes by name)."""
        changes = _kebab(attributes)
        if rating is not None:
            if isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 8:
                raise ValueError(f"a Degreed skill rating is a whole number from 1 to 8, got {rating!r}")
            changes["rating"] = rating
        if rated_at is not None:
            changes["rated-at"] = format_degreed_datetime(rated_at)
        endpoint = "PATCH /api/v2/skill-ratings/{id}"
        payload = self._send("PATCH", f"{V2}/skill-ratings/{quote(rating_id, safe='')}", endpoint=endpoint,
                             lane=LANE_COMPLETIONS,
                             body={"data": {"type": "skill-ratings", "id": rating_id, "attributes": changes}},
                             expect=(200,))
        return DegreedSkillRating.from_resource(_data_one(payload, endpoint))

    def delete_skill_rating(self, rating_id: str) -> None:
        self._send("DELETE", f"{V2}/skill-ratings/{quote(rating_id, safe='')}",
                   endpoint="DELETE /api/v2/skill-ratings/{id}", lane=LANE_COMPLETIONS, expect=(200, 204))

    # -- users and providers ------------------------------------------------------------------------

    def get_user(self, value: str, identifier: str = "email") -> DegreedUser:
        """A user by ``email``, ``employee-id`` or Degreed ``id``.

        Unknown email/employee id → ``LearnerNotFoundError``; unknown Degreed id → ``NotFoundError``.
        """
        path = f"{V2}/users/{quote(value, safe='')}"
        params = None if identifier == "id" else {"identifier": identifier}
        endpoint = ("GET /api/v2/users/{id}" if identifier == "id"
                    else f"GET /api/v2/users/{{value}}?identifier={identifier}")
        payload = self._send("GET", path, endpoint=endpoint, lane=LANE_READS, params=params)
        return DegreedUser.from_resource(_data_one(payload, endpoint))

    def iter_users(self) -> Iterator[DegreedUser]:
        for resource in self._read_chain(f"{V2}/users", endpoint="GET /api/v2/users"):
            yield DegreedUser.from_resource(resource)

    def list_providers(self) -> list[DegreedProvider]:
        resources = self._read_chain(f"{V2}/providers", endpoint="GET /api/v2/providers")
        return [DegreedProvider.from_resource(resource) for resource in resources]


# ---------------------------------------------------------------------------------------------------------
# Envelope helpers
# ---------------------------------------------------------------------------------------------------------


def _kebab(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {str(name).replace("_", "-"): value for name, value in attributes.items()}


def _data_one(payload: Any, endpoint: str) -> dict[str, Any]:
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, dict):
        raise PayloadError("expected {\"data\": {...}} with one resource", api=API_NAME, endpoint=endpoint)
    return data


def _data_list(payload: Any, endpoint: str) -> list[dict[str, Any]]:
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        raise PayloadError("expected {\"data\": [...]} with a list of resources", api=API_NAME,
                           endpoint=endpoint)
    return [item for item in data if isinstance(item, dict)]


def _next_link(payload: Any) -> str | None:
    links = payload.get("links") if isinstance(payload, dict) else None
    return _text(links.get("next")) if isinstance(links, dict) else None


def _first_error(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        return errors[0]
    return body if isinstance(body, dict) else {}


def _existing_id(detail: str, source: str | None) -> str | None:
    """The id of the record a 409 collided with, when the answer names it (``source`` or ``...: <id>``)."""
    if source and re.fullmatch(r"[A-Za-z0-9_-]{4,40}", source) and source in detail:
        return source
    match = re.search(r":\s*([A-Za-z0-9_-]{4,40})\s*\.?$", detail)
    return match.group(1) if match else None

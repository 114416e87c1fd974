"""The one HTTP session layer both API clients use.

``ApiSession`` wraps a ``requests.Session`` with: connection reuse, connect/read timeouts, retries
with exponential backoff and jitter on 5xx and broken connections, ``Retry-After`` honoured on 429,
a pluggable rate budget drawn on by every attempt once it is ready to be sent (auth headers, and so
any token fetch, first), request counts by endpoint and outcome, and redaction of secrets from
everything it logs or raises.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urljoin

import requests
import urllib3
from requests.adapters import HTTPAdapter

from imocha_pipeline.clients.errors import (
    AmbiguousWriteError,
    ApiTransportError,
    PayloadError,
    RateLimitedError,
    ServerError,
)

logger = logging.getLogger("imocha_pipeline.http")

RETRY_STATUSES = frozenset({500, 502, 503, 504})
TRANSPORT_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ContentDecodingError,
)


AUTH_RECHECK_SECONDS = 1.0
"""A wait for a rate-budget slot this long or longer makes the session ask for the auth headers again."""
MAX_AUTH_RECHECKS = 3

READ_TIMEOUT_SETTING = "IMOCHA_PIPELINE_HTTP_READ_TIMEOUT_SECONDS"
DEFAULT_READ_TIMEOUT_SECONDS = 30.0


def default_read_timeout() -> float:
    """Seconds to wait for an answer (``IMOCHA_PIPELINE_HTTP_READ_TIMEOUT_SECONDS``, default 30)."""
    raw = os.environ.get(READ_TIMEOUT_SETTING, "").strip()
    try:
        return float(raw) if raw else DEFAULT_READ_TIMEOUT_SECONDS
    except ValueError as exc:
        raise ValueError(f"setting {READ_TIMEOUT_SETTING} must be a number of seconds, got {raw!r}") from exc


class RateBudget(Protocol):
    """Something that decides when the next request may go out, and learns from the answers."""

    def acquire(self, lane: str) -> None:
        """Block until one request in ``lane`` may be sent."""

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        """Adjust to what the server said (``Retry-After``, ``X-Rate-Limit-*``)."""


class Unlimited:
    """A rate budget that never waits (iMocha's default: its limit is unknown)."""

    def acquire(self, lane: str) -> None:
        return None

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        return None


class LocalRateBudget:
    """In-process sliding-window budget: at most ``per_minute`` sends in any ``window`` seconds.

    A sliding window never exceeds a fixed-window server limit either. ``margin`` widens the window a
    little so that network jitter cannot squeeze one extra request into the server's window. When the
    server says less is left than we thought (``Remaining: 0`` or a 429), sending pauses until its reset.
    """

    def __init__(self, per_minute: int, *, window: float = 60.0, margin: float = 0.25,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        self.per_minute = per_minute
        self.window = window + margin
        self._clock = clock
        self._sleep = sleep
        self._sent: deque[float] = deque()
        self._paused_until = 0.0
        self._lock = threading.Lock()

    def acquire(self, lane: str) -> None:
        while True:
            with self._lock:
                now = self._clock()
                while self._sent and now - self._sent[0] >= self.window:
                    self._sent.popleft()
                wait = max(0.0, self._paused_until - now)
                if not wait and len(self._sent) < self.per_minute:
                    self._sent.append(now)
                    return
                if not wait:
                    wait = self.window - (now - self._sent[0])
            self._sleep(max(wait, 0.005))

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        pause = pause_from_headers(status, headers)
        if pause > 0:
            with self._lock:
                self._paused_until = max(self._paused_until, self._clock() + pause)


def never_sent(exc: Exception) -> bool:
    """True when a transport error happened before the request could reach the server (connect failures)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)  # urllib3's MaxRetryError wraps the cause
    return isinstance(reason, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError)


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: an integer/float, or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def parse_reset(value: str | None) -> float | None:
    """``X-Rate-Limit-Reset`` (UTC ISO 8601, up to 7 fraction digits) as seconds from now."""
    if not value:
        return None
    text = value.strip().replace("Z", "+00:00")
    if "." in text:
        head, _, tail = text.partition(".")
        digits = "".join(ch for ch in tail if ch.isdigit())
        rest = tail[len(digits):]
        text = f"{head}.{digits[:6].ljust(6, '0')}{rest}"
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def pause_from_headers(status: int, headers: Mapping[str, str]) -> float:
    """How long the server asks us to hold off, from a 429's ``Retry-After`` or ``Remaining: 0``."""
    if status == 429:
        retry_after = parse_retry_after(headers.get("Retry-After"))
        if retry_after is not None:
            return retry_after
        return parse_reset(headers.get("X-Rate-Limit-Reset")) or 1.0
    remaining = headers.get("X-Rate-Limit-Remaining")
    if remaining is not None and remaining.strip() in {"0", "0.0"}:
        return parse_reset(headers.get("X-Rate-Limit-Reset")) or 0.0
    return 0.0


class RequestMetrics:
    """Thread-safe request counts by (endpoint template, outcome); outcome is the status or an error kind."""

    def __init__(self) -> None:
        self._counts: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()

    def record(self, endpoint: str, outcome: str) -> None:
        with self._lock:
            self._counts[(endpoint, outcome)] += 1

    def snapshot(self) -> dict[str, dict[str, int]]:
        """``{endpoint: {outcome: count}}``, sorted for stable metadata."""
        with self._lock:
            items = sorted(self._counts.items())
        result: dict[str, dict[str, int]] = {}
        for (endpoint, outcome), count in items:
            result.setdefault(endpoint, {})[outcome] = count
        return result

    def total(self, outcome_prefix: str = "") -> int:
        with self._lock:
            return sum(c for (_, outcome), c in self._counts.items() if outcome.startswith(outcome_prefix))

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()


class Redactor:
    """Replaces registered secrets by ``***`` in any text."""

    def __init__(self, secrets: Iterable[str] = ()):
        self._secrets: set[str] = set()
        self._lock = threading.Lock()
        for secret in secrets:
            self.add(secret)

    def add(self, secret: str | None) -> None:
        if secret and len(secret) >= 4:
            with self._lock:
                self._secrets.add(secret)

    def __call__(self, text: str) -> str:
        with self._lock:
            secrets = sorted(self._secrets, key=len, reverse=True)
        for secret in secrets:
            text = text.replace(secret, "***")
        return text


class ApiSession:
    """HTTP session for one API with retries, backoff, rate budget, metrics and secret redaction.

    ``auth_headers`` is called before every attempt, so a refreshed token is used on retries; it is called
    before the attempt takes its slot of ``rate_budget``, so a token fetch never sits between the slot and
    the send (see ``_ready_to_send``).
    ``request`` returns the response for any final status (2xx-4xx except 429); after the last retry it
    raises ``ApiTransportError``, ``ServerError`` or ``RateLimitedError``.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_name: str,
        headers: Mapping[str, str] | None = None,
        auth_headers: Callable[[], Mapping[str, str]] | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float | None = None,
        max_attempts: int = 6,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        max_retry_after: float = 120.0,
        rate_budget: RateBudget | None = None,
        secrets: Iterable[str] = (),
        metrics: RequestMetrics | None = None,
        pool_size: int = 16,
        sleep: Callable[[float], None] = time.sleep,
        auth_recheck_seconds: float = AUTH_RECHECK_SECONDS,
    ):
        self.base_url = base_url.rstrip("/") + "/"
        self.api_name = api_name
        self.auth_headers = auth_headers
        self.timeout = (connect_timeout, read_timeout if read_timeout is not None else default_read_timeout())
        self.max_attempts = max(1, max_attempts)
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.max_retry_after = max_retry_after
        self.auth_recheck_seconds = auth_recheck_seconds
        self.rate_budget: RateBudget = rate_budget or Unlimited()
        self.redact = Redactor(secrets)
        self.metrics = metrics or RequestMetrics()
        self._sleep = sleep
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers.update({"Accept": "application/json", "User-Agent": "imocha-pipeline/0.1"})
        if headers:
            self._session.headers.update(headers)

    def __repr__(self) -> str:
        return f"ApiSession(api={self.api_name!r}, base_url={self.base_url!r})"

    def add_secret(self, secret: str | None) -> None:
        """Register another value (e.g. a fresh access token) to be redacted everywhere."""
        self.redact.add(secret)

    def url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return urljoin(self.base_url, path.lstrip("/"))

    def close(self) -> None:
        self._session.close()

    def _ready_to_send(self, headers: Mapping[str, str] | None, lane: str) -> dict[str, str]:
        """The headers of the next attempt, auth included, with a slot of the rate budget taken for it.

        The auth headers come first: getting them may mean fetching a token, a request of its own that can
        take up to the read timeout. The slot is taken only when the request is ready to go, so the budget
        records the moment it is really sent (a slot taken before a slow token fetch is recorded long before
        the send, and lets one request too many into the server's rolling minute). When taking the slot
        waited ``auth_recheck_seconds`` or more, the auth headers are asked for again (cheap while the token
        holds); if they changed (the token was renewed meanwhile, perhaps fetched just now), the slot no
        longer marks the send: it stays unused, which only errs on the safe side, and another one is taken
        (at most ``MAX_AUTH_RECHECKS`` times; the request then goes with the headers its slot was taken for).
        """
        auth = dict(self.auth_headers()) if self.auth_headers else {}
        for recheck in range(MAX_AUTH_RECHECKS + 1):
            waiting_since = time.monotonic()
            self.rate_budget.acquire(lane)
            if (not self.auth_headers or recheck == MAX_AUTH_RECHECKS
                    or time.monotonic() - waiting_since < self.auth_recheck_seconds):
                break
            fresh = dict(self.auth_headers())
            if fresh == auth:
                break
            auth = fresh
        return {**(headers or {}), **auth}

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with equal jitter: half fixed, half random."""
        delay = min(self.backoff_max, self.backoff_base * (2 ** attempt))
        return delay / 2 + random.uniform(0, delay / 2)

    def request(
        self,
        method: str,
        path: str,
        *,
        endpoint: str | None = None,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        data: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        lane: str = "default",
        retry: bool = True,
        idempotent: bool | None = None,
    ) -> requests.Response:
        """Send with retries. ``idempotent`` (default: every method but POST) says whether the request may be
        sent again after an answer was lost: a non-idempotent write whose fate is unknown (read timeout, a
        connection dropped after sending, 504) raises ``AmbiguousWriteError`` instead of being repeated
        blindly, so the caller can read the server's state before sending again."""
        endpoint = self.redact(endpoint or f"{method} {path.split('?')[0]}")
        url = self.url(path)
        repeatable = idempotent if idempotent is not None else method.upper() != "POST"
        attempts = self.max_attempts if retry else 1
        last_problem = ""
        for attempt in range(attempts):
            merged = self._ready_to_send(headers, lane)
            started = time.monotonic()
            try:
                response = self._session.request(method, url, params=params, json=json_body, data=data,
                                                 headers=merged, timeout=self.timeout)
            except TRANSPORT_ERRORS as exc:
                kind = type(exc).__name__
                self.metrics.record(endpoint, f"error:{kind}")
                last_problem = self.redact(f"{kind}: {exc}")
                logger.debug("%s %s failed (attempt %d/%d): %s", self.api_name, endpoint, attempt + 1,
                             attempts, last_problem)
                if not repeatable and not never_sent(exc):
                    raise AmbiguousWriteError(f"no answer to a write, which may have been applied: {last_problem}",
                                              api=self.api_name, endpoint=endpoint) from None
                if attempt + 1 < attempts:
                    self._sleep(self.backoff(attempt))
                continue
            elapsed_ms = (time.monotonic() - started) * 1000
            status = response.status_code
            self.metrics.record(endpoint, str(status))
            self.rate_budget.observe(status, response.headers)
            logger.debug("%s %s -> %d in %.0f ms", self.api_name, endpoint, status, elapsed_ms)
            if status == 429:
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                last_problem = f"rate limited (Retry-After {retry_after})"
                if attempt + 1 < attempts:
                    wait = retry_after if retry_after is not None else self.backoff(attempt)
                    self._sleep(min(self.max_retry_after, wait))
                    continue
                raise RateLimitedError("still rate limited after retries", retry_after=retry_after,
                                       api=self.api_name, endpoint=endpoint, status=429)
            if status in RETRY_STATUSES:
                last_problem = f"server error {status}: {self.redact(response.text[:200])}"
                if status == 504 and not repeatable:
                    raise AmbiguousWriteError(f"gateway timeout on a write, which may have been applied: "
                                              f"{last_problem}", api=self.api_name, endpoint=endpoint, status=504)
                if attempt + 1 < attempts:
                    self._sleep(self.backoff(attempt))
                    continue
                raise ServerError(f"server kept failing after {attempts} attempts: {last_problem}",
                                  api=self.api_name, endpoint=endpoint, status=status)
            return response
        raise ApiTransportError(f"no answer after {attempts} attempts: {last_problem}",
                                api=self.api_name, endpoint=endpoint)

    def decode_json(self, response: requests.Response, endpoint: str) -> Any:
        """Parse a JSON body, or raise ``PayloadError`` saying what came back instead."""
        return decode_json(response, api=self.api_name, endpoint=endpoint, redact=self.redact)


def decode_json(response: requests.Response, *, api: str, endpoint: str,
                redact: Callable[[str], str] = lambda text: text) -> Any:
    """Parse a JSON body; an empty body, an HTML page or truncated JSON raise ``PayloadError``."""
    text = response.text
    status = response.status_code
    if not text.strip():
        raise PayloadError("empty response body where JSON was expected", api=api, endpoint=endpoint,
                           status=status)
    content_type = response.headers.get("Content-Type", "")
    if "html" in content_type.lower() or text.lstrip().lower().startswith(("<!doctype", "<html")):
        raise PayloadError(f"HTML page instead of JSON: {redact(_snippet(text))!r}", api=api,
                           endpoint=endpoint, status=status)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise PayloadError(f"invalid JSON ({exc.msg} at char {exc.pos}): {redact(_snippet(text))!r}",
                           api=api, endpoint=endpoint, status=status) from None


def _snippet(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"

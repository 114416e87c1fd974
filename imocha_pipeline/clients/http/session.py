"""``ApiSession``: one API's ``requests.Session``, sending each request with retries.

Connection reuse, connect/read timeouts (``Timeouts``), retries with exponential backoff and jitter on 5xx and
broken connections and ``Retry-After`` honoured on 429 (``RetryPolicy``), a pluggable rate budget drawn on by
every attempt once it is ready to be sent (auth headers, and so any token fetch, first), request counts by
endpoint and outcome (``RequestMetrics``), and redaction of secrets from everything it logs or raises.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urljoin

import requests
import urllib3
from requests.adapters import HTTPAdapter

from imocha_pipeline.clients.errors import (
    AmbiguousWriteError,
    ApiTransportError,
    RateLimitedError,
    ServerError,
)
from imocha_pipeline.clients.http.budget import RateBudget, Unlimited, parse_retry_after
from imocha_pipeline.clients.http.json_body import decode_json
from imocha_pipeline.clients.http.metrics import RequestMetrics
from imocha_pipeline.clients.http.policy import RetryPolicy, Timeouts
from imocha_pipeline.clients.http.redaction import Redactor

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


def never_sent(exc: Exception) -> bool:
    """True when a transport error happened before the request could reach the server (connect failures)."""
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return True
    reason = exc.args[0] if exc.args else None
    reason = getattr(reason, "reason", reason)  # urllib3's MaxRetryError wraps the cause
    return isinstance(reason, urllib3.exceptions.NewConnectionError | urllib3.exceptions.ConnectTimeoutError)


class ApiSession:
    """HTTP session for one API with retries, backoff, rate budget, metrics and secret redaction.

    ``retry`` (a ``RetryPolicy``) and ``timeouts`` (``Timeouts``) say how patient it is. ``auth_headers`` is
    called before every attempt, so a refreshed token is used on retries; it is called before the attempt takes
    its slot of ``rate_budget``, so a token fetch never sits between the slot and the send (see ``_ready_to_send``).
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
        retry: RetryPolicy | None = None,
        timeouts: Timeouts | None = None,
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
        self.retry = retry or RetryPolicy()
        self.timeouts = (timeouts or Timeouts()).resolved()
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
        attempts = self.retry.attempts if retry else 1
        last_problem = ""
        for attempt in range(attempts):
            merged = self._ready_to_send(headers, lane)
            started = time.monotonic()
            try:
                response = self._session.request(method, url, params=params, json=json_body, data=data,
                                                 headers=merged, timeout=self.timeouts.for_requests())
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
                    self._sleep(self.retry.backoff(attempt))
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
                    wait = retry_after if retry_after is not None else self.retry.backoff(attempt)
                    self._sleep(self.retry.retry_after_wait(wait))
                    continue
                raise RateLimitedError("still rate limited after retries", retry_after=retry_after,
                                       api=self.api_name, endpoint=endpoint, status=429)
            if status in RETRY_STATUSES:
                last_problem = f"server error {status}: {self.redact(response.text[:200])}"
                if status == 504 and not repeatable:
                    raise AmbiguousWriteError(f"gateway timeout on a write, which may have been applied: "
                                              f"{last_problem}", api=self.api_name, endpoint=endpoint, status=504)
                if attempt + 1 < attempts:
                    self._sleep(self.retry.backoff(attempt))
                    continue
                raise ServerError(f"server kept failing after {attempts} attempts: {last_problem}",
                                  api=self.api_name, endpoint=endpoint, status=status)
            return response
        raise ApiTransportError(f"no answer after {attempts} attempts: {last_problem}",
                                api=self.api_name, endpoint=endpoint)

    def decode_json(self, response: requests.Response, endpoint: str) -> Any:
        """Parse a JSON body, or raise ``PayloadError`` saying what came back instead."""
        return decode_json(response, api=self.api_name, endpoint=endpoint, redact=self.redact)

"""What stands between the internet and the callback endpoint, before any route runs: a per-address rate
limit (429 with ``Retry-After``) and a path check (404 for encoded or dot-segment paths).

Both answer from memory without touching the database, so a flood costs the server little and other
clients keep being served. The client address is the connection's peer, or the ``X-Forwarded-For`` address
when uvicorn trusts the proxy that sent it (``--forwarded-allow-ips``, loopback by default).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from typing import Any

MAX_TRACKED_ADDRESSES = 10_000
"""Above this many addresses, those whose bucket is full again (idle) are forgotten."""


class RateLimiter:
    """A token bucket per client address: ``burst`` requests at once, then ``rate`` per second."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        if rate <= 0 or burst < 1:
            raise ValueError("the rate must be positive and the burst at least 1")
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # address -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, address: str) -> float:
        """0.0 when ``address`` may go ahead (one token spent), else the seconds until it may."""
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.get(address, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens >= 1.0:
                self._buckets[address] = (tokens - 1.0, now)
                if len(self._buckets) > MAX_TRACKED_ADDRESSES:
                    self._forget_idle(now)
                return 0.0
            self._buckets[address] = (tokens, now)
            return (1.0 - tokens) / self.rate

    def _forget_idle(self, now: float) -> None:
        for address, (tokens, at) in list(self._buckets.items()):
            if tokens + (now - at) * self.rate >= self.burst:
                del self._buckets[address]


def is_plain_path(scope: dict[str, Any]) -> bool:
    """False for a path with percent-escapes, ``.``/``..`` segments or empty segments (``//``)."""
    raw = scope.get("raw_path") or scope.get("path", "").encode()
    if b"%" in raw or b"\\" in raw:
        return False
    segments = raw.split(b"/")[1:]
    return all(segment not in (b"", b".", b"..") for segment in segments[:-1]) and segments[-1:] != [b".."] \
        and segments[-1:] != [b"."]


class CallbackGuard:
    """ASGI middleware: rate limit every HTTP request per address, then refuse path tricks with 404."""

    def __init__(self, app: Any, limiter: RateLimiter):
        self.app = app
        self.limiter = limiter
        self.refused = {"rate": 0, "path": 0}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        wait = self.limiter.take(client[0] if client else "?")
        if wait > 0:
            self.refused["rate"] += 1
            await _answer(send, 429, {"error": "too many requests"}, [(b"retry-after", b"%d" % math.ceil(wait))])
            return
        if not is_plain_path(scope):
            self.refused["path"] += 1
            await _answer(send, 404, {"error": "not found"}, [])
            return
        await self.app(scope, receive, send)


async def _answer(send: Any, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data)),
                            *headers]})
    await send({"type": "http.response.body", "body": data})

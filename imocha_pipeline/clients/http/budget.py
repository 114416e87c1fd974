"""Rate budgets: what decides when the next request may go out, and the server's hints they learn from.

A ``RateBudget`` is drawn on by every attempt of an ``ApiSession`` once it is ready to be sent, and told every
answer's status and headers. ``Unlimited`` never waits; ``LocalRateBudget`` is one process's sliding window;
the budget shared by processes is ``shared_budget.SharedRateBudget``. The header readers turn ``Retry-After``
and ``X-Rate-Limit-Remaining`` / ``X-Rate-Limit-Reset`` into seconds to hold off.
"""

from __future__ import annotations

import email.utils
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Protocol


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


# ---------------------------------------------------------------------------------------------------------
# The server's hints
# ---------------------------------------------------------------------------------------------------------


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


def remaining_from_headers(headers: Mapping[str, str]) -> int | None:
    """``X-Rate-Limit-Remaining`` as a whole number of requests (None when absent or unreadable)."""
    value = headers.get("X-Rate-Limit-Remaining")
    if value is None:
        return None
    try:
        return max(0, int(float(value.strip())))
    except ValueError:
        return None

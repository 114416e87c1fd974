"""The per-client rate limit: fixed or sliding 60 s windows, the rate-limit headers, the 429, and the
rolling-minute counter of accepted requests.

``rate_window`` "fixed" opens a window at a client's first request and resets it 60 s later (so up to twice
the limit can fall in one rolling minute); "sliding" accepts a request only while fewer than the limit were
accepted in the 60 s before it, so no rolling minute ever holds more. Rejected requests consume no budget.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime

from imocha_sandbox.degreed.problems import ApiProblem
from imocha_sandbox.degreed.settings import DegreedSimSettings


@dataclass
class RateDecision:
    allowed: bool
    remaining: int
    reset_at: float
    retry_after: int = 0


class RateLimiter:
    """Per-client budget of N requests a minute; rejected requests do not consume budget.

    It also remembers the simulator-clock time of every request it accepted, across ``reset()``, for
    ``max_requests_in_any_minute``. Callers hold the store's lock.
    """

    PERIOD = 60.0

    def __init__(self, settings: DegreedSimSettings):
        self.settings = settings
        self._fixed: dict[str, tuple[float, int]] = {}
        self._sliding: dict[str, deque[float]] = {}
        self._accepted: dict[str, list[float]] = {}

    def reset(self) -> None:
        """Forget every client's used budget (the accepted-request history stays)."""
        self._fixed.clear()
        self._sliding.clear()

    def charge(self, client_id: str, now: float) -> RateDecision:
        """Ask for one request of ``client_id``; remember the time when it is accepted."""
        decision = self._check_sliding(client_id, now) if self.settings.rate_window == "sliding" \
            else self._check_fixed(client_id, now)
        if decision.allowed:
            self._accepted.setdefault(client_id, []).append(now)
        return decision

    def idle(self, now: float) -> RateDecision:
        """Headers for an answer that is not charged to any client (bad or missing token)."""
        limit = self.settings.rate_limit_per_minute
        return RateDecision(True, limit, now + self.PERIOD)

    def peek(self, client_id: str | None, now: float) -> RateDecision:
        """The client's budget as it stands, without charging anything (for answers that cost nothing)."""
        limit = self.settings.rate_limit_per_minute
        if client_id is None:
            return self.idle(now)
        if self.settings.rate_window == "sliding":
            stamps = [stamp for stamp in self._sliding.get(client_id, ()) if stamp > now - self.PERIOD]
            reset_at = stamps[0] + self.PERIOD if stamps else now + self.PERIOD
            return RateDecision(len(stamps) < limit, max(0, limit - len(stamps)), reset_at)
        start, used = self._fixed.get(client_id, (now, 0))
        if now >= start + self.PERIOD:
            start, used = now, 0
        return RateDecision(used < limit, max(0, limit - used), start + self.PERIOD)

    def max_requests_in_any_minute(self, client_id: str, since: float | None = None) -> int:
        """The most requests accepted from ``client_id`` within any half-open window ``[t, t + PERIOD)``,
        ignoring those accepted before ``since``."""
        times = sorted(t for t in self._accepted.get(client_id, ()) if since is None or t >= since)
        best, first = 0, 0
        for last, moment in enumerate(times):
            while times[first] <= moment - self.PERIOD:
                first += 1
            best = max(best, last - first + 1)
        return best

    def _check_fixed(self, client_id: str, now: float) -> RateDecision:
        limit = self.settings.rate_limit_per_minute
        start, used = self._fixed.get(client_id, (now, 0))
        if now >= start + self.PERIOD:
            start, used = now, 0
        reset_at = start + self.PERIOD
        if used >= limit:
            self._fixed[client_id] = (start, used)
            return RateDecision(False, 0, reset_at, max(1, math.ceil(reset_at - now)))
        self._fixed[client_id] = (start, used + 1)
        return RateDecision(True, limit - used - 1, reset_at)

    def _check_sliding(self, client_id: str, now: float) -> RateDecision:
        limit = self.settings.rate_limit_per_minute
        stamps = self._sliding.setdefault(client_id, deque())
        while stamps and stamps[0] <= now - self.PERIOD:
            stamps.popleft()
        if len(stamps) >= limit:
            # The oldest request frees the next slot.
            reset_at = stamps[len(stamps) - limit] + self.PERIOD
            return RateDecision(False, 0, reset_at, max(1, math.ceil(reset_at - now)))
        stamps.append(now)
        return RateDecision(True, limit - len(stamps), stamps[0] + self.PERIOD)


def quota_problem(limit: int, retry_after: int) -> ApiProblem:
    """The 429 answer, worded with the limit in force now."""
    return ApiProblem(429, f"Maximum {limit} requests allowed per 1m.", headers={"Retry-After": str(retry_after)})


def rate_headers(decision: RateDecision) -> dict[str, str]:
    return {
        "X-Rate-Limit-Limit": "1m",
        "X-Rate-Limit-Remaining": str(max(0, decision.remaining)),
        "X-Rate-Limit-Reset": rate_reset_header(decision.reset_at),
    }


def rate_reset_header(epoch: float) -> str:
    """``X-Rate-Limit-Reset``: the reset moment in UTC with 7 fraction digits and a ``Z``."""
    moment = datetime.fromtimestamp(epoch, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{moment.microsecond:06d}0Z"

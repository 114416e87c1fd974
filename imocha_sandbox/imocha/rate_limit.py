"""The optional API rate limit (setting ``rate_limit_per_second``): a token bucket."""

from __future__ import annotations

import threading
import time


class TokenBucket:
    """``rate`` requests a second with a burst of ``max(1, rate)``; thread-safe."""

    def __init__(self, rate: float):
        self.rate = rate
        self.capacity = max(1.0, rate)
        self._tokens = self.capacity
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> float:
        """Take a token; return 0 when allowed, else the seconds until one is available."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return 0.0
            return (1.0 - self._tokens) / self.rate

"""How patient one API session is: its retry policy and its timeouts, as small frozen values."""

from __future__ import annotations

import random
from dataclasses import dataclass

from imocha_pipeline.settings import IMOCHA_PIPELINE_HTTP_READ_TIMEOUT_SECONDS

READ_TIMEOUT_SETTING = IMOCHA_PIPELINE_HTTP_READ_TIMEOUT_SECONDS.name
DEFAULT_READ_TIMEOUT_SECONDS = IMOCHA_PIPELINE_HTTP_READ_TIMEOUT_SECONDS.default


def default_read_timeout() -> float:
    """Seconds to wait for an answer (``IMOCHA_PIPELINE_HTTP_READ_TIMEOUT_SECONDS``, default 30), read now."""
    return IMOCHA_PIPELINE_HTTP_READ_TIMEOUT_SECONDS.value()


@dataclass(frozen=True)
class RetryPolicy:
    """How often a request is sent before the session gives up, and how long it waits in between.

    ``max_attempts`` counts the first send (at least one is always made); the wait after a 5xx or a broken
    connection is exponential from ``backoff_base`` up to ``backoff_max`` seconds, with jitter; a 429's
    ``Retry-After`` is honoured up to ``max_retry_after`` seconds.
    """

    max_attempts: int = 6
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    max_retry_after: float = 120.0

    @property
    def attempts(self) -> int:
        """Sends allowed for one request (``max_attempts``, at least 1)."""
        return max(1, self.max_attempts)

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with equal jitter: half fixed, half random."""
        delay = min(self.backoff_max, self.backoff_base * (2 ** attempt))
        return delay / 2 + random.uniform(0, delay / 2)

    def retry_after_wait(self, retry_after: float) -> float:
        """A server's ``Retry-After`` wait, capped at ``max_retry_after``."""
        return min(self.max_retry_after, retry_after)


@dataclass(frozen=True)
class Timeouts:
    """Seconds to wait for a connection (``connect``) and for an answer (``read``; None: the
    ``IMOCHA_PIPELINE_HTTP_READ_TIMEOUT_SECONDS`` setting, read when a session is built)."""

    connect: float = 5.0
    read: float | None = None

    def resolved(self) -> Timeouts:
        """These timeouts with the read timeout's default filled in."""
        return Timeouts(self.connect, self.read if self.read is not None else default_read_timeout())

    def for_requests(self) -> tuple[float, float | None]:
        """The ``(connect, read)`` pair ``requests`` takes."""
        return (self.connect, self.read)

"""Canned responses: raw answers scripted for ``method path``, for malformed-payload tests."""

from __future__ import annotations

import threading
from dataclasses import dataclass


@dataclass
class CannedResponse:
    """A scripted answer for ``method path`` (query ignored), used ``times`` times (None = forever)."""

    method: str
    path: str
    status: int = 200
    body: str = ""
    content_type: str = "application/json"
    times: int | None = 1


class CannedResponses:
    """The scripted answers, first match first; each use counts down its ``times``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._canned: list[CannedResponse] = []

    def add(self, method: str, path: str, body: str | bytes = "", *, status: int = 200,
            content_type: str = "application/json", times: int | None = 1) -> None:
        """Answer the next ``times`` API requests ``method path`` with this raw body (after the key check).

        For malformed-payload tests: HTML pages, truncated JSON, empty bodies, wrong shapes.
        """
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        with self._lock:
            self._canned.append(CannedResponse(method.upper(), path, status, text, content_type, times))

    def clear(self) -> None:
        with self._lock:
            self._canned.clear()

    def take(self, method: str, path: str) -> CannedResponse | None:
        """The answer scripted for ``method path``, counting one use; None when there is none."""
        with self._lock:
            for canned in self._canned:
                if canned.method == method.upper() and canned.path == path:
                    if canned.times is not None:
                        canned.times -= 1
                        if canned.times <= 0:
                            self._canned.remove(canned)
                    return canned
            return None

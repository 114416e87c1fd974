"""Request counts by endpoint template and outcome, shared by the sessions of one client."""

from __future__ import annotations

import threading
from collections import Counter


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

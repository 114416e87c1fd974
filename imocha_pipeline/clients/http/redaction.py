"""Secrets (API keys, client secrets, tokens) kept out of everything a session logs or raises."""

from __future__ import annotations

import threading
from collections.abc import Iterable


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

"""Callback delivery: one background thread posting notifications in order, with retries, recording every try."""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass
from typing import Any

import requests


@dataclass
class Notification:
    invitation_id: int
    url: str
    payload: dict[str, Any]
    replay: bool = False


class CallbackDispatcher:
    """Delivers callback notifications from one background thread, in order, with retries.

    Each notification is tried up to ``max_tries`` times (non-2xx or connection error = failure),
    ``retry_delay`` seconds apart, then dropped. Every try is recorded in ``deliveries``.
    """

    def __init__(self, max_tries: int, retry_delay: float, timeout: float = 5.0):
        self.max_tries = max_tries
        self.retry_delay = retry_delay
        self.timeout = timeout
        self._queue: queue.Queue[Notification | None] = queue.Queue()
        self._lock = threading.Lock()
        self._deliveries: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def enqueue(self, notification: Notification) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True, name="imocha-sim-callbacks")
                self._thread.start()
        self._queue.put(notification)

    def deliveries(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(entry) for entry in self._deliveries]

    def clear(self) -> None:
        with self._lock:
            self._deliveries.clear()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Wait until every queued notification was delivered or given up; False on timeout."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=5)

    def _run(self) -> None:
        with requests.Session() as session:
            while not self._stop.is_set():
                notification = self._queue.get()
                try:
                    if notification is not None:
                        self._deliver(session, notification)
                finally:
                    self._queue.task_done()

    def _deliver(self, session: requests.Session, note: Notification) -> None:
        for attempt in range(1, self.max_tries + 1):
            status, error = self._post(session, note)
            ok = status is not None and 200 <= status < 300
            self._record(note, attempt, status, error, ok)
            if ok or self._stop.wait(self.retry_delay if attempt < self.max_tries else 0):
                return

    def _post(self, session: requests.Session, note: Notification) -> tuple[int | None, str | None]:
        try:
            response = session.post(note.url, json=note.payload, timeout=self.timeout)
        except requests.RequestException as exc:
            return None, f"{type(exc).__name__}: {exc}"
        return response.status_code, None

    def _record(self, note: Notification, attempt: int, status: int | None, error: str | None,
                ok: bool) -> None:
        with self._lock:
            self._deliveries.append({
                "seq": len(self._deliveries) + 1,
                "ts": time.time(),
                "invitationId": note.invitation_id,
                "status": note.payload["Status"],
                "url": note.url,
                "try": attempt,
                "httpStatus": status,
                "error": error,
                "ok": ok,
                "replay": note.replay,
                "payload": note.payload,
            })

"""The simulator's settings: their defaults, their validation and ``configure``.

Each setting is documented in the package docstring (``imocha_sandbox.imocha``): where the spec is silent, the
uncertain behaviour is a setting, changed with ``configure(**settings)`` or ``PUT /_sandbox/settings``.
"""

from __future__ import annotations

import math
import threading
from datetime import timedelta
from typing import Any

from imocha_sandbox.imocha.errors import SimulatorError
from imocha_sandbox.imocha.rate_limit import TokenBucket
from imocha_sandbox.imocha.records import STATUS_CANCELLED, STATUS_EXPIRED, STATUS_IN_PROGRESS
from imocha_sandbox.seed import STATUS_COMPLETE, STATUS_TERMINATED, STATUS_TEST_LEFT

SETTING_NAMES = ("rate_limit_per_second", "attempt_window_field", "max_page_size", "test_status_labels",
                 "report_status_labels", "callback_status_labels", "unfinished_report",
                 "empty_attempts_404", "callbacks_process_limit", "report_ready_delay_seconds")


def delay_setting(value: Any) -> float:
    """``report_ready_delay_seconds``: a finite number of seconds, 0 or more; else the settings 400."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise SimulatorError(400, {"errors": [
            f"report_ready_delay_seconds must be a number of seconds, 0 or more; got {value!r}"]})
    return float(value)


class SimulatorSettings:
    """The current value of every setting (``SETTING_NAMES``) plus ``callback_display_offset``.

    ``lock`` is the state's lock: ``configure`` changes settings under it, so a request never sees half a change.
    """

    def __init__(self, lock: threading.RLock, *, rate_limit_per_second: float | None = None,
                 attempt_window_field: str = "completed", report_ready_delay_seconds: float = 0):
        self._lock = lock
        self.max_page_size = 100
        self.callbacks_process_limit = 100
        self.test_status_labels = {STATUS_COMPLETE: "Completed", STATUS_TEST_LEFT: "Test Left",
                                   STATUS_TERMINATED: "Terminated", STATUS_CANCELLED: "Cancelled",
                                   STATUS_EXPIRED: "Expired"}
        self.report_status_labels = {STATUS_COMPLETE: "Complete", STATUS_TEST_LEFT: "TestLeft",
                                     STATUS_TERMINATED: "Terminated"}
        self.callback_status_labels = {STATUS_IN_PROGRESS: "In Progress", STATUS_COMPLETE: "Complete",
                                       STATUS_TEST_LEFT: "Test Left", STATUS_TERMINATED: "Terminated"}
        self.callback_display_offset = timedelta(hours=5, minutes=30)  # the doc sample's local time
        self.unfinished_report = "not_found"
        self.report_ready_delay_seconds = delay_setting(report_ready_delay_seconds)
        self.empty_attempts_404 = False
        self.attempt_window_field = attempt_window_field
        self._bucket: TokenBucket | None = None
        self.rate_limit_per_second = rate_limit_per_second

    @property
    def rate_limit_per_second(self) -> float | None:
        return self._bucket.rate if self._bucket else None

    @rate_limit_per_second.setter
    def rate_limit_per_second(self, rate: float | None) -> None:
        self._bucket = TokenBucket(rate) if rate else None

    def rate_limit_wait(self) -> float:
        """0 when a request may pass the rate limit now, else the seconds to wait."""
        bucket = self._bucket
        return bucket.take() if bucket else 0.0

    def configure(self, **settings: Any) -> dict[str, Any]:
        """Change settings (names in ``SETTING_NAMES``); returns them all."""
        unknown = set(settings) - set(SETTING_NAMES)
        if unknown:
            raise SimulatorError(400, {"errors": [f"unknown settings: {sorted(unknown)}"]})
        if settings.get("attempt_window_field", "completed") not in ("completed", "started"):
            raise SimulatorError(400, {"errors": ["attempt_window_field must be 'completed' or 'started'"]})
        if settings.get("unfinished_report", "not_found") not in ("not_found", "in_progress"):
            raise SimulatorError(400, {"errors": ["unfinished_report must be 'not_found' or 'in_progress'"]})
        if "report_ready_delay_seconds" in settings:
            settings["report_ready_delay_seconds"] = delay_setting(settings["report_ready_delay_seconds"])
        with self._lock:
            for name, value in settings.items():
                setattr(self, name, value)
            return self.as_dict()

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in SETTING_NAMES}

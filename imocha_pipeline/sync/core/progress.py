"""Progress of long work (a backfill, a big first sync): one line at a steady pace, and the plan's ETA.

``ProgressLog`` is the ``progress`` callback of ``apply_plan``: it writes a line when ``every_seconds`` have
passed since the last one (or every ``every_records`` records, if set) with the records done and remaining,
the rate so far, and the ETA. The rate budget (Degreed's requests a minute) bounds the rate: before there is
a rate worth trusting, and whenever the observed rate is faster than the budget allows, the ETA is taken
from the budget. Every write is at least one request, so ``remaining / per_minute`` is the least it can take.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from imocha_pipeline.settings import IMOCHA_PIPELINE_PROGRESS_SECONDS

DEFAULT_EVERY_SECONDS = IMOCHA_PIPELINE_PROGRESS_SECONDS.default
# Below this much elapsed time the observed rate is noise; the budget's rate is used instead.
MIN_SECONDS_FOR_RATE = 5.0


def progress_every_seconds() -> float:
    """IMOCHA_PIPELINE_PROGRESS_SECONDS: seconds between progress lines (0: a line after every record)."""
    return IMOCHA_PIPELINE_PROGRESS_SECONDS.value()


def format_duration(seconds: float) -> str:
    """``45 s``, ``12 min 05 s``, ``3 h 07 min``."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {(seconds % 3600) // 60:02d} min"


def eta_minutes(writes: int, per_minute: float | None) -> float:
    """The least time ``writes`` writes take inside a budget of ``per_minute`` requests (0: no budget)."""
    return writes / per_minute if per_minute and per_minute > 0 else 0.0


def plan_eta_line(label: str, writes: int, per_minute: float | None) -> str:
    """The line a plan logs before apply: how many writes, and how long they take at the rate budget."""
    if not writes:
        return f"{label}: nothing to write"
    if not per_minute:
        return f"{label}: {writes} writes to send (no rate budget: no ETA)"
    minutes = eta_minutes(writes, per_minute)
    return (f"{label}: {writes} writes to send; ETA at least {format_duration(minutes * 60)} "
            f"at the rate budget of {per_minute:g} requests/min")


def _outcomes(result: Any) -> str:
    counts = result.as_metadata() if hasattr(result, "as_metadata") else {}
    return ", ".join(f"{name} {count}" for name, count in counts.items() if count)


class ProgressLog:
    """``apply_plan``'s ``progress`` callback that logs at a steady pace; ``finish`` logs the summary."""

    def __init__(self, log: Callable[[str], None], label: str, total: int, per_minute: float | None = None, *,
                 every_seconds: float = DEFAULT_EVERY_SECONDS, every_records: int = 0,
                 clock: Callable[[], float] = time.monotonic):
        self.log = log
        self.label = label
        self.total = total
        self.per_minute = per_minute if per_minute and per_minute > 0 else None
        self.every_seconds = every_seconds
        self.every_records = every_records
        self.clock = clock
        self.started = clock()
        self._last_time = self.started
        self._last_done = 0
        self.done = 0
        self.lines: list[str] = []

    def _emit(self, line: str) -> None:
        self.lines.append(line)
        self.log(line)

    def start(self) -> None:
        self._emit(plan_eta_line(self.label, self.total, self.per_minute))

    def rate_per_minute(self, now: float | None = None) -> float | None:
        """Records a minute so far (None until enough time has passed to tell)."""
        elapsed = (self.clock() if now is None else now) - self.started
        if elapsed < MIN_SECONDS_FOR_RATE or self.done <= 0:
            return None
        return self.done / elapsed * 60.0

    def eta_seconds(self, now: float | None = None) -> float | None:
        remaining = self.total - self.done
        rate = self.rate_per_minute(now)
        if rate is not None and self.per_minute is not None:
            rate = min(rate, self.per_minute)
        elif rate is None:
            rate = self.per_minute
        if not rate:
            return None
        return remaining / rate * 60.0

    def line(self, now: float | None = None) -> str:
        now = self.clock() if now is None else now
        share = self.done / self.total if self.total else 1.0
        rate = self.rate_per_minute(now)
        eta = self.eta_seconds(now)
        parts = [f"{self.label}: {self.done}/{self.total} done ({share:.0%}), {self.total - self.done} remaining",
                 f"{rate:.1f}/min" if rate is not None else "rate not known yet",
                 f"ETA {format_duration(eta)}" if eta is not None else "no ETA"]
        if self.per_minute is not None:
            parts[-1] += f" (rate budget {self.per_minute:g}/min)"
        return ", ".join(parts)

    def __call__(self, done: int, total: int, result: Any = None) -> None:
        self.done, self.total = done, total
        if done >= total:
            return  # finish() says the last word
        now = self.clock()
        due_by_time = now - self._last_time >= self.every_seconds
        due_by_count = self.every_records > 0 and done - self._last_done >= self.every_records
        if due_by_time or due_by_count:
            line = self.line(now)
            outcomes = _outcomes(result) if result is not None else ""
            self._emit(f"{line}; {outcomes}" if outcomes else line)
            self._last_time, self._last_done = now, done

    def finish(self, result: Any = None, stopped: bool = False) -> None:
        """The summary line; ``stopped``: the work ended early (an exception is on its way)."""
        if not self.total:
            return
        elapsed = self.clock() - self.started
        rate = f" ({self.done / elapsed * 60:.1f}/min)" if elapsed > 0 and self.done else ""
        outcomes = _outcomes(result) if result is not None else ""
        verb = "stopped after" if stopped else "done:"
        self._emit(f"{self.label}: {verb} {self.done}/{self.total} in {format_duration(elapsed)}{rate}"
                   + (f"; {outcomes}" if outcomes else ""))

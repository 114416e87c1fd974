"""Progress of long work (a backfill, a big first sync): one line at a steady pace, and the plan's ETA.

``ProgressLog`` is the ``progress`` callback of ``apply_plan``: it writes a line when ``every_seconds`` have
passed since the last one (or every ``every_records`` records, if set) with the records done and remaining,
the rate so far, and the ETA. The rate budget (Degreed's requests a minute) bounds the rate: before there is
a rate worth trusting, and whenever the observed rate is faster than the budget allows, the ETA is taken
from the budget. Every write is at least one request, so ``remaining / per_minute`` is the least it can take.

While no record finishes (a send waits for the rate budget's next slot, a ``Retry-After``, a slow answer),
``ticking()`` keeps the lines coming at the same pace from a timer thread, each with the ETA as of that moment:
the ETA of the last record counted down by the time waited, and never less than the budget's sliding window
allows (the last ``per_minute`` records' times: slots free a window after them). Once the budget sets the pace
(its last ``per_minute`` records filled a window), the window alone gives the ETA: the slots that freed during
a wait go at once, which the pace so far cannot know.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from imocha_pipeline.settings import IMOCHA_PIPELINE_PROGRESS_SECONDS

DEFAULT_EVERY_SECONDS = IMOCHA_PIPELINE_PROGRESS_SECONDS.default
# Below this much elapsed time the observed rate is noise; the budget's rate is used instead.
MIN_SECONDS_FOR_RATE = 5.0
# The rate budget's window (Degreed: requests a minute).
BUDGET_WINDOW_SECONDS = 60.0


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
    """``apply_plan``'s ``progress`` callback that logs at a steady pace; ``finish`` logs the summary.

    Thread-safe: ``ticking()`` logs from a timer thread while the work waits between records.
    """

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
        self._record_time = self.started  # when the last record finished
        # When recent records finished (at most per_minute + 1 of them: enough to tell the window's state).
        self._recent: deque[float] = deque(maxlen=int(self.per_minute) + 1 if self.per_minute else 1)
        self._lock = threading.RLock()
        self._begun = False
        self.done = 0
        self.lines: list[str] = []

    def _emit(self, line: str) -> None:
        with self._lock:
            self.lines.append(line)
            self.log(line)

    def start(self) -> None:
        with self._lock:
            self.started = self._last_time = self._record_time = self.clock()
            self._begun = True
            self._emit(plan_eta_line(self.label, self.total, self.per_minute))

    def rate_per_minute(self, now: float | None = None) -> float | None:
        """Records a minute so far (None until enough time has passed to tell)."""
        elapsed = (self.clock() if now is None else now) - self.started
        if elapsed < MIN_SECONDS_FOR_RATE or self.done <= 0:
            return None
        return self.done / elapsed * 60.0

    def _pace_eta(self, at: float) -> float | None:
        """Seconds for the rest at the pace of the records so far (as of ``at``), bounded by the budget."""
        remaining = self.total - self.done
        rate = self.rate_per_minute(at)
        if rate is not None and self.per_minute is not None:
            rate = min(rate, self.per_minute)
        elif rate is None:
            rate = self.per_minute
        if not rate:
            return None
        return remaining / rate * 60.0

    def _window_eta(self, now: float) -> float:
        """The least time the rest takes inside the budget's sliding window, one request a record: the first
        free slots go now, the others a window after the recent records that hold them. 0 when the records are
        not one request each (more of them in the last window than the budget allows)."""
        remaining = self.total - self.done
        if not self.per_minute or remaining <= 0:
            return 0.0
        per_minute = int(self.per_minute)
        held = self._held(now)
        if held is None:
            return 0.0
        free = per_minute - len(held)
        last = (remaining - 1) % per_minute
        first_wave = now if last < free else held[last - free] + BUDGET_WINDOW_SECONDS
        return max(0.0, first_wave + BUDGET_WINDOW_SECONDS * ((remaining - 1) // per_minute) - now)

    def _held(self, now: float) -> list[float] | None:
        """When the records that still hold a slot of the budget's window finished; None when the records are
        not one request each (more of them in the last window than the budget allows)."""
        held = [t for t in self._recent if now - t < BUDGET_WINDOW_SECONDS]
        return held if len(held) <= int(self.per_minute or 0) else None

    def _budget_bound(self, now: float) -> bool:
        """Whether the budget, not the server, sets the pace: the last ``per_minute`` records (one request each)
        finished within one window."""
        if not self.per_minute:
            return False
        per_minute = int(self.per_minute)
        recent = list(self._recent)
        if len(recent) < per_minute or self._held(now) is None:
            return False
        return any(recent[i + per_minute - 1] - recent[i] < BUDGET_WINDOW_SECONDS
                   for i in range(len(recent) - per_minute + 1))

    def eta_seconds(self, now: float | None = None) -> float | None:
        """The ETA as of ``now``. While the budget sets the pace, when its sliding window lets the rest go;
        otherwise the pace's ETA at the last record, less the time waited since, and never less than the
        window allows. (The pace counts the waits for the budget's slots, so after one it would put the slots
        freed meanwhile a minute away.)"""
        with self._lock:
            now = self.clock() if now is None else now
            if self.done and self._budget_bound(now):
                return self._window_eta(now)
            pace = self._pace_eta(min(now, self._record_time) if self.done else now)
            if pace is None:
                return None
            waited = max(0.0, now - self._record_time) if self.done else 0.0
            return max(pace - waited, self._window_eta(now))

    def line(self, now: float | None = None) -> str:
        with self._lock:
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
        with self._lock:
            now = self.clock()
            self._recent.extend([now] * min(max(0, done - self.done), self._recent.maxlen or 1))
            self.done, self.total = done, total
            self._record_time = now
            if done >= total:
                return  # finish() says the last word
            due_by_time = now - self._last_time >= self.every_seconds
            due_by_count = self.every_records > 0 and done - self._last_done >= self.every_records
            if due_by_time or due_by_count:
                line = self.line(now)
                outcomes = _outcomes(result) if result is not None else ""
                self._emit(f"{line}; {outcomes}" if outcomes else line)
                self._last_time, self._last_done = now, done

    def tick(self) -> float:
        """Log the line now if ``every_seconds`` passed since the last one (work started, not finished);
        returns the seconds until the next line is due."""
        with self._lock:
            now = self.clock()
            due_in = self._last_time + self.every_seconds - now
            if due_in > 0:
                return due_in
            if self._begun and 0 <= self.done < self.total:
                waited = now - self._record_time
                self._emit(f"{self.line(now)}; waiting {format_duration(waited)} since the last record")
                self._last_time = now
            return self.every_seconds

    @contextlib.contextmanager
    def ticking(self) -> Iterator[ProgressLog]:
        """Keep the lines coming every ``every_seconds`` while the body runs, also when no record finishes (a
        timer thread; none when ``every_seconds`` is 0, a line after every record)."""
        if self.every_seconds <= 0:
            yield self
            return
        stop = threading.Event()

        def run() -> None:
            wait = self.every_seconds
            while not stop.wait(max(wait, 0.05)):
                wait = self.tick()

        ticker = threading.Thread(target=run, name=f"progress-{self.label}", daemon=True)
        ticker.start()
        try:
            yield self
        finally:
            stop.set()
            ticker.join(timeout=5)

    def finish(self, result: Any = None, stopped: bool = False) -> None:
        """The summary line; ``stopped``: the work ended early (an exception is on its way)."""
        with self._lock:
            self._begun = False
            if not self.total:
                return
            elapsed = self.clock() - self.started
            rate = f" ({self.done / elapsed * 60:.1f}/min)" if elapsed > 0 and self.done else ""
            outcomes = _outcomes(result) if result is not None else ""
            verb = "stopped after" if stopped else "done:"
            self._emit(f"{self.label}: {verb} {self.done}/{self.total} in {format_duration(elapsed)}{rate}"
                       + (f"; {outcomes}" if outcomes else ""))

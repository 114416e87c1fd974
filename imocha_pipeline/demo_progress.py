"""The demo's progress line for a long run: done of planned, and the ETA at the rate budget.

On a terminal it is one line rewritten in place (cut to the terminal's width); piped (a CI log, ``| tee``), it is a
line every ``every_seconds``, so a long backfill adds a few lines, not hundreds.
"""

from __future__ import annotations

import shutil
import sys
import threading
import time
from collections.abc import Callable
from typing import TextIO

from imocha_pipeline.sync.core.progress import eta_minutes, format_duration

PIPED_EVERY_SECONDS = 30.0
TTY_EVERY_SECONDS = 1.0


class ProgressLine:
    """Polls ``read()`` (-> ``(done, total)``, total 0 while nothing is planned yet) on a thread and shows it."""

    def __init__(self, read: Callable[[], tuple[int, int]], label: str, per_minute: float, *,
                 stream: TextIO | None = None, tty: bool | None = None, every_seconds: float | None = None,
                 indent: str = "   "):
        self.read = read
        self.label = label
        self.per_minute = per_minute
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.every = every_seconds or (TTY_EVERY_SECONDS if self.tty else PIPED_EVERY_SECONDS)
        self.indent = indent
        self.started = time.monotonic()
        self.lines = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-progress", daemon=True)
        self._drawn = False

    def text(self, done: int, total: int) -> str:
        elapsed = format_duration(time.monotonic() - self.started)
        if not total:
            return f"{self.label}: fetching and planning ... ({elapsed})"
        remaining = max(total - done, 0)
        eta = format_duration(eta_minutes(remaining, self.per_minute) * 60)
        return (f"{self.label}: {done}/{total} sent ({done / total:.0%}), ETA at least {eta} at the rate budget of "
                f"{self.per_minute:g}/min ({elapsed} so far)")

    def _draw(self, line: str) -> None:
        # cut to the terminal's width: a wrapped line cannot be redrawn in place
        self.stream.write("\r" + line[:max(shutil.get_terminal_size().columns, 40) - 1] + "\x1b[K")
        self.stream.flush()
        self._drawn = True

    def _print(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()
        self.lines += 1

    def _run(self) -> None:
        # Piped, nothing is printed until the run has planned (so every line carries the figures and the ETA),
        # then a line every ``every`` seconds.
        tick = self.every if self.tty else min(self.every, 1.0)
        printed_at: float | None = None
        while not self._stop.wait(tick):
            try:
                done, total = self.read()
            except Exception:  # a read racing a write is retried on the next tick
                continue
            line = self.indent + self.text(done, total)
            if self.tty:
                self._draw(line)
            elif total and (printed_at is None or time.monotonic() - printed_at >= self.every - tick / 2):
                self._print(line)
                printed_at = time.monotonic()

    def __enter__(self) -> ProgressLine:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join()
        if self._drawn:  # clear the in-place line; the summary that follows says the last word
            self.stream.write("\r\x1b[K")
            self.stream.flush()

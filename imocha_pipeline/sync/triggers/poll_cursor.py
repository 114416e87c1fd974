"""The polling sensor's cursor: how far the scan has read, the attempts requested but not staged yet (with when and
how often), and those left to a run of their day that has not read iMocha yet. Versioned JSON; anything
unusable restarts the scan at ``now - lookback`` with the reason."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from imocha_pipeline.clients.imocha.values import format_utc
from imocha_pipeline.timestamps import parse_utc

CURSOR_VERSION = 1


@dataclass(frozen=True)
class PendingAttempt:
    """An attempt requested but not staged yet: its day (partition), when it was last requested, how many times."""

    day: date
    requested_at: datetime
    tries: int = 1

    def to_json(self) -> list:
        return [self.day.isoformat(), format_utc(self.requested_at), self.tries]


@dataclass(frozen=True)
class PollCursor:
    """Where the scan stands: ``until`` (UTC), the requested-but-not-staged attempts, and the attempts
    left to a run of their day that had not read iMocha yet (day and when the poll saw them finished)."""

    until: datetime
    pending: dict[int, PendingAttempt] = field(default_factory=dict)
    waiting: dict[int, tuple[date, datetime]] = field(default_factory=dict)

    def to_json(self) -> str:
        data: dict = {
            "v": CURSOR_VERSION,
            "until": format_utc(self.until),
            "pending": {str(i): self.pending[i].to_json() for i in sorted(self.pending)},
        }
        if self.waiting:
            data["waiting"] = {str(i): [day.isoformat(), format_utc(seen)]
                               for i, (day, seen) in sorted(self.waiting.items())}
        return json.dumps(data, separators=(",", ":"))


@dataclass(frozen=True)
class CursorState:
    """A parsed cursor; ``restart_reason`` says why the scan restarts at ``now - lookback`` (None: it does not)."""

    cursor: PollCursor
    restart_reason: str | None = None


def parse_cursor(text: str | None, now: datetime, lookback: timedelta) -> CursorState:
    """Read a cursor; anything unusable restarts from ``now - lookback`` with the reason."""
    try:
        return CursorState(_read_cursor(text, now))
    except _Restart as restart:
        return CursorState(PollCursor(until=whole_seconds(now - lookback)), str(restart))


class _Restart(Exception):
    pass


def _read_cursor(text: str | None, now: datetime) -> PollCursor:
    if text is None or not text.strip():
        raise _Restart("no cursor yet")
    try:
        data = json.loads(text)
    except ValueError:
        raise _Restart("the cursor is not valid JSON") from None
    if not isinstance(data, dict):
        raise _Restart("the cursor is not a JSON object")
    if data.get("v") != CURSOR_VERSION:
        raise _Restart(f"cursor version {data.get('v')!r} is not {CURSOR_VERSION}")
    until = parse_utc(data.get("until")) if isinstance(data.get("until"), str) else None
    if until is None:
        raise _Restart(f"the cursor's 'until' is not a UTC timestamp: {data.get('until')!r}")
    if until > now:
        raise _Restart(f"the cursor's 'until' ({format_utc(until)}) is in the future")
    pending = data.get("pending", {})
    if not isinstance(pending, dict):
        raise _Restart("the cursor's 'pending' is not an object")
    try:
        parsed = {int(key): _pending_entry(value, until) for key, value in pending.items()}
    except (TypeError, ValueError):
        raise _Restart("the cursor's 'pending' holds an entry that is not <invitation id>: "
                       "[<YYYY-MM-DD>, <UTC>, <tries>] (or the older <invitation id>: <YYYY-MM-DD>)") from None
    waiting = data.get("waiting", {})
    if not isinstance(waiting, dict):
        raise _Restart("the cursor's 'waiting' is not an object")
    try:
        left = {int(key): (date.fromisoformat(day), parse_utc(seen)) for key, (day, seen) in waiting.items()}
    except (TypeError, ValueError):
        left = None
    if left is None or any(seen is None for _, seen in left.values()):
        raise _Restart("the cursor's 'waiting' holds an entry that is not <invitation id>: [<YYYY-MM-DD>, <UTC>]")
    return PollCursor(until=until, pending=parsed, waiting=left)


def _pending_entry(value: object, until: datetime) -> PendingAttempt:
    """``[day, last requested, tries]``; the older ``"<day>"`` counts as requested once, at the cursor's ``until``."""
    if isinstance(value, str):
        return PendingAttempt(date.fromisoformat(value), until, 1)
    if not isinstance(value, list) or len(value) != 3:
        raise ValueError(value)
    day, at, tries = value
    requested_at = parse_utc(at) if isinstance(at, str) else None
    if not isinstance(day, str) or requested_at is None or type(tries) is not int or tries < 1:
        raise ValueError(value)
    return PendingAttempt(date.fromisoformat(day), requested_at, tries)


def whole_seconds(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(microsecond=0)

"""One tick of the completions polling sensor, in plain Python (the Dagster sensor only wraps it).

A tick asks iMocha's Retrieve Invites (``state=completed``) for the attempts listed since the last tick,
finds those not staged yet and not requested yet, and turns them into one run request per UTC day (the
``completion_sync_job`` partition whose window returned them). An attempt it requested stays in the cursor
until it is staged, and is asked for again while it is not (DESIGN §2: no record depends on one run).

- **Cursor**: ``{"v": 1, "until": "<UTC ISO Z>", "pending": {"<invitation id>": ["<YYYY-MM-DD>",
  "<UTC ISO Z>", <tries>]}}``. ``until``: everything before it has been read at least once. ``pending``:
  attempts requested (by this sensor, or by a callback run the poll saw) but not staged yet: the day, when
  it was last requested and how many times. An entry leaves only once ``imocha_completions`` holds the
  attempt, never because time passed. The older entry shape ``"<invitation id>": "<YYYY-MM-DD>"`` is still
  read (as requested once, at the cursor's ``until``); the new shape is always written. ``waiting`` (only
  when not empty): see "a day whose run has not read iMocha yet" below. A missing, corrupt, wrong-version
  or future cursor, or a malformed entry, restarts the scan at ``now - lookback`` (never at the beginning
  of time) and the tick says why.
- **Asked for again**: a pending attempt that is still not staged (its run failed before staging it, was
  canceled, or quarantined it because iMocha's report was not ready yet, a 404) is requested again for its
  day once (a) no unfinished run of that day will still read iMocha after the last request
  (``UnfinishedRun.will_see``) and (b) its back-off has passed: ``retry`` after the first request, doubling
  with every try, at most ``retry_max``. Re-requests count against the per-tick cap after new attempts.
- **Re-read span**: each tick re-reads from ``until - max(overlap, max_attempt)`` (never before
  ``earliest``). ``overlap`` catches attempts iMocha lists a little late. ``max_attempt`` (the longest an
  attempt runs from start to finish; default 12 h, like the callbacks path's
  ``IMOCHA_PIPELINE_CALLBACK_MAX_ATTEMPT_HOURS``) is there because the spec does not say which timestamp
  Retrieve Invites filters on (specs/imocha-api.md §9, "Uncertain"). The default assumes the worse
  reading, the *start* time: an attempt then turns up, once completed, in the window of its start, which
  can be up to ``max_attempt`` before the tick that first sees it completed. Under the completion-time
  reading the overlap alone would do; the price of the default is re-reading 12 h every tick: 3 Retrieve
  Invites calls a tick instead of 1 (4 instead of 1 or 2 while the span holds a midnight, i.e. in the first
  12 h of a UTC day) at the default 6-hour windows. Lower it only once iMocha confirms it filters on the
  completion time.
- **Small calls**: the span is read in windows of at most ``window`` that never cross UTC midnight,
  so every window belongs to exactly one partition.
- **Cap**: a tick requests at most ``max_attempts`` attempts (new ones first, then re-requests) and stops
  reading once a time budget is spent or the windows read hold ``max_attempts`` attempts neither staged nor
  known; the cursor then advances only to the end of the last window read completely, so the rest comes
  next tick.
- **Run keys** (``run_key_for``): the partition and a digest of the sorted attempt ids, each with its try
  number from the second try on. Dagster launches a run key only once per sensor, ever, so a re-request
  (try n + 1) gets a key no earlier request had; a tick that is retried (Dagster drops the cursor of a
  failed tick) starts from the same cursor, so it asks for the same keys again and Dagster launches each
  only once.
- **Callbacks**: attempts a callback run was already requested for (``callback_inbox.run_key`` set) are
  not requested by the tick that first sees them; they go into ``pending`` (requested when the first such
  callback arrived, at the latest now; 1 try), so the poll asks for them again if they are not staged later.
- **A day whose run has not read iMocha yet**: new attempts of a day whose ``completion_sync_job`` run is
  queued or starting are left to that run (``waiting``: the day and when the poll saw them finished)
  instead of asking for a second run, and requested after all if it ends without staging them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

from sqlalchemy.engine import Engine

from imocha_pipeline.clients.imocha import ImochaAttempt, ImochaClient
from imocha_pipeline.clients.imocha.values import format_utc
from imocha_pipeline.settings import catalogue
from imocha_pipeline.sync.completions.extract import staged_invitation_ids
from imocha_pipeline.sync.triggers.poll_cursor import PendingAttempt, PollCursor, parse_cursor, whole_seconds
from imocha_pipeline.sync.triggers.runs import (
    CompletionRunRequest,
    UnfinishedRuns,
    UnfinishedRunsByDay,
    callback_requested_at,
    run_key_for,
)

logger = logging.getLogger(__name__)

RUN_KEY_PREFIX = "completions"


# ---------------------------------------------------------------- settings


@dataclass(frozen=True)
class PollSettings:
    """How the completions sensor polls; every value is an ``IMOCHA_PIPELINE_POLL_*`` setting (the defaults are
    the settings' defaults)."""

    interval_seconds: int = catalogue.IMOCHA_PIPELINE_POLL_INTERVAL_SECONDS.default
    overlap: timedelta = timedelta(minutes=catalogue.IMOCHA_PIPELINE_POLL_OVERLAP_MINUTES.default)
    lookback: timedelta = timedelta(hours=catalogue.IMOCHA_PIPELINE_POLL_LOOKBACK_HOURS.default)
    window: timedelta = timedelta(hours=catalogue.IMOCHA_PIPELINE_POLL_WINDOW_HOURS.default)
    max_attempts: int = catalogue.IMOCHA_PIPELINE_POLL_MAX_ATTEMPTS.default
    read_timeout_seconds: float = catalogue.IMOCHA_PIPELINE_POLL_READ_TIMEOUT_SECONDS.default
    time_budget_seconds: float = catalogue.IMOCHA_PIPELINE_POLL_TIME_BUDGET_SECONDS.default
    max_attempt: timedelta = timedelta(minutes=catalogue.IMOCHA_PIPELINE_POLL_MAX_ATTEMPT_MINUTES.default)
    """``IMOCHA_PIPELINE_POLL_MAX_ATTEMPT_MINUTES`` (720): the longest an attempt runs from start to finish; each
    tick re-reads this much before ``until``. The default assumes Retrieve Invites may filter on the *start* time
    (the spec does not say): an attempt then appears, once completed, in the window of its start. 12 h, like
    ``IMOCHA_PIPELINE_CALLBACK_MAX_ATTEMPT_HOURS``, so both paths assume the same longest attempt. It costs 2 more
    Retrieve Invites calls a tick at 6-hour windows; set it to the overlap once iMocha is known to filter on the
    completion time."""
    retry: timedelta = timedelta(seconds=catalogue.IMOCHA_PIPELINE_POLL_RETRY_SECONDS.default)
    """``IMOCHA_PIPELINE_POLL_RETRY_SECONDS`` (60): the back-off after the first request of an attempt still not
    staged; it doubles with every further request."""
    retry_max: timedelta = timedelta(seconds=catalogue.IMOCHA_PIPELINE_POLL_RETRY_MAX_SECONDS.default)
    """``IMOCHA_PIPELINE_POLL_RETRY_MAX_SECONDS`` (3600): the longest back-off between two requests."""

    @classmethod
    def from_env(cls) -> PollSettings:
        return cls(
            interval_seconds=catalogue.IMOCHA_PIPELINE_POLL_INTERVAL_SECONDS.value(),
            overlap=timedelta(minutes=catalogue.IMOCHA_PIPELINE_POLL_OVERLAP_MINUTES.value()),
            lookback=timedelta(hours=catalogue.IMOCHA_PIPELINE_POLL_LOOKBACK_HOURS.value()),
            window=timedelta(hours=catalogue.IMOCHA_PIPELINE_POLL_WINDOW_HOURS.value()),
            max_attempts=catalogue.IMOCHA_PIPELINE_POLL_MAX_ATTEMPTS.value(),
            read_timeout_seconds=catalogue.IMOCHA_PIPELINE_POLL_READ_TIMEOUT_SECONDS.value(),
            time_budget_seconds=catalogue.IMOCHA_PIPELINE_POLL_TIME_BUDGET_SECONDS.value(),
            max_attempt=timedelta(minutes=catalogue.IMOCHA_PIPELINE_POLL_MAX_ATTEMPT_MINUTES.value()),
            retry=timedelta(seconds=catalogue.IMOCHA_PIPELINE_POLL_RETRY_SECONDS.value()),
            retry_max=timedelta(seconds=catalogue.IMOCHA_PIPELINE_POLL_RETRY_MAX_SECONDS.value()),
        )

    @property
    def reread(self) -> timedelta:
        """How far before ``until`` each tick reads again: ``max(overlap, max_attempt)``."""
        return max(self.overlap, self.max_attempt)

    def backoff(self, tries: int) -> timedelta:
        """How long after its last request an attempt requested ``tries`` times waits before the next one."""
        seconds = self.retry.total_seconds() * 2.0 ** min(max(tries, 1) - 1, 64)
        return min(timedelta(seconds=min(seconds, self.retry_max.total_seconds())), self.retry_max)


def tick_client(base_url: str, api_key: str, settings: PollSettings, staging_url: str | None = "") -> ImochaClient:
    """An iMocha client sized for a sensor tick: a short read timeout and few, short retries.

    Dagster cancels a tick after 60 s (``DAGSTER_SENSOR_GRPC_TIMEOUT_SECONDS``); a failed call fails
    the tick, its cursor is discarded, and the next tick simply tries again. Its calls draw from iMocha's
    shared budget (``IMOCHA_RATE_LIMIT_PER_MINUTE``) in the staging database at ``staging_url`` (default:
    the pipeline's, IMOCHA_PIPELINE_STAGING_DB_URL), like every other iMocha call.
    """
    from imocha_pipeline.clients.http import RetryPolicy, Timeouts
    from imocha_pipeline.connections import shared_imocha_client

    return shared_imocha_client(base_url, api_key, staging_url, session_options={
        "timeouts": Timeouts(connect=5.0, read=settings.read_timeout_seconds),
        "retry": RetryPolicy(max_attempts=2, backoff_max=2.0, max_retry_after=5.0)})


# ---------------------------------------------------------------- windows


def scan_windows(start: datetime, end: datetime, size: timedelta) -> list[tuple[datetime, datetime]]:
    """``[start, end)`` cut into windows of at most ``size`` that never cross UTC midnight."""
    windows = []
    low = start
    while low < end:
        midnight = datetime(low.year, low.month, low.day, tzinfo=UTC) + timedelta(days=1)
        high = min(end, low + size, midnight)
        windows.append((low, high))
        low = high
    return windows


# ---------------------------------------------------------------- the tick


class AttemptSource(Protocol):
    """What a tick needs from iMocha (``ImochaClient`` fits)."""

    def list_attempts(self, start: datetime, end: datetime, state: str = "completed") -> list[ImochaAttempt]: ...


@dataclass(frozen=True)
class PollOutcome:
    """What one tick decided, with the figures shown in the tick log."""

    requests: list[CompletionRunRequest]
    cursor: PollCursor
    skip_reason: str | None
    restart_reason: str | None
    scan_start: datetime
    scan_end: datetime
    windows_read: int
    windows_total: int
    attempts_seen: int
    already_staged: int
    already_requested: int
    capped: bool
    duration_seconds: float
    re_requested: int = 0
    """Attempts requested again (requested before, still not staged) among ``requests``."""
    re_requests_deferred: int = 0
    """Attempts due for another request that the per-tick cap left to the next tick."""

    @property
    def cursor_json(self) -> str:
        return self.cursor.to_json()

    @property
    def new_attempts(self) -> int:
        return sum(len(request.invitation_ids) for request in self.requests) - self.re_requested

    def summary(self) -> str:
        parts = [f"read {self.windows_read}/{self.windows_total} windows from {format_utc(self.scan_start)} "
                 f"to {format_utc(self.cursor.until)}",
                 f"{self.attempts_seen} finished attempts",
                 f"{self.already_staged} already staged",
                 f"{self.already_requested} already requested",
                 f"{self.new_attempts} new and {self.re_requested} re-requested in {len(self.requests)} run(s)",
                 f"{len(self.cursor.pending)} pending (requested, not staged yet)",
                 f"{len(self.cursor.waiting)} left to a run not started yet",
                 f"{self.duration_seconds:.2f}s"]
        text = "; ".join(parts)
        if self.cursor.until < self.scan_end:
            why = "per-tick cap reached" if self.capped else "stopped early"
            text += f"; {why}, the rest from {format_utc(self.cursor.until)} comes next tick"
        if self.re_requests_deferred:
            text += f"; per-tick cap reached, {self.re_requests_deferred} due re-request(s) come next tick"
        if self.restart_reason:
            text += f"; restarted the scan at now - look-back: {self.restart_reason}"
        return text


def poll_completions(client: AttemptSource, engine: Engine, cursor_text: str | None, *,
                     now: datetime | None = None, settings: PollSettings | None = None,
                     earliest: datetime | None = None, unfinished_runs: UnfinishedRuns | None = None,
                     monotonic: Callable[[], float] = time.monotonic) -> PollOutcome:
    """Run one polling tick: read the new windows, pick the attempts to request, and move the cursor.

    ``earliest`` (the first partition's start) bounds every scan. ``now`` defaults to the current UTC time.
    ``unfinished_runs`` (called at most once, with the days concerned) lists the runs of those days that have
    not finished: new attempts of a day whose run has not read iMocha yet are left to it (``waiting`` in the
    cursor) instead of asking for a second run, and requested after all if it ends without staging them; a
    pending attempt is not requested again while a run of its day will still read iMocha after its last request.
    """
    started = monotonic()
    settings = settings or PollSettings()
    now = whole_seconds(now or datetime.now(UTC))
    state = parse_cursor(cursor_text, now, settings.lookback)
    cursor = state.cursor
    scan_start = cursor.until if state.restart_reason else whole_seconds(cursor.until - settings.reread)
    if earliest is not None:
        scan_start = min(now, max(scan_start, earliest))
    windows = scan_windows(scan_start, now, settings.window)

    known = set(cursor.pending) | set(cursor.waiting)
    staged = staged_invitation_ids(engine, sorted(known))
    fetched: list[tuple[tuple[datetime, datetime], list[ImochaAttempt]]] = []
    candidates = 0
    for window in windows:
        if fetched and (candidates >= settings.max_attempts
                        or monotonic() - started > settings.time_budget_seconds):
            break
        attempts = client.list_attempts(window[0], window[1], state="completed")
        fetched.append((window, attempts))
        # Only attempts neither staged nor known count towards the cap: the re-read span holds many staged ones.
        unknown = sorted({a.test_invitation_id for a in attempts} - known)
        staged |= staged_invitation_ids(engine, unknown)
        candidates += sum(1 for i in unknown if i not in staged)

    seen = sorted({a.test_invitation_id for _, attempts in fetched for a in attempts})
    by_callback = callback_requested_at(engine, [i for i in seen if i not in staged and i not in known])

    chosen: dict[date, list[int]] = {}
    taken: set[int] = set()
    from_callbacks: dict[int, PendingAttempt] = {}
    complete_until = cursor.until if not state.restart_reason else scan_start
    capped = False
    for index, (window, attempts) in enumerate(fetched):
        day = window[0].date()
        listed = {a.test_invitation_id for a in attempts}
        for invitation_id in sorted(listed & by_callback.keys()):
            # A callback run was requested for it: not requested now, but asked for again if never staged.
            arrived = whole_seconds(min(now, by_callback[invitation_id]))
            from_callbacks.setdefault(invitation_id, PendingAttempt(day, arrived, 1))
        fresh = sorted(listed - staged - known - by_callback.keys() - taken)
        room = settings.max_attempts - len(taken)
        if len(fresh) > room:
            fresh, capped = fresh[:room], True
        if fresh:
            chosen.setdefault(day, []).extend(fresh)
            taken.update(fresh)
        if capped:
            break
        complete_until = max(complete_until, window[1])
        if len(taken) >= settings.max_attempts and index + 1 < len(windows):
            capped = True
            break

    new_until = complete_until
    pending = {i: p for i, p in cursor.pending.items() if i not in staged}
    due = sorted((i for i, p in pending.items() if now >= p.requested_at + settings.backoff(p.tries)),
                 key=lambda i: (pending[i].requested_at, i))
    still_waiting = {i: w for i, w in cursor.waiting.items() if i not in staged}
    runs = UnfinishedRunsByDay(unfinished_runs)
    runs.look_up(set(chosen) | {day for day, _ in still_waiting.values()} | {pending[i].day for i in due})
    waiting = _leave_to_unfinished_runs(chosen, still_waiting, runs, now)
    for day, ids in chosen.items():
        pending.update(dict.fromkeys(ids, PendingAttempt(day, now, 1)))

    # Requested before and still not staged: again, once no run of the day will still read iMocha after the
    # last request (the run failed, was canceled, or ran without it) and the back-off has passed. Re-requests
    # take what room the per-tick cap leaves after the new attempts.
    again = [i for i in due if not runs.will_see(pending[i].day, pending[i].requested_at)]
    room = max(0, settings.max_attempts - len(taken))
    again, deferred = again[:room], len(again) - min(room, len(again))
    tries: dict[int, int] = {}
    for invitation_id in again:
        entry = pending[invitation_id]
        tries[invitation_id] = entry.tries + 1
        chosen.setdefault(entry.day, []).append(invitation_id)
        pending[invitation_id] = PendingAttempt(entry.day, now, entry.tries + 1)
    for invitation_id, entry in from_callbacks.items():
        pending.setdefault(invitation_id, entry)

    requests = [CompletionRunRequest(day.isoformat(), run_key_for(RUN_KEY_PREFIX, day, ids, tries),
                                     tuple(sorted(ids)))
                for day, ids in sorted(chosen.items())]
    skip_reason = None
    if not requests:
        listed = f"all {len(seen)} listed are already staged or requested" if seen else "iMocha listed none"
        skip_reason = f"No new finished attempts since {format_utc(scan_start)}: {listed}"
        if waiting:
            days = ", ".join(sorted({day.isoformat() for day, _ in waiting.values()}))
            skip_reason = (f"No run needed: {len(waiting)} finished attempt(s) left to the completion_sync_job "
                           f"run(s) of {days} that have not read iMocha yet")
        if pending:
            skip_reason += (f"; {len(pending)} requested attempt(s) not staged yet, asked for again once their "
                            "back-off has passed and no run of their day is left to stage them")
    outcome = PollOutcome(
        requests=requests,
        cursor=PollCursor(until=new_until, pending=pending, waiting=waiting),
        skip_reason=skip_reason,
        restart_reason=state.restart_reason,
        scan_start=scan_start,
        scan_end=now,
        windows_read=len(fetched),
        windows_total=len(windows),
        attempts_seen=len(seen),
        already_staged=len(staged & set(seen)),
        already_requested=len((known | by_callback.keys()) & (set(seen) - staged)),
        capped=capped,
        duration_seconds=monotonic() - started,
        re_requested=len(again),
        re_requests_deferred=deferred,
    )
    logger.info("completions poll: %s", outcome.summary())
    return outcome


def _leave_to_unfinished_runs(chosen: dict[date, list[int]], still_waiting: dict[int, tuple[date, datetime]],
                              runs: UnfinishedRunsByDay, now: datetime) -> dict[int, tuple[date, datetime]]:
    """Move from ``chosen`` to the returned waiting list the days a run will still read; release the rest.

    A new attempt waits when a run of its day has not started yet (it lists everything finished before it
    starts). A waiting attempt stays while a run of its day started after the poll saw it finished, or has not
    started; once none is left and the attempt is still not staged (the run failed, was canceled or missed
    it), it goes back into ``chosen`` and is requested this tick. ``runs`` has looked up every day concerned.
    """
    waiting: dict[int, tuple[date, datetime]] = {}
    for day in [day for day in chosen if runs.will_see(day, now)]:
        waiting.update(dict.fromkeys(chosen.pop(day), (day, now)))
    for invitation_id, (day, seen_at) in sorted(still_waiting.items()):
        if runs.will_see(day, seen_at):
            waiting[invitation_id] = (day, seen_at)
        else:
            chosen.setdefault(day, []).append(invitation_id)
    return waiting

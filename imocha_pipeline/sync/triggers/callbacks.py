"""iMocha callbacks (spec §8): parse and store deliveries, turn the inbox into runs, replay missed ones.

Flow: iMocha POSTs a PascalCase payload to ``/imocha/callbacks/{token}`` (``callbacks_server``); the
endpoint only validates it and stores one ``callback_inbox`` row per delivery, so it answers fast and
never loses a delivery to a slow API. The callbacks sensor then turns unprocessed final callbacks
(Complete / Test Left / Terminated) into ``completion_sync_job`` runs. ``In Progress`` (and any other
non-final status) is stored already processed: nothing to sync yet.

Which partition: iMocha's Retrieve Invites (what the run reads) files an attempt under its
*completion* time, but the payload only carries the *start* (``AttemptedOnUtc``). The completion lies
between the start and the delivery (``received_at``), and no later than the start plus the longest
attempt (``IMOCHA_PIPELINE_CALLBACK_MAX_ATTEMPT_HOURS``, default 12). Each UTC day of that span is
requested: usually one day, two when the attempt ran over midnight. Neither timestamp alone is
reliable: the start misses attempts that finish after midnight, and ``received_at`` is days late for
a replayed callback.

Inbox row lifecycle (the sensor's cursor confirms what Dagster accepted):
received (``processed_at`` null) → requested by a tick (its run keys go into that tick's cursor) →
confirmed by the next tick, which reads the persisted cursor and sets ``processed_at`` and ``run_key``.
Dagster stores a cursor only after the tick's runs were submitted, so a tick that fails changes
nothing: its rows are still unprocessed and the next tick requests them again with the same run keys.

No second run for a day whose run has not read iMocha yet: a ``completion_sync_job`` run of the day that
is queued or starting (or started after the callback arrived) reads Retrieve Invites for the whole day
when it gets there, so it will stage the attempt. A tick requests no run for such a day and leaves the
row *unprocessed* (not in the cursor, no run key): each later tick looks at it again, closes it once the
attempt is staged (like any callback of a staged attempt), and requests the day as usual once no such
run is left (the run failed, was canceled, or finished without the attempt). Nothing is lost, and the
run keys stay a function of the day and the rows requested.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from imocha_pipeline import staging
from imocha_pipeline.clients.errors import BadRequestError
from imocha_pipeline.clients.imocha import ProcessCallbacksResult
from imocha_pipeline.clients.imocha.contract import PROCESS_CALLBACKS_BATCH
from imocha_pipeline.clients.imocha.values import format_utc, normalize_status, to_number
from imocha_pipeline.settings import catalogue
from imocha_pipeline.sync.completions.extract import staged_invitation_ids
from imocha_pipeline.sync.triggers.polling import AttemptSource
from imocha_pipeline.sync.triggers.runs import UnfinishedRuns, UnfinishedRunsByDay, run_key_for
from imocha_pipeline.timestamps import parse_utc

logger = logging.getLogger(__name__)

FINAL_STATUSES = ("Complete", "Test Left", "Terminated")
IN_PROGRESS = "In Progress"
CURSOR_VERSION = 1
RUN_KEY_PREFIX = "callbacks"
MAX_PAGES_PER_TICK = 10
"""Pages of ``max_rows_per_tick`` unprocessed inbox rows one tick reads at most."""

_TEXT_FIELDS = ("CandidateEmailId", "AttemptedOn", "AttemptedOnUtc", "ReportPDFUrl", "PerformanceCategory",
                "BaseImgUrl")
_NUMBER_FIELDS = ("TotalScore", "CandidateScore")


@dataclass(frozen=True)
class CallbackSettings:
    """The callbacks sensor's settings (``IMOCHA_PIPELINE_CALLBACK_*``; the defaults are the settings' defaults)."""

    sensor_interval_seconds: int = catalogue.IMOCHA_PIPELINE_CALLBACK_SENSOR_INTERVAL_SECONDS.default
    max_attempt: timedelta = timedelta(hours=catalogue.IMOCHA_PIPELINE_CALLBACK_MAX_ATTEMPT_HOURS.default)
    max_rows_per_tick: int = catalogue.IMOCHA_PIPELINE_CALLBACK_MAX_PER_TICK.default

    @classmethod
    def from_env(cls) -> CallbackSettings:
        return cls(
            sensor_interval_seconds=catalogue.IMOCHA_PIPELINE_CALLBACK_SENSOR_INTERVAL_SECONDS.value(),
            max_attempt=timedelta(hours=catalogue.IMOCHA_PIPELINE_CALLBACK_MAX_ATTEMPT_HOURS.value()),
            max_rows_per_tick=catalogue.IMOCHA_PIPELINE_CALLBACK_MAX_PER_TICK.value(),
        )


# ---------------------------------------------------------------- payload


class CallbackPayloadError(ValueError):
    """The delivery is not a callback we can use; ``problems`` lists every reason."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


@dataclass(frozen=True)
class Callback:
    """One validated delivery: the invitation, its normalised status, the start time and the payload as sent."""

    test_invitation_id: int
    status: str
    attempted_on: datetime | None
    payload: dict[str, Any] = field(compare=False, repr=False)

    @property
    def is_final(self) -> bool:
        return self.status in FINAL_STATUSES


def parse_callback(body: bytes | str) -> Callback:
    """Validate a §8.2 payload (keys matched case-insensitively) or raise ``CallbackPayloadError``."""
    try:
        data = json.loads(body.decode("utf-8-sig") if isinstance(body, bytes) else body)
    except (UnicodeDecodeError, ValueError):
        raise CallbackPayloadError(["the body is not valid JSON"]) from None
    if not isinstance(data, dict):
        raise CallbackPayloadError(["the body must be a JSON object"])
    fields = {str(key).lower(): value for key, value in data.items()}
    problems: list[str] = []

    invitation_id = _whole_number(fields.get("testinvitationid"))
    if "testinvitationid" not in fields:
        problems.append("TestInvitationId is missing")
    elif invitation_id is None or invitation_id <= 0:
        problems.append(f"TestInvitationId must be a positive whole number, got {_show(fields['testinvitationid'])}")
    status = fields.get("status")
    if not isinstance(status, str) or not status.strip():
        problems.append(f"Status must be a non-empty string, got {_show(status)}")
    for name in _TEXT_FIELDS:
        value = fields.get(name.lower())
        if value is not None and not isinstance(value, str):
            problems.append(f"{name} must be a string or null, got {_show(value)}")
    for name in _NUMBER_FIELDS:
        value = fields.get(name.lower())
        if value is not None and to_number(value) is None:
            problems.append(f"{name} must be a number or null, got {_show(value)}")
    attempted_on = None
    raw_start = fields.get("attemptedonutc")
    if isinstance(raw_start, str) and raw_start.strip():
        attempted_on = parse_utc(raw_start)
        if attempted_on is None:
            problems.append(f"AttemptedOnUtc must look like 2020-10-09T13:21:53, got {_show(raw_start)}")
    if problems:
        raise CallbackPayloadError(problems)
    assert invitation_id is not None and isinstance(status, str)
    return Callback(invitation_id, normalize_status(status) or status.strip(), attempted_on, data)


def _whole_number(value: Any) -> int | None:
    number = to_number(value)
    if number is None or not math.isfinite(number) or number != int(number):
        return None
    return int(number)


def _show(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 60 else text[:60] + "…"


def store_callback(engine: Engine, callback: Callback, received_at: datetime | None = None) -> int:
    """Store one delivery in ``callback_inbox`` and return its row id; non-final ones are stored processed."""
    received_at = received_at or staging.utcnow()
    row = {
        "test_invitation_id": callback.test_invitation_id,
        "status": callback.status,
        "payload": callback.payload,
        "received_at": received_at,
        "processed_at": None if callback.is_final else received_at,
        "run_key": None,
    }
    with engine.begin() as conn:
        result = conn.execute(staging.callback_inbox.insert().values(**row))
        return int(result.inserted_primary_key[0])


def store_callback_once(engine: Engine, callback: Callback) -> tuple[int, bool]:
    """(row id, True) after storing a delivery, or (the earlier row's id, False) when a delivery with the same
    invitation, status and payload is already in the inbox: a replayed or retried callback is stored once.
    Callers serialise concurrent calls (the endpoint holds a lock), so two copies arriving together also
    make one row."""
    inbox = staging.callback_inbox
    with engine.connect() as conn:
        earlier = conn.execute(
            sa.select(inbox.c.id, inbox.c.payload)
            .where(inbox.c.test_invitation_id == callback.test_invitation_id, inbox.c.status == callback.status)
            .order_by(inbox.c.id)
        ).all()
    for row in earlier:
        if row.payload == callback.payload:
            return int(row.id), False
    return store_callback(engine, callback), True


# ---------------------------------------------------------------- partitions


def candidate_days(attempted_on: datetime | None, received_at: datetime, max_attempt: timedelta) -> list[date]:
    """The UTC days the attempt may have finished on: from its start to min(delivery, start + max_attempt)."""
    start = attempted_on if attempted_on is not None and attempted_on <= received_at else received_at
    end = min(received_at, start + max_attempt)
    first, last = start.astimezone(UTC).date(), end.astimezone(UTC).date()
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


# ---------------------------------------------------------------- the sensor tick


@dataclass(frozen=True)
class InboxCursor:
    """``{"v": 1, "requested": {run key: [inbox ids]}}``: what the last tick asked Dagster for."""

    requested: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({"v": CURSOR_VERSION,
                           "requested": {key: list(ids) for key, ids in sorted(self.requested.items())}},
                          separators=(",", ":"))


def parse_inbox_cursor(text: str | None) -> tuple[InboxCursor, str | None]:
    """The cursor and, when it was unusable, why (the tick then confirms nothing and re-requests instead)."""
    if text is None or not text.strip():
        return InboxCursor(), None
    try:
        data = json.loads(text)
    except ValueError:
        return InboxCursor(), "the cursor is not valid JSON"
    if not isinstance(data, dict) or data.get("v") != CURSOR_VERSION or not isinstance(data.get("requested"), dict):
        return InboxCursor(), f"the cursor is not a version-{CURSOR_VERSION} inbox cursor"
    try:
        requested = {str(key): tuple(int(i) for i in ids) for key, ids in data["requested"].items()}
    except (TypeError, ValueError):
        return InboxCursor(), "the cursor's 'requested' holds something other than lists of inbox ids"
    return InboxCursor(requested), None


@dataclass(frozen=True)
class CallbackRunRequest:
    """One ``completion_sync_job`` run for the final callbacks that may belong to this UTC day."""

    partition_key: str
    run_key: str
    inbox_ids: tuple[int, ...]
    invitation_ids: tuple[int, ...]


@dataclass(frozen=True)
class InboxTick:
    """What one callbacks-sensor tick decided."""

    requests: list[CallbackRunRequest]
    cursor: InboxCursor
    skip_reason: str | None
    confirmed: int
    closed_without_run: int
    cursor_problem: str | None = None
    waiting: int = 0
    """Final callbacks left unprocessed because a run already queued (or started after they arrived) covers a day."""
    waiting_days: tuple[str, ...] = ()
    """The days not requested again for that reason."""

    def summary(self) -> str:
        text = (f"{sum(len(r.inbox_ids) for r in self.requests)} final callbacks into {len(self.requests)} run(s); "
                f"{self.confirmed} confirmed from the last tick; {self.closed_without_run} closed without a run "
                "(already staged, not final, or outside the partitions)")
        if self.waiting:
            text += (f"; {self.waiting} left for the run(s) already queued or in progress of "
                     f"{', '.join(self.waiting_days)}")
        if self.cursor_problem:
            text += f"; ignored the cursor: {self.cursor_problem}"
        return text


def plan_inbox_tick(engine: Engine, cursor_text: str | None, *, now: datetime | None = None,
                    first_day: date | None = None, settings: CallbackSettings | None = None,
                    unfinished_runs: UnfinishedRuns | None = None) -> InboxTick:
    """Confirm the last tick's requests, then request runs for the unprocessed final callbacks.

    Callbacks of attempts already staged, non-final ones, and ones whose days fall outside
    ``[first_day, today]`` are closed (processed, no run key) without a run.

    At most ``max_rows_per_tick`` final callbacks are requested a tick; rows waiting for a run do not count, so
    the tick reads on past them, a page at a time.

    ``unfinished_runs`` (called once per page with the days not looked up yet, so usually once a tick) lists
    the runs of those days that have not finished. A day with a run that will still read iMocha after the
    callback arrived (``UnfinishedRun.will_see``) is not requested for it, and the row stays unprocessed and
    out of the cursor until its attempt is staged or no such run is left; a row requested for only some of
    its days likewise.
    """
    settings = settings or CallbackSettings()
    now = now or staging.utcnow()
    cap = settings.max_rows_per_tick
    cursor, cursor_problem = parse_inbox_cursor(cursor_text)
    inbox = staging.callback_inbox
    with engine.begin() as conn:
        confirmed = _confirm(conn, cursor.requested, now)

    runs = UnfinishedRunsByDay(unfinished_runs)
    by_day: dict[date, list[Any]] = {}
    waiting: set[int] = set()
    waiting_days: set[str] = set()
    closed = requested_rows = 0
    after_id = 0
    # Rows left waiting for a queued run stay unprocessed; reading on past them (a page at a time, at most
    # MAX_PAGES_PER_TICK) keeps a backlog of them from holding back newer callbacks until that run ends.
    for _page in range(MAX_PAGES_PER_TICK):
        with engine.begin() as conn:
            rows = conn.execute(
                sa.select(inbox.c.id, inbox.c.test_invitation_id, inbox.c.status, inbox.c.payload,
                          inbox.c.received_at)
                .where(inbox.c.processed_at.is_(None), inbox.c.id > after_id).order_by(inbox.c.id).limit(cap)
            ).all()
        if not rows:
            break
        after_id = rows[-1].id
        final = [row for row in rows if row.status in FINAL_STATUSES]
        staged = staged_invitation_ids(engine, sorted({row.test_invitation_id for row in final}))
        close = [row.id for row in rows if row.status not in FINAL_STATUSES or row.test_invitation_id in staged]
        days_of: dict[int, list[date]] = {}
        for row in final:
            if row.test_invitation_id in staged:
                continue
            days = [day for day in candidate_days(_start_of(row.payload), row.received_at, settings.max_attempt)
                    if (first_day is None or day >= first_day) and day <= now.date()]
            if not days:
                logger.warning("callback inbox row %s (invitation %s) falls outside the partitions; closed without "
                               "a run", row.id, row.test_invitation_id)
                close.append(row.id)
            days_of[row.id] = days
        with engine.begin() as conn:
            closed += _mark(conn, close, now, None)

        runs.look_up(day for days in days_of.values() for day in days)
        for row in final:
            if requested_rows >= cap:
                break  # the rest comes next tick
            requested = False
            for day in days_of.get(row.id, ()):
                if runs.will_see(day, row.received_at):
                    waiting.add(row.id)
                    waiting_days.add(day.isoformat())
                else:
                    by_day.setdefault(day, []).append(row)
                    requested = True
            requested_rows += requested
        if requested_rows >= cap or len(rows) < cap:
            break
    requests = [
        CallbackRunRequest(
            partition_key=day.isoformat(),
            run_key=run_key_for(RUN_KEY_PREFIX, day, [row.id for row in group]),
            inbox_ids=tuple(sorted(row.id for row in group)),
            invitation_ids=tuple(sorted({row.test_invitation_id for row in group})),
        )
        for day, group in sorted(by_day.items())
    ]
    # Only rows requested for every one of their days are confirmed (processed) by the next tick; a row one
    # of whose days waits for an unfinished run stays unprocessed, so it is looked at again if that run fails.
    cursor = InboxCursor({r.run_key: tuple(i for i in r.inbox_ids if i not in waiting) for r in requests})
    skip_reason = None
    if not requests:
        skip_reason = "No unprocessed final callbacks in the inbox"
        if waiting:
            skip_reason = (f"{len(waiting)} final callback(s) wait for the completion_sync_job run(s) already queued "
                           f"or in progress of {', '.join(sorted(waiting_days))}; no new run needed")
    return InboxTick(requests, cursor, skip_reason, confirmed, closed, cursor_problem,
                     waiting=len(waiting), waiting_days=tuple(sorted(waiting_days)))


def _start_of(payload: Any) -> datetime | None:
    if not isinstance(payload, Mapping):
        return None
    for key, value in payload.items():
        if str(key).lower() == "attemptedonutc":
            return parse_utc(value)
    return None


def _confirm(conn: Connection, requested: Mapping[str, Iterable[int]], now: datetime) -> int:
    """Mark the rows of runs Dagster accepted as processed with their run key(s); idempotent."""
    keys_of: dict[int, list[str]] = {}
    for key, ids in requested.items():
        for inbox_id in ids:
            keys_of.setdefault(inbox_id, []).append(key)
    by_keys: dict[str, list[int]] = {}
    for inbox_id, keys in keys_of.items():
        by_keys.setdefault(" ".join(sorted(keys)), []).append(inbox_id)
    return sum(_mark(conn, ids, now, keys) for keys, ids in by_keys.items())


def _mark(conn: Connection, ids: Sequence[int], now: datetime, run_key: str | None) -> int:
    inbox = staging.callback_inbox
    count = 0
    for start in range(0, len(ids), 900):
        chunk = list(ids[start:start + 900])
        result = conn.execute(inbox.update()
                              .where(inbox.c.id.in_(chunk), inbox.c.processed_at.is_(None))
                              .values(processed_at=now, run_key=run_key))
        count += result.rowcount or 0
    return count


# ---------------------------------------------------------------- replay


@dataclass(frozen=True)
class ReplayReport:
    """The outcome of a replay: which finished attempts had no final callback, and what iMocha said."""

    start: datetime
    end: datetime
    finished: int
    missing: tuple[int, ...]
    successful: tuple[int, ...] = ()
    failed: tuple[int, ...] = ()
    errors: tuple[str, ...] = ()

    def summary(self) -> str:
        text = (f"{self.finished} attempts finished between {format_utc(self.start)} and {format_utc(self.end)}; "
                f"{len(self.missing)} had no final callback; iMocha queued {len(self.successful)} again, "
                f"refused {len(self.failed)}")
        if self.failed:
            text += " (an attempt invited without a callback URL cannot be replayed)"
        return text


class ReplayClient(AttemptSource, Protocol):
    """What a replay needs from iMocha: Retrieve Invites and Process Callbacks (``ImochaClient`` fits)."""

    def process_callbacks(self, invitation_ids: Iterable[int]) -> ProcessCallbacksResult: ...


def final_callback_ids(engine: Engine, ids: Sequence[int]) -> set[int]:
    """Of ``ids``, those with at least one final callback in the inbox."""
    found: set[int] = set()
    inbox = staging.callback_inbox
    with engine.connect() as conn:
        for start in range(0, len(ids), 900):
            chunk = list(ids[start:start + 900])
            found |= {row[0] for row in conn.execute(
                sa.select(inbox.c.test_invitation_id).distinct()
                .where(inbox.c.test_invitation_id.in_(chunk), inbox.c.status.in_(FINAL_STATUSES)))}
    return found


def missing_callback_ids(client: AttemptSource, engine: Engine, start: datetime,
                         end: datetime) -> tuple[int, list[int]]:
    """(finished attempts in ``[start, end)``, the ids among them with no final callback in the inbox)."""
    ids = sorted({attempt.test_invitation_id for attempt in client.list_attempts(start, end, state="completed")})
    arrived = final_callback_ids(engine, ids)
    return len(ids), [i for i in ids if i not in arrived]


def replay_missed_callbacks(client: ReplayClient, engine: Engine, *, since: timedelta, now: datetime | None = None,
                            dry_run: bool = False) -> ReplayReport:
    """Ask iMocha (``POST /v3/callbacks/process``, 100 ids a call) to re-send the final callbacks that never
    arrived for attempts finished in the last ``since``. ``dry_run`` only finds them.

    iMocha queues the ids and delivers to each invitation's registered callback URL shortly after. A
    call it refuses (e.g. an id it does not know) fails only that batch; the reason is in ``errors``.
    """
    end = now or staging.utcnow()
    start = end - since
    finished, missing = missing_callback_ids(client, engine, start, end)
    if dry_run or not missing:
        return ReplayReport(start, end, finished, tuple(missing))
    successful: list[int] = []
    failed: list[int] = []
    errors: list[str] = []
    for offset in range(0, len(missing), PROCESS_CALLBACKS_BATCH):
        batch = missing[offset:offset + PROCESS_CALLBACKS_BATCH]
        try:
            outcome = client.process_callbacks(batch)
        except BadRequestError as exc:
            failed.extend(batch)
            errors.append(str(exc))
            continue
        successful.extend(outcome.successful)
        failed.extend(outcome.failed)
    report = ReplayReport(start, end, finished, tuple(missing), tuple(successful), tuple(failed), tuple(errors))
    logger.info("callback replay: %s", report.summary())
    return report

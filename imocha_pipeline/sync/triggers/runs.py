"""The runs the completion sensors ask for and the runs they must wait for: unfinished ``completion_sync_job`` runs
of a day (from the Dagster instance, through a callable), the run requests themselves and their run keys, and the
attempts a callback already asked for."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from imocha_pipeline import staging


@dataclass(frozen=True)
class UnfinishedRun:
    """A ``completion_sync_job`` run of one day that has not finished (what the Dagster instance says).

    ``started_at`` is None while it is queued or starting: it has not read iMocha yet.
    """

    partition_key: str
    run_id: str
    started_at: datetime | None = None

    def will_see(self, finished_by: datetime) -> bool:
        """Whether this run reads Retrieve Invites after ``finished_by``, a moment the attempt was known over.

        That is when its final callback arrived, or when a poll listed it as completed: a run that starts
        later lists it; a run that started earlier may have read the day before the attempt ended.
        """
        return self.started_at is None or finished_by < self.started_at


UnfinishedRuns = Callable[[Sequence[str]], Iterable[UnfinishedRun]]
"""Given partition keys, the unfinished runs of those days (one instance query per call)."""


class UnfinishedRunsByDay:
    """The unfinished runs of the days a tick deals with, asked of ``lookup`` once per day (None: no runs)."""

    def __init__(self, lookup: UnfinishedRuns | None):
        self._lookup = lookup
        self._runs: dict[str, list[UnfinishedRun]] = {}
        self._looked_up: set[date] = set()

    def look_up(self, days: Iterable[date]) -> None:
        """One call of ``lookup`` for those of ``days`` not looked up yet (none when all were)."""
        new = sorted(set(days) - self._looked_up)
        if self._lookup is not None and new:
            for run in self._lookup([day.isoformat() for day in new]):
                self._runs.setdefault(run.partition_key, []).append(run)
        self._looked_up.update(new)

    def will_see(self, day: date, finished_by: datetime) -> bool:
        """Whether a looked-up run of ``day`` reads iMocha after ``finished_by`` (``UnfinishedRun.will_see``)."""
        return any(run.will_see(finished_by) for run in self._runs.get(day.isoformat(), ()))


def callback_requested_ids(engine: Engine, ids: list[int]) -> set[int]:
    """Of ``ids``, those a callback run was already requested for (``callback_inbox.run_key`` set)."""
    inbox = staging.callback_inbox
    return staging.existing_values(engine, inbox.c.test_invitation_id, ids, inbox.c.run_key.is_not(None))


def callback_requested_at(engine: Engine, ids: Sequence[int]) -> dict[int, datetime]:
    """Of ``ids``, those a callback run was already requested for, each with when its first such callback arrived.

    The callback's run was requested after that moment, and the attempt was over by then, so a run of its day
    that starts later lists it (``UnfinishedRun.will_see``).
    """
    inbox = staging.callback_inbox
    found: dict[int, datetime] = {}
    with engine.connect() as conn:
        for start in range(0, len(ids), 900):
            chunk = list(ids[start:start + 900])
            found.update({row[0]: row[1] for row in conn.execute(
                sa.select(inbox.c.test_invitation_id, sa.func.min(inbox.c.received_at))
                .where(inbox.c.test_invitation_id.in_(chunk), inbox.c.run_key.is_not(None))
                .group_by(inbox.c.test_invitation_id))})
    return found


@dataclass(frozen=True)
class CompletionRunRequest:
    """One ``completion_sync_job`` run: the UTC day partition and the new attempts found in it."""

    partition_key: str
    run_key: str
    invitation_ids: tuple[int, ...]


def run_key_for(prefix: str, day: date, ids: Iterable[int], tries: Mapping[int, int] | None = None) -> str:
    """``"<prefix>:<YYYY-MM-DD>:<16 hex>"``: the same partition, ids and try numbers always give the same key.

    ``tries``: the try number of the ids requested again; an id's try number joins the digest from its second
    try on (``"<id>#<try>"``), so a first request keeps the key it always had and every later one gets a key no
    earlier request had (Dagster never launches a run key twice).
    """
    tries = tries or {}
    tokens = [str(i) if tries.get(i, 1) <= 1 else f"{i}#{tries[i]}" for i in sorted(ids)]
    digest = hashlib.sha1(",".join(tokens).encode()).hexdigest()[:16]
    return f"{prefix}:{day.isoformat()}:{digest}"

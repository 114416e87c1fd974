"""The sync ledger: what was sent to Degreed, record by record, and what Degreed acknowledged.

A record moves planned -> sending -> acknowledged (with its Degreed id) or failed (with the error).
The state changes only on Degreed's answer. ``claim`` is a conditional update, so two runs can never
send the same record at once, and a run never sends a record again that another run has meanwhile
delivered with the same values (``DONE``), nor a record whose ledger row already carries a later iMocha attempt than
the one being claimed (``SUPERSEDED``: the newest attempt wins at send time, not only at plan time). A claim is a
lease: the claiming run renews it (``heartbeat``)
while it works, so a claim left by a run that died (SIGKILL, lost host) can be taken over as soon as its
lease has run out (``IMOCHA_PIPELINE_CLAIM_LEASE_SECONDS``, default 120) instead of blocking the record
for long; the run that takes it over resolves it by reading Degreed first.

A completion can also go to Degreed in a Completions Template file (``sync/bulk``): its row is then
``sent_by_file`` with the file's name and time until the reconcile sees it in Degreed (``acknowledged``) or, past
the grace period, sends it again by API (a claim, as usual; ``attempts`` counts the file, so that send reads
Degreed first).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from imocha_pipeline.settings import IMOCHA_PIPELINE_CLAIM_LEASE_SECONDS
from imocha_pipeline.staging import sync_ledger, sync_plan, upsert, utcnow

PLANNED = "planned"
SENDING = "sending"
ACKNOWLEDGED = "acknowledged"
FAILED = "failed"
SENT_BY_FILE = "sent_by_file"
STATES = (PLANNED, SENDING, ACKNOWLEDGED, FAILED, SENT_BY_FILE)
ERASED = "erased"
"""An erased learner's record (``sync/erasure``) while Degreed may still hold it (``degreed_id``)."""
DELETED = "deleted"
"""An erased learner's record once Degreed deleted it (or answered 404: already gone)."""
# Why a claim was refused: another live run holds the record, or it was already delivered with these values.
HELD = "held"
DONE = "done"
SUPERSEDED = "superseded"
LEASE_SETTING = IMOCHA_PIPELINE_CLAIM_LEASE_SECONDS.name
DEFAULT_LEASE_SECONDS = IMOCHA_PIPELINE_CLAIM_LEASE_SECONDS.default


def claim_lease() -> timedelta:
    """How long a claim lives without a heartbeat (the claiming run renews it every quarter of that)."""
    return timedelta(seconds=IMOCHA_PIPELINE_CLAIM_LEASE_SECONDS.value())

_ERROR_LIMIT = 2000


@dataclass(frozen=True, order=True)
class Source:
    """The iMocha attempt a completion or skill rating comes from: later ``at`` wins, then the higher ``id``."""

    at: datetime
    id: int


def holds_later_attempt(at, attempt_id):
    """The ledger row's source is a later attempt than ``(at, attempt_id)`` (values or non-null column
    expressions): later ``at`` wins, then the higher id; a row without a source holds no attempt."""
    column_at, column_id = sync_ledger.c.source_at, sync_ledger.c.source_id
    return sa.and_(column_at.is_not(None),
                   sa.or_(column_at > at, sa.and_(column_at == at, sa.func.coalesce(column_id, 0) > attempt_id)))


def _not_newer_than(source: Source):
    """The ledger row's source is not later than ``source`` (rows without a source never block)."""
    return sa.not_(holds_later_attempt(source.at, source.id))


class Ledger:
    """Ledger operations for one entity; every write commits on its own so a crash loses nothing."""

    def __init__(self, engine: Engine, entity: str, run_id: str = "", stale_claim_after: timedelta | None = None):
        self.engine = engine
        self.entity = entity
        self.run_id = run_id
        # A claim not renewed for this long belongs to a dead run.
        self.stale_claim_after = stale_claim_after or claim_lease()

    def _where(self, key: str):
        return sa.and_(sync_ledger.c.entity == self.entity, sync_ledger.c.record_key == key)

    def _unclaimed(self, now: datetime):
        """No live claim on the row: never claimed, released, or its lease ran out (a run that died)."""
        return sa.or_(sync_ledger.c.claimed_at.is_(None), sync_ledger.c.claimed_at < now - self.stale_claim_after)

    def ensure_rows(self, keys: list[str]) -> None:
        """Create ``planned`` rows for keys the ledger has never seen (existing rows are left alone)."""
        if not keys:
            return
        now = utcnow()
        rows = [{"entity": self.entity, "record_key": key, "state": PLANNED, "attempts": 0,
                 "created_at": now, "updated_at": now} for key in keys]
        with self.engine.begin() as conn:
            upsert(conn, sync_ledger, rows, key_columns=["entity", "record_key"], only_insert=True)

    def claim(self, key: str, action: str, payload: dict[str, Any], payload_hash: str,
              resend: bool = False, source: Source | None = None) -> bool:
        """Mark a record ``sending`` for this run. True if claimed.

        Refused (False) while another run holds a live claim (``refusal`` says ``HELD``); unless ``resend`` (a
        repair of a record Degreed lost), when the record is already acknowledged with this payload hash
        (``DONE``: another run delivered it after this run planned it); and when the ledger row carries a later
        ``source`` attempt than this claim's, acknowledged or in flight (``SUPERSEDED``).
        """
        self.ensure_rows([key])
        now = utcnow()
        free = sa.or_(sync_ledger.c.state != SENDING, sync_ledger.c.run_id == self.run_id, self._unclaimed(now))
        if not resend and payload_hash:
            retired = sa.func.coalesce(sync_ledger.c.action, "") == "retire"
            delivered = sa.and_(sync_ledger.c.state == ACKNOWLEDGED,
                                sa.func.coalesce(sync_ledger.c.payload_hash, "") == payload_hash,
                                retired if action == "retire" else sa.not_(retired))
            free = sa.and_(free, sa.not_(delivered))
        values: dict[str, Any] = {}
        if source is not None:
            free = sa.and_(free, _not_newer_than(source))
            values = {"source_at": source.at, "source_id": source.id}
        with self.engine.begin() as conn:
            result = conn.execute(
                sync_ledger.update().where(self._where(key), free).values(
                    state=SENDING, action=action, payload=payload, payload_hash=payload_hash,
                    attempts=sync_ledger.c.attempts + 1, run_id=self.run_id, claimed_at=now, updated_at=now,
                    **values,
                )
            )
            if result.rowcount != 1:
                return False
            # The ledger no longer shows the record delivered: its plan row is outstanding again until the send is
            # acknowledged (``plan_store.mark_delivered``), so the catch-up finds it if this send fails.
            conn.execute(sync_plan.update().where(sync_plan.c.entity == self.entity, sync_plan.c.record_key == key,
                                                  sync_plan.c.delivered_at.is_not(None)).values(delivered_at=None))
            return True

    def refusal(self, key: str, payload_hash: str, action: str = "", source: Source | None = None) -> str:
        """Why ``claim`` refused: ``SUPERSEDED`` (a later attempt is acknowledged or in flight), ``DONE``
        (delivered with these values) or ``HELD`` (another live run)."""
        row = self.get(key) or {}
        held_source = (Source(row["source_at"], int(row.get("source_id") or 0))
                       if row.get("source_at") is not None else None)
        if source is not None and held_source is not None and held_source > source:
            return SUPERSEDED
        if (row.get("state") == ACKNOWLEDGED and payload_hash and row.get("payload_hash") == payload_hash
                and (row.get("action") == "retire") == (action == "retire")):
            return DONE
        return HELD

    def heartbeat(self) -> int:
        """Renew this run's live claims (called every quarter lease while the run sends)."""
        with self.engine.begin() as conn:
            return conn.execute(sync_ledger.update().where(
                sync_ledger.c.entity == self.entity, sync_ledger.c.run_id == self.run_id,
                sync_ledger.c.state == SENDING).values(claimed_at=utcnow())).rowcount or 0

    def acknowledge(self, key: str, degreed_id: str | None, payload_hash: str | None = None,
                    payload: dict[str, Any] | None = None, action: str | None = None) -> None:
        now = utcnow()
        values: dict[str, Any] = {"state": ACKNOWLEDGED, "degreed_id": degreed_id, "last_error": None,
                                  "acknowledged_at": now, "updated_at": now, "claimed_at": None}
        if payload_hash is not None:
            values["payload_hash"] = payload_hash
        if payload is not None:
            values["payload"] = payload
        if action is not None:
            values["action"] = action
        with self.engine.begin() as conn:
            self._write(conn, key, values)

    def fail(self, key: str, error: str) -> None:
        now = utcnow()
        with self.engine.begin() as conn:
            self._write(conn, key, {"state": FAILED, "last_error": error[:_ERROR_LIMIT], "updated_at": now,
                                    "claimed_at": None})

    def release(self, key: str, state: str = PLANNED) -> None:
        """Give a claim back without a result (the write was not sent)."""
        with self.engine.begin() as conn:
            self._write(conn, key, {"state": state, "claimed_at": None, "updated_at": utcnow()})

    def _write(self, conn: Connection, key: str, values: dict[str, Any]) -> None:
        updated = conn.execute(sync_ledger.update().where(self._where(key)).values(**values)).rowcount
        if not updated:
            now = utcnow()
            conn.execute(sync_ledger.insert().values(entity=self.entity, record_key=key, attempts=0,
                                                     created_at=now, **{"updated_at": now, **values}))

    def mark_sent_by_file(self, records: list[dict[str, Any]], file_name: str, sent_at: datetime) -> set[str]:
        """Record that ``records`` (``record_key``, ``payload``, ``payload_hash``, ``source``) go in ``file_name``;
        returns the keys marked. A record another live run is sending, or that Degreed acknowledged meanwhile, is
        left alone (not marked: it must not go in the file)."""
        if not records:
            return set()
        self.ensure_rows([r["record_key"] for r in records])
        now = utcnow()
        marked: set[str] = set()
        free = sa.and_(sync_ledger.c.entity == self.entity,
                       sync_ledger.c.state.in_((PLANNED, FAILED, SENDING)),
                       sa.or_(sync_ledger.c.state != SENDING, self._unclaimed(now)))
        with self.engine.begin() as conn:
            for record in records:
                source: Source | None = record.get("source")
                values = {"source_at": source.at, "source_id": source.id} if source is not None else {}
                where = sa.and_(free, sync_ledger.c.record_key == record["record_key"])
                if source is not None:
                    where = sa.and_(where, _not_newer_than(source))
                updated = conn.execute(sync_ledger.update().where(where).values(
                    state=SENT_BY_FILE, action="create", payload=record["payload"],
                    payload_hash=record["payload_hash"], attempts=sync_ledger.c.attempts + 1, run_id=self.run_id,
                    claimed_at=None, file_name=file_name, file_sent_at=sent_at, last_error=None, updated_at=now,
                    **values)).rowcount
                if updated == 1:
                    marked.add(record["record_key"])
        return marked

    def unmark_file(self, file_name: str) -> int:
        """The file never reached Degreed (the upload failed): its records go back to ``planned``."""
        with self.engine.begin() as conn:
            return conn.execute(sync_ledger.update().where(
                sync_ledger.c.entity == self.entity, sync_ledger.c.state == SENT_BY_FILE,
                sync_ledger.c.file_name == file_name).values(
                state=PLANNED, file_name=None, file_sent_at=None, updated_at=utcnow())).rowcount or 0

    def confirm_file(self, key: str, degreed_id: str, payload: dict[str, Any], payload_hash: str) -> bool:
        """Degreed shows a record sent by file: ``acknowledged`` with its Degreed id and the values Degreed holds
        (no score, the file's date). Only while the row is still ``sent_by_file`` (an API send may have taken
        over after the grace period); True if confirmed."""
        now = utcnow()
        with self.engine.begin() as conn:
            return conn.execute(sync_ledger.update().where(self._where(key), sync_ledger.c.state == SENT_BY_FILE)
                                .values(state=ACKNOWLEDGED, degreed_id=degreed_id, payload=payload,
                                        payload_hash=payload_hash, action="create", last_error=None,
                                        acknowledged_at=now, updated_at=now, run_id=self.run_id)).rowcount == 1

    def erase_identity(self, conn: Connection, key: str, hashed_key: str) -> None:
        """An erased learner's row keeps only ``hashed_key`` (the email as its hash), its Degreed id, attempt and
        times; state ``erased`` (``deleted`` stays ``deleted``); payload, payload hash and last error go. Runs in
        the erasure's own transaction (``conn``), beside the other tables' erasure."""
        # Erased before, lifted, sent again and erased again: the newer row takes the hashed key.
        conn.execute(sync_ledger.delete().where(self._where(hashed_key)))
        state = sa.case((sync_ledger.c.state == DELETED, DELETED), else_=ERASED)
        conn.execute(sync_ledger.update().where(self._where(key)).values(
            record_key=hashed_key, state=state, payload=None, payload_hash=None, last_error=None, claimed_at=None,
            updated_at=utcnow()))

    def claim_deletion(self, key: str) -> bool:
        """Take the erased record ``key`` for deleting it in Degreed; True if taken. Refused while another process
        holds a live claim on it (an erasure and a reconcile at once, two reconciles) or once it is ``deleted``:
        so one DELETE is sent per record. A conditional update, like ``claim``; the lease frees the claim of a
        process that died before the DELETE."""
        now = utcnow()
        with self.engine.begin() as conn:
            return conn.execute(sync_ledger.update().where(
                self._where(key), sync_ledger.c.state == ERASED, self._unclaimed(now)).values(
                claimed_at=now, updated_at=now)).rowcount == 1

    def release_deletion(self, key: str) -> None:
        """The DELETE of ``key`` failed: free the record for the next erasure run or reconcile at once."""
        with self.engine.begin() as conn:
            conn.execute(sync_ledger.update().where(self._where(key), sync_ledger.c.state == ERASED).values(
                claimed_at=None, updated_at=utcnow()))

    def mark_deleted(self, conn: Connection, key: str) -> None:
        """Degreed no longer holds the erased record ``key`` (deleted, or already gone); in the caller's
        transaction (``conn``), beside the snapshot rows that go with it."""
        conn.execute(sync_ledger.update().where(self._where(key)).values(state=DELETED, claimed_at=None,
                                                                         updated_at=utcnow()))

    def rows(self, states: tuple[str, ...] | None = None) -> pd.DataFrame:
        statement = sa.select(sync_ledger).where(sync_ledger.c.entity == self.entity)
        if states:
            statement = statement.where(sync_ledger.c.state.in_(states))
        with self.engine.connect() as conn:
            return pd.DataFrame([dict(r._mapping) for r in conn.execute(statement)],
                                columns=[c.name for c in sync_ledger.columns])

    def acknowledged(self, keys: list[str], chunk: int = 500) -> list[dict[str, Any]]:
        """The acknowledged rows of ``keys``, looked up by primary key (the state is checked here: with it in the
        query a planner without statistics may walk the ``(entity, state)`` index over the whole history)."""
        keys = sorted(set(keys))
        found: list[dict[str, Any]] = []
        with self.engine.connect() as conn:
            for start in range(0, len(keys), chunk):
                found += [dict(r._mapping) for r in conn.execute(sa.select(sync_ledger).where(
                    sync_ledger.c.entity == self.entity, sync_ledger.c.record_key.in_(keys[start:start + chunk])))]
        return [row for row in found if row["state"] == ACKNOWLEDGED]

    def get(self, key: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(sync_ledger).where(self._where(key))).first()
            return dict(row._mapping) if row else None

    def stuck_sending(self, older_than: datetime | None = None) -> pd.DataFrame:
        """Rows left in ``sending`` by a run that is no longer this one."""
        frame = self.rows((SENDING,))
        if frame.empty:
            return frame
        frame = frame[frame["run_id"] != self.run_id]
        if older_than is not None:
            frame = frame[frame["claimed_at"] < older_than]
        return frame

    def counts(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            result = conn.execute(
                sa.select(sync_ledger.c.state, sa.func.count()).where(sync_ledger.c.entity == self.entity)
                .group_by(sync_ledger.c.state)
            )
            found = {state: int(count) for state, count in result}
        return {state: found.get(state, 0) for state in STATES}

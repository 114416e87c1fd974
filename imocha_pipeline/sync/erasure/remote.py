"""The erasure in iMocha and Degreed.

- iMocha: one GDPR request (``POST /v3/gdpr/requests`` with ``CandidateEmail``); its 400 "No records found" is
  reported, not an error.
- Degreed: every completion and skill rating we created for the learner (the Degreed ids the ledger holds, under the
  hashed key) deleted through the Degreed client and its shared rate budget. Each record is claimed in the ledger
  before its DELETE (``Ledger.claim_deletion``: an erasure and a reconcile, or two reconciles, at once send one
  DELETE per record), recorded at once when done (state ``deleted``) and dropped from the Degreed snapshot tables
  (with the learner's cached user), so a rerun deletes nothing twice, and a rerun or the reconcile
  (``sweep.finish_degreed_deletions``) after a failure deletes the rest. A 404 is "already gone": recorded the same
  way and reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from imocha_pipeline import staging
from imocha_pipeline.clients.errors import ApiError, NotFoundError
from imocha_pipeline.sync.core.ledger import ERASED, Ledger
from imocha_pipeline.sync.erasure.registry import marker

DELETERS = {"completion": "delete_completion", "skill_rating": "delete_skill_rating"}
SNAPSHOTS = {"completion": staging.degreed_completions, "skill_rating": staging.degreed_skill_ratings}


@dataclass
class DegreedOutcome:
    deleted: dict[str, int] = field(default_factory=dict)  # per entity
    already_gone: dict[str, int] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)  # "<entity> <Degreed id>: <error>"
    not_deletable: int = 0  # erased records without a Degreed id (never acknowledged, or sent by file)
    taken_elsewhere: int = 0  # claimed by another erasure run or reconcile (or one that stopped: one lease)


def to_delete(conn: Connection, email_hash: str) -> list[dict]:
    """The learner's hashed ledger rows whose Degreed record is still to delete."""
    ledger = staging.sync_ledger
    return [dict(r._mapping) for r in conn.execute(sa.select(
        ledger.c.entity, ledger.c.record_key, ledger.c.degreed_id).where(
        ledger.c.entity.in_(tuple(DELETERS)), ledger.c.state == ERASED,
        ledger.c.record_key.startswith(f"{marker(email_hash)}|", autoescape=True)).order_by(
        ledger.c.entity, ledger.c.record_key))]


def delete_in_degreed(engine: Engine, client, email_hash: str) -> DegreedOutcome:
    """Delete the learner's records in Degreed, recording each in the ledger as it is done."""
    outcome = DegreedOutcome()
    with engine.connect() as conn:
        rows = to_delete(conn, email_hash)
    for row in rows:
        entity, degreed_id = row["entity"], row["degreed_id"]
        if not degreed_id:
            outcome.not_deletable += 1
            continue
        ledger = Ledger(engine, entity)
        if not ledger.claim_deletion(row["record_key"]):
            outcome.taken_elsewhere += 1
            continue
        try:
            getattr(client, DELETERS[entity])(degreed_id)
            tally = outcome.deleted
        except NotFoundError:
            tally = outcome.already_gone
        except ApiError as exc:
            ledger.release_deletion(row["record_key"])
            outcome.failed.append(f"{entity} {degreed_id}: {exc}")
            continue
        except BaseException:
            ledger.release_deletion(row["record_key"])
            raise
        tally[entity] = tally.get(entity, 0) + 1
        with engine.begin() as conn:
            ledger.mark_deleted(conn, row["record_key"])
            _drop_from_snapshot(conn, entity, degreed_id)
    return outcome


def _drop_from_snapshot(conn: Connection, entity: str, degreed_id: str) -> None:
    """A record gone from Degreed leaves the snapshot tables, with its learner's cached Degreed user: a reconcile that
    read it back before it was deleted put the learner's email there."""
    snapshot, users = SNAPSHOTS[entity], staging.degreed_users
    user_ids = set(conn.execute(sa.select(snapshot.c.degreed_user_id).where(
        snapshot.c.degreed_id == degreed_id, snapshot.c.degreed_user_id.is_not(None))).scalars())
    conn.execute(snapshot.delete().where(snapshot.c.degreed_id == degreed_id))
    if user_ids:
        conn.execute(users.delete().where(users.c.degreed_id.in_(sorted(user_ids))))


def degreed_plan(rows: list[dict]) -> dict[str, int]:
    """What a Degreed erasure would delete, per entity (rows without a Degreed id apart)."""
    counts: dict[str, int] = {}
    for row in rows:
        name = row["entity"] if row["degreed_id"] else "without_degreed_id"
        counts[name] = counts.get(name, 0) + 1
    return counts


@dataclass(frozen=True)
class ImochaOutcome:
    accepted: bool
    message: str


def request_in_imocha(client, email: str) -> ImochaOutcome:
    """Forward the erasure to iMocha; "no records" comes back as not accepted, with iMocha's reason (no email)."""
    result = client.request_erasure(email)
    return ImochaOutcome(result.accepted, result.message.replace(email, "<email>"))

"""The erasure kept level-triggered: what a run already in flight wrote back after a learner was erased is erased
again by the next reconcile.

A run that planned (or extracted) a learner's records before ``forget`` committed can still stage the attempt or
send the record afterwards, under the learner's email. The erasure itself cannot see that run, so the reconcile
looks for it: every email in a staged attempt and in a ledger key written since the earliest erasure in force (less
one claim lease; erasures of the last 7 days), hashed under IMOCHA_PIPELINE_ERASURE_KEY and compared with the erased
learners. A match is erased again (the whole local erasure), and, where the erasure asked for the learner's records
to be deleted in Degreed, the records written back are deleted there too. Nothing is read, and the key is not
needed, while no one is erased.

The deletion in Degreed is kept level-triggered the same way (``finish_degreed_deletions``): while an erasure that
asked for it holds, every reconcile deletes the learner's records the ledger still shows in Degreed (a delete that
failed, a process that died between two deletes), each once: a delete is recorded in the ledger as it is done.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from imocha_pipeline import staging
from imocha_pipeline.sync.core.ledger import ERASED, claim_lease
from imocha_pipeline.sync.erasure.forget import ForgetReport, forget
from imocha_pipeline.sync.erasure.local import PERSONAL_ENTITIES
from imocha_pipeline.sync.erasure.registry import (
    ERASED_PREFIX,
    degreed_deletion_requested,
    erasure_key,
    listed_email_hash,
)
from imocha_pipeline.sync.erasure.remote import DELETERS, DegreedOutcome, delete_in_degreed

# A run in flight at an erasure has long ended after this; older erasures are not looked at again.
IN_FLIGHT_WINDOW = timedelta(days=7)


def _erased_since(engine: Engine) -> tuple[set[str], datetime | None]:
    """The learners erased (or erased again) within IN_FLIGHT_WINDOW and not lifted, and the time from which a run
    in flight may have written: the earliest of those erasures less one claim lease."""
    table = staging.erased_learners
    with engine.connect() as conn:
        rows = conn.execute(sa.select(table.c.email_hmac, table.c.updated_at).where(
            table.c.lifted_at.is_(None), table.c.updated_at >= staging.utcnow() - IN_FLIGHT_WINDOW)).all()
    if not rows:
        return set(), None
    return {r.email_hmac for r in rows}, min(r.updated_at for r in rows) - claim_lease()


def _recent_emails(engine: Engine, since: datetime) -> set[str]:
    """Emails in ledger keys written since ``since`` and in staged attempts (erased ones excluded)."""
    ledger, completions = staging.sync_ledger, staging.imocha_completions
    with engine.connect() as conn:
        keys = conn.execute(sa.select(ledger.c.record_key).where(
            ledger.c.entity.in_(PERSONAL_ENTITIES), ledger.c.updated_at >= since,
            sa.not_(ledger.c.record_key.startswith(ERASED_PREFIX)))).scalars()
        emails = {key.split("|", 1)[0] for key in keys if "|" in key}
        # Every staged email, whenever extracted: a run stages what it extracted minutes before (extracted_at is
        # its start), and no erased learner's email belongs here at all. One index scan of distinct emails.
        emails |= {e for e in conn.execute(sa.select(completions.c.learner_email).distinct().where(
            completions.c.learner_email.is_not(None),
            sa.not_(completions.c.learner_email.startswith(ERASED_PREFIX)))).scalars()}
    return emails


def enforce_erasures(engine: Engine, degreed_client: Callable[[], Any]) -> list[ForgetReport]:
    """Erase again every erased learner something wrote back since their erasure; one report each (no email)."""
    hashes, since = _erased_since(engine)
    if not hashes:
        return []
    key = erasure_key()
    # One erasure per learner: the same email may be staged as iMocha spelled it and keyed in lower case.
    found: dict[str, str] = {}
    for email in sorted(_recent_emails(engine, since)):
        email_hash = listed_email_hash(email, key)
        if email_hash in hashes:
            found.setdefault(email_hash, email)
    in_degreed = degreed_deletion_requested(engine)
    return [forget(engine, email, in_degreed=email_hash in in_degreed, degreed_client=degreed_client)
            for email_hash, email in found.items()]


def _with_records_in_degreed(engine: Engine, hashes: set[str]) -> set[str]:
    """Of ``hashes``, the learners with an erased ledger row that still names a Degreed record (one look-up by
    state: only erased learners' rows are in it)."""
    ledger = staging.sync_ledger
    with engine.connect() as conn:
        keys = conn.execute(sa.select(ledger.c.record_key).where(
            ledger.c.entity.in_(tuple(DELETERS)), ledger.c.state == ERASED,
            sa.func.coalesce(ledger.c.degreed_id, "") != "")).scalars()
        found = {key.split("|", 1)[0].removeprefix(ERASED_PREFIX) for key in keys if key.startswith(ERASED_PREFIX)}
    return found & hashes


def finish_degreed_deletions(engine: Engine, degreed_client: Callable[[], Any]) -> dict[str, DegreedOutcome]:
    """Delete in Degreed what is left of every learner whose erasure asked for it; one outcome per learner acted on,
    keyed by the learner's hash (no email)."""
    requested = degreed_deletion_requested(engine)
    left = _with_records_in_degreed(engine, requested) if requested else set()
    if not left:
        return {}
    client = degreed_client()
    return {email_hash: delete_in_degreed(engine, client, email_hash) for email_hash in sorted(left)}

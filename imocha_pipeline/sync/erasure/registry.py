"""Who is erased: the keyed hash of a learner's email and the ``erased_learners`` table.

The email is normalised (trimmed, lower-case, as the record keys spell it) and kept only as its HMAC-SHA256 under
IMOCHA_PIPELINE_ERASURE_KEY: without the key the hash cannot be tested against a list of guessed emails. What stays
of an erased learner in the staging tables is named ``erased:<hash>`` (ledger keys, staged attempts).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from imocha_pipeline import staging
from imocha_pipeline.settings import IMOCHA_PIPELINE_ERASURE_KEY

ERASED_PREFIX = "erased:"
KEY_SETTING = IMOCHA_PIPELINE_ERASURE_KEY.name


def normalise_email(email: str) -> str:
    normalised = (email or "").strip().lower()
    if "@" not in normalised or any(c.isspace() for c in normalised):
        raise ValueError(f"not an email address: {email!r}")
    return normalised


def erasure_key() -> bytes:
    """The HMAC key; a missing or too short setting raises the settings error naming IMOCHA_PIPELINE_ERASURE_KEY."""
    return IMOCHA_PIPELINE_ERASURE_KEY.value().encode()


def email_hmac(email: str, key: bytes) -> str:
    return hmac.new(key, normalise_email(email).encode(), hashlib.sha256).hexdigest()


def marker(email_hash: str) -> str:
    """How an erased learner is named where a name must stay: ``erased:<hash>``."""
    return f"{ERASED_PREFIX}{email_hash}"


def is_erased(conn: Connection, email_hash: str) -> bool:
    table = staging.erased_learners
    return conn.execute(sa.select(table.c.email_hmac).where(
        table.c.email_hmac == email_hash, table.c.lifted_at.is_(None))).first() is not None


def active_hashes(engine: Engine) -> set[str]:
    """Hashes of the learners erased and not lifted."""
    table = staging.erased_learners
    with engine.connect() as conn:
        return set(conn.execute(sa.select(table.c.email_hmac).where(table.c.lifted_at.is_(None))).scalars())


def record(conn: Connection, email_hash: str, *, lifted: bool) -> None:
    """Record the erasure of ``email_hash``, or its lifting. Erased again while the erasure holds (a second
    ``forget``, the reconcile erasing what a run wrote back): ``erased_at`` keeps the first erasure's time, and
    ``updated_at`` moves; erased again after a lifting: the erasure holds anew from now."""
    table, now = staging.erased_learners, staging.utcnow()
    if lifted:  # the request to delete in Degreed ends with the erasure
        conn.execute(table.update().where(table.c.email_hmac == email_hash).values(
            lifted_at=now, degreed_deletion_requested_at=None, updated_at=now))
        return
    if conn.execute(table.update().where(table.c.email_hmac == email_hash, table.c.lifted_at.is_(None)).values(
            updated_at=now)).rowcount:
        return
    staging.upsert(conn, table, [{"email_hmac": email_hash, "erased_at": now, "lifted_at": None, "updated_at": now}])


def record_degreed_deletion_requested(conn: Connection, email_hash: str) -> None:
    """Record that the erasure asked for the learner's records to be deleted in Degreed (kept until they are all
    deleted and beyond: a record written back later is deleted too, until the erasure is lifted)."""
    table, now = staging.erased_learners, staging.utcnow()
    conn.execute(table.update().where(table.c.email_hmac == email_hash,
                                      table.c.degreed_deletion_requested_at.is_(None)).values(
        degreed_deletion_requested_at=now, updated_at=now))


def degreed_deletion_requested(engine: Engine) -> set[str]:
    """Hashes of the learners erased (not lifted) whose records are to be deleted in Degreed."""
    table = staging.erased_learners
    with engine.connect() as conn:
        return set(conn.execute(sa.select(table.c.email_hmac).where(
            table.c.lifted_at.is_(None), table.c.degreed_deletion_requested_at.is_not(None))).scalars())


def clear_callback_bodies(engine: Engine, invitation_ids: set[int]) -> int:
    """Callbacks of erased attempts that arrived after the erasure: their bodies (email, name, score) removed; the
    rows stay (the sensors need to know the callback came)."""
    if not invitation_ids:
        return 0
    inbox = staging.callback_inbox
    with engine.begin() as conn:
        return conn.execute(inbox.update().where(inbox.c.test_invitation_id.in_(sorted(invitation_ids)),
                                                 inbox.c.payload.is_not(None)).values(payload=None)).rowcount or 0


def record_masked_in_imocha(conn: Connection, email_hash: str) -> None:
    table, now = staging.erased_learners, staging.utcnow()
    conn.execute(table.update().where(table.c.email_hmac == email_hash).values(masked_in_imocha_at=now,
                                                                               updated_at=now))


def masked_in_imocha(conn: Connection, email_hash: str) -> bool:
    table = staging.erased_learners
    return conn.execute(sa.select(table.c.masked_in_imocha_at).where(
        table.c.email_hmac == email_hash)).scalar() is not None


@dataclass(frozen=True)
class Blocklist:
    """What the erasure keeps out of one extract, read once: of the attempts iMocha listed, those staged as erased
    (``erased:<hash>``; e.g. iMocha lists them again, masked), and the hashes of the learners erased and not lifted.

    This is the one place the erasure stops new data (``sync/completions/extract.py``): every path that stages
    attempts (a run of the completion job, a sensor's or a callback's run, the catch-up, a backfill, the
    bulk export, which plans only staged attempts) goes through the extract. The key is read only while some
    learner is erased; then a missing key is an error naming IMOCHA_PIPELINE_ERASURE_KEY.
    """

    tombstones: frozenset[int]
    hashes: frozenset[str]
    key: bytes | None

    @classmethod
    def read(cls, engine: Engine, invitation_ids: Iterable[int]) -> Blocklist:
        ids = sorted({int(i) for i in invitation_ids})
        table = staging.imocha_completions
        tombstones: set[int] = set()
        with engine.connect() as conn:
            for start in range(0, len(ids), 500):
                tombstones |= set(conn.execute(sa.select(table.c.test_invitation_id).where(
                    table.c.test_invitation_id.in_(ids[start:start + 500]),
                    table.c.learner_email.startswith(ERASED_PREFIX))).scalars())
        hashes = active_hashes(engine) if ids else set()
        return cls(frozenset(tombstones), frozenset(hashes), erasure_key() if hashes else None)

    def blocked(self, attempts: Iterable[tuple[int, str | None]]) -> set[int]:
        """Of ``(invitation id, email)`` pairs (as listed, or as reported), the attempts never to stage: staged as
        erased, or of a learner erased and not lifted."""
        blocked: set[int] = set()
        for invitation_id, email in attempts:
            if int(invitation_id) in self.tombstones or (self.key is not None
                                                         and listed_email_hash(email, self.key) in self.hashes):
                blocked.add(int(invitation_id))
        return blocked


def listed_email_hash(email: str | None, key: bytes) -> str | None:
    """The hash of an email as iMocha listed it; None for a value no erasure can name (``forget`` takes only
    well-formed addresses), so a malformed email reaches validation instead of stopping the run here."""
    try:
        return email_hmac(email, key) if email else None
    except ValueError:
        return None

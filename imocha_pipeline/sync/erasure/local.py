"""An erased learner's personal data removed from every staging table, in one transaction.

What goes (per table, counted for the report):

- ``imocha_completions``: each attempt keeps a tombstone (invitation id, test, status, times) named ``erased:<hash>``,
  without name, scores, points or performance category: the extract then never reads that attempt again, and
  ``v_sync_status`` shows it as erased. ``imocha_skill_scores``: removed.
- ``sync_ledger``: the learner's rows keep their identity only as the hash (key ``erased:<hash>|<rest>``), their
  Degreed id, attempt id and times; state ``erased`` (``deleted`` once Degreed's record is deleted), payload,
  payload hash and last error removed. The payload hash goes too: a plain hash of a payload is a hash of the email.
- ``sync_plan``, ``sync_quarantine``, ``sync_drift``: the learner's rows removed (by key, attempt or Degreed id).
- ``callback_inbox``: the bodies of the learner's callbacks removed; the rows stay (invitation, status, times).
- ``degreed_users``, ``degreed_completions``, ``degreed_skill_ratings``: the learner's rows of the Degreed snapshot
  removed (the next reconcile reads again what Degreed still holds: erase there with ``--in-degreed``).
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from imocha_pipeline import staging
from imocha_pipeline.sync.core.ledger import Ledger
from imocha_pipeline.sync.erasure.registry import marker

PERSONAL_ENTITIES = ("completion", "skill_rating")


def _normalised(column):
    return sa.func.lower(sa.func.trim(column))


def _as_text(column):
    """The column as lower-case text (a JSON column compared as its stored text, not as a JSON value)."""
    return sa.func.lower(sa.cast(column, sa.Text), type_=sa.Text)


def _attempt_keys(table: sa.Table, attempt_ids: list[int]):
    keys = [f"attempt:{i}" for i in attempt_ids]
    conditions = [table.c.record_key.in_(keys)] if keys else []
    conditions += [table.c.record_key.startswith(f"{key}|", autoescape=True) for key in keys]
    return conditions


def erase(conn: Connection, email: str, email_hash: str) -> dict[str, int]:
    """Remove ``email``'s personal data (normalised) from every staging table; rows changed per table."""
    name, prefix = marker(email_hash), f"{email}|"
    completions, scores = staging.imocha_completions, staging.imocha_skill_scores
    ledger, plan, quarantine = staging.sync_ledger, staging.sync_plan, staging.sync_quarantine
    drift, inbox, users = staging.sync_drift, staging.callback_inbox, staging.degreed_users
    counts: dict[str, int] = {}

    attempt_ids = sorted(set(conn.execute(sa.select(completions.c.test_invitation_id).where(
        _normalised(completions.c.learner_email) == email)).scalars()) | set(conn.execute(
        sa.select(scores.c.test_invitation_id).where(_normalised(scores.c.learner_email) == email)).scalars()))
    own_keys = sa.and_(ledger.c.entity.in_(PERSONAL_ENTITIES), ledger.c.record_key.startswith(prefix, autoescape=True))
    ledger_rows = [dict(r._mapping) for r in conn.execute(sa.select(ledger).where(own_keys))]
    degreed_ids = sorted({r["degreed_id"] for r in ledger_rows if r["degreed_id"]})
    user_ids = sorted(set(conn.execute(sa.select(users.c.degreed_id).where(_normalised(users.c.email) == email))
                          .scalars()))

    counts["imocha_completions"] = conn.execute(completions.update().where(
        completions.c.test_invitation_id.in_(attempt_ids)).values(
        learner_email=name, learner_name=None, score_percentage=None, candidate_points=None, total_points=None,
        performance_category=None, time_taken_seconds=None)).rowcount if attempt_ids else 0
    counts["imocha_skill_scores"] = conn.execute(scores.delete().where(sa.or_(
        _normalised(scores.c.learner_email) == email, scores.c.test_invitation_id.in_(attempt_ids)))).rowcount

    for row in ledger_rows:
        Ledger(conn.engine, row["entity"]).erase_identity(conn, row["record_key"],
                                                          f"{name}|{row['record_key'][len(prefix):]}")
    counts["sync_ledger"] = len(ledger_rows)

    counts["sync_plan"] = conn.execute(plan.delete().where(sa.or_(
        plan.c.record_key.startswith(prefix, autoescape=True), *_attempt_keys(plan, attempt_ids)))).rowcount
    counts["sync_quarantine"] = conn.execute(quarantine.delete().where(sa.or_(
        quarantine.c.record_key.startswith(prefix, autoescape=True), *_attempt_keys(quarantine, attempt_ids),
        sa.func.lower(quarantine.c.bad_value).contains(email, autoescape=True)))).rowcount
    counts["sync_drift"] = conn.execute(drift.delete().where(sa.or_(
        drift.c.record_key.startswith(prefix, autoescape=True), drift.c.degreed_id.in_(degreed_ids),
        sa.func.lower(drift.c.detail).contains(email, autoescape=True)))).rowcount
    counts["callback_inbox"] = conn.execute(inbox.update().where(inbox.c.payload.is_not(None), sa.or_(
        inbox.c.test_invitation_id.in_(attempt_ids),
        _as_text(inbox.c.payload).contains(email, autoescape=True))).values(payload=None)).rowcount

    for table in (staging.degreed_completions, staging.degreed_skill_ratings):
        counts[table.name] = conn.execute(table.delete().where(sa.or_(
            _normalised(table.c.user_id) == email, table.c.degreed_user_id.in_(user_ids),
            table.c.degreed_id.in_(degreed_ids)))).rowcount
    counts["degreed_users"] = conn.execute(users.delete().where(_normalised(users.c.email) == email)).rowcount
    return counts


def lift(conn: Connection, email_hash: str, *, keep_attempts: bool) -> dict[str, int]:
    """Undo's local part: the erased attempts' tombstones go, so the extract reads those attempts again and the
    learner's records are planned and sent as new; unless ``keep_attempts`` (iMocha masked them: read again they
    would come back under a masked email, so they stay erased and only new attempts sync). The hashed ledger rows
    stay, as the history of what was erased (and deleted in Degreed)."""
    if keep_attempts:
        return {"imocha_completions": 0}
    completions = staging.imocha_completions
    removed = conn.execute(completions.delete().where(completions.c.learner_email == marker(email_hash))).rowcount
    return {"imocha_completions": removed}

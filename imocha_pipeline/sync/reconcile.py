"""Nightly reconciliation: compare what Degreed holds with the ledger, repair what is missing, report drift.

Records are matched by their Degreed id (the ledger keeps it for every acknowledged write), so learner
identifiers (email or employee id) need no guessing. Kinds of drift:
- ``missing_in_degreed``: we wrote it and Degreed acknowledged it, but it is gone: repaired by sending it again;
- ``changed_in_degreed``: someone edited our record in Degreed: reported (the ledger's values are ours). Only
  fields Degreed returns are compared: in its documented read shape a completion carries ``completed-at`` but no
  ``percentile``, a skill rating its ``rating``; a field it does not return is never drift;
- ``unknown_to_us``: our provider's record that no run of ours wrote: reported;
- ``never_delivered``: a staged latest attempt whose completion or skill rating Degreed never acknowledged
  (a run that failed and was not retried, a write that kept failing): sent (``sync/delivery.py``). Records that
  wait for a learner or an assessment Degreed does not have are not drift: they wait in the quarantine.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

import pandas as pd
from sqlalchemy.engine import Engine

from imocha_pipeline import staging
from imocha_pipeline.sync.core.diff import PLAN_BASE_COLUMNS
from imocha_pipeline.sync.core.identities import DegreedDirectory
from imocha_pipeline.sync.core.ledger import ACKNOWLEDGED, Ledger
from imocha_pipeline.sync.core.plain_values import same_value

MISSING = "missing_in_degreed"
CHANGED = "changed_in_degreed"
UNKNOWN = "unknown_to_us"
NEVER_DELIVERED = "never_delivered"


@dataclass(frozen=True)
class DriftRow:
    entity: str
    record_key: str
    kind: str
    degreed_id: str | None
    detail: str


def snapshot_completions(client, start: date, end: date, snapshot_at: datetime,
                         directory: DegreedDirectory | None = None) -> list[dict]:
    """Degreed's completions of the window, each with the learner's email and our external id mapped from the
    Degreed ids its answer carries (``directory``), or as Degreed echoed them when it does."""
    found = list(client.iter_completions(start, end))
    emails = directory.emails(c.degreed_user_id for c in found) if directory else {}
    return [
        {"degreed_id": c.id, "user_id": emails.get(c.degreed_user_id) or _echoed(c.user_id, c.degreed_user_id),
         "employee_id": c.employee_id,
         "content_id": _external_id(c, directory),
         "completed_at": c.completed_at, "percentile": c.percentile, "added_at": c.added_at,
         "snapshot_at": snapshot_at, "degreed_user_id": c.degreed_user_id, "degreed_content_id": c.degreed_content_id}
        for c in found
    ]


def snapshot_skill_ratings(client, snapshot_at: datetime, directory: DegreedDirectory | None = None) -> list[dict]:
    found = list(client.iter_skill_ratings())
    user_ids = [_first_user(r) for r in found]
    emails = directory.emails(i for i in user_ids if i) if directory else {}
    return [
        {"degreed_id": r.id, "user_id": emails.get(user) or _echoed(r.user_id, user), "employee_id": r.employee_id,
         "skill_name": r.skill_name, "rating": r.rating, "rating_type": r.rating_type, "rated_at": r.rated_at,
         "snapshot_at": snapshot_at, "degreed_user_id": user}
        for r, user in zip(found, user_ids, strict=True)
    ]


def _first_user(rating) -> str | None:
    from imocha_pipeline.clients.degreed.values import relationship_ids

    ids = relationship_ids(rating.raw, "user")
    return ids[0] if ids else None


def _external_id(completion, directory: DegreedDirectory | None) -> str | None:
    """Our external id of a completion's content: as Degreed echoed it, else mapped from its Degreed id."""
    echoed = _echoed(completion.content_id, completion.degreed_content_id)
    if echoed or directory is None or not completion.degreed_content_id:
        return echoed
    return directory.external_id(completion.degreed_content_id)


def _echoed(value: str | None, degreed_id: str | None) -> str | None:
    """A value Degreed echoed (email, external id), not the Degreed id the parser falls back to."""
    return value if value and value != degreed_id else None


def _utc_text(value) -> str | None:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, str):
        return value
    return pd.Timestamp(value).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def find_drift(entity: str, ledger_rows: pd.DataFrame, snapshot: pd.DataFrame, compare: dict[str, str],
               in_scope=lambda payload: True, known_ids: set[str] = frozenset()) -> list[DriftRow]:
    """Drift of one entity. ``compare`` maps ledger payload fields to snapshot columns; ``known_ids``: Degreed ids
    any ledger row holds (a record whose latest write failed is still ours, never ``unknown_to_us``)."""
    drift: list[DriftRow] = []
    by_id = {row["degreed_id"]: row for row in snapshot.to_dict("records")} if not snapshot.empty else {}
    ours: set[str] = set()
    for row in ledger_rows.to_dict("records"):
        payload = row.get("payload") or {}
        if not row.get("degreed_id") or not in_scope(payload):
            continue
        ours.add(row["degreed_id"])
        found = by_id.get(row["degreed_id"])
        if found is None:
            drift.append(DriftRow(entity, row["record_key"], MISSING, row["degreed_id"],
                                  "acknowledged by Degreed earlier, absent now"))
            continue
        changes = []
        for ours_field, theirs in compare.items():
            mine, current = payload.get(ours_field), found.get(theirs)
            if current is None or (not isinstance(current, str) and pd.isna(current)):
                continue  # Degreed does not return this field (e.g. a completion's percentile): nothing to see
            if theirs.endswith("_at"):
                mine, current = _utc_text(mine), _utc_text(current)
            if not same_value(mine, current):
                changes.append(f"{ours_field}: ours {mine!r}, Degreed {current!r}")
        if changes:
            drift.append(DriftRow(entity, row["record_key"], CHANGED, row["degreed_id"], "; ".join(changes)))
    for degreed_id, found in by_id.items():
        if degreed_id not in ours and degreed_id not in known_ids and not _known_elsewhere(degreed_id, ledger_rows):
            description = ", ".join(f"{k}={found.get(k)!r}" for k in list(compare.values())[:3])
            drift.append(DriftRow(entity, f"degreed:{degreed_id}", UNKNOWN, degreed_id,
                                  f"in Degreed for our provider but not written by us ({description})"))
    return drift


def _known_elsewhere(degreed_id: str, ledger_rows: pd.DataFrame) -> bool:
    return not ledger_rows.empty and bool((ledger_rows["degreed_id"] == degreed_id).any())


def acknowledged(engine: Engine, entity: str) -> pd.DataFrame:
    return Ledger(engine, entity).rows((ACKNOWLEDGED,))


def known_degreed_ids(engine: Engine, entity: str) -> set[str]:
    """Degreed ids the ledger holds for the entity, in any state."""
    rows = Ledger(engine, entity).rows()
    return {str(i) for i in rows["degreed_id"] if isinstance(i, str) and i} if not rows.empty else set()


def never_delivered(entity: str, due: pd.DataFrame) -> list[DriftRow]:
    """Drift rows for outstanding records that are due (``sync/outstanding.py``) and not waiting in the
    quarantine for a learner or an assessment Degreed does not have (those wait, with their reason)."""
    rows = []
    for row in due.to_dict("records"):
        if isinstance(row.get("waiting_kind"), str):
            continue
        attempt = row.get("test_invitation_id")
        attempt = int(attempt) if attempt is not None and not pd.isna(attempt) else "?"
        rows.append(DriftRow(entity, str(row["record_key"]), NEVER_DELIVERED, None,
                             f"attempt {attempt} is staged and planned but Degreed never acknowledged it "
                             f"({row.get('reason')})"))
    return rows


def stage_drift(engine: Engine, rows: list[DriftRow], repaired: set[tuple[str, str]], run_id: str) -> None:
    now = staging.utcnow()
    records = [
        {"entity": r.entity, "record_key": r.record_key, "kind": r.kind, "degreed_id": r.degreed_id,
         "detail": r.detail, "repaired": (r.entity, r.record_key) in repaired, "run_id": run_id, "found_at": now}
        for r in rows
    ]
    with engine.begin() as conn:
        conn.execute(staging.sync_drift.delete())
        staging.upsert(conn, staging.sync_drift, records)


def repair_plan(ledger_rows: pd.DataFrame, missing: list[DriftRow], fields: tuple[str, ...]) -> pd.DataFrame:
    """A plan that sends the missing records again, from the payloads the ledger kept."""
    keys = {row.record_key for row in missing}
    records = []
    for row in ledger_rows.to_dict("records"):
        if row["record_key"] in keys:
            payload = row.get("payload") or {}
            records.append({"record_key": row["record_key"], "action": "create",
                            "reason": "missing in Degreed (reconcile)", "changed_fields": [], "degreed_id": None,
                            "payload_hash": row.get("payload_hash"), **{f: payload.get(f) for f in fields}})
    return pd.DataFrame(records, columns=[*PLAN_BASE_COLUMNS, *fields])

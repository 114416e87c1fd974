"""Desired Degreed completions and skill ratings from staged iMocha attempts, and their plans.

The plan compares the desired records with what the ledger says Degreed acknowledged (the fast path:
no Degreed reads per run); the nightly reconcile compares with Degreed itself. A later attempt always
wins: an older attempt (e.g. from a backfill) never overwrites a newer one already in Degreed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from imocha_pipeline import staging
from imocha_pipeline.sync.completions.entity import COMPLETIONS, SKILL_RATINGS
from imocha_pipeline.sync.completions.mapping import CompletionMapping
from imocha_pipeline.sync.completions.models import ImochaCompletionModel, ImochaSkillScoreModel
from imocha_pipeline.sync.completions.records import (
    COMPLETION,
    COMPLETION_FIELDS,
    COMPLETION_PAYLOAD,
    SKILL_RATING,
    SKILL_RATING_FIELDS,
    SKILL_RATING_PAYLOAD,
    completion_key,
    skill_rating_key,
    utc_text,
)
from imocha_pipeline.sync.core.diff import UNCHANGED, UPDATE, WAIT, plan
from imocha_pipeline.sync.core.entity import EntitySpec
from imocha_pipeline.sync.core.ledger import Ledger
from imocha_pipeline.sync.core.outstanding import known_assessments
from imocha_pipeline.sync.core.plan_store import SOURCE_COLUMNS, stage_latest
from imocha_pipeline.sync.core.quarantine import (
    VALIDATION,
    WAITING_FOR_ASSESSMENT,
    WAITING_FOR_LEARNER,
    Entry,
    Quarantine,
)
from imocha_pipeline.sync.core.validation import RowFailure, split_valid
from imocha_pipeline.sync.erasure.registry import ERASED_PREFIX

SKIP = "skip"

def attempt_key(invitation_id) -> str:
    return f"attempt:{int(invitation_id)}"


@dataclass
class EntityPlan:
    entity: str
    frame: pd.DataFrame  # plan rows: record_key, action, reason, changed_fields, degreed_id, payload_hash, fields
    payload_columns: tuple[str, ...]
    quarantined: list[Entry] = field(default_factory=list)

    @property
    def fields(self) -> tuple[str, ...]:
        return COMPLETION_FIELDS if self.entity == COMPLETION else SKILL_RATING_FIELDS


def load_staged(engine: Engine, table: sa.Table, days: list[date]) -> pd.DataFrame:
    condition = table.c.attempt_date.in_(days)
    if "learner_email" in table.c:  # what remains of an erased learner's attempt is not an attempt to send
        email = table.c.learner_email
        condition = sa.and_(condition, sa.or_(email.is_(None), sa.not_(email.startswith(ERASED_PREFIX))))
    with engine.connect() as conn:
        rows = staging.read_rows(conn, table, condition)
    return pd.DataFrame(rows, columns=[c.name for c in table.columns])


def quarantine_unreadable_reports(engine: Engine, problems: list[tuple[int, str]], run_id: str) -> int:
    """Attempts whose report could not be read (malformed, not ready, naming another attempt): held in
    quarantine with the reason. They are not staged, so every later run reads their report again."""
    entries = [Entry(attempt_key(invitation_id), VALIDATION,
                     f"the iMocha report of attempt {invitation_id} could not be used: {reason}. It is read again on "
                     "every run until iMocha answers with a usable report", "report", "usable iMocha report", None)
               for invitation_id, reason in problems]
    return Quarantine(engine, COMPLETION, run_id).put(entries)


def _validation_entries(failures: list[RowFailure], prefix: str = "") -> list[Entry]:
    return [Entry(f.record_key, VALIDATION, prefix + f.reason, f.column, f.rule, f.bad_value) for f in failures]


def unplanned_days(engine: Engine) -> list[date]:
    """UTC days with staged attempts no plan has taken into account yet (a run died between extract and plan)."""
    table = staging.imocha_completions
    with engine.connect() as conn:
        return sorted(conn.execute(sa.select(table.c.attempt_date).distinct()
                                   .where(table.c.planned_at.is_(None))).scalars().all())


def mark_planned(engine: Engine, days: list[date]) -> None:
    """Record that the staged attempts of ``days`` have been planned."""
    table = staging.imocha_completions
    with engine.begin() as conn:
        conn.execute(table.update().where(table.c.attempt_date.in_(days)).values(planned_at=staging.utcnow()))


def source_of(attempt: dict) -> dict:
    """The plan row's source: the attempt's id, its UTC time and the day whose window listed it."""
    at = attempt.get("attempted_on")
    at = pd.Timestamp(at).to_pydatetime() if at is not None and not pd.isna(at) else None
    return {"source_id": int(attempt["test_invitation_id"]), "source_at": at, "source_day": attempt.get("attempt_date")}


def latest_wins(frame: pd.DataFrame, key: str, order: str) -> pd.DataFrame:
    return frame.sort_values([order, "test_invitation_id"], kind="stable").drop_duplicates(key, keep="last")


def build_completion_plans(engine: Engine, days: list[date], mapping: CompletionMapping,
                           run_id: str) -> tuple[EntityPlan, EntityPlan]:
    """Validate the staged attempts of ``days``, map them, and plan both entities.

    Records that wait (for a learner, for their assessment) are planned like the others; what is due is decided
    at send time (``sync/outstanding.py``), so any later run, or the catch-up job, sends them once they can go.
    """
    attempts = load_staged(engine, staging.imocha_completions, days)
    scores = load_staged(engine, staging.imocha_skill_scores, days)
    quarantine_c = Quarantine(engine, COMPLETION, run_id)
    quarantine_r = Quarantine(engine, SKILL_RATING, run_id)

    attempts = attempts.assign(record_key=[attempt_key(i) for i in attempts["test_invitation_id"]])
    valid, failures = split_valid(attempts, ImochaCompletionModel, "record_key", "imocha_completions")
    entries_c = _validation_entries(failures)
    bad_attempts = {int(f.record_key.split(":")[1]) for f in failures}

    if not valid.empty:
        quarantine_c.resolve([attempt_key(i) for i in valid["test_invitation_id"]], kinds=[VALIDATION])
    sent = valid[valid["status"].isin(mapping.send_statuses)] if not valid.empty else valid
    not_sent = valid[~valid["status"].isin(mapping.send_statuses)] if not valid.empty else valid
    skipped_rows = [
        {"record_key": attempt_key(r["test_invitation_id"]), "action": SKIP,
         "reason": f"status {r['status']!r} is not sent (IMOCHA_PIPELINE_SEND_STATUSES="
                   f"{','.join(mapping.send_statuses)})", **source_of(r)}
        for r in not_sent.to_dict("records")
    ]

    completion_plan = _plan_completions(engine, sent, mapping, skipped_rows, entries_c, quarantine_c)
    skills_missing = [
        Entry(f"{attempt_key(r['test_invitation_id'])}|skills", VALIDATION,
              f"the iMocha report of attempt {int(r['test_invitation_id'])} has no skills array, so its skill ratings "
              "cannot be computed (its completion is sent). Once iMocha's report has skills, run completion_sync_job "
              f"for {r['attempt_date']} with run config ops.imocha_attempts.config.full_refresh: true",
              "skills", "report has a skills array", None)
        for r in sent.to_dict("records") if r.get("has_skills") is False
    ] if not sent.empty and "has_skills" in sent else []
    quarantine_r.put(skills_missing)
    complete_ids = set(sent["test_invitation_id"].astype(int)) if not sent.empty else set()
    rating_plan = _plan_ratings(engine, scores, complete_ids - bad_attempts, mapping, quarantine_r, sent)
    return completion_plan, rating_plan


def _plan_completions(engine, sent: pd.DataFrame, mapping: CompletionMapping, skipped_rows: list[dict],
                      entries: list[Entry], quarantine: Quarantine) -> EntityPlan:
    desired_rows = []
    for r in sent.to_dict("records"):
        external_id = f"imocha-{int(r['test_id'])}"
        user_id, id_type = mapping.learner_identifier(r["learner_email"])
        desired_rows.append({
            "record_key": completion_key(r["learner_email"], external_id),
            "user_id": user_id, "user_identifier_type": id_type, "content_id": external_id,
            "content_id_type": "ExternalId", "content_type": mapping.content_type,
            "completed_at": utc_text(r["attempted_on"]), "percentile": float(r["score_percentage"]),
            "test_invitation_id": int(r["test_invitation_id"]), **source_of(r),
        })
    desired = pd.DataFrame(desired_rows, columns=["record_key", *COMPLETION_PAYLOAD, *COMPLETION_FIELDS,
                                                  *SOURCE_COLUMNS])
    desired = latest_wins(desired, "record_key", "completed_at") if not desired.empty else desired
    known = known_assessments(engine, set(desired["content_id"])) if not desired.empty else set()
    waiting_assessment = desired[~desired["content_id"].isin(known)] if not desired.empty else desired
    entries += [Entry(r["record_key"], WAITING_FOR_ASSESSMENT,
                      f"assessment {r['content_id']} is not in Degreed yet; waiting for assessment_sync_job",
                      "content_id", "assessment exists in Degreed", r["content_id"])
                for r in waiting_assessment.to_dict("records")]
    frame = _plan_against_ledger(engine, desired, COMPLETIONS, "completed_at", quarantine,
                                 set(waiting_assessment["record_key"]))
    frame = pd.concat([frame, pd.DataFrame(skipped_rows)], ignore_index=True) if skipped_rows else frame
    quarantine.put(entries)
    return EntityPlan(COMPLETION, frame, COMPLETION_PAYLOAD, entries)


def _plan_ratings(engine, scores: pd.DataFrame, complete_ids: set[int], mapping: CompletionMapping,
                  quarantine: Quarantine, sent: pd.DataFrame) -> EntityPlan:
    entries: list[Entry] = []
    scores = scores[scores["test_invitation_id"].isin(complete_ids)] if not scores.empty else scores
    scores = scores.assign(record_key=[f"{attempt_key(i)}|skill:{s}" for i, s in
                                       zip(scores["test_invitation_id"], scores["skill_id"], strict=True)])
    valid, failures = split_valid(scores, ImochaSkillScoreModel, "record_key", "imocha_skill_scores")
    entries += _validation_entries(failures)
    skipped_rows, desired_rows = [], []
    emails = dict(zip(sent["test_invitation_id"].astype(int), sent["learner_email"], strict=True)) \
        if not sent.empty else {}
    for r in valid.to_dict("records"):
        skill = mapping.skill_name(r["skill_name"])
        if skill is None:
            reason = f"no Degreed skill mapped for iMocha skill {r['skill_name']!r} (IMOCHA_PIPELINE_SKILL_MAP)"
            skipped_rows.append({"record_key": r["record_key"], "action": SKIP, "reason": reason, **source_of(r)})
            continue
        email = emails.get(int(r["test_invitation_id"]), r["learner_email"])
        user_id, id_type = mapping.learner_identifier(email)
        desired_rows.append({
            "record_key": skill_rating_key(email, skill), "user_id": user_id, "user_identifier_type": id_type,
            "skill_name": skill, "rating_type": mapping.rating_type,
            "test_invitation_id": int(r["test_invitation_id"]), "percent": round(float(r["percent"]), 4),
            "rating": mapping.level_for(r["points"], r["max_points"]), "rated_at": utc_text(r["attempted_on"]),
            **source_of(r),
        })
    desired = pd.DataFrame(desired_rows, columns=["record_key", *SKILL_RATING_PAYLOAD, *SKILL_RATING_FIELDS,
                                                  *SOURCE_COLUMNS])
    desired = latest_wins(desired, "record_key", "rated_at") if not desired.empty else desired
    frame = _plan_against_ledger(engine, desired, SKILL_RATINGS, "rated_at", quarantine, set())
    frame = pd.concat([frame, pd.DataFrame(skipped_rows)], ignore_index=True) if skipped_rows else frame
    quarantine.put(entries)
    return EntityPlan(SKILL_RATING, frame, SKILL_RATING_PAYLOAD, entries)


def _plan_against_ledger(engine: Engine, desired: pd.DataFrame, spec: EntitySpec, time_field: str,
                         quarantine: Quarantine, waiting_assessment: set[str]) -> pd.DataFrame:
    """Diff against the ledger's acknowledged payloads; keep later attempts; mark waiting records."""
    payload_columns = [c for c in desired.columns if c not in ("record_key", *spec.fields)]
    keys = [str(key) for key in desired["record_key"]] if not desired.empty else []
    # Only the planned records' ledger rows, by key: a run's cost follows its attempts, not the ledger's size.
    actual_rows = [
        {"record_key": r["record_key"], "degreed_id": r["degreed_id"],
         **{f: (r["payload"] or {}).get(f) for f in spec.fields}}
        for r in Ledger(engine, spec.name).acknowledged(keys)
    ]
    actual = pd.DataFrame(actual_rows, columns=["record_key", "degreed_id", *spec.fields])
    result = plan(desired[["record_key", *spec.fields]], actual, spec)
    if result.empty:
        return result.assign(**{c: pd.Series(dtype=object) for c in payload_columns})
    extras = desired.set_index("record_key")[payload_columns]
    result = result.join(extras, on="record_key")

    known_times = dict(zip(actual["record_key"], actual[time_field], strict=True))
    newer_in_degreed = [
        a == UPDATE and bool(known_times.get(k)) and str(known_times[k]) > str(t)
        for k, a, t in zip(result["record_key"], result["action"], result[time_field], strict=True)
    ]
    result.loc[newer_in_degreed, ["action", "reason"]] = [UNCHANGED, "a later attempt is already in Degreed"]

    not_due = quarantine.not_due(WAITING_FOR_LEARNER, keys=keys)
    waiting_learner = result["record_key"].isin(not_due) & result["action"].isin(["create", UPDATE])
    result.loc[waiting_learner, ["action", "reason"]] = [WAIT, "learner not in Degreed yet; retried later"]
    waiting_content = result["record_key"].isin(waiting_assessment) & result["action"].isin(["create", UPDATE])
    result.loc[waiting_content, ["action", "reason"]] = [WAIT, "assessment not in Degreed yet; retried after "
                                                               "assessment_sync_job"]
    return result


def plan_unplanned(engine: Engine, mapping: CompletionMapping, run_id: str) -> list[date]:
    """Plan every day that has staged attempts no plan has seen (a run that died between extract and plan);
    returns those days."""
    days = unplanned_days(engine)
    if days:
        for entity_plan in build_completion_plans(engine, days, mapping, run_id):
            stage_entity_plan(engine, entity_plan, run_id)
        mark_planned(engine, days)
    return days


def stage_entity_plan(engine: Engine, entity_plan: EntityPlan, run_id: str) -> None:
    """Upsert the planned records over rows of the same or older attempts (other records stay), for people to
    read and for any apply step to send."""
    columns = (*entity_plan.fields, *entity_plan.payload_columns)
    stage_latest(engine, entity_plan.entity, entity_plan.frame, columns, run_id)

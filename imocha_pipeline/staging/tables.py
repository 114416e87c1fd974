"""The staging tables analysts query, and the two column types every table uses.

Every timestamp is stored and returned as UTC (``UtcDateTime``); JSON is kept as text (``JsonText``) so every
backend and analyst tool reads it the same way. A change here needs a new migration (``staging/versions.py``;
the test suite compares these models with the migrated schema).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import sqlalchemy as sa

metadata = sa.MetaData()


class UtcDateTime(sa.types.TypeDecorator):
    """A timestamp that is always UTC: naive values are refused on the way in, UTC attached on the way out."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {type(value).__name__}")
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: staging timestamps must be timezone-aware UTC")
        value = value.astimezone(UTC)
        # SQLite keeps no zone: store the UTC wall time.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class JsonText(sa.types.TypeDecorator):
    """JSON stored as text on every backend, so analysts' tools read it the same everywhere."""

    impl = sa.Text
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)

    def process_result_value(self, value, dialect):
        return None if value is None else json.loads(value)


def _ts(name: str, **kwargs) -> sa.Column:
    return sa.Column(name, UtcDateTime(), **kwargs)


imocha_assessments = sa.Table(
    "imocha_assessments",
    metadata,
    sa.Column("test_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("test_name", sa.Text),
    sa.Column("status", sa.Text),
    sa.Column("duration_minutes", sa.Integer),
    sa.Column("question_count", sa.Integer),
    sa.Column("labels", JsonText),
    sa.Column("sections", JsonText),
    sa.Column("test_link_id", sa.BigInteger),
    sa.Column("test_link_key", sa.Text),
    sa.Column("test_link_url", sa.Text),
    _ts("extracted_at", nullable=False),
)

degreed_assessments = sa.Table(
    "degreed_assessments",
    metadata,
    sa.Column("degreed_id", sa.String(64), primary_key=True),
    sa.Column("external_id", sa.Text, index=True),
    sa.Column("title", sa.Text),
    sa.Column("summary", sa.Text),
    sa.Column("url", sa.Text),
    sa.Column("duration", sa.Float),
    sa.Column("duration_type", sa.Text),
    sa.Column("language", sa.Text),
    sa.Column("content_type", sa.Text),
    sa.Column("obsolete", sa.Boolean),
    sa.Column("provider_code", sa.Text),
    _ts("modified_at"),
    _ts("snapshot_at", nullable=False),
)

desired_assessments = sa.Table(
    "desired_assessments",
    metadata,
    sa.Column("external_id", sa.String(128), primary_key=True),
    sa.Column("test_id", sa.BigInteger, index=True),
    sa.Column("title", sa.Text),
    sa.Column("summary", sa.Text),
    sa.Column("url", sa.Text),
    sa.Column("duration", sa.Float),
    sa.Column("duration_type", sa.Text),
    sa.Column("language", sa.Text),
    sa.Column("content_type", sa.Text),
    _ts("computed_at", nullable=False),
    # Why the title differs from the iMocha name, e.g. HTML tags removed (NULL: sent as iMocha wrote it).
    sa.Column("title_note", sa.Text),
)

imocha_completions = sa.Table(
    "imocha_completions",
    metadata,
    sa.Column("test_invitation_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("test_id", sa.BigInteger, index=True),
    sa.Column("test_name", sa.Text),
    sa.Column("learner_email", sa.Text, index=True),
    sa.Column("learner_name", sa.Text),
    sa.Column("status", sa.Text),
    _ts("attempted_on"),
    sa.Column("attempt_date", sa.Date, index=True),
    sa.Column("score_percentage", sa.Float),
    sa.Column("candidate_points", sa.Float),
    sa.Column("total_points", sa.Float),
    sa.Column("performance_category", sa.Text),
    sa.Column("time_taken_seconds", sa.Integer),
    sa.Column("has_skills", sa.Boolean),
    _ts("extracted_at", nullable=False),
    # When a completion plan last took this attempt into account; NULL: staged but never planned (a run that
    # died between extract and plan), which the catch-up plans (``sync/outstanding.py``).
    _ts("planned_at"),
    sa.Index("ix_imocha_completions_unplanned", "planned_at", "attempt_date"),
)

imocha_skill_scores = sa.Table(
    "imocha_skill_scores",
    metadata,
    sa.Column("test_invitation_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("skill_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("skill_name", sa.Text),
    sa.Column("learner_email", sa.Text, index=True),
    sa.Column("test_id", sa.BigInteger),
    _ts("attempted_on"),
    sa.Column("attempt_date", sa.Date, index=True),
    sa.Column("points", sa.Float),
    sa.Column("max_points", sa.Float),
    sa.Column("percent", sa.Float),
    _ts("extracted_at", nullable=False),
)

degreed_completions = sa.Table(
    "degreed_completions",
    metadata,
    sa.Column("degreed_id", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.Text, index=True),
    sa.Column("employee_id", sa.Text),
    sa.Column("content_id", sa.Text, index=True),
    _ts("completed_at"),
    sa.Column("percentile", sa.Float),  # NULL where Degreed does not return it (its documented read shape)
    _ts("added_at"),
    _ts("snapshot_at", nullable=False),
    # The learner and the content as Degreed names them (its read answers carry only these ids); user_id and
    # content_id above are our email and external id, mapped through degreed_users and the content snapshot.
    sa.Column("degreed_user_id", sa.String(64)),
    sa.Column("degreed_content_id", sa.String(64)),
)

degreed_skill_ratings = sa.Table(
    "degreed_skill_ratings",
    metadata,
    sa.Column("degreed_id", sa.String(64), primary_key=True),
    sa.Column("user_id", sa.Text, index=True),
    sa.Column("employee_id", sa.Text),
    sa.Column("skill_name", sa.Text, index=True),
    sa.Column("rating", sa.Integer),
    sa.Column("rating_type", sa.Text),
    _ts("rated_at"),
    _ts("snapshot_at", nullable=False),
    sa.Column("degreed_user_id", sa.String(64)),
)

# Degreed's learners as its users endpoint answered (read API answers name learners only by Degreed id): the
# mapping Degreed user id <-> email / employee id, refreshed on a miss (``sync/identities.py``).
degreed_users = sa.Table(
    "degreed_users",
    metadata,
    sa.Column("degreed_id", sa.String(64), primary_key=True),
    sa.Column("email", sa.Text, index=True),  # organization-email, lower-case
    sa.Column("employee_id", sa.Text, index=True),
    _ts("fetched_at", nullable=False),
)

sync_ledger = sa.Table(
    "sync_ledger",
    metadata,
    sa.Column("entity", sa.String(32), primary_key=True),
    sa.Column("record_key", sa.String(512), primary_key=True),
    sa.Column("degreed_id", sa.String(64), index=True),
    sa.Column("action", sa.String(16)),
    sa.Column("state", sa.String(16), nullable=False, index=True),
    sa.Column("payload_hash", sa.String(64)),
    sa.Column("payload", JsonText),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("last_error", sa.Text),
    sa.Column("run_id", sa.String(64)),
    # The source (iMocha attempt id and its time) of what was last claimed for this record: what Degreed holds
    # once acknowledged, or what is in flight. A claim for an older attempt is refused (latest wins at send
    # time). NULL for assessments.
    sa.Column("source_id", sa.BigInteger),
    _ts("source_at"),
    _ts("claimed_at"),
    _ts("acknowledged_at"),
    # The Completions Template file that carried the record (state ``sent_by_file`` until Degreed shows it) and
    # when it was handed over; the grace period before an API re-send counts from ``file_sent_at``.
    sa.Column("file_name", sa.String(128)),
    _ts("file_sent_at"),
    _ts("created_at", nullable=False),
    _ts("updated_at", nullable=False),
    # Rows of an entity in one state (the few in flight among a million acknowledged: heartbeats, stuck claims).
    sa.Index("ix_sync_ledger_entity_state", "entity", "state"),
)

sync_quarantine = sa.Table(
    "sync_quarantine",
    metadata,
    sa.Column("entity", sa.String(32), primary_key=True),
    sa.Column("record_key", sa.String(512), primary_key=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("column_name", sa.Text),
    sa.Column("rule", sa.Text),
    sa.Column("bad_value", sa.Text),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("attempts", sa.Integer, nullable=False, default=1),
    sa.Column("run_id", sa.String(64)),
    _ts("first_seen_at", nullable=False),
    _ts("last_seen_at", nullable=False),
    _ts("next_retry_at"),
    _ts("resolved_at"),
    # Open entries of an entity by kind and retry time (what waits, what is due), without reading the rest.
    sa.Index("ix_sync_quarantine_open", "entity", "status", "kind", "next_retry_at"),
)

sync_plan = sa.Table(
    "sync_plan",
    metadata,
    sa.Column("entity", sa.String(32), primary_key=True),
    sa.Column("record_key", sa.String(512), primary_key=True),
    sa.Column("action", sa.String(16), nullable=False, index=True),
    sa.Column("reason", sa.Text),
    sa.Column("changed_fields", JsonText),
    sa.Column("degreed_id", sa.String(64)),
    sa.Column("payload", JsonText),
    sa.Column("payload_hash", sa.String(64)),
    sa.Column("run_id", sa.String(64)),
    _ts("planned_at", nullable=False),
    # Completions and skill ratings: the attempt a row was planned from (id, time, UTC day). A row is replaced
    # only by a plan of the same or a later attempt, so concurrent runs never put an older attempt back.
    sa.Column("source_id", sa.BigInteger),
    _ts("source_at"),
    sa.Column("source_day", sa.Date),
    # Assessments: the plan the rows belong to; the apply step sends only the plan the guard approved.
    sa.Column("plan_id", sa.String(64)),
    # When the ledger showed Degreed acknowledged exactly this row's values (NULL: not yet, or claimed again since).
    # The outstanding records of every day are looked for among unmarked rows only, so the catch-up does not read
    # the delivered history (``sync/core/outstanding.py``; set by ``plan_store.mark_delivered``, cleared by a claim).
    _ts("delivered_at"),
    sa.Index("ix_sync_plan_entity_source_day", "entity", "source_day"),
    sa.Index("ix_sync_plan_outstanding", "entity", "delivered_at", "action"),
    sa.Index("ix_sync_plan_plan_id", "plan_id"),
)

sync_state = sa.Table(
    "sync_state",
    metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("value", JsonText),
    _ts("updated_at", nullable=False),
)

sync_drift = sa.Table(
    "sync_drift",
    metadata,
    sa.Column("entity", sa.String(32), primary_key=True),
    sa.Column("record_key", sa.String(512), primary_key=True),
    sa.Column("kind", sa.String(32), primary_key=True),  # missing_in_degreed | changed_in_degreed | unknown_to_us
    sa.Column("degreed_id", sa.String(64)),
    sa.Column("detail", sa.Text),
    sa.Column("repaired", sa.Boolean, nullable=False, default=False),
    sa.Column("run_id", sa.String(64)),
    _ts("found_at", nullable=False),
)

callback_inbox = sa.Table(
    "callback_inbox",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("test_invitation_id", sa.BigInteger, nullable=False, index=True),
    sa.Column("status", sa.Text),
    sa.Column("payload", JsonText),
    _ts("received_at", nullable=False),
    _ts("processed_at"),
    sa.Column("run_key", sa.String(256)),
)

# One row per shared rate budget (e.g. ``degreed:<client id>``), see ``clients/http/shared_budget.py``.
# Times are seconds on the budget's clock (epoch seconds by default).
rate_budget = sa.Table(
    "rate_budget",
    metadata,
    sa.Column("name", sa.String(200), primary_key=True),
    sa.Column("sent", JsonText),  # send times still inside the window, oldest first
    sa.Column("paused_until", sa.Float, nullable=False, default=0.0),
    sa.Column("waiting", JsonText),  # taker id -> [lane rank, interest expires at]
    _ts("updated_at", nullable=False),
)

# The skill mapping table (IMOCHA_PIPELINE_SKILL_MAP) as the last plan saw it, for analysts
# (``v_unmapped_skills``); staged by ``sync/skill_mapping.py``.
skill_mapping = sa.Table(
    "skill_mapping",
    metadata,
    sa.Column("imocha_skill_key", sa.String(512), primary_key=True),  # the iMocha name, trimmed, lower-case
    sa.Column("imocha_skill", sa.Text, nullable=False),  # as written in the CSV
    sa.Column("degreed_skill", sa.Text, nullable=False),
    _ts("loaded_at", nullable=False),
)

# Learners erased with ``imocha-pipeline forget`` (``sync/erasure``): only the HMAC-SHA256 of the normalised email
# (IMOCHA_PIPELINE_ERASURE_KEY), so an attempt iMocha lists again is recognised and not staged while the erasure
# holds. ``lifted_at`` set: an operator lifted it (``forget --undo``) and the learner syncs again.
erased_learners = sa.Table(
    "erased_learners",
    metadata,
    sa.Column("email_hmac", sa.String(64), primary_key=True),
    _ts("erased_at", nullable=False),
    _ts("lifted_at"),
    # When iMocha accepted the GDPR request (``--in-imocha``): its copies of the attempts are masked, so lifting the
    # erasure does not read those attempts again (they would come back under a masked email).
    _ts("masked_in_imocha_at"),
    # When an erasure asked for the learner's records to be deleted in Degreed (``--in-degreed``): the reconcile
    # deletes whatever of theirs is still there (a delete that failed, one written back by a run in flight).
    _ts("degreed_deletion_requested_at"),
    _ts("updated_at", nullable=False),
)

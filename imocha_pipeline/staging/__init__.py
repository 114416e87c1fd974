"""The staging database: the tables analysts query, portable SQL, one engine per URL, a small state store.

- ``tables``: every table and the two column types (UTC timestamps, JSON as text);
- ``engine``: URLs, engines, upserts by natural key, UTC now;
- ``connect``: one prepared engine per URL per process (an empty database is migrated on first use);
- ``versions``: the schema's Alembic revisions and the first-use rule (``imocha-pipeline db upgrade``);
- ``state``: a key-value store (``sync_state``);
- ``rate_budget_store``: the shared rate budgets' rows (``rate_budget``).

The names below are the package's public surface: ``from imocha_pipeline import staging`` then
``staging.sync_ledger``, ``staging.upsert(...)``, ``staging.get_engine(url)``.
"""

from imocha_pipeline.staging.connect import dispose_engine, get_engine
from imocha_pipeline.staging.engine import (
    create_engine,
    describe_url,
    existing_values,
    normalise_url,
    not_older,
    read_rows,
    stage_full_extract,
    sweep_older,
    table_names,
    upsert,
    utcnow,
)
from imocha_pipeline.staging.state import get_state, set_state
from imocha_pipeline.staging.tables import (
    JsonText,
    UtcDateTime,
    callback_inbox,
    degreed_assessments,
    degreed_completions,
    degreed_skill_ratings,
    degreed_users,
    desired_assessments,
    erased_learners,
    imocha_assessments,
    imocha_completions,
    imocha_skill_scores,
    metadata,
    rate_budget,
    skill_mapping,
    sync_drift,
    sync_ledger,
    sync_plan,
    sync_quarantine,
    sync_state,
)

__all__ = [
    "JsonText", "UtcDateTime", "callback_inbox", "create_engine", "degreed_assessments", "degreed_completions",
    "degreed_skill_ratings", "degreed_users", "describe_url", "desired_assessments", "dispose_engine",
    "erased_learners", "existing_values", "get_engine", "get_state", "imocha_assessments", "imocha_completions",
    "imocha_skill_scores", "metadata", "normalise_url", "not_older", "rate_budget", "read_rows", "set_state",
    "skill_mapping", "stage_full_extract", "sweep_older", "sync_drift", "sync_ledger", "sync_plan", "sync_quarantine",
    "sync_state", "table_names", "upsert", "utcnow",
]

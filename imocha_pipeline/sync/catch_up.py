"""What the catch-up job has to do: days with staged attempts no plan has seen, and due outstanding records of
any day (``catch_up_schedule`` starts a run only when there is some)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy.engine import Engine

from imocha_pipeline.sync.completions.plan import unplanned_days
from imocha_pipeline.sync.core.entity import EntitySpec
from imocha_pipeline.sync.core.outstanding import Scope, known_assessments, outstanding


def catch_up_work(engine: Engine, entities: Iterable[EntitySpec], now: datetime | None = None) -> dict[str, int]:
    """What a catch-up run would do now: days to plan (staged attempts no plan has seen) and due records per
    entity; only the non-zero counts (empty: nothing to do)."""
    work = {"days_to_plan": len(unplanned_days(engine))}
    assessments = known_assessments(engine)
    for entity in entities:
        work[f"{entity.name}_due"] = len(outstanding(engine, entity, Scope(), now=now, assessments=assessments).due)
    return {name: count for name, count in work.items() if count}

"""The three entities that travel to Degreed, described once: what a record's payload holds, which fields we own,
where its source attempt is, and the pandera model its payload must pass before it is sent."""

from __future__ import annotations

from dataclasses import dataclass

from imocha_pipeline.sync.completion_plan import COMPLETION_PAYLOAD, SKILL_RATING_PAYLOAD
from imocha_pipeline.sync.completions import COMPLETION, COMPLETION_FIELDS, SKILL_RATING, SKILL_RATING_FIELDS
from imocha_pipeline.sync.mapping import DESIRED_ASSESSMENT_FIELDS
from imocha_pipeline.sync.schemas import CompletionPayloadModel, SkillRatingPayloadModel

ASSESSMENT = "assessment"


@dataclass(frozen=True)
class EntityDef:
    """How one entity is planned and sent.

    ``fields``: the Degreed attributes we own and compare; ``payload``: further columns the writer needs;
    ``per_attempt``: records come from iMocha attempts (latest attempt wins; the action is decided at send time
    from the ledger); ``needs_assessment``: a record waits until its assessment is in Degreed.
    """

    name: str
    fields: tuple[str, ...]
    payload: tuple[str, ...] = ()
    per_attempt: bool = False
    needs_assessment: bool = False
    model: type | None = None

    @property
    def all_fields(self) -> tuple[str, ...]:
        return (*self.fields, *self.payload)


ASSESSMENTS = EntityDef(ASSESSMENT, DESIRED_ASSESSMENT_FIELDS, model=None)
COMPLETIONS = EntityDef(COMPLETION, COMPLETION_FIELDS, COMPLETION_PAYLOAD, per_attempt=True, needs_assessment=True,
                        model=CompletionPayloadModel)
SKILL_RATINGS = EntityDef(SKILL_RATING, SKILL_RATING_FIELDS, SKILL_RATING_PAYLOAD, per_attempt=True,
                          model=SkillRatingPayloadModel)
ATTEMPT_ENTITIES = (COMPLETIONS, SKILL_RATINGS)
"""Completions first: Degreed shows a learner's skill ratings next to the completion they came from."""
BY_NAME = {entity.name: entity for entity in (ASSESSMENTS, COMPLETIONS, SKILL_RATINGS)}

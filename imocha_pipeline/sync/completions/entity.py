"""The two attempt entities: a completion per learner and assessment, a skill rating per learner and skill, each
from the learner's latest attempt, planned against the ledger and decided at send time."""

from imocha_pipeline.sync.completions.models import CompletionPayloadModel, SkillRatingPayloadModel
from imocha_pipeline.sync.completions.records import (
    COMPLETION,
    COMPLETION_FIELDS,
    COMPLETION_PAYLOAD,
    SKILL_RATING,
    SKILL_RATING_FIELDS,
    SKILL_RATING_PAYLOAD,
)
from imocha_pipeline.sync.completions.writers import CompletionWriter, SkillRatingWriter
from imocha_pipeline.sync.core.entity import EntitySpec

COMPLETIONS = EntitySpec(name=COMPLETION, key="record_key", fields=COMPLETION_FIELDS, payload=COMPLETION_PAYLOAD,
                         per_attempt=True, needs_assessment=True, model=CompletionPayloadModel,
                         writer=CompletionWriter)
SKILL_RATINGS = EntitySpec(name=SKILL_RATING, key="record_key", fields=SKILL_RATING_FIELDS,
                           payload=SKILL_RATING_PAYLOAD, per_attempt=True, model=SkillRatingPayloadModel,
                           writer=SkillRatingWriter)

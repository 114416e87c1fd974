"""The three entities that travel to Degreed, in the order a run sends them."""

from imocha_pipeline.sync.assessments.entity import ASSESSMENTS
from imocha_pipeline.sync.completions.entity import COMPLETIONS, SKILL_RATINGS

ATTEMPT_ENTITIES = (COMPLETIONS, SKILL_RATINGS)
"""Completions first: Degreed shows a learner's skill ratings next to the completion they came from."""
ALL_ENTITIES = (ASSESSMENTS, *ATTEMPT_ENTITIES)
BY_NAME = {entity.name: entity for entity in ALL_ENTITIES}

__all__ = ["ALL_ENTITIES", "ASSESSMENTS", "ATTEMPT_ENTITIES", "BY_NAME", "COMPLETIONS", "SKILL_RATINGS"]

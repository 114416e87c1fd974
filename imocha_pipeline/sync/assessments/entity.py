"""The assessment entity: Degreed Assessment content keyed by external id ``imocha-{testId}``, planned against
Degreed's own snapshot, retired (``obsolete``) when the test leaves iMocha."""

from imocha_pipeline.sync.assessments.mapping import DESIRED_ASSESSMENT_FIELDS
from imocha_pipeline.sync.assessments.writer import AssessmentWriter
from imocha_pipeline.sync.core.entity import EntitySpec

ASSESSMENT = "assessment"
ASSESSMENTS = EntitySpec(name=ASSESSMENT, key="external_id", fields=DESIRED_ASSESSMENT_FIELDS, retire_missing=True,
                         writer=AssessmentWriter)

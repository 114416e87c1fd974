"""pandera models of the attempt tables and of the completions and skill ratings we send to Degreed."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa
from pandera.typing.pandas import Series

from imocha_pipeline.sync.core.validation import name_pattern

EMAIL_PATTERN = name_pattern(r"^[^@\s]+@[^@\s]+\.[^@\s]+$", "must be an email address")


class ImochaCompletionModel(pa.DataFrameModel):
    """A staged finished attempt: a learner's email, a score within 0-100, points within the maximum, UTC time."""

    test_invitation_id: Series[int] = pa.Field(gt=0, unique=True)
    test_id: Series[float] = pa.Field(gt=0)
    learner_email: Series[str] = pa.Field(str_matches=EMAIL_PATTERN)
    status: Series[str]
    attempted_on: Series[pd.DatetimeTZDtype] = pa.Field(nullable=False, dtype_kwargs={"unit": "us", "tz": "UTC"})
    score_percentage: Series[float] = pa.Field(ge=0, le=100)
    candidate_points: Series[float] = pa.Field(nullable=True, ge=0)
    total_points: Series[float] = pa.Field(nullable=True, gt=0)

    @pa.dataframe_check(element_wise=False, error="candidate_points must not exceed total_points")
    def points_within_maximum(cls, frame):
        points, total = frame["candidate_points"], frame["total_points"]
        return points.isna() | total.isna() | (points <= total + 1e-9)

    class Config:
        strict = False
        coerce = True


class ImochaSkillScoreModel(pa.DataFrameModel):
    """A staged skill score of an attempt: a named skill with points within its maximum."""

    test_invitation_id: Series[int] = pa.Field(gt=0)
    skill_name: Series[str] = pa.Field(str_length={"min_value": 1, "max_value": 255})
    points: Series[float] = pa.Field(ge=0)
    max_points: Series[float] = pa.Field(gt=0)
    percent: Series[float] = pa.Field(ge=0, le=100)
    attempted_on: Series[pd.DatetimeTZDtype] = pa.Field(nullable=False, dtype_kwargs={"unit": "us", "tz": "UTC"})

    class Config:
        strict = False
        coerce = True


class CompletionPayloadModel(pa.DataFrameModel):
    """An outgoing Degreed completion: a learner, an assessment external id, a UTC time and a 0-100 percentile."""

    user_id: Series[str] = pa.Field(str_length={"min_value": 1})
    user_identifier_type: Series[str] = pa.Field(isin=["Email", "EmployeeId"])
    content_id: Series[str] = pa.Field(str_matches=r"^\S+-\d+$")
    completed_at: Series[str] = pa.Field(str_matches=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
    percentile: Series[float] = pa.Field(ge=0, le=100)

    class Config:
        strict = False
        coerce = True


class SkillRatingPayloadModel(pa.DataFrameModel):
    """An outgoing Degreed skill rating: a learner, a skill name and a level from 1 to 8."""

    user_id: Series[str] = pa.Field(str_length={"min_value": 1})
    skill_name: Series[str] = pa.Field(str_length={"min_value": 1, "max_value": 255})
    rating: Series[int] = pa.Field(ge=1, le=8)
    rated_at: Series[str] = pa.Field(str_matches=r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")

    class Config:
        strict = False
        coerce = True

"""pandera models for the extracted tables and the outgoing Degreed payloads.

They run inside blocking asset checks and inside the assets that split good rows from bad ones.
"""

from __future__ import annotations

import pandera.pandas as pa
from pandera.typing.pandas import Series

URL_PATTERN = r"^https?://[^\s/$.?#][^\s]*$"
MAX_ASSESSMENT_MINUTES = 600


class ImochaAssessmentsModel(pa.DataFrameModel):
    """A staged iMocha test: an id, a name and a sane duration."""

    test_id: Series[int] = pa.Field(gt=0, unique=True)
    test_name: Series[str] = pa.Field(nullable=True)
    duration_minutes: Series[float] = pa.Field(nullable=True)

    class Config:
        strict = False
        coerce = True


class DesiredAssessmentModel(pa.DataFrameModel):
    """The Assessment content we send to Degreed for one iMocha test."""

    external_id: Series[str] = pa.Field(str_matches=r"^\S+-\d+$", unique=True)
    title: Series[str] = pa.Field(str_length={"min_value": 1, "max_value": 255})
    summary: Series[str] = pa.Field(nullable=True, str_length={"max_value": 2000})
    url: Series[str] = pa.Field(str_matches=URL_PATTERN, str_length={"max_value": 2000})
    duration: Series[float] = pa.Field(ge=1, le=MAX_ASSESSMENT_MINUTES)
    duration_type: Series[str] = pa.Field(isin=["Minutes"])
    content_type: Series[str] = pa.Field(isin=["Assessment"])

    class Config:
        strict = False
        coerce = True

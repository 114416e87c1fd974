"""pandera models of the assessment tables: the staged iMocha tests and the Degreed content we want.

They run inside the blocking asset checks and in the assets that split good rows from bad ones.
"""

from __future__ import annotations

import pandera.pandas as pa
from pandera.typing.pandas import Series

from imocha_pipeline.sync.core.validation import name_pattern

URL_PATTERN = name_pattern(r"^https?://[^\s/$.?#][^\s]*$", "must be an http(s) URL")
MAX_ASSESSMENT_MINUTES = 600
# An HTML tag: "<" directly followed by a letter, "/" or "!", up to the next ">". Text that merely uses "<" and
# ">" ("a < b", "x<>1") is not markup. sync.mapping removes such tags from titles with this same pattern.
HTML_TAG_PATTERN = r"</?[A-Za-z!][^<>]*>"
# Titles are plain text: HTML markup (a tag such as <b> or <script>) would show up, or run, in Degreed's pages.
# desired_assessments() removes tags first, so this rule is the safety net behind it.
PLAIN_TEXT_PATTERN = name_pattern(rf"^(?![\s\S]*{HTML_TAG_PATTERN})[\s\S]*$",
                                  "must be plain text (it contains HTML markup)")


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
    title: Series[str] = pa.Field(str_length={"min_value": 1, "max_value": 255}, str_matches=PLAIN_TEXT_PATTERN)
    summary: Series[str] = pa.Field(nullable=True, str_length={"max_value": 2000})
    # Degreed refuses a second content item with the same URL (409, spec §6): a launch template without a per-test
    # part would send the same link for every test.
    url: Series[str] = pa.Field(str_matches=URL_PATTERN, str_length={"max_value": 2000}, unique=True)
    duration: Series[float] = pa.Field(ge=1, le=MAX_ASSESSMENT_MINUTES)
    duration_type: Series[str] = pa.Field(isin=["Minutes"])
    content_type: Series[str] = pa.Field(isin=["Assessment"])

    class Config:
        strict = False
        coerce = True

"""Mapping rules from iMocha records to the Degreed records we want (DESIGN.md §4), each a setting.

Launch links come from URL templates. Every value put into a template is URL-encoded, so names with
spaces, ``&``, ``?``, ``#`` or any unicode cannot break the link or smuggle in parameters.

Titles are sent as plain text: HTML tags in an iMocha test name are removed (``plain_text_title``).
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from urllib.parse import quote

import pandas as pd

from imocha_pipeline import settings
from imocha_pipeline.sync.assessments.models import HTML_TAG_PATTERN
from imocha_pipeline.sync.core.plain_values import plain

# [assumption] iMocha does not document the public URL of an open test link; the link key is the
# documented part (`testLink`, e.g. "db282e0a"). Override with IMOCHA_PIPELINE_LAUNCH_URL_TEMPLATE.
DEFAULT_LAUNCH_URL_TEMPLATE = settings.IMOCHA_PIPELINE_LAUNCH_URL_TEMPLATE.default
DEFAULT_SUMMARY_TEMPLATE = settings.IMOCHA_PIPELINE_SUMMARY_TEMPLATE.default
LAUNCH_FIELDS = settings.IMOCHA_PIPELINE_LAUNCH_URL_TEMPLATE.parser.fields
SSO_FIELDS = settings.IMOCHA_PIPELINE_SSO_URL_TEMPLATE.parser.fields
SUMMARY_FIELDS = settings.IMOCHA_PIPELINE_SUMMARY_TEMPLATE.parser.fields


class TemplateError(ValueError):
    """A URL or text template names a placeholder we do not provide, or is malformed."""


def template_fields(template: str) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name}
    except ValueError as exc:
        raise TemplateError(f"malformed template {template!r}: {exc}") from None


def check_template(template: str, allowed: tuple[str, ...], setting: str) -> str:
    unknown = template_fields(template) - set(allowed)
    if unknown:
        raise TemplateError(f"{setting} uses unknown placeholder(s) {sorted(unknown)}; "
                            f"available: {', '.join(allowed)}")
    return template


def fill_url(template: str, values: dict[str, object]) -> str:
    """Substitute URL-encoded values (nothing is left unescaped, not even '/')."""
    encoded = {name: quote("" if value is None else str(value), safe="") for name, value in values.items()}
    return template.format_map(encoded)


@dataclass(frozen=True)
class AssessmentMapping:
    """Settings for turning an iMocha test into Degreed Assessment content."""

    launch_url_template: str = DEFAULT_LAUNCH_URL_TEMPLATE
    sso_url_template: str = ""  # e.g. https://idp.example.com/sso?RelayState={launch_url}
    summary_template: str = DEFAULT_SUMMARY_TEMPLATE
    external_id_prefix: str = "imocha-"
    language: str = settings.IMOCHA_PIPELINE_CONTENT_LANGUAGE.default
    content_type: str = "Assessment"
    duration_type: str = "Minutes"
    title_max_length: int = settings.IMOCHA_PIPELINE_TITLE_MAX_LENGTH.default

    def __post_init__(self):
        check_template(self.launch_url_template, LAUNCH_FIELDS, settings.IMOCHA_PIPELINE_LAUNCH_URL_TEMPLATE.name)
        if self.sso_url_template:
            check_template(self.sso_url_template, SSO_FIELDS, settings.IMOCHA_PIPELINE_SSO_URL_TEMPLATE.name)
        check_template(self.summary_template, SUMMARY_FIELDS, settings.IMOCHA_PIPELINE_SUMMARY_TEMPLATE.name)

    @classmethod
    def from_env(cls) -> AssessmentMapping:
        return cls(
            launch_url_template=settings.IMOCHA_PIPELINE_LAUNCH_URL_TEMPLATE.value(),
            sso_url_template=settings.IMOCHA_PIPELINE_SSO_URL_TEMPLATE.value(),
            summary_template=settings.IMOCHA_PIPELINE_SUMMARY_TEMPLATE.value(),
            language=settings.IMOCHA_PIPELINE_CONTENT_LANGUAGE.value(),
            title_max_length=settings.IMOCHA_PIPELINE_TITLE_MAX_LENGTH.value(),
        )

    def external_id(self, test_id: int) -> str:
        return f"{self.external_id_prefix}{test_id}"

    def launch_url(self, test_id, test_link, test_link_id, test_name) -> str | None:
        """The learner's launch link: the public test link, wrapped in the SSO login URL when configured."""
        if not test_link:
            return None
        url = fill_url(self.launch_url_template, {"test_id": test_id, "test_link": test_link,
                                                  "test_link_id": test_link_id, "test_name": test_name})
        if self.sso_url_template:
            url = fill_url(self.sso_url_template, {"launch_url": url, "test_id": test_id, "test_name": test_name})
        return url

    def summary(self, test_name: str, sections, questions, duration) -> str:
        names = [s.get("name") or s.get("sectionName") for s in (sections or []) if isinstance(s, dict)]
        names = [n for n in names if n]
        return self.summary_template.format(
            skills=", ".join(names) if names else (test_name or ""),
            sections=len(names), questions=questions if questions is not None else "?",
            duration=duration if duration is not None else "?", test_name=test_name or "",
        )


# The attributes we own on Degreed's side and compare on every run.
DESIRED_ASSESSMENT_FIELDS = ("title", "summary", "url", "duration", "duration_type", "language")

# Titles as plain text. The precedent is Open edX's Degreed channel (openedx/edx-enterprise, read at commit
# 68f55aa2, integrated_channels/degreed2/exporters/content_metadata.py `transform_description`): it sends the
# `summary` through integrated_channels/utils.py `strip_html_tags`, which is Django's `strip_tags`
# (django/utils/html.py, an html.parser MLStripper: tags and comments removed, the text inside every element kept,
# *including* <script>/<style> content, entities left as written, repeated while tags remain) followed by
# `re.sub(r'&([a-zA-Z]{4,5}|#[0-9]{2,4});', '', text)`: entities of 4-5 letters or 2-4 digits (&nbsp; &quot;
# &#39;) are deleted, not unescaped, and shorter ones (&amp; &lt; &gt;) stay as written, so nothing unescaped can
# turn into a tag again. edX does not collapse whitespace (we do) and passes its `title` through unchanged; we
# apply the same cleaning to the title, because our DesiredAssessmentModel rejects a title with markup.
# A tag is what PLAIN_TEXT_PATTERN calls one (schemas.HTML_TAG_PATTERN), so "a < b", "x<>1" or SQL-looking names
# are sent verbatim.
_HTML_TAG = re.compile(r"<!--[\s\S]*?-->|" + HTML_TAG_PATTERN)
_HTML_ENTITY = re.compile(r"&([a-zA-Z]{4,5}|#[0-9]{2,4});")  # edX strip_html_tags(strip_entities=True)
_WHITESPACE = re.compile(r"\s+")
_NOTE_NAME_LIMIT = 200


def plain_text_title(name: str | None) -> tuple[str, str | None]:
    """The title to send for an iMocha test name, and a note when it is not the name as iMocha wrote it.

    A name without HTML tags is sent as written (only stripped at both ends); the note is None. A name with tags
    is sent with the tags (and edX's entities) removed and runs of whitespace collapsed; the note says so and
    quotes the name. The title may come out empty (a name of markup only); the "title is required" rule then
    quarantines it.
    """
    raw = "" if name is None else str(name)
    if not _HTML_TAG.search(raw):
        return raw.strip(), None
    text, entities = raw, False
    while True:  # removing a tag or an entity can join the pieces of another one ("<<b>i>"): repeat until none
        cleaned = _HTML_TAG.sub("", text)
        unescaped = _HTML_ENTITY.sub("", cleaned)
        entities = entities or unescaped != cleaned
        if unescaped == text:
            break
        text = unescaped
    title = _WHITESPACE.sub(" ", text).strip()
    shown = raw if len(raw) <= _NOTE_NAME_LIMIT else raw[:_NOTE_NAME_LIMIT - 3] + "..."
    removed = "HTML tags and entities" if entities else "HTML tags"
    return title, f"title sent as plain text: {removed} removed from the iMocha name {shown!r}"


def desired_assessments(extract: pd.DataFrame, mapping: AssessmentMapping) -> pd.DataFrame:
    """One desired Degreed Assessment per staged iMocha test (``imocha_assessments`` rows).

    ``title_note`` is None when the title is the iMocha name as written, else why it differs (``plain_text_title``).
    """
    columns = ["external_id", "test_id", *DESIRED_ASSESSMENT_FIELDS, "content_type", "title_note"]
    if extract.empty:
        return pd.DataFrame(columns=columns)
    rows = []
    for raw in extract.to_dict("records"):
        rec = {name: plain(value) for name, value in raw.items()}  # NaN from pandas -> None
        title, title_note = plain_text_title(rec.get("test_name"))
        rows.append({
            "external_id": mapping.external_id(rec["test_id"]),
            "test_id": rec["test_id"],
            "title": title or None,
            "summary": mapping.summary(rec.get("test_name"), rec.get("sections"), rec.get("question_count"),
                                       rec.get("duration_minutes")),
            "url": mapping.launch_url(rec["test_id"], rec.get("test_link_key"), rec.get("test_link_id"),
                                      rec.get("test_name")),
            "duration": rec.get("duration_minutes"),
            "duration_type": mapping.duration_type,
            "language": mapping.language,
            "content_type": mapping.content_type,
            "title_note": title_note,
        })
    frame = pd.DataFrame(rows, columns=columns)
    frame["duration"] = pd.to_numeric(frame["duration"], errors="coerce").astype("float64")
    # object dtype keeps None as None (a pandas string column would turn it into NaN)
    frame["title_note"] = pd.Series([row["title_note"] for row in rows], index=frame.index, dtype=object)
    return frame

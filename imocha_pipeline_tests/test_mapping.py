"""Mapping rules: launch links from templates (URL-encoded, SSO-wrapped), summaries, plain-text titles, validation
reasons, and skill levels on band edges."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np
import pandas as pd
import pytest

from imocha_pipeline.sync.assessments.mapping import (
    AssessmentMapping,
    TemplateError,
    desired_assessments,
    plain_text_title,
)
from imocha_pipeline.sync.assessments.models import DesiredAssessmentModel
from imocha_pipeline.sync.completions.mapping import CompletionMapping, exact, parse_bands
from imocha_pipeline.sync.core.validation import split_valid

AWKWARD = ["Java L2 — Collections & Streams", "Cloud Security (AWS)? Core", "商务英语 Business English",
           "Kubernetes Basics #1", "a=b&c=d", "  spaced  name  "]


@pytest.mark.parametrize("name", AWKWARD)
def test_launch_link_encodes_every_value(name):
    mapping = AssessmentMapping(launch_url_template="https://test.example/start?test={test_id}&n={test_name}&l={test_link}")
    url = mapping.launch_url(42, "ab/c?d", 7, name)
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    assert set(query) == {"test", "n", "l"}  # nothing in a value could add or split a parameter
    assert query["n"] == [name] and query["l"] == ["ab/c?d"] and query["test"] == ["42"]
    assert parts.fragment == ""


def test_sso_wrapping_carries_the_launch_link_as_one_encoded_value():
    mapping = AssessmentMapping(launch_url_template="https://test.example/{test_link}",
                                sso_url_template="https://idp.example/sso?RelayState={launch_url}&app=imocha")
    url = mapping.launch_url(1, "k e&y", 9, "x")
    query = parse_qs(urlsplit(url).query)
    assert query["app"] == ["imocha"]
    assert query["RelayState"] == ["https://test.example/k%20e%26y"]
    assert unquote(query["RelayState"][0]) == "https://test.example/k e&y"


def test_unknown_placeholder_is_a_clear_error():
    with pytest.raises(TemplateError, match=r"IMOCHA_PIPELINE_SSO_URL_TEMPLATE uses unknown placeholder.*'tenant'"):
        AssessmentMapping(sso_url_template="https://idp/{tenant}?r={launch_url}")


def test_no_active_link_means_no_url():
    assert AssessmentMapping().launch_url(1, None, None, "x") is None


def extract(rows):
    columns = ["test_id", "test_name", "duration_minutes", "question_count", "sections", "test_link_id",
               "test_link_key"]
    return pd.DataFrame(rows, columns=columns)


def test_desired_assessments_and_quarantine_reasons():
    staged = extract([
        [1, "Python Fundamentals", 30, 20, [{"name": "Python"}, {"name": "SQL"}], 11, "k1"],
        [2, "   ", 30, 20, [], 12, "k2"],  # blank name
        [3, "Marathon", 5000, 20, [], 13, "k3"],  # absurd duration
        [4, "No link", 30, 20, [], None, None],  # no active link -> no url
    ])
    desired = desired_assessments(staged, AssessmentMapping())
    first = desired.iloc[0]
    assert first["external_id"] == "imocha-1" and first["url"] == "https://test.imocha.io/k1"
    assert first["summary"] == "iMocha assessment: Python, SQL. 20 questions, 30 minutes."
    valid, failures = split_valid(desired, DesiredAssessmentModel, "external_id")
    assert valid["external_id"].tolist() == ["imocha-1"]
    reasons = {f.record_key: f.reason for f in failures}
    assert reasons["imocha-2"] == "title is required (got empty)"
    assert reasons["imocha-3"] == "duration must be at most 600 (got 5000.0)"
    assert reasons["imocha-4"] == "url is required (got empty)"


# ---------------------------------------------------------------- titles with HTML markup


@pytest.mark.parametrize(("name", "title"), [
    ("<b>SQL</b> Basics", "SQL Basics"),
    ("  <h1 class='x'>Java</h1>\n\t<p>Collections &amp; Streams</p>  ", "Java Collections &amp; Streams"),
    ("<i>Python</i><b>3</b>", "Python3"),  # tags are removed, not replaced by a space (edX)
    ("Intro<br/>to    <span style=\"color:red\">Go</span>", "Introto Go"),
    ("<B>Upper</B> <A HREF='https://x.example'>case</A>", "Upper case"),
    ("Rust <!-- a comment with > and < inside --> Basics", "Rust Basics"),
    ("<<b>b>Nested</b>", "Nested"),  # removing one tag leaves another: removed too
    ("<b>Python</b> <script>alert(1)</script>", "Python alert(1)"),  # element text kept, as edX/Django strip_tags
    ("<style>p{color:red}</style>CSS", "p{color:red}CSS"),
    # entities as edX's strip_html_tags: 4-5 letter and 2-4 digit ones deleted, &amp; &lt; &gt; kept as written
    ("<b>Tom&nbsp;&amp;&nbsp;Jerry</b> &quot;Q&#39;s&quot; &lt;tag&gt; &#8212; &euro;", "Tom&amp;Jerry Qs &lt;tag&gt;"),
])
def test_markup_is_removed_from_titles(name, title):
    sent, note = plain_text_title(name)
    assert sent == title
    assert note is not None and note.startswith("title sent as plain text: HTML tags")
    assert note.endswith(f"removed from the iMocha name {name!r}")


HOSTILE_LOOKING = ["Robert'); DROP TABLE tests;--", "../../etc/passwd", "a < b and c > d",
                   "SELECT * FROM t WHERE x<>1", "1 <2 and 3> 2", "C++ & C#: <=> operator", "Tom &nbsp; Jerry",
                   "x </ y >", "<3 Python", "Title\r\nX-Injected-Header: yes", "%0d%0a ? & # %2F..%2F",
                   "Java L2 — Collections & Streams", "商务英语 Business English"]


@pytest.mark.parametrize("name", HOSTILE_LOOKING)
def test_names_without_markup_are_sent_verbatim(name):
    assert plain_text_title(name) == (name, None)
    assert plain_text_title(f"  {name}\n") == (name, None)  # only stripped at the ends, as before


def test_long_names_are_cut_in_the_note():
    sent, note = plain_text_title("<b>" + "x" * 500 + "</b>")
    assert sent == "x" * 500 and len(note) < 300 and note.endswith("...'")


def test_desired_assessments_send_titles_as_plain_text_and_say_why():
    staged = extract([
        [1, "<b>SQL</b> Basics", 30, 20, [], 11, "k1"],
        [2, "<b>Python</b> <script>alert(1)</script>", 30, 20, [], 12, "k2"],
        [3, "<b></b> <script></script>", 30, 20, [], 13, "k3"],  # markup only: nothing left
        [4, " <br/>\n ", 30, 20, [], 14, "k4"],
        *([10 + i, name, 30, 20, [], 20 + i, f"h{i}"] for i, name in enumerate(HOSTILE_LOOKING)),
    ])
    desired = desired_assessments(staged, AssessmentMapping()).set_index("test_id")
    assert desired.loc[1, "title"] == "SQL Basics"
    assert desired.loc[1, "title_note"] == ("title sent as plain text: HTML tags removed from the iMocha name "
                                            "'<b>SQL</b> Basics'")
    assert desired.loc[2, "title"] == "Python alert(1)"
    for i, name in enumerate(HOSTILE_LOOKING):
        assert desired.loc[10 + i, "title"] == name and desired.loc[10 + i, "title_note"] is None
    valid, failures = split_valid(desired.reset_index(), DesiredAssessmentModel, "external_id")
    assert len(valid) == 2 + len(HOSTILE_LOOKING)
    assert {f.record_key: f.reason for f in failures} == {"imocha-3": "title is required (got empty)",
                                                          "imocha-4": "title is required (got empty)"}


def test_plain_text_rule_stays_as_a_safety_net():
    frame = pd.DataFrame([{"external_id": "imocha-1", "title": "<b>SQL</b>", "summary": None,
                           "url": "https://test.imocha.io/k", "duration": 30.0, "duration_type": "Minutes",
                           "content_type": "Assessment"}])
    _, failures = split_valid(frame, DesiredAssessmentModel, "external_id")
    assert [f.reason for f in failures] == ["title must be plain text (it contains HTML markup) (got '<b>SQL</b>')"]


def test_plain_titles_have_no_note():
    desired = desired_assessments(extract([[1, "  Python Fundamentals ", 30, 20, [], 11, "k1"]]), AssessmentMapping())
    assert desired.loc[0, "title"] == "Python Fundamentals" and desired.loc[0, "title_note"] is None
    assert "title_note" in desired_assessments(extract([]), AssessmentMapping()).columns


# ---------------------------------------------------------------- skill levels on band edges

DEFAULT_BANDS = CompletionMapping().bands
CUSTOM_BANDS_TEXT = "10,20,37.5,45,60,72.5,90"
# Candidate maxima 0.01 .. 20.00 and points rounded to 1 or 2 decimals: like iMocha's fractional question scores.
MAXIMA = [round(0.01 * k, 2) for k in range(1, 2001)]


def edge_pairs(edge: float) -> list[tuple[float, float]]:
    """(points, max_points) whose exact decimal ratio is ``edge`` percent."""
    pairs = []
    for maximum in MAXIMA:
        for digits in (1, 2):
            points = round(edge / 100 * maximum, digits)
            if exact(points) / exact(maximum) * 100 == exact(edge):
                pairs.append((points, maximum))
    return pairs


def float_is_exact_for(edge: float) -> bool:
    """Edges of 1/2^k (12.5, 25, 50 %): p / m is then an exact halving in binary, never below the edge."""
    ratio = Fraction(edge) / 100
    return ratio.numerator == 1 and ratio.denominator & (ratio.denominator - 1) == 0


def check_edges(mapping: CompletionMapping):
    assert len(mapping.bands) == 7
    for index, edge in enumerate(mapping.bands):
        lower, upper = index + 1, index + 2
        pairs = edge_pairs(edge)
        assert pairs, f"no points/max pair found on the edge {edge}"
        below_in_floats = [(p, m) for p, m in pairs if p / m * 100 < edge]
        if float_is_exact_for(edge):
            assert below_in_floats == []
        else:  # the old float comparison put these one level too low: this test fails on it
            assert below_in_floats, f"no pair found whose float ratio falls below the edge {edge}"
            for p, m in below_in_floats:
                assert 1 + sum(1 for b in mapping.bands if p / m * 100 >= b) == lower
        for p, m in pairs:
            assert mapping.level_for(p, m) == upper, (edge, p, m)
            # just below the edge stays lower: the next float down from the points, and one thousandth less
            assert mapping.level_for(math.nextafter(p, 0), m) == lower, (edge, p, m)
            if exact(round(p - 0.001, 3)) / exact(m) * 100 >= exact(mapping.bands[index - 1] if index else 0):
                assert mapping.level_for(round(p - 0.001, 3), m) == lower, (edge, p, m)
        assert mapping.level(edge) == upper
        assert mapping.level(math.nextafter(edge, 0)) == lower


def test_default_band_edges_are_exact():
    assert DEFAULT_BANDS == (12.5, 25.0, 37.5, 50.0, 62.5, 75.0, 87.5)
    check_edges(CompletionMapping())
    mapping = CompletionMapping()
    assert mapping.level_for(0.6, 1.6) == 4 and 0.6 / 1.6 * 100 < 37.5  # the reported case
    assert [mapping.level_for(p, 10) for p in (0, 1.24, 1.25, 9.99, 10, 12)] == [1, 1, 2, 8, 8, 8]


def test_custom_band_edges_are_exact(monkeypatch):
    monkeypatch.setenv("IMOCHA_PIPELINE_SKILL_LEVEL_BANDS", CUSTOM_BANDS_TEXT)
    mapping = CompletionMapping.from_env()
    assert mapping.bands == parse_bands(CUSTOM_BANDS_TEXT) == (10, 20, 37.5, 45, 60, 72.5, 90)
    check_edges(mapping)


def test_levels_of_missing_or_unusable_values():
    mapping = CompletionMapping()
    assert mapping.level(None) is None and mapping.level(float("nan")) is None
    assert mapping.level_for(None, 10) is None and mapping.level_for(1, None) is None
    assert mapping.level_for(1, 0) is None and mapping.level_for(float("nan"), 10) is None
    assert mapping.level_for(1, float("inf")) is None
    # numpy scalars and Decimals are read by their decimal text as well
    assert mapping.level_for(np.float64(0.6), np.float64(1.6)) == 4
    assert mapping.level_for(Decimal("0.6"), Decimal("1.6")) == 4
    assert mapping.level_for(3, 8) == 4 and mapping.level(37.5) == 4 and mapping.level(np.float64(37.5)) == 4


@pytest.mark.parametrize("text", ["10,20,30,40,50,60", "10,20,30,40,50,60,70,80", "10,20,30,30,50,60,70",
                                  "10,20,40,30,50,60,70", "0,20,30,40,50,60,70", "10,20,30,40,50,60,100",
                                  "10,20,30,40,50,60,nan", "10,20,30,x,50,60,70"])
def test_bad_band_lists_are_refused(text):
    with pytest.raises(ValueError, match="IMOCHA_PIPELINE_SKILL_LEVEL_BANDS"):
        parse_bands(text)

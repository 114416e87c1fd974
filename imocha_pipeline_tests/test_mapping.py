"""Mapping rules: launch links from templates (URL-encoded, SSO-wrapped), summaries, and validation reasons."""

from __future__ import annotations

from urllib.parse import parse_qs, unquote, urlsplit

import pandas as pd
import pytest

from imocha_pipeline.sync.mapping import AssessmentMapping, TemplateError, desired_assessments
from imocha_pipeline.sync.schemas import DesiredAssessmentModel
from imocha_pipeline.sync.validation import split_valid

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

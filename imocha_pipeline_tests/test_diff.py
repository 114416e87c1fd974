"""The diff engine: create / update (with changed fields) / retire / unchanged, and hash stability."""

from __future__ import annotations

import pandas as pd

from imocha_pipeline.sync.diff import CREATE, RETIRE, UNCHANGED, UPDATE, EntitySpec, payload_hash, plan, summarise

SPEC = EntitySpec("assessment", "external_id", ("title", "url", "duration"), retire_missing=True)


def frame(rows, columns):
    return pd.DataFrame(rows, columns=columns)


def test_plan_classifies_every_record_with_reasons_and_changed_fields():
    desired = frame([["imocha-1", "Python", "https://x/1", 30], ["imocha-2", "Java 2", "https://x/2", 45],
                     ["imocha-3", "New", "https://x/3", 60], ["imocha-5", "Back", "https://x/5", 10]],
                    ["external_id", "title", "url", "duration"])
    actual = frame([["imocha-1", "d1", "Python", "https://x/1", 30.0, False],
                    ["imocha-2", "d2", "Java", "https://x/2", 45.0, False],
                    ["imocha-4", "d4", "Gone", "https://x/4", 20.0, False],
                    ["imocha-5", "d5", "Back", "https://x/5", 10.0, True],
                    ["imocha-6", "d6", "Old", "https://x/6", 10.0, True]],
                   ["external_id", "degreed_id", "title", "url", "duration", "obsolete"])
    result = plan(desired, actual, SPEC).set_index("record_key")
    assert result.loc["imocha-1", "action"] == UNCHANGED
    assert result.loc["imocha-2", "action"] == UPDATE and result.loc["imocha-2", "changed_fields"] == ["title"]
    assert result.loc["imocha-2", "degreed_id"] == "d2" and result.loc["imocha-2", "title"] == "Java 2"
    assert result.loc["imocha-3", "action"] == CREATE and pd.isna(result.loc["imocha-3", "degreed_id"])
    assert result.loc["imocha-4", "action"] == RETIRE and result.loc["imocha-4", "reason"] == "no longer in iMocha"
    assert result.loc["imocha-5", "action"] == UPDATE and result.loc["imocha-5", "changed_fields"] == ["obsolete"]
    assert "imocha-6" not in result.index  # already retired: nothing to do
    assert summarise(result.reset_index())["retire"] == 1


def test_numbers_and_missing_values_compare_by_value_not_type():
    desired = frame([["k1", "T", None, 30]], ["external_id", "title", "url", "duration"])
    actual = frame([["k1", "d1", "T", "", 30.0000001]], ["external_id", "degreed_id", "title", "url", "duration"])
    assert plan(desired, actual, SPEC)["action"].tolist() == [UNCHANGED]


def test_no_retirement_for_entities_that_never_retire():
    spec = EntitySpec("completion", "key", ("percentile",))
    desired = frame([["a", 90]], ["key", "percentile"])
    actual = frame([["b", "d", 80]], ["key", "degreed_id", "percentile"])
    assert plan(desired, actual, spec)["action"].tolist() == [CREATE]


def test_duplicate_keys_in_degreed_prefer_the_active_record():
    desired = frame([["k", "T", "u", 1]], ["external_id", "title", "url", "duration"])
    actual = frame([["k", "old", "T", "u", 1, True], ["k", "live", "T", "u", 1, False]],
                   ["external_id", "degreed_id", "title", "url", "duration", "obsolete"])
    result = plan(desired, actual, SPEC)
    assert result["action"].tolist() == [UNCHANGED] and result["degreed_id"].tolist() == ["live"]


def test_payload_hash_matches_the_plan_and_changes_with_content():
    desired = frame([["k", "Title", "https://u", 30]], ["external_id", "title", "url", "duration"])
    result = plan(desired, frame([], ["external_id", "degreed_id", "title", "url", "duration"]), SPEC)
    record = {"title": "Title", "url": "https://u", "duration": 30}
    assert payload_hash(record, SPEC) == result["payload_hash"].iloc[0]
    assert payload_hash(record | {"title": "Other"}, SPEC) != result["payload_hash"].iloc[0]


def test_empty_inputs():
    empty_desired = frame([], ["external_id", "title", "url", "duration"])
    empty_actual = frame([], ["external_id", "degreed_id", "title", "url", "duration", "obsolete"])
    assert plan(empty_desired, empty_actual, SPEC).empty

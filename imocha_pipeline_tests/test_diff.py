"""The diff engine: create / update (with changed fields) / retire / unchanged, and hash stability."""

from __future__ import annotations

import pandas as pd
import pytest

from imocha_pipeline.sync.core.diff import (
    CREATE,
    PLAN_BASE_COLUMNS,
    RETIRE,
    UNCHANGED,
    UPDATE,
    payload_hash,
    plan,
    summarise,
)
from imocha_pipeline.sync.core.entity import EntitySpec

# Every test here runs on both of the engine's paths for text (conftest.text_path).
pytestmark = pytest.mark.usefixtures("text_path")

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
    planned = plan(desired, actual, SPEC)
    assert list(planned.columns) == PLAN_BASE_COLUMNS + list(SPEC.fields)
    result = planned.set_index("record_key")
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


def test_every_row_to_write_carries_the_hash_of_its_values_and_an_unchanged_row_none():
    # The ledger compares the hash of what is sent; an unchanged record sends nothing, so the plan skips its hash.
    desired = frame([["same", " Python ", "https://x/1", 30], ["changed", "Java 2", "https://x/2", 45],
                     ["new", "New", "https://x/3", 60], ["back", "Back", "https://x/5", 10]],
                    ["external_id", "title", "url", "duration"])
    actual = frame([["same", "d1", "Python", "https://x/1", 30.0, False],
                    ["changed", "d2", "Java", "https://x/2", 45.0, False],
                    ["gone", "d4", "Gone", " https://x/4", 20.0, False],
                    ["back", "d5", "Back", "https://x/5", 10.0, True]],
                   ["external_id", "degreed_id", "title", "url", "duration", "obsolete"])
    result = plan(desired, actual, SPEC).set_index("record_key")
    assert pd.isna(result.loc["same", "payload_hash"]) and result.loc["same", "action"] == UNCHANGED
    for key, sent in [("changed", {"title": "Java 2", "url": "https://x/2", "duration": 45}),
                      ("new", {"title": "New", "url": "https://x/3", "duration": 60}),
                      ("back", {"title": "Back", "url": "https://x/5", "duration": 10}),
                      ("gone", {"title": "Gone", "url": "https://x/4", "duration": 20.0})]:  # retired: Degreed's values
        assert result.loc[key, "payload_hash"] == payload_hash(sent, SPEC), key


def test_empty_inputs():
    empty_desired = frame([], ["external_id", "title", "url", "duration"])
    empty_actual = frame([], ["external_id", "degreed_id", "title", "url", "duration", "obsolete"])
    result = plan(empty_desired, empty_actual, SPEC)
    assert result.empty and list(result.columns) == PLAN_BASE_COLUMNS + list(SPEC.fields)


# -- the column-wise engine (bench/diff_engine.py measures it at 1M rows) -------------------------------------

COMPLETION = EntitySpec("completion", "record_key", ("completed_at", "percentile"))


def completions(count, start=0):
    return frame([[f"user{i}@example.com|imocha-{i % 7}", f"2026-01-{1 + i % 28:02d}T10:00:00Z", float(i % 100)]
                  for i in range(start, start + count)], ["record_key", "completed_at", "percentile"])


def test_payload_hash_is_pandas_row_hash_of_the_normalised_fields():
    # The hash staged with every plan row and kept in the ledger must not change between versions.
    desired = frame([["k1", " Title ", "https://u/1", 30], ["k2", None, "https://u/2", 45.5]],
                    ["external_id", "title", "url", "duration"])
    result = plan(desired, frame([], ["external_id", "degreed_id", "title", "url", "duration"]), SPEC)
    normalised = pd.DataFrame({"title": pd.array(["Title", ""], dtype="string"),
                               "url": pd.array(["https://u/1", "https://u/2"], dtype="string"),
                               "duration": [30.0, 45.5]})
    expected = [format(int(h), "016x") for h in pd.util.hash_pandas_object(normalised, index=False)]
    assert result.sort_values("record_key")["payload_hash"].tolist() == expected


def test_plan_puts_the_writes_first_in_key_order_whatever_the_input_order():
    desired, actual = completions(50), completions(40).assign(degreed_id="d")
    actual.loc[3, "percentile"] = 1.5
    desired = desired.sample(frac=1, random_state=3).reset_index(drop=True)
    first = plan(desired, actual, COMPLETION)
    shuffled_desired = desired.sample(frac=1, random_state=1)
    shuffled = plan(shuffled_desired, actual.sample(frac=1, random_state=2), COMPLETION)
    writes = first[first["action"] != UNCHANGED]
    assert len(writes) == 11 and writes.index.tolist() == list(range(11))  # the writes come first ...
    assert writes["record_key"].tolist() == sorted(writes["record_key"])  # ... in key order
    unchanged = first[first["action"] == UNCHANGED]["record_key"].tolist()  # then the rest, in the desired order
    assert unchanged == [k for k in desired["record_key"] if k in set(unchanged)]
    pd.testing.assert_frame_equal(first.head(11), shuffled.head(11))  # same writes, same order
    pd.testing.assert_frame_equal(first.sort_values("record_key", ignore_index=True),
                                  shuffled.sort_values("record_key", ignore_index=True))
    assert summarise(first) == {"create": 10, "update": 1, "retire": 0, "unchanged": 39, "wait": 0}
    changed = first.set_index("record_key").loc[actual.loc[3, "record_key"]]
    assert changed["changed_fields"] == ["percentile"] and changed["degreed_id"] == "d"


def test_duplicate_desired_keys_keep_the_last_row():
    desired = frame([["k", "2026-01-01T00:00:00Z", 10.0], ["k", "2026-01-02T00:00:00Z", 20.0]],
                    ["record_key", "completed_at", "percentile"])
    result = plan(desired, frame([], ["record_key", "degreed_id", "completed_at", "percentile"]), COMPLETION)
    assert result["action"].tolist() == [CREATE] and result["percentile"].tolist() == [20.0]


def test_everything_retires_when_nothing_is_desired():
    # An empty desired side used to fail (positional take on an empty frame); the guard then decides.
    actual = frame([["imocha-1", "d1", "A", "u", 1, False], ["imocha-2", "d2", "B", "u", 2, False]],
                   ["external_id", "degreed_id", "title", "url", "duration", "obsolete"])
    result = plan(frame([], ["external_id", "title", "url", "duration"]), actual, SPEC)
    assert result["action"].tolist() == [RETIRE, RETIRE]
    assert result["changed_fields"].tolist() == [["obsolete"], ["obsolete"]]
    assert result["payload_hash"].notna().all() and result["title"].isna().all()


def test_boolean_fields_and_retirement_together():
    spec = EntitySpec("x", "k", ("flag",), retire_missing=True)
    desired = frame([["a", True], ["b", False]], ["k", "flag"])
    actual = frame([["b", "d2", True], ["c", "d3", False]], ["k", "degreed_id", "flag"])
    result = plan(desired, actual, spec).set_index("record_key")
    assert result["action"].to_dict() == {"a": CREATE, "b": UPDATE, "c": RETIRE}
    assert result.loc["b", "changed_fields"] == ["flag"] and pd.isna(result.loc["c", "flag"])


def test_signed_zero_is_no_change():
    # Fields are compared by value: 0.0 and -0.0 (e.g. a rounded tiny negative) are the same percentile.
    desired = frame([["k", "2026-01-01T00:00:00Z", 0.0]], ["record_key", "completed_at", "percentile"])
    actual = frame([["k", "d", "2026-01-01T00:00:00Z", -0.0]], ["record_key", "degreed_id", "completed_at",
                                                                "percentile"])
    assert plan(desired, actual, COMPLETION)["action"].tolist() == [UNCHANGED]

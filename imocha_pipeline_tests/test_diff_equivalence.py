"""The reworked diff engine gives exactly the plans of the engine before it (``diff_reference.py``), except that an
unchanged record carries no payload hash (it sends nothing): on randomized
inputs with the awkward values of real data (missing values as NaN, None and pd.NA, whitespace of every kind,
floats that differ only past the rounding, unicode, numbers as text, duplicate keys, retired records), in both
dtypes text arrives in (pandas' str dtype and plain object columns)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from imocha_pipeline.sync.core.diff import payload_hash, plan
from imocha_pipeline.sync.core.diff_columns import column_hash
from imocha_pipeline.sync.core.entity import EntitySpec
from imocha_pipeline_tests import diff_reference

# Every test here runs on both of the engine's paths for text (conftest.text_path).
pytestmark = pytest.mark.usefixtures("text_path")

ASSESSMENT = EntitySpec("assessment", "external_id", ("title", "summary", "duration", "language"),
                        retire_missing=True)
COMPLETION = EntitySpec("completion", "record_key", ("completed_at", "percentile"))
FLAGGED = EntitySpec("flagged", "k", ("flag", "note"), retire_missing=True)

# Every kind of whitespace str.strip removes at the edges (ASCII, the separators \x1c-\x1f, NBSP, ideographic).
SPACES = [" ", "\t", "\n", "\r\n", "\x0b", "\x0c", "\x1c", "\x1f", "\u00a0", "\u2003", "\u3000", "\u2028"]
WORDS = ["Python", "Java", "données", "Über", "日本語テスト", "emoji 🚀", "naïve café", "SQL", "x", "Ω≈ç"]


def _text(rng: np.random.Generator) -> object:
    roll = rng.random()
    if roll < 0.06:
        return [None, np.nan, pd.NA, ""][rng.integers(4)]
    word = " ".join(rng.choice(WORDS, rng.integers(1, 4)).tolist())
    if roll < 0.3:  # whitespace at either edge, sometimes inside (which stays)
        word = f"{rng.choice(SPACES)}{word}" if rng.random() < 0.5 else f"{word}{rng.choice(SPACES)}"
    return word


def _changed_text(value: object, rng: np.random.Generator) -> object:
    roll = rng.random()
    if roll < 0.3 and isinstance(value, str):
        return f"{rng.choice(SPACES)}{value}{rng.choice(SPACES)}"  # differs raw, equal once stripped
    if roll < 0.4:
        return [None, np.nan, ""][rng.integers(3)]  # missing and '' normalise alike
    return _text(rng)


def _number(rng: np.random.Generator) -> float:
    return float(np.round(rng.uniform(0, 100), int(rng.integers(0, 9))))


def _changed_number(value: float, rng: np.random.Generator) -> float:
    roll = rng.random()
    if roll < 0.3:
        return value + 1e-8  # lost in the rounding to 6 places: no change
    if roll < 0.4:
        return np.nan
    return value + float(rng.choice([1e-5, 0.5, 1.0]))


def _sides(rng: np.random.Generator, rows: int, spec: EntitySpec, text_as: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    key = spec.key
    keys = [f"k{i}" for i in rng.permutation(rows * 2)[:rows].tolist()]
    desired = {key: keys}
    for field in spec.fields:
        if field in ("duration", "percentile"):
            desired[field] = [_number(rng) if rng.random() > 0.05 else np.nan for _ in range(rows)]
        elif field == "flag":
            desired[field] = [bool(rng.random() < 0.5) for _ in range(rows)]
        else:
            desired[field] = [_text(rng) for _ in range(rows)]
    d = pd.DataFrame(desired)
    known = d.iloc[rng.permutation(rows)[: int(rows * 0.8)]].reset_index(drop=True)
    a = known.copy()
    for field in spec.fields:
        changed = rng.random(len(a)) < 0.25
        if field in ("duration", "percentile"):
            a.loc[changed, field] = [_changed_number(v, rng) for v in a.loc[changed, field]]
        elif field == "flag":
            a.loc[changed, field] = ~a.loc[changed, field]
        else:
            a[field] = a[field].astype(object)
            a.loc[changed, field] = pd.Series([_changed_text(v, rng) for v in a.loc[changed, field]],
                                              index=a.index[changed], dtype=object)
    gone = pd.DataFrame({key: [f"gone{i}" for i in range(rows // 10)],
                         **{f: a[f].iloc[: rows // 10].tolist() for f in spec.fields}})
    a = pd.concat([a, gone], ignore_index=True)
    a.insert(1, "degreed_id", [f"d{i}" for i in range(len(a))])
    if spec.retire_missing:
        a["obsolete"] = rng.random(len(a)) < 0.1
    if len(a) > 4:  # a key Degreed has twice (one retired), and a desired key given twice
        a = pd.concat([a, a.iloc[[0]].assign(degreed_id="dup", obsolete=True) if spec.retire_missing
                       else a.iloc[[0]].assign(degreed_id="dup")], ignore_index=True)
        d = pd.concat([d, d.iloc[[1]]], ignore_index=True)
    d = d.iloc[rng.permutation(len(d))].reset_index(drop=True)
    a = a.iloc[rng.permutation(len(a))].reset_index(drop=True)
    return _as_text(d, text_as), _as_text(a, text_as)


def _as_text(frame: pd.DataFrame, text_as: str) -> pd.DataFrame:
    """Text columns as pandas' str dtype (missing: NaN), its NA variant, or plain object columns."""
    out = frame.copy()
    for name in out.columns:
        if out[name].dtype == object or isinstance(out[name].dtype, pd.StringDtype):
            values = out[name].astype(object)
            if text_as == "object":
                out[name] = values
            else:
                present = values.map(lambda v: isinstance(v, str))
                typed = pd.Series(np.where(present, values, None), index=out.index, dtype=object)
                out[name] = typed.astype("str" if text_as == "str" else "string")
    return out


def assert_same_plan(desired: pd.DataFrame, actual: pd.DataFrame, spec: EntitySpec) -> pd.DataFrame:
    ours = plan(desired.copy(), actual.copy(), spec)
    reference = diff_reference.plan(desired.copy(), actual.copy(), spec)
    # The one intended difference: an unchanged record sends nothing, so it carries no payload hash.
    reference.loc[reference["action"] == "unchanged", "payload_hash"] = pd.NA
    pd.testing.assert_frame_equal(ours, reference)
    return ours


@pytest.mark.parametrize("text_as", ["str", "string", "object"])
@pytest.mark.parametrize("spec", [ASSESSMENT, COMPLETION, FLAGGED], ids=lambda s: s.name)
@pytest.mark.parametrize("seed", range(4))
def test_same_plans_as_the_previous_engine_on_random_data(seed, spec, text_as):
    rng = np.random.default_rng(seed)
    desired, actual = _sides(rng, int(rng.integers(30, 400)), spec, text_as)
    result = assert_same_plan(desired, actual, spec)
    assert set(result["action"]) >= {"create", "update", "unchanged"}
    if spec.retire_missing:
        assert "retire" in set(result["action"])


def test_same_plans_when_few_records_pair():
    # Most desired records are new: the engine compares only the pairs instead of whole columns.
    rng = np.random.default_rng(5)
    desired, actual = _sides(rng, 300, ASSESSMENT, "str")
    assert_same_plan(desired, actual.iloc[:20], ASSESSMENT)


@pytest.mark.parametrize("text_as", ["str", "object"])
def test_same_plans_for_mixed_column_types(text_as):
    # A field that is numbers on one side and text on the other, numbers as text, an all-missing column.
    desired = _as_text(pd.DataFrame({"external_id": ["a", "b", "c", "d"], "title": ["30", " 30", "x", None],
                                     "summary": [None, None, None, None], "duration": ["30", "45.0", None, "7"],
                                     "language": [" en", "en", "fr\u00a0", ""]}), text_as)
    actual = _as_text(pd.DataFrame({"external_id": ["a", "b", "c", "e"], "degreed_id": ["1", "2", "3", "4"],
                                    "title": [30.0, 30.0, "x ", "y"], "summary": ["", None, " ", "s"],
                                    "duration": [30.0, 45.0000001, 1.0, 2.0], "language": ["en", "en\t", "fr", "de"],
                                    "obsolete": [False, None, True, False]}), text_as)
    assert_same_plan(desired, actual, ASSESSMENT)


def test_same_plans_at_the_edges():
    empty_d = _as_text(pd.DataFrame(columns=["record_key", "completed_at", "percentile"]), "str")
    empty_a = _as_text(pd.DataFrame(columns=["record_key", "degreed_id", "completed_at", "percentile"]), "str")
    rng = np.random.default_rng(9)
    desired, actual = _sides(rng, 50, COMPLETION, "str")
    assert_same_plan(empty_d, empty_a, COMPLETION)
    assert_same_plan(desired, empty_a, COMPLETION)
    assert_same_plan(empty_d, actual, COMPLETION)
    assert_same_plan(desired, actual.drop(columns=["percentile"]), COMPLETION)  # a field Degreed does not show


def test_large_columns_take_the_per_value_hash_and_hash_alike():
    # Above a few thousand rows a column of few distinct values is hashed per value: the same hashes.
    rng = np.random.default_rng(3)
    rows = 20_000
    desired = pd.DataFrame({"external_id": [f"k{i}" for i in range(rows)],
                            "title": [f"title {i} \u00e9" for i in range(rows)],
                            "summary": rng.choice(["", "short", "long summary"], rows),
                            "duration": rng.choice([15.0, 30.0, np.nan], rows),
                            "language": rng.choice(["en", " fr", "de\t"], rows)})
    actual = desired.sample(frac=0.9, random_state=1).reset_index(drop=True)
    actual.insert(1, "degreed_id", [f"d{i}" for i in range(len(actual))])
    actual.loc[::7, "language"] = "es"
    result = assert_same_plan(desired, actual, ASSESSMENT)
    values = np.array(["en", "fr", "de"] * 5000, dtype=object)
    assert (column_hash(values) == pd.util.hash_array(values, categorize=False)).all()
    row = result.iloc[0]
    assert payload_hash({f: row[f] for f in ASSESSMENT.fields}, ASSESSMENT) == row["payload_hash"]


def _colliding_hashes(values: np.ndarray) -> np.ndarray:
    """A hash under which many different keys collide (the first character decides)."""
    return np.fromiter((ord(v[0]) if isinstance(v, str) and v else 0 for v in values), dtype=np.int64,
                       count=len(values))


def test_keys_whose_hashes_collide_never_match_each_other(monkeypatch):
    # Keys are matched through their hashes; a hit is verified on the text, and keys whose hashes collide on the
    # desired side are indexed as text. Both paths, under a hash where many keys share a value.
    from imocha_pipeline.sync.core import diff_keys

    monkeypatch.setattr(diff_keys, "key_hashes",
                        lambda values: _colliding_hashes(values) if diff_keys.all_text(values) else None)
    rng = np.random.default_rng(21)
    desired, actual = _sides(rng, 200, ASSESSMENT, "str")
    assert_same_plan(desired, actual, ASSESSMENT)  # desired hashes collide: the text index

    desired = pd.DataFrame({"external_id": ["a1", "b1", "c1"], "title": ["A", "B", "C"], "summary": "s",
                            "duration": 1.0, "language": "en"})
    actual = pd.DataFrame({"external_id": ["a2", "b1", "c9", "z"], "degreed_id": ["d-a2", "d-b1", "d-c9", "d-z"],
                           "title": ["A", "B", "C", "Z"], "summary": "s", "duration": 1.0, "language": "en",
                           "obsolete": False})
    index = diff_keys.KeyIndex(np.array(["a1", "b1", "c1"], dtype=object))
    assert index.is_unique and index._by_hash is not None  # distinct hashes: the hash index is used
    assert index.get_indexer(np.array(["a2", "b1", "c9", "z"], dtype=object)).tolist() == [-1, 1, -1, -1]
    result = assert_same_plan(desired, actual, ASSESSMENT).set_index("record_key")
    # a1/a2 and c1/c9 share a hash but are different records: created and retired, never one updated as the other
    assert result.loc[["a1", "c1"], "action"].tolist() == ["create", "create"]
    assert result.loc[["a2", "c9", "z"], "action"].tolist() == ["retire", "retire", "retire"]
    assert result.loc["b1", "action"] == "unchanged" and result.loc["b1", "degreed_id"] == "d-b1"


def test_missing_and_repeated_keys_take_the_text_index():
    from imocha_pipeline.sync.core.diff_keys import KeyIndex

    repeated = KeyIndex(np.array(["a", "b", "a"], dtype=object))
    assert not repeated.is_unique and repeated.duplicated(keep="last").tolist() == [True, False, False]
    missing = KeyIndex(np.array(["a", np.nan, "b"], dtype=object))
    assert missing.is_unique and missing.get_indexer(np.array([np.nan, "b", "c"], dtype=object)).tolist() == [1, 2, -1]
    hashed = KeyIndex(np.array(["a", "b"], dtype=object))
    for gap in (np.nan, pd.NA, None):  # every kind of missing key a text column can hold: the text index
        with_gap = KeyIndex(np.array(["a", gap, "b"], dtype=object))
        assert with_gap._by_hash is None
        assert with_gap.get_indexer(np.array(["b", "c", "a"], dtype=object)).tolist() == [2, -1, 0]
        assert hashed.get_indexer(np.array(["b", gap, "a"], dtype=object)).tolist() == [1, -1, 0]

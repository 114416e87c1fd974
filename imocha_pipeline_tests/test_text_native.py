"""The diff engine's compiled part (``sync/core/_textmatch.c`` through ``text_native``): text hashes and pairwise
text equality on every core, checked against Python's own answers, and the engine's plans on both paths at a
size that takes several threads."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from imocha_pipeline.sync.core import text_native
from imocha_pipeline.sync.core.diff import plan
from imocha_pipeline_tests.conftest import compiled_text_part_missing
from imocha_pipeline_tests.test_diff_equivalence import ASSESSMENT, COMPLETION, _sides


@pytest.fixture
def compiled(monkeypatch):
    reason = compiled_text_part_missing()
    if reason:
        pytest.skip(reason)
    monkeypatch.setenv("IMOCHA_PIPELINE_DIFF_NATIVE", "1")
    monkeypatch.setattr(text_native, "PARALLEL_FROM", 8)  # several threads even for the small inputs here
    monkeypatch.setattr(text_native, "threads", lambda count: 1 if count < 8 else 3)


class _Text(str):
    """A str subclass: Python may compare it its own way, so the compiled part leaves it to Python."""


# Each of the four ways CPython stores a str (ASCII, Latin-1, two and four bytes a character), and the same texts
# built a second time (other objects, equal text).
TEXTS = ["plain ascii", "café crème", "Zürich €10", "naïve 😀 emoji", "", "a", "ü", "€", "😀", "x" * 1000]


def _again(texts: list[str]) -> np.ndarray:
    return np.array(["".join(list(t)) for t in texts], dtype=object)


def test_equal_texts_hash_alike_and_distinct_texts_apart(compiled):
    values = np.array(TEXTS, dtype=object)
    hashes = text_native.hash_texts(values)
    assert hashes is not None and hashes.dtype == np.int64
    assert (text_native.hash_texts(_again(TEXTS)) == hashes).all()
    assert len(set(hashes.tolist())) == len(TEXTS)
    many = np.array([f"user{i}@example.com|imocha-{i % 997}" for i in range(50_000)], dtype=object)
    assert len(set(text_native.hash_texts(many).tolist())) == len(many)  # one thread's chunk or another's: alike
    # "ü" (Latin-1, one byte) and "ü" spelled with a combining mark are different text: different hashes
    assert text_native.hash_texts(np.array(["ü", "u\u0308"], dtype=object)).tolist()[0] != \
        text_native.hash_texts(np.array(["u\u0308"], dtype=object)).tolist()[0]


@pytest.mark.parametrize("odd", [None, np.nan, pd.NA, 7, b"bytes", _Text("a")], ids=repr)
def test_a_value_that_is_not_a_str_leaves_hashing_to_python(compiled, odd):
    values = np.array(["a"] * 20 + [odd] + ["b"] * 20, dtype=object)
    assert text_native.hash_texts(values) is None


def test_pairs_compare_as_python_compares_them(compiled):
    rng = np.random.default_rng(3)
    pool = TEXTS + [t + " " for t in TEXTS] + ["café creme", "Zürich €11"]
    left = np.array([pool[i] for i in rng.integers(0, len(pool), 5000)], dtype=object)
    right = _again([pool[i] for i in rng.integers(0, len(pool), 4000)])
    left_rows, right_rows = rng.integers(0, 5000, 20_000), rng.integers(0, 4000, 20_000)
    same = text_native.texts_equal(left, right, left_rows, right_rows)
    assert same.dtype == np.uint8 and set(np.unique(same).tolist()) == {0, 1}
    assert ((same == 1) == (left[left_rows] == right[right_rows])).all()
    # without positions: pair i is left[i] and right[i]
    assert ((text_native.texts_equal(left[:4000], right) == 1) == (left[:4000] == right)).all()


def test_pairs_with_a_value_that_is_not_a_str_are_left_undecided(compiled):
    left = np.array(["a", None, np.nan, pd.NA, "b", _Text("c"), "d"], dtype=object)
    right = np.array(["a", "", "", "x", None, "c", "e"], dtype=object)
    same = text_native.texts_equal(left, right)
    undecided = text_native.UNDECIDED
    assert same.tolist() == [1, undecided, undecided, undecided, undecided, undecided, 0]


def test_positions_outside_the_arrays_are_refused_before_any_read(compiled):
    values = np.array(["a", "b"], dtype=object)
    with pytest.raises(IndexError, match=r"outside 0\.\.1"):
        text_native.texts_equal(values, values, np.array([0, 2]), np.array([0, 1]))
    with pytest.raises(IndexError, match=r"outside 0\.\.1"):
        text_native.texts_equal(values, values, np.array([0, 1]), np.array([-1, 1]))
    with pytest.raises(ValueError, match="3 positions for 2 pairs"):
        text_native.texts_equal(values, values, np.array([0, 1]), np.array([0, 1, 1]))
    with pytest.raises(TypeError, match="object array"):
        text_native.hash_texts(np.array(["a", "b"]))  # a fixed-width unicode array, not Python objects


def test_switched_off_or_not_built_the_engine_answers_in_python(monkeypatch):
    values = np.array(["a", "b"], dtype=object)
    monkeypatch.setenv("IMOCHA_PIPELINE_DIFF_NATIVE", "0")
    assert not text_native.available()
    assert text_native.hash_texts(values) is None and text_native.texts_equal(values, values) is None
    monkeypatch.setenv("IMOCHA_PIPELINE_DIFF_NATIVE", "1")
    monkeypatch.setattr(text_native, "_textmatch", None)
    assert not text_native.available() and text_native.hash_texts(values) is None


@pytest.mark.parametrize("spec", [ASSESSMENT, COMPLETION], ids=lambda s: s.name)
def test_plans_are_the_same_on_both_paths_at_a_size_that_takes_every_core(monkeypatch, spec):
    # Large enough for several threads at the real threshold (text_native.PARALLEL_FROM).
    if reason := compiled_text_part_missing():
        pytest.skip(reason)
    rng = np.random.default_rng(8)
    desired, actual = _sides(rng, 60_000, spec, "str")
    monkeypatch.setenv("IMOCHA_PIPELINE_DIFF_NATIVE", "0")
    in_python = plan(desired.copy(), actual.copy(), spec)
    monkeypatch.setenv("IMOCHA_PIPELINE_DIFF_NATIVE", "1")
    monkeypatch.setattr(text_native, "threads", lambda count: 1 if count < text_native.PARALLEL_FROM else 2)
    compiled_plan = plan(desired.copy(), actual.copy(), spec)
    pd.testing.assert_frame_equal(compiled_plan, in_python)
    assert set(compiled_plan["action"]) >= {"create", "update", "unchanged"}

"""The diff engine's columns: one field of one side, normalised, compared and hashed as whole numpy arrays.

Normalisation: booleans become int8 (missing: False), numbers float64 rounded to ``float_places``, text a
stripped ``str`` with missing values as ''. An object column of numbers (e.g. ``"30"`` beside ``30``) counts as
numbers when every present value is one.

What makes a million records cheap (see ``bench/diff_engine.py``):

- a text column (pandas' str dtype) is stripped only where its value is needed: on both sides, for the pairs
  whose raw values differ, and for the rows to write (their payload hash). Raw equality implies normalised
  equality, so most pairs cost one C comparison, made on every core where the compiled part is built
  (``text_native``);
- a text column with few distinct values (a language, a duration unit) is hashed per distinct value.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from imocha_pipeline.sync.core import text_native

# The constants of pandas.core.util.hashing.combine_hash_arrays (CPython's tuple hash), so that our row
# hashes equal ``pd.util.hash_pandas_object(frame, index=False)`` (a test pins this).
_HASH_START = np.uint64(0x345678)
_HASH_MULT = np.uint64(1000003)
_HASH_END = np.uint64(97531)

# Hash a text column per distinct value when a sample of this size shows at most FEW_DISTINCT values.
_SAMPLE = 2000
_FEW_DISTINCT = 200


def strip_text(values: np.ndarray) -> np.ndarray:
    """``str.strip`` of an object array of text (str, or a missing value: becomes '') in one C-level map."""
    try:
        return np.fromiter(map(str.strip, values), dtype=object, count=len(values))
    except TypeError:  # a missing value (not a str): fill them with '' first
        filled = values.copy()
        filled[pd.isna(filled)] = ""
        return np.fromiter(map(str.strip, filled), dtype=object, count=len(filled))


def normalise_column(column: pd.Series, float_places: int) -> np.ndarray:
    """The comparable form of one column: float64 (rounded), int8 (booleans) or an object array of
    stripped strings with missing values as ''."""
    if pd.api.types.is_bool_dtype(column):
        return column.astype("boolean").fillna(False).astype(np.int8).to_numpy()
    if pd.api.types.is_numeric_dtype(column):
        return column.astype("float64").round(float_places).fillna(np.nan).to_numpy(dtype=np.float64)
    if isinstance(column.dtype, pd.StringDtype):
        return strip_text(np.asarray(column.array, dtype=object))
    numeric = pd.to_numeric(column, errors="coerce") if column.dtype == object else None
    if numeric is not None and numeric.notna().sum() == column.notna().sum() and column.notna().any():
        return numeric.astype("float64").round(float_places).to_numpy(dtype=np.float64)
    return column.astype("string").fillna("").str.strip().to_numpy(dtype=object)


class FieldColumn:
    """One owned field of one side. A text column (pandas' str dtype) keeps its raw values and is stripped
    lazily; any other column is normalised at once."""

    __slots__ = ("_normalised", "missing_is_na", "raw")

    def __init__(self, column: pd.Series, float_places: int) -> None:
        if isinstance(column.dtype, pd.StringDtype):
            self.raw: np.ndarray | None = np.asarray(column.array, dtype=object)  # no copy
            self.missing_is_na = column.dtype.na_value is pd.NA  # pd.NA cannot be compared to a bool
            self._normalised: np.ndarray | None = None
        else:
            self.raw, self.missing_is_na = None, False
            self._normalised = normalise_column(column, float_places)

    @classmethod
    def of(cls, frame: pd.DataFrame, field: str, float_places: int) -> FieldColumn:
        column = frame[field] if field in frame.columns else pd.Series(pd.NA, index=frame.index, dtype=object)
        return cls(column, float_places)

    def normalised(self) -> np.ndarray:
        """Every row, normalised (computed once)."""
        if self._normalised is None:
            self._normalised = strip_text(self.raw)
        return self._normalised

    def comparable(self, raw: np.ndarray) -> np.ndarray:
        """Raw text values that ``==`` can compare: missing values (pd.NA cannot be compared) become ''."""
        if self.missing_is_na:
            missing = pd.isna(raw)
            if missing.any():
                raw = raw.copy()
                raw[missing] = ""  # '' is what a missing value normalises to
        return raw

    def normalised_at(self, rows: np.ndarray) -> np.ndarray:
        """The normalised values of ``rows`` only."""
        if self._normalised is not None:
            return self._normalised[rows]
        return strip_text(self.raw[rows])


def differs(desired: FieldColumn, actual: FieldColumn, desired_to_actual: np.ndarray,
            pairs: np.ndarray) -> np.ndarray:
    """For each matched desired row ``pairs[i]`` (in ascending order; its actual row is
    ``desired_to_actual[pairs[i]]``): whether the normalised values differ."""
    if not len(pairs):
        return np.zeros(0, dtype=bool)
    values = desired.raw if desired.raw is not None else desired.normalised()
    if actual.raw is not None and values.dtype == object:  # text: raw values first, stripped where they differ
        result = _raw_text_differs(desired, values, actual, desired_to_actual, pairs)
        check = np.flatnonzero(result)
        if len(check):
            rows = pairs[check]
            left = desired.comparable(values[rows])
            right = actual.comparable(actual.raw[desired_to_actual[rows]])
            result[check] = np.asarray(strip_text(left) != strip_text(right), dtype=bool)
        return result
    left = desired.normalised_at(pairs)
    return ~_equal(left, actual.normalised_at(desired_to_actual[pairs]))


def _raw_text_differs(desired: FieldColumn, values: np.ndarray, actual: FieldColumn,
                      desired_to_actual: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Per pair: True unless the raw texts are equal (True also where the compiled part leaves a pair undecided,
    a missing value: the stripped comparison decides it)."""
    same = text_native.texts_equal(values, actual.raw, pairs, desired_to_actual[pairs])
    if same is not None:  # compared on every core
        return same != 1
    if len(pairs) < len(desired_to_actual) // 2:  # few pairs: compare only them
        left = desired.comparable(values[pairs])
        return ~np.asarray(left == actual.comparable(actual.raw[desired_to_actual[pairs]]), dtype=bool)
    # most rows pair: compare whole columns in the desired order (no copy of the desired side)
    left = desired.comparable(values)
    right = actual.comparable(actual.raw[np.maximum(desired_to_actual, 0)])
    return ~np.asarray(left == right, dtype=bool)[pairs]


def _equal(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Elementwise equality of normalised values; two missing numbers are equal."""
    if left.dtype == np.float64 and right.dtype == np.float64:
        return (left == right) | (np.isnan(left) & np.isnan(right))
    if left.dtype == object and right.dtype == object:
        # Normalised text is never missing: compare the strings directly.
        return np.asarray(left == right, dtype=bool)
    both_nan = pd.isna(left) & pd.isna(right)
    with np.errstate(invalid="ignore"):
        return both_nan | np.asarray(left == right, dtype=bool)


# ---------------------------------------------------------------------------------------------------------
# Hashing: pandas' stable 64-bit row hash of the normalised fields
# ---------------------------------------------------------------------------------------------------------


def column_hash(values: np.ndarray) -> np.ndarray:
    """``pd.util.hash_array`` of one normalised column: per distinct value when a sample shows few (the same
    hashes: pandas' ``categorize`` only changes how they are computed), else value by value."""
    categorize = False
    if values.dtype == object and len(values) > 4 * _SAMPLE:
        sample = values[:: len(values) // _SAMPLE].tolist()
        categorize = len(set(sample)) <= _FEW_DISTINCT
    return pd.util.hash_array(values, categorize=categorize)


def hash_rows(columns: Sequence[np.ndarray]) -> np.ndarray:
    """Per-row uint64 hash of the normalised columns, equal to ``hash_pandas_object(index=False)``."""
    count = len(columns)
    size = len(columns[0]) if columns else 0
    out = np.full(size, _HASH_START, dtype=np.uint64)
    mult = _HASH_MULT
    with np.errstate(over="ignore"):
        for i, values in enumerate(columns):
            out ^= column_hash(values)
            out *= mult
            mult += np.uint64(82520 + 2 * (count - i))
        out += _HASH_END
    return out


def hex_digits(hashes: np.ndarray) -> np.ndarray:
    """uint64 hashes as 16 lower-case hex digits (an object array of str), without a per-row format call."""
    if not len(hashes):
        return np.array([], dtype=object)
    text = hashes.astype(">u8").tobytes().hex()
    digits = np.frombuffer(text.encode("utf-32-le"), dtype="<U16").tolist()
    return np.fromiter(digits, dtype=object, count=len(digits))

"""The diff engine as it was before its columns were compared lazily (commit d770557, sync/core/diff.py), kept
verbatim as the oracle of test_diff_equivalence.py: the reworked engine must give exactly the same plans."""
from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import pandas as pd

from imocha_pipeline.sync.core.entity import EntitySpec

CREATE = "create"
UPDATE = "update"
RETIRE = "retire"
UNCHANGED = "unchanged"
WAIT = "wait"
ACTIONS = (CREATE, UPDATE, RETIRE, UNCHANGED, WAIT)
WRITE_ACTIONS = (CREATE, UPDATE, RETIRE)

PLAN_BASE_COLUMNS = ["record_key", "action", "reason", "changed_fields", "degreed_id", "payload_hash"]

REASONS = {
    CREATE: "not in Degreed yet",
    UPDATE: "changed in iMocha",
    UNCHANGED: "already up to date",
    RETIRE: "no longer in iMocha",
}
REVIVED_REASON = "back in iMocha after being retired"

# The constants of pandas.core.util.hashing.combine_hash_arrays (CPython's tuple hash), so that our row
# hashes equal ``pd.util.hash_pandas_object(frame, index=False)`` (a test pins this).
_HASH_START = np.uint64(0x345678)
_HASH_MULT = np.uint64(1000003)
_HASH_END = np.uint64(97531)


# ---------------------------------------------------------------------------------------------------------
# Normalisation and hashing, column by column
# ---------------------------------------------------------------------------------------------------------


def _normalise_column(column: pd.Series, float_places: int) -> np.ndarray:
    """The comparable form of one column: float64 (rounded), int8 (booleans) or an object array of
    stripped strings with missing values as ''."""
    if pd.api.types.is_bool_dtype(column):
        return column.astype("boolean").fillna(False).astype(np.int8).to_numpy()
    if pd.api.types.is_numeric_dtype(column):
        return column.astype("float64").round(float_places).fillna(np.nan).to_numpy(dtype=np.float64)
    if isinstance(column.dtype, pd.StringDtype):
        # Fast path for text (pandas' str dtype): strip in one C-level map instead of pandas' per-row lambda;
        # a missing value (not a str) sends it to the copy that fills them with ''.
        try:
            return np.fromiter(map(str.strip, np.asarray(column.array, dtype=object)), dtype=object,
                               count=len(column))
        except TypeError:
            values = column.to_numpy(dtype=object, na_value="")
            return np.fromiter(map(str.strip, values), dtype=object, count=len(values))
    numeric = pd.to_numeric(column, errors="coerce") if column.dtype == object else None
    if numeric is not None and numeric.notna().sum() == column.notna().sum() and column.notna().any():
        return numeric.astype("float64").round(float_places).to_numpy(dtype=np.float64)
    return column.astype("string").fillna("").str.strip().to_numpy(dtype=object)


def _normalised_columns(frame: pd.DataFrame, fields: Sequence[str], float_places: int) -> list[np.ndarray]:
    columns = []
    for field in fields:
        column = frame[field] if field in frame.columns else pd.Series(pd.NA, index=frame.index, dtype=object)
        columns.append(_normalise_column(column, float_places))
    return columns


def normalise(frame: pd.DataFrame, fields: tuple[str, ...], float_places: int = 6) -> pd.DataFrame:
    """Comparable form of the owned fields: rounded floats, strings with missing values as ''."""
    columns = _normalised_columns(frame, fields, float_places)
    return pd.DataFrame({field: pd.Series(values, index=frame.index, dtype="string" if values.dtype == object
                                          else values.dtype) for field, values in zip(fields, columns, strict=True)},
                        index=frame.index, columns=list(fields))


def _column_hash(values: np.ndarray) -> np.ndarray:
    # categorize=False: the same hashes, without factorizing first (text fields are mostly distinct).
    return pd.util.hash_array(values, categorize=False)


def _hash_rows(columns: Sequence[np.ndarray], rows: np.ndarray | None = None) -> np.ndarray:
    """Per-row uint64 hash of the normalised columns, equal to ``hash_pandas_object(index=False)``."""
    if rows is not None:
        columns = [values[rows] for values in columns]
    count = len(columns)
    size = len(columns[0]) if columns else 0
    out = np.full(size, _HASH_START, dtype=np.uint64)
    mult = _HASH_MULT
    with np.errstate(over="ignore"):
        for i, values in enumerate(columns):
            out ^= _column_hash(values)
            out *= mult
            mult += np.uint64(82520 + 2 * (count - i))
        out += _HASH_END
    return out


def _hex(hashes: np.ndarray) -> np.ndarray:
    """uint64 hashes as 16 lower-case hex digits (an object array of str), without a per-row format call."""
    if not len(hashes):
        return np.array([], dtype=object)
    text = hashes.astype(">u8").tobytes().hex()
    digits = np.frombuffer(text.encode("utf-32-le"), dtype="<U16").tolist()
    return np.fromiter(digits, dtype=object, count=len(digits))


def row_hashes(normalised: pd.DataFrame) -> pd.Series:
    """Stable 64-bit hash per row as 16 hex digits."""
    if normalised.empty:
        return pd.Series([], dtype="string", index=normalised.index)
    columns = [_as_hashable(normalised[name]) for name in normalised.columns]
    return pd.Series(_hex(_hash_rows(columns)), index=normalised.index, dtype="string")


def _as_hashable(column: pd.Series) -> np.ndarray:
    if isinstance(column.dtype, pd.StringDtype) or column.dtype == object:
        return column.to_numpy(dtype=object)
    return column.to_numpy()


def payload_hash(record: dict, spec: EntitySpec) -> str:
    """The hash of one record's owned fields, identical to what ``plan`` computes for that row."""
    frame = pd.DataFrame([{field: record.get(field) for field in spec.fields}])
    return str(_hex(_hash_rows(_normalised_columns(frame, spec.fields, spec.float_places)))[0])


# ---------------------------------------------------------------------------------------------------------
# The plan
# ---------------------------------------------------------------------------------------------------------


def plan(desired: pd.DataFrame, actual: pd.DataFrame, spec: EntitySpec) -> pd.DataFrame:
    """Per-record plan: create, update (with changed fields), retire, or unchanged.

    ``desired``: the key column plus ``spec.fields``. ``actual``: the key, ``degreed_id``, the fields and
    optionally ``obsolete`` (a retired record). Duplicate keys keep the last desired row and the active
    actual one. The rows to write come first, ordered by record key; then the unchanged ones in the desired
    side's order.
    """
    with _gc_paused():
        return _plan(desired, actual, spec)


def _plan(desired: pd.DataFrame, actual: pd.DataFrame, spec: EntitySpec) -> pd.DataFrame:
    key, fields = spec.key, spec.fields

    desired = desired.reset_index(drop=True)
    desired_keys = _keys(desired[key])
    desired_index = pd.Index(desired_keys, dtype=object)
    if not desired_index.is_unique:
        desired = desired.drop_duplicates(subset=[key], keep="last").reset_index(drop=True)
        desired_keys = _keys(desired[key])
        desired_index = pd.Index(desired_keys, dtype=object)
        if not desired_index.is_unique:  # distinct raw keys with the same text (e.g. 1 and "1")
            keep = ~desired_index.duplicated(keep="last")
            desired = desired[keep].reset_index(drop=True)
            desired_keys = desired_keys[keep]
            desired_index = pd.Index(desired_keys, dtype=object)

    actual = actual.reset_index(drop=True)
    actual_keys = _keys(actual[key]) if len(actual) else np.array([], dtype=object)
    actual_to_desired = desired_index.get_indexer(actual_keys)
    if _has_duplicates(actual_keys, actual_to_desired, len(desired)):
        actual = _dedupe_actual(actual, key)
        actual_keys = _keys(actual[key]) if len(actual) else np.array([], dtype=object)
        actual_to_desired = desired_index.get_indexer(actual_keys)

    n_desired, n_actual = len(desired), len(actual)
    matched_actual = np.flatnonzero(actual_to_desired >= 0)
    desired_to_actual = np.full(n_desired, -1, dtype=np.int64)
    desired_to_actual[actual_to_desired[matched_actual]] = matched_actual
    obsolete = (actual["obsolete"].astype("boolean").fillna(False).to_numpy(dtype=bool) if "obsolete" in actual
                else np.zeros(n_actual, dtype=bool))

    # Compare the matched pairs field by field on their normalised values.
    desired_norm = _normalised_columns(desired, fields, spec.float_places)
    actual_norm = _normalised_columns(actual, fields, spec.float_places)
    pairs_desired = np.flatnonzero(desired_to_actual >= 0)
    pairs_actual = desired_to_actual[pairs_desired]
    differs = [~_equal(d_values[pairs_desired], a_values[pairs_actual])
               for d_values, a_values in zip(desired_norm, actual_norm, strict=True)]
    pair_changed = np.logical_or.reduce(differs) if differs else np.zeros(len(pairs_desired), dtype=bool)
    pair_revived = obsolete[pairs_actual]

    # One row per desired record, then the retired ones, each with an action code (index of ACTION_NAMES).
    action_code = np.full(n_desired, _CREATE, dtype=np.int8)
    action_code[pairs_desired] = np.where(pair_revived, _REVIVE, np.where(pair_changed, _UPDATE, _UNCHANGED))
    if spec.retire_missing:
        retired = np.flatnonzero((actual_to_desired < 0) & ~obsolete)
    else:
        retired = np.array([], dtype=np.int64)
    n_rows = n_desired + len(retired)
    action_code = np.concatenate([action_code, np.full(len(retired), _RETIRE, dtype=np.int8)])

    # The rows to write first, in key order (the order apply sends them); then the unchanged ones in the
    # desired side's order: sorting a million unchanged keys would take a third of the time of the plan and
    # serve no one. Every other column is then built in that order (numbers are taken, not objects).
    record_keys = np.concatenate([desired_keys, actual_keys[retired]])
    writes = np.flatnonzero(action_code != _UNCHANGED)
    order = np.concatenate([writes[_key_order(record_keys[writes])], np.flatnonzero(action_code == _UNCHANGED)])
    action_code = action_code[order]
    from_desired = order < n_desired
    desired_row = np.where(from_desired, order, -1)  # the row's position in desired (-1: a retired record)
    actual_row = np.full(n_rows, -1, dtype=np.int64)  # ... and in actual (-1: not in Degreed)
    actual_row[from_desired] = desired_to_actual[order[from_desired]]
    actual_row[~from_desired] = retired[order[~from_desired] - n_desired]

    changed: list[list[str]] = [[] for _ in range(n_rows)]
    write_rows = np.flatnonzero((action_code == _UPDATE) | (action_code == _REVIVE) | (action_code == _RETIRE))
    if len(write_rows):
        pair_of_desired = np.full(n_desired, -1, dtype=np.int64)
        pair_of_desired[pairs_desired] = np.arange(len(pairs_desired))
        for row in write_rows.tolist():
            if action_code[row] == _RETIRE:
                changed[row] = ["obsolete"]
                continue
            pair = pair_of_desired[order[row]]
            changed[row] = [field for field, diff in zip(fields, differs, strict=True) if diff[pair]]
            if action_code[row] == _REVIVE:
                changed[row].append("obsolete")

    if "degreed_id" in actual and n_actual:
        ids = actual["degreed_id"].astype("string").array.take(actual_row, allow_fill=True)  # -1: missing
    else:
        ids = pd.array(np.full(n_rows, pd.NA, dtype=object), dtype="string")

    hashes = np.empty(n_rows, dtype=np.uint64)
    if n_desired:
        hashes[from_desired] = _hash_rows(desired_norm)[desired_row[from_desired]]
    if len(retired):
        hashes[~from_desired] = _hash_rows(actual_norm, actual_row[~from_desired])

    # The payload: the desired values (as given, not normalised); none for retired records (label -1 is
    # missing, so whole numbers become floats and booleans objects, as pandas upcasts).
    values = desired[list(fields)].reindex(desired_row).reset_index(drop=True)

    result = pd.DataFrame({
        "record_key": pd.array(record_keys[order], dtype="string"),
        "action": pd.array(ACTION_NAMES[action_code], dtype="str"),
        "reason": pd.array(ACTION_REASONS[action_code], dtype="str"),
        "changed_fields": np.fromiter(changed, dtype=object, count=n_rows),
        "degreed_id": ids,
        "payload_hash": pd.array(_hex(hashes), dtype="string"),
    })
    return pd.concat([result, values], axis=1)[PLAN_BASE_COLUMNS + list(fields)]


# Action codes: what each plan row does and why.
_CREATE, _UPDATE, _UNCHANGED, _REVIVE, _RETIRE = range(5)
ACTION_NAMES = np.array([CREATE, UPDATE, UNCHANGED, UPDATE, RETIRE], dtype=object)
ACTION_REASONS = np.array([REASONS[CREATE], REASONS[UPDATE], REASONS[UNCHANGED], REVIVED_REASON, REASONS[RETIRE]],
                          dtype=object)


def _keys(column: pd.Series) -> np.ndarray:
    """The record keys as an object array of str (keys of any type compare as text, as before)."""
    if not isinstance(column.dtype, pd.StringDtype):
        column = column.astype("string")
    return np.asarray(column.array, dtype=object)  # no copy; missing keys stay missing


def _has_duplicates(actual_keys: np.ndarray, actual_to_desired: np.ndarray, n_desired: int) -> bool:
    """Whether the actual side repeats a key: among the matched rows (one desired row each) or the rest."""
    matched = actual_to_desired[actual_to_desired >= 0]
    if len(matched) and np.bincount(matched, minlength=n_desired).max() > 1:
        return True
    unmatched = actual_keys[actual_to_desired < 0]
    return bool(len(unmatched)) and not pd.Index(unmatched, dtype=object).is_unique


def _key_order(keys: np.ndarray) -> np.ndarray:
    """Positions that sort ``keys`` as text (Python's string sort: fast on text, stable, NA last)."""
    if not len(keys):
        return np.array([], dtype=np.int64)
    if pd.api.types.infer_dtype(keys, skipna=False) == "string":
        values = keys.tolist()
        return np.fromiter(sorted(range(len(values)), key=values.__getitem__), dtype=np.int64, count=len(values))
    ordered = pd.Series(keys, dtype="string").sort_values(kind="stable", na_position="last")
    return ordered.index.to_numpy(dtype=np.int64)


def _dedupe_actual(actual: pd.DataFrame, key: str) -> pd.DataFrame:
    if actual.empty or not actual[key].duplicated().any():
        return actual.reset_index(drop=True)
    if "obsolete" in actual:
        order = actual["obsolete"].astype("boolean").fillna(False).astype(int)
        actual = actual.assign(_order=order).sort_values("_order", kind="stable").drop(columns="_order")
    return actual.drop_duplicates(subset=[key], keep="first").reset_index(drop=True)


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


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Build the plan's per-row lists without the cyclic collector rescanning them (a million lists
    would otherwise trigger repeated full collections); nothing here creates reference cycles."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def summarise(plan_frame: pd.DataFrame) -> dict[str, int]:
    counts = plan_frame["action"].value_counts().to_dict() if not plan_frame.empty else {}
    return {action: int(counts.get(action, 0)) for action in ACTIONS}

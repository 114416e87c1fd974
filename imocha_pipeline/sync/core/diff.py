"""The one diff engine: desired Degreed state versus what Degreed has, as a per-record plan.

Both sides are DataFrames keyed by the entity's natural key. Values are normalised the same way on
both sides; the work is done on whole columns (numpy arrays), never row by row (the columns themselves:
``diff_columns.py``); ``bench/diff_engine.py`` measures a million records of both entity shapes:

- keys are matched through their hashes, indexed as integers, each hit verified on the text
  (``diff_keys.py``; distinct hashes also prove the desired keys unique; duplicates take the slow,
  exact path of ``drop_duplicates``);
- a matched record is unchanged when every owned field is equal after normalisation (compared
  column by column, which also yields the changed fields of an update); text is compared raw first and
  stripped only where the raw values differ;
- the payload hash (stable 64-bit, ``pandas.util.hash_pandas_object`` of the normalised fields, as 16
  hex digits) is computed for the rows to write only: of the desired values for a create or update, of
  Degreed's for a retirement. The ledger compares it with what it acknowledged; an unchanged record sends
  nothing and carries none (``payload_hash`` computes it for any record that needs it);
- the rows to write (create, update, retire) come first, ordered by record key whatever order the inputs
  came in (the order apply sends them); the unchanged rows follow in the desired side's order (sorting
  them too would cost a third of a million-record plan and serve no one).
"""

from __future__ import annotations

import gc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from itertools import compress

import numpy as np
import pandas as pd

from imocha_pipeline.sync.core.diff_columns import FieldColumn, hash_rows, hex_digits
from imocha_pipeline.sync.core.diff_columns import differs as field_differs
from imocha_pipeline.sync.core.diff_keys import KeyIndex
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

def _normalised_columns(frame: pd.DataFrame, fields: Sequence[str], float_places: int) -> list[np.ndarray]:
    return [FieldColumn.of(frame, field, float_places).normalised() for field in fields]


def normalise(frame: pd.DataFrame, fields: tuple[str, ...], float_places: int = 6) -> pd.DataFrame:
    """Comparable form of the owned fields: rounded floats, strings with missing values as ''."""
    columns = _normalised_columns(frame, fields, float_places)
    return pd.DataFrame({field: pd.Series(values, index=frame.index, dtype="string" if values.dtype == object
                                          else values.dtype) for field, values in zip(fields, columns, strict=True)},
                        index=frame.index, columns=list(fields))


def row_hashes(normalised: pd.DataFrame) -> pd.Series:
    """Stable 64-bit hash per row as 16 hex digits."""
    if normalised.empty:
        return pd.Series([], dtype="string", index=normalised.index)
    columns = [_as_hashable(normalised[name]) for name in normalised.columns]
    return pd.Series(hex_digits(hash_rows(columns)), index=normalised.index, dtype="string")


def _as_hashable(column: pd.Series) -> np.ndarray:
    if isinstance(column.dtype, pd.StringDtype) or column.dtype == object:
        return column.to_numpy(dtype=object)
    return column.to_numpy()


def payload_hash(record: dict, spec: EntitySpec) -> str:
    """The hash of one record's owned fields, identical to what ``plan`` computes for that row."""
    frame = pd.DataFrame([{field: record.get(field) for field in spec.fields}])
    return str(hex_digits(hash_rows(_normalised_columns(frame, spec.fields, spec.float_places)))[0])


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
    desired_index = KeyIndex(desired_keys)
    if not desired_index.is_unique:
        desired = desired.drop_duplicates(subset=[key], keep="last").reset_index(drop=True)
        desired_keys = _keys(desired[key])
        desired_index = KeyIndex(desired_keys)
        if not desired_index.is_unique:  # distinct raw keys with the same text (e.g. 1 and "1")
            keep = ~desired_index.duplicated(keep="last")
            desired = desired[keep].reset_index(drop=True)
            desired_keys = desired_keys[keep]
            desired_index = KeyIndex(desired_keys)

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
    desired_cols = [FieldColumn.of(desired, field, spec.float_places) for field in fields]
    actual_cols = [FieldColumn.of(actual, field, spec.float_places) for field in fields]
    pairs_desired = np.flatnonzero(desired_to_actual >= 0)
    pairs_actual = desired_to_actual[pairs_desired]
    differs = [field_differs(d_col, a_col, desired_to_actual, pairs_desired)
               for d_col, a_col in zip(desired_cols, actual_cols, strict=True)]
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

    changed = _repeated_empty_list(n_rows)  # filled in below for the rows to write
    write_rows = np.flatnonzero((action_code == _UPDATE) | (action_code == _REVIVE) | (action_code == _RETIRE))
    if len(write_rows):
        pair_of_desired = np.full(n_desired, -1, dtype=np.int64)
        pair_of_desired[pairs_desired] = np.arange(len(pairs_desired))
        for row in write_rows[action_code[write_rows] == _RETIRE].tolist():
            changed[row] = ["obsolete"]
        updated = write_rows[action_code[write_rows] != _RETIRE]
        pairs = pair_of_desired[order[updated]]
        flags = np.column_stack([diff[pairs] for diff in differs]).tolist() if differs else [[]] * len(updated)
        revived = (action_code[updated] == _REVIVE).tolist()
        for row, row_flags, back in zip(updated.tolist(), flags, revived, strict=True):
            changed[row] = list(compress(fields, row_flags)) + (["obsolete"] if back else [])

    if "degreed_id" in actual and n_actual:
        ids = actual["degreed_id"].astype("string").array.take(actual_row, allow_fill=True)  # -1: missing
    else:
        ids = pd.array(np.full(n_rows, pd.NA, dtype=object), dtype="string")

    # The payload hash of each row to write (they come first); an unchanged row sends nothing and carries none.
    n_writes = len(writes)
    hashes = np.empty(n_writes, dtype=np.uint64)
    write_from_desired = from_desired[:n_writes]
    if write_from_desired.any():
        rows = desired_row[:n_writes][write_from_desired]
        hashes[write_from_desired] = hash_rows([col.normalised_at(rows) for col in desired_cols])
    if not write_from_desired.all():
        rows = actual_row[:n_writes][~write_from_desired]
        hashes[~write_from_desired] = hash_rows([col.normalised_at(rows) for col in actual_cols])
    payload_hashes = np.full(n_rows, pd.NA, dtype=object)
    payload_hashes[:n_writes] = hex_digits(hashes)

    # The payload: the desired values (as given, not normalised); none for retired records (label -1 is
    # missing, so whole numbers become floats and booleans objects, as pandas upcasts).
    if n_rows == n_desired:  # every row is a desired one: take each column as it is
        values = {field: desired[field].take(desired_row).reset_index(drop=True) for field in fields}
    else:
        values = desired[list(fields)].reindex(desired_row).reset_index(drop=True)

    return pd.DataFrame({  # the columns of PLAN_BASE_COLUMNS, then the fields (test_diff pins the order)
        "record_key": _text_array(record_keys[order]),
        "action": ACTION_NAMES.take(action_code),
        "reason": ACTION_REASONS.take(action_code),
        "changed_fields": changed,
        "degreed_id": ids,
        "payload_hash": _text_array(payload_hashes),
        **{field: values[field] for field in fields},
    }, copy=False)  # every column is freshly built here


# Action codes: what each plan row does and why.
_CREATE, _UPDATE, _UNCHANGED, _REVIVE, _RETIRE = range(5)
ACTION_NAMES = pd.array([CREATE, UPDATE, UNCHANGED, UPDATE, RETIRE], dtype="str")
ACTION_REASONS = pd.array([REASONS[CREATE], REASONS[UPDATE], REASONS[UNCHANGED], REVIVED_REASON, REASONS[RETIRE]],
                          dtype="str")


def _keys(column: pd.Series) -> np.ndarray:
    """The record keys as an object array of str (keys of any type compare as text, as before)."""
    if not isinstance(column.dtype, pd.StringDtype):
        column = column.astype("string")
    return np.asarray(column.array, dtype=object)  # no copy; missing keys stay missing


def _repeated_empty_list(count: int) -> np.ndarray:
    """An object array whose every item is one shared empty list: the unchanged rows' changed fields. A plan
    is read, never edited in place, and a million distinct empty lists would cost a tenth of a plan."""
    one = np.empty(1, dtype=object)
    one[0] = []
    return np.repeat(one, count)


def _text_array(values: np.ndarray) -> pd.api.extensions.ExtensionArray:
    """A fresh object array of str or missing values as pandas' "string" array (validated in place, not copied)."""
    dtype = pd.StringDtype()
    if dtype.storage == "python" and dtype.na_value is pd.NA:
        return pd.arrays.StringArray(values)
    return pd.array(values, dtype=dtype)


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

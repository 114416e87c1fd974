"""The one diff engine: desired Degreed state versus what Degreed has, as a per-record plan.

Both sides are DataFrames keyed by the entity's natural key. Values are normalised the same way on
both sides and hashed per row (vectorised), so a run over a million records stays fast; the list of
changed fields is computed only for the rows that changed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

CREATE = "create"
UPDATE = "update"
RETIRE = "retire"
UNCHANGED = "unchanged"
WAIT = "wait"
ACTIONS = (CREATE, UPDATE, RETIRE, UNCHANGED, WAIT)
WRITE_ACTIONS = (CREATE, UPDATE, RETIRE)

PLAN_BASE_COLUMNS = ["record_key", "action", "reason", "changed_fields", "degreed_id", "payload_hash"]


@dataclass(frozen=True)
class EntitySpec:
    """How one entity is keyed and compared.

    ``fields`` are the Degreed attributes we own (snake_case column names). ``retire_missing`` retires
    records Degreed has that the desired state no longer has (assessments); other entities never retire.
    """

    name: str
    key: str
    fields: tuple[str, ...]
    retire_missing: bool = False
    float_places: int = 6


def normalise(frame: pd.DataFrame, fields: tuple[str, ...], float_places: int = 6) -> pd.DataFrame:
    """Comparable form of the owned fields: rounded floats, strings with missing values as ''."""
    out = pd.DataFrame(index=frame.index)
    for field in fields:
        column = frame[field] if field in frame.columns else pd.Series(pd.NA, index=frame.index)
        if pd.api.types.is_bool_dtype(column):
            out[field] = column.astype("boolean").fillna(False).astype(np.int8)
        elif pd.api.types.is_numeric_dtype(column):
            out[field] = column.astype("float64").round(float_places).fillna(np.nan)
        else:
            numeric = pd.to_numeric(column, errors="coerce") if column.dtype == object else None
            if numeric is not None and numeric.notna().sum() == column.notna().sum() and column.notna().any():
                out[field] = numeric.astype("float64").round(float_places)
            else:
                out[field] = column.astype("string").fillna("").str.strip()
    return out


def row_hashes(normalised: pd.DataFrame) -> pd.Series:
    """Stable 64-bit hash per row as 16 hex digits."""
    if normalised.empty:
        return pd.Series([], dtype="string", index=normalised.index)
    hashes = pd.util.hash_pandas_object(normalised, index=False).to_numpy(dtype=np.uint64)
    return pd.Series(np.char.mod("%016x", hashes), index=normalised.index, dtype="string")


def payload_hash(record: dict, spec: EntitySpec) -> str:
    """The hash of one record's owned fields, identical to what ``plan`` computes for that row."""
    frame = pd.DataFrame([{field: record.get(field) for field in spec.fields}])
    return str(row_hashes(normalise(frame, spec.fields, spec.float_places)).iloc[0])


def plan(desired: pd.DataFrame, actual: pd.DataFrame, spec: EntitySpec) -> pd.DataFrame:
    """Per-record plan: create, update (with changed fields), retire, or unchanged.

    ``desired``: the key column plus ``spec.fields``. ``actual``: the key, ``degreed_id``, the fields and
    optionally ``obsolete`` (a retired record). Duplicate keys on the actual side keep the active one.
    """
    key, fields = spec.key, spec.fields
    desired = desired.drop_duplicates(subset=[key], keep="last").reset_index(drop=True)
    actual = _dedupe_actual(actual, key)

    desired_norm = normalise(desired, fields, spec.float_places)
    actual_norm = normalise(actual, fields, spec.float_places)
    left = pd.DataFrame({"record_key": desired[key].astype("string"), "hash": row_hashes(desired_norm)})
    right = pd.DataFrame({
        "record_key": actual[key].astype("string"),
        "hash_actual": row_hashes(actual_norm),
        "degreed_id": actual["degreed_id"].astype("string") if "degreed_id" in actual else pd.NA,
        "obsolete": actual["obsolete"].astype("boolean").fillna(False) if "obsolete" in actual
        else pd.Series(False, index=actual.index, dtype="boolean"),
        "_actual_pos": np.arange(len(actual)),
    })
    left["_desired_pos"] = np.arange(len(desired))
    merged = left.merge(right, on="record_key", how="outer", indicator=True, sort=False)

    in_desired = merged["_merge"] != "right_only"
    in_actual = merged["_merge"] != "left_only"
    obsolete = merged["obsolete"].fillna(False).astype(bool)
    same = (merged["hash"] == merged["hash_actual"]).fillna(False).astype(bool)

    action = np.full(len(merged), "", dtype=object)
    reason = np.full(len(merged), "", dtype=object)
    is_create = (in_desired & ~in_actual).to_numpy()
    is_update = (in_desired & in_actual & (~same | obsolete)).to_numpy()
    is_unchanged = (in_desired & in_actual & same & ~obsolete).to_numpy()
    is_retire = (~in_desired & in_actual & ~obsolete).to_numpy() if spec.retire_missing else np.zeros(
        len(merged), dtype=bool)
    action[is_create], reason[is_create] = CREATE, "not in Degreed yet"
    action[is_update], reason[is_update] = UPDATE, "changed in iMocha"
    action[is_unchanged], reason[is_unchanged] = UNCHANGED, "already up to date"
    action[is_retire], reason[is_retire] = RETIRE, "no longer in iMocha"
    merged["action"] = action
    merged["reason"] = reason
    merged = merged[merged["action"] != ""].reset_index(drop=True)

    changed = [[] for _ in range(len(merged))]
    update_rows = np.flatnonzero((merged["action"] == UPDATE).to_numpy())
    if len(update_rows):
        d_pos = merged.loc[update_rows, "_desired_pos"].astype(int).to_numpy()
        a_pos = merged.loc[update_rows, "_actual_pos"].astype(int).to_numpy()
        for field in fields:
            d_vals = desired_norm[field].to_numpy()[d_pos]
            a_vals = actual_norm[field].to_numpy()[a_pos]
            differs = ~_equal(d_vals, a_vals)
            for i in np.flatnonzero(differs):
                changed[update_rows[i]].append(field)
        revived = merged.loc[update_rows, "obsolete"].fillna(False).astype(bool).to_numpy()
        for i in np.flatnonzero(revived):
            changed[update_rows[i]].append("obsolete")
            merged.loc[update_rows[i], "reason"] = "back in iMocha after being retired"
    merged["changed_fields"] = changed
    retire_rows = merged["action"] == RETIRE
    merged.loc[retire_rows, "changed_fields"] = pd.Series([["obsolete"]] * int(retire_rows.sum()),
                                                          index=merged.index[retire_rows], dtype=object)

    # Carry the desired values (the payload) for creates and updates.
    values = desired.iloc[merged["_desired_pos"].fillna(0).astype(int).to_numpy()][list(fields)]
    values = values.reset_index(drop=True)
    values.loc[merged["_desired_pos"].isna().to_numpy()] = None
    result = pd.concat([merged[["record_key", "action", "reason", "changed_fields", "degreed_id"]], values],
                       axis=1)
    result["payload_hash"] = merged["hash"].where(merged["hash"].notna(), merged["hash_actual"])
    return result[PLAN_BASE_COLUMNS + list(fields)]


def _dedupe_actual(actual: pd.DataFrame, key: str) -> pd.DataFrame:
    if actual.empty or not actual[key].duplicated().any():
        return actual.reset_index(drop=True)
    if "obsolete" in actual:
        order = actual["obsolete"].astype("boolean").fillna(False).astype(int)
        actual = actual.assign(_order=order).sort_values("_order", kind="stable").drop(columns="_order")
    return actual.drop_duplicates(subset=[key], keep="first").reset_index(drop=True)


def _equal(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    both_nan = pd.isna(left) & pd.isna(right)
    with np.errstate(invalid="ignore"):
        return both_nan | (left == right)


def summarise(plan_frame: pd.DataFrame) -> dict[str, int]:
    counts = plan_frame["action"].value_counts().to_dict() if not plan_frame.empty else {}
    return {action: int(counts.get(action, 0)) for action in ACTIONS}

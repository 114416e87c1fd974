"""Run a pandera model over a frame and split it into valid rows and readable quarantine entries."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pandas as pd
import pandera.pandas as pa

_RULES = [
    (re.compile(r"^not_nullable$"), lambda m: "is required"),
    (re.compile(r"^str_length\((\S+), (\S+)\)$"),
     lambda m: f"length must be between {m[1]} and {m[2]} characters"),
    (re.compile(r"^str_length\((\S+), None\)$"), lambda m: f"length must be at least {m[1]} characters"),
    (re.compile(r"^less_than_or_equal_to\((.+)\)$"), lambda m: f"must be at most {m[1]}"),
    (re.compile(r"^greater_than_or_equal_to\((.+)\)$"), lambda m: f"must be at least {m[1]}"),
    (re.compile(r"^less_than\((.+)\)$"), lambda m: f"must be below {m[1]}"),
    (re.compile(r"^greater_than\((.+)\)$"), lambda m: f"must be above {m[1]}"),
    (re.compile(r"^in_range\((.+), (.+)\)$"), lambda m: f"must be between {m[1]} and {m[2]}"),
    (re.compile(r"^str_matches\('?(.+?)'?\)$"), lambda m: f"must match the pattern {m[1]}"),
    (re.compile(r"^isin\((.+)\)$"), lambda m: f"must be one of {m[1]}"),
    (re.compile(r"^field_uniqueness$|^unique$"), lambda m: "must be unique"),
    (re.compile(r"^coerce_dtype\('(.+)'\)$"), lambda m: f"must be of type {m[1]}"),
    (re.compile(r"^dtype\('(.+)'\)$"), lambda m: f"must be of type {m[1]}"),
]


@dataclass(frozen=True)
class RowFailure:
    """One row that broke one or more rules, with a reason a person can act on."""

    record_key: str
    column: str
    rule: str
    bad_value: str
    reason: str


FRIENDLY_PATTERNS: dict[str, str] = {}


def name_pattern(pattern: str, description: str) -> str:
    """Register a readable description for a regex used in a model (e.g. "must be an email address")."""
    FRIENDLY_PATTERNS[pattern] = description
    return pattern


def describe_rule(check: str) -> str:
    for pattern, description in FRIENDLY_PATTERNS.items():
        if check in (f"str_matches('{pattern}')", f"str_matches({pattern})"):
            return description
    for pattern, render in _RULES:
        match = pattern.match(check)
        if match:
            return render(match)
    return f"failed the rule {check}"


def _show(value) -> str:
    if value is None or (not isinstance(value, (list, dict)) and pd.isna(value)):
        return "empty"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 120 else text[:117] + "..."


class SchemaProblem(ValueError):
    """The frame as a whole does not fit the model (a missing column, a wrong table): not a row issue."""


def split_valid(frame: pd.DataFrame, model: type[pa.DataFrameModel], key_column: str,
                label: str = "") -> tuple[pd.DataFrame, list[RowFailure]]:
    """Validate lazily; return the rows that pass and one ``RowFailure`` per failing row (all its rules)."""
    if frame.empty:
        return frame, []
    try:
        validated = model.validate(frame, lazy=True)
        return validated, []
    except pa.errors.SchemaErrors as errors:
        cases = errors.failure_cases
    whole_frame = cases[cases["index"].isna()]
    if not whole_frame.empty:
        problems = "; ".join(
            f"{row.column or 'frame'}: {describe_rule(str(row.check))} ({_show(row.failure_case)})"
            for row in whole_frame.itertuples()
        )
        raise SchemaProblem(f"{label or model.__name__}: {problems}")
    failures: dict[int, list[tuple[str, str, str]]] = {}
    for row in cases[cases["schema_context"] != "DataFrameSchema"].itertuples():
        failures.setdefault(int(row.index), []).append((str(row.column), str(row.check), _show(row.failure_case)))
    # Checks across columns report every column of a failing row: one entry per row and rule instead.
    for index, check in cases[cases["schema_context"] == "DataFrameSchema"][["index", "check"]].drop_duplicates(
            ).itertuples(index=False):
        named = [c for c in frame.columns if c in str(check)]
        values = ", ".join(f"{c}={_show(frame.loc[int(index), c])}" for c in named)
        failures.setdefault(int(index), []).append(("+".join(named) or "row", f"@{check}", values))
    result: list[RowFailure] = []
    for index, problems in failures.items():
        key = str(frame.loc[index, key_column]) if key_column in frame.columns else str(index)
        reason = "; ".join(
            f"{check[1:]} (got {value})" if check.startswith("@") else f"{column} {describe_rule(check)} (got {value})"
            for column, check, value in problems
        )
        _, check, value = problems[0]
        result.append(RowFailure(record_key=key, column=", ".join(sorted({p[0] for p in problems})),
                                 rule=check, bad_value=value, reason=reason))
    good = frame.drop(index=list(failures))
    return model.validate(good, lazy=True) if not good.empty else good, result

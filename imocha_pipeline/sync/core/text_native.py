"""Text hashing and pairwise text equality for the diff engine, on every core when the compiled part is built.

The diff engine's hot loops read Python ``str`` objects: a million keys hashed per side, and a million pairs of
keys and text fields compared. In Python each read holds the GIL, so a plan uses one core. ``_textmatch`` (C,
``_textmatch.c``, built by ``pip install`` where a C compiler is available) does the same reads on ``threads()``
threads with the GIL released.

Without it (no compiler at install time, or ``IMOCHA_PIPELINE_DIFF_NATIVE=0``) each function answers ``None``
and the engine takes its Python path: the same plan, on one core. ``available()`` says which one runs.
"""

from __future__ import annotations

import os

import numpy as np

from imocha_pipeline import settings

try:
    from imocha_pipeline.sync.core import _textmatch
except ImportError:  # built without a C compiler: the Python path
    _textmatch = None

# Below this many values a second thread costs more than it saves: one hash and one comparison pass over 10k keys
# took 0.33 ms on one thread and 0.36 ms on two, over 20k 0.86 ms and 0.69 ms (2 CPUs, 2026-12-05).
PARALLEL_FROM = 20_000
# texts_equal's answer for a pair it leaves to the caller (a value that is not a str, e.g. a missing one).
UNDECIDED = 2


def built() -> bool:
    """Whether the compiled part was built at install time."""
    return _textmatch is not None


def available() -> bool:
    """Whether the compiled part is built and switched on (``IMOCHA_PIPELINE_DIFF_NATIVE``, default on)."""
    return _textmatch is not None and settings.IMOCHA_PIPELINE_DIFF_NATIVE.value()


def threads(count: int) -> int:
    """Threads for ``count`` values: one per core this process may run on, one for small inputs."""
    if count < PARALLEL_FROM:
        return 1
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def _objects(values: np.ndarray) -> np.ndarray:
    if values.dtype != object or values.ndim != 1:
        raise TypeError(f"expected a one-dimensional object array, got {values.dtype} with {values.ndim} dimensions")
    return np.ascontiguousarray(values)


def _rows(rows: np.ndarray | None, count: int, bound: int) -> np.ndarray | None:
    if rows is None:
        if count > bound:
            raise IndexError(f"{count} positions asked of {bound} values")
        return None
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    if len(rows) != count:
        raise ValueError(f"{len(rows)} positions for {count} pairs")
    if count and (rows.min() < 0 or rows.max() >= bound):
        raise IndexError(f"a position is outside 0..{bound - 1}")
    return rows


def hash_texts(values: np.ndarray) -> np.ndarray | None:
    """A 64-bit hash of each value's text (int64; equal text, equal hash); ``None`` when a value is not a
    ``str`` or the compiled part is not available."""
    if not available():
        return None
    values = _objects(values)
    out = np.empty(len(values), dtype=np.int64)
    if not _textmatch.hash_texts(values.ctypes.data, len(values), out.ctypes.data, threads(len(values))):
        return None
    return out


def texts_equal(left: np.ndarray, right: np.ndarray, left_rows: np.ndarray | None = None,
                right_rows: np.ndarray | None = None) -> np.ndarray | None:
    """For each pair i, ``left[left_rows[i]]`` against ``right[right_rows[i]]`` (positions 0..n-1 where rows are
    not given), as uint8: 1 equal ``str``, 0 different ``str``, ``UNDECIDED`` where either value is not a ``str``.
    ``None`` when the compiled part is not available."""
    if not available():
        return None
    left, right = _objects(left), _objects(right)
    count = len(left_rows) if left_rows is not None else (len(right_rows) if right_rows is not None else len(left))
    left_rows, right_rows = _rows(left_rows, count, len(left)), _rows(right_rows, count, len(right))
    out = np.empty(count, dtype=np.uint8)
    _textmatch.texts_equal(left.ctypes.data, 0 if left_rows is None else left_rows.ctypes.data, right.ctypes.data,
                           0 if right_rows is None else right_rows.ctypes.data, count, out.ctypes.data,
                           threads(count))
    return out

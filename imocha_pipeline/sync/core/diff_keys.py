"""Record keys matched between the two sides of a diff, through each key's hash, exactly.

A million text keys looked up in a hash table of text costs a cache miss per key on each string it compares
(about 0.5 s). Here each key is hashed once, in its side's own order, the desired hashes are indexed as
integers, and every hit is then verified by comparing the two keys' text: a key whose hash happens to equal
another key's never matches it. When the desired keys' hashes are not all distinct (a repeated key, or two keys
with one hash) or a key is missing, the keys are indexed as text instead, as before.

The hashing and the verification run on every core where the compiled part is built (``text_native``);
otherwise Python's hash of a ``str`` (cached on the object) and numpy's object comparison do the same on one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from imocha_pipeline.sync.core import text_native


def str_hashes(values: np.ndarray) -> np.ndarray:
    """Python's hash of each value, as int64 (computed once per ``str`` object and cached on it)."""
    return np.fromiter(map(hash, values), dtype=np.int64, count=len(values))


def key_hashes(values: np.ndarray) -> np.ndarray | None:
    """One int64 hash per key when every key is a ``str`` (else ``None``): the compiled hash on every core where
    it is built, else Python's. Both sides of a diff are hashed within one plan, by the same function."""
    if len(values) and text_native.available():
        return text_native.hash_texts(values)  # None: a key is not a str
    return str_hashes(values) if all_text(values) else None


def keys_equal(keys: np.ndarray, rows: np.ndarray, others: np.ndarray, other_rows: np.ndarray) -> np.ndarray:
    """Whether ``keys[rows[i]]`` and ``others[other_rows[i]]`` are the same text (both are ``str``)."""
    same = text_native.texts_equal(keys, others, rows, other_rows)
    if same is not None:
        return same == 1
    return np.asarray(keys[rows] == others[other_rows], dtype=bool)


def all_text(values: np.ndarray) -> bool:
    """Whether every value is a ``str`` (no missing key): one C scan, a quarter of the cost of ``isna``."""
    return pd.api.types.infer_dtype(values, skipna=False) == "string"


class KeyIndex:
    """Positions of the desired side's record keys (an object array of ``str``, or missing values)."""

    __slots__ = ("_by_hash", "_by_text", "keys")

    def __init__(self, keys: np.ndarray) -> None:
        self.keys = keys
        self._by_hash: pd.Index | None = None
        self._by_text: pd.Index | None = None
        hashes = key_hashes(keys) if len(keys) else None
        if hashes is not None:
            by_hash = pd.Index(hashes)
            if by_hash.is_unique:
                self._by_hash = by_hash

    @property
    def is_unique(self) -> bool:
        """Whether no key repeats (distinct hashes prove it; otherwise the text decides)."""
        return self._by_hash is not None or bool(self._text().is_unique)

    def _text(self) -> pd.Index:
        """The keys indexed as text (built once, only where the hash index cannot answer)."""
        if self._by_text is None:
            self._by_text = pd.Index(self.keys, dtype=object)
        return self._by_text

    def duplicated(self, keep: str = "last") -> np.ndarray:
        return self._text().duplicated(keep=keep)

    def get_indexer(self, others: np.ndarray) -> np.ndarray:
        """For each of ``others``: the position of the equal key here, or -1."""
        hashes = key_hashes(others) if self._by_hash is not None and len(others) else None
        if hashes is None:
            return self._text().get_indexer(others) if len(others) else np.array([], dtype=np.intp)
        found = self._by_hash.get_indexer(hashes)
        hits = np.flatnonzero(found >= 0)
        found[hits[~keys_equal(self.keys, found[hits], others, hits)]] = -1  # same hash, other text
        return found

"""List-entry overrides: one test's entry in ``GET /v3/tests`` served malformed, for malformed-payload tests."""

from __future__ import annotations

import copy
from typing import Any

from imocha_sandbox.imocha.errors import SimulatorError
from imocha_sandbox.imocha.records import SimTest
from imocha_sandbox.imocha.store import ImochaStore


class _Marker:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


DROP: Any = _Marker("DROP")  # in ``set_list_entry(fields=...)``: remove this key from the entry
UNSET: Any = _Marker("UNSET")  # ``set_list_entry``'s "no entry given"


class ListEntryOverrides:
    """Per test id: ``("entry", value)`` served in place of the summary, or ``("fields", {...})`` laid over it."""

    def __init__(self, store: ImochaStore):
        self._store = store
        self._overrides: dict[int, tuple[str, Any]] = {}  # test id -> ("entry" | "fields", value)

    def set(self, test_id: int, entry: Any = UNSET, *, fields: dict[str, Any] | None = None) -> None:
        """Serve test ``test_id``'s entry in ``GET /v3/tests`` malformed, until ``clear``.

        ``entry``: any JSON value served in its place (a string, a list, an object without ``testId``);
        ``fields``: laid over the real summary (``{"testName": {"en": "x"}}``; the value ``DROP`` removes a key).
        The test keeps its place in the order, ``count`` and its own endpoints (detail, links) are unchanged.
        """
        if (entry is UNSET) == (fields is None):
            raise SimulatorError(400, {"errors": ["give either an entry or fields"]})
        with self._store.lock:
            self._store.test(test_id)
            self._overrides[test_id] = ("entry", entry) if fields is None else ("fields", dict(fields))

    def clear(self, test_id: int | None = None) -> None:
        """Serve the list as the state says again (for one test, or for all)."""
        with self._store.lock:
            if test_id is None:
                self._overrides.clear()
            else:
                self._overrides.pop(test_id, None)

    def entry_for(self, test: SimTest) -> Any:
        """The test's entry as served in the list: its summary, unless overridden."""
        override = self._overrides.get(test.test_id)
        if override is None:
            return test.summary_json()
        how, value = override
        if how == "entry":
            return copy.deepcopy(value)
        summary = test.summary_json()
        for name, field_value in value.items():
            if field_value is DROP:
                summary.pop(name, None)
            else:
                summary[name] = copy.deepcopy(field_value)
        return summary

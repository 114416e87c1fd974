"""Tests and their links: what the API serves of them (spec §5-6) and the control surface's edits."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from imocha_sandbox.imocha.formats import lower_keys
from imocha_sandbox.imocha.list_entries import ListEntryOverrides
from imocha_sandbox.imocha.records import SimTest
from imocha_sandbox.imocha.settings import SimulatorSettings
from imocha_sandbox.imocha.store import DEFAULT_LINK_NAME, ImochaStore
from imocha_sandbox.seed import QuestionBank


class Catalogue:
    """Lists, details and links of tests; adds, edits and removes tests and links."""

    def __init__(self, store: ImochaStore, settings: SimulatorSettings, list_entries: ListEntryOverrides):
        self._store = store
        self._settings = settings
        self._list_entries = list_entries

    # ----- API --------------------------------------------------------------------------------

    def list_tests_page(self, page_no: int, page_size: int, labels_filter: str | None = None) -> dict:
        with self._store.lock:
            tests = sorted(self._store.tests.values(), key=lambda test: test.test_id)
            if labels_filter:
                tests = [test for test in tests if labels_filter in test.labels]
            size = max(1, min(page_size, self._settings.max_page_size))
            start = (max(1, page_no) - 1) * size
            return {"tests": [self._list_entries.entry_for(test) for test in tests[start:start + size]],
                    "count": len(tests)}

    def test_detail(self, test_id: int) -> dict:
        with self._store.lock:
            return self._store.test(test_id).detail_json()

    def test_links(self, test_id: int) -> dict:
        with self._store.lock:
            return {"testLinks": [link.to_json() for link in self._store.test(test_id).links]}

    def test_link(self, test_id: int, link_id: int) -> dict:
        with self._store.lock:
            return self._store.test(test_id).link(link_id).to_json()

    # ----- control ----------------------------------------------------------------------------

    def add_test(self, name: str, duration: int = 30, *, skills: Iterable[str] | None = None,
                 banks: Iterable[dict[str, Any]] | None = None, status: str = "Published",
                 labels: Iterable[str] | None = None, link: bool = True) -> int:
        """Add a test; ``skills`` (names, 10 questions/10 points each) or ``banks``
        (``{"name", "questions", "maxScore", "sectionName"}``) become its question banks."""
        specs = list(banks or []) or [{"name": skill} for skill in (skills or ["General"])]
        with self._store.lock:
            test_id = self._store.take_test_id()
            test = SimTest(test_id, name, int(duration), status, list(labels or []),
                           [self._new_bank(spec) for spec in specs], [])
            self._store.tests[test_id] = test
            if link:
                self._store.create_link(test, DEFAULT_LINK_NAME, "open", is_api_link=False)
            return test_id

    def _new_bank(self, spec: dict[str, Any]) -> QuestionBank:
        fields = lower_keys(spec)
        questions = int(fields.get("questions", 10))
        qb_name = str(fields["name"])
        section_name = str(fields.get("sectionname") or fields["name"])
        max_score = float(fields.get("maxscore", questions))
        qb_id, section_id = self._store.take_bank_ids()  # only once the spec is known to be good
        return QuestionBank(qb_id=qb_id, qb_name=qb_name, section_id=section_id, section_name=section_name,
                            questions=questions, max_score=max_score)

    def update_test(self, test_id: int, *, name: str | None = None, duration: int | None = None,
                    status: str | None = None, labels: Iterable[str] | None = None) -> dict:
        with self._store.lock:
            test = self._store.test(test_id)
            test.name = test.name if name is None else name
            test.duration = test.duration if duration is None else int(duration)
            test.status = test.status if status is None else status
            test.labels = test.labels if labels is None else list(labels)
            return test.detail_json()

    def remove_test(self, test_id: int) -> None:
        """The test disappears from the API; its invitations and reports stay."""
        with self._store.lock:
            self._store.test(test_id)
            del self._store.tests[test_id]
            self._list_entries.clear(test_id)

    def add_test_link(self, test_id: int, name: str = "Campaign link", *, invitation_type: str = "open",
                      is_api_link: bool = False) -> int:
        with self._store.lock:
            return self._store.create_link(self._store.test(test_id), name, invitation_type,
                                           is_api_link).test_link_id

    def deactivate_test_link(self, test_id: int, link_id: int) -> dict:
        with self._store.lock:
            link = self._store.test(test_id).link(link_id)
            link.status = "inactive"
            return link.to_json()

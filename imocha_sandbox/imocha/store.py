"""The simulator's state: tests with their links, invitations, the id counters and the one lock guarding them.

Built from a seeded ``World``; ids come from counters, so a seed always gives the same ids. The lock is
re-entrant: uvicorn calls the handlers on its event loop while tests call the control methods from their own
threads, and a control method may call others while holding it.
"""

from __future__ import annotations

import copy
import hashlib
import threading
from datetime import UTC, timedelta

from imocha_sandbox.imocha.errors import not_found
from imocha_sandbox.imocha.records import Invitation, SimLink, SimTest
from imocha_sandbox.seed import Attempt, World

DEFAULT_LINK_NAME = "Default test link"


class ImochaStore:
    """``tests`` and ``invitations`` by id, guarded by ``lock``; hands out new ids."""

    def __init__(self, world: World):
        self.lock = threading.RLock()
        self.tests: dict[int, SimTest] = {}
        self.invitations: dict[int, Invitation] = {}
        for spec in world.tests:
            links = [
                SimLink(link.test_link_id, spec.test_id, link.name, link.test_link, link.status,
                        link.invitation_type)
                for link in spec.links
            ]
            self.tests[spec.test_id] = SimTest(spec.test_id, spec.name, spec.duration, spec.status,
                                               list(spec.labels), copy.deepcopy(spec.banks), links)
        banks = [bank for test in self.tests.values() for bank in test.banks]
        links = [link for test in self.tests.values() for link in test.links]
        self._next_test_id = max(self.tests, default=300_000 - 17) + 17
        self._next_link_id = max((link.test_link_id for link in links), default=201_000) + 1
        self._next_qb_id = max((bank.qb_id for bank in banks), default=5_500) + 1
        self._next_section_id = max((bank.section_id for bank in banks), default=2_250_000) + 1
        attempt_ids = [attempt.test_invitation_id for attempt in world.attempts]
        self._next_invitation_id = max(attempt_ids, default=2_900_000) + 1
        for attempt in world.attempts:
            self._load_attempt(attempt)

    def _load_attempt(self, attempt: Attempt) -> None:
        test = self.tests[attempt.test_id]
        link = self.default_link(test)
        started = attempt.attempted_on.astimezone(UTC)
        inv = Invitation(
            test_invitation_id=attempt.test_invitation_id,
            test_id=test.test_id,
            test_link_id=link.test_link_id,
            email=attempt.email,
            name=attempt.name,
            test_name=test.name,
            duration=test.duration,
            banks=copy.deepcopy(test.banks),
            invited_at=started - timedelta(hours=1),
            status=attempt.status,
            invitation_type=attempt.invitation_type,
            started_at=started,
            completed_at=started + timedelta(seconds=attempt.time_taken_seconds),
            time_taken_seconds=attempt.time_taken_seconds,
            bank_scores=dict(attempt.bank_scores),
        )
        self.invitations[inv.test_invitation_id] = inv

    # ----- lookups ---------------------------------------------------------------------------

    def test(self, test_id: int) -> SimTest:
        test = self.tests.get(test_id)
        if test is None:
            raise not_found(f"Test {test_id} not found.")
        return test

    def invitation(self, invitation_id: int) -> Invitation:
        inv = self.invitations.get(invitation_id)
        if inv is None:
            raise not_found(f"Test invitation {invitation_id} not found.")
        return inv

    # ----- links -----------------------------------------------------------------------------

    def default_link(self, test: SimTest) -> SimLink:
        """The test's "Default test link", created (as an API link) on first use (spec §7.1)."""
        for link in test.links:
            if link.name == DEFAULT_LINK_NAME:
                return link
        return self.create_link(test, DEFAULT_LINK_NAME, "email", is_api_link=True)

    def create_link(self, test: SimTest, name: str, invitation_type: str, is_api_link: bool) -> SimLink:
        link_id = self._next_link_id
        self._next_link_id += 1
        key = hashlib.sha1(f"link-{link_id}".encode()).hexdigest()[:8]
        link = SimLink(link_id, test.test_id, name, key, invitation_type=invitation_type,
                       is_api_link=is_api_link)
        test.links.append(link)
        return link

    # ----- new ids ---------------------------------------------------------------------------

    def take_test_id(self) -> int:
        test_id = self._next_test_id
        self._next_test_id += 17
        return test_id

    def take_bank_ids(self) -> tuple[int, int]:
        """A new question bank id and a new section id."""
        ids = (self._next_qb_id, self._next_section_id)
        self._next_qb_id += 1
        self._next_section_id += 1
        return ids

    @property
    def upcoming_invitation_id(self) -> int:
        """The id the next invitation will get (without taking it)."""
        return self._next_invitation_id

    def take_invitation_id(self) -> int:
        invitation_id = self._next_invitation_id
        self._next_invitation_id += 1
        return invitation_id

"""The invitation state machine (spec §7): invite, re-invite, reattempt, cancel, and the control transitions.

Pending → In Progress (start) → Complete / Test Left / Terminated (finish, leave, terminate); Pending →
Cancelled (cancel) or Expired (expire); a re-invite or reattempt of a Cancelled/Expired one reopens it.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from imocha_pipeline.timestamps import parse_utc
from imocha_sandbox.imocha.callbacks import Callbacks
from imocha_sandbox.imocha.errors import CANCEL_WRONG_STATE_BODY, SimulatorError, validation_error
from imocha_sandbox.imocha.formats import as_int, lower_keys
from imocha_sandbox.imocha.records import (
    FINISHED,
    REOPENABLE,
    STATUS_CANCELLED,
    STATUS_EXPIRED,
    STATUS_IN_PROGRESS,
    STATUS_PENDING,
    Invitation,
    SimLink,
    SimTest,
)
from imocha_sandbox.imocha.store import ImochaStore
from imocha_sandbox.seed import STATUS_COMPLETE, STATUS_TERMINATED, STATUS_TEST_LEFT


def check_final(status: str) -> None:
    """A final status is Complete, Test Left or Terminated; anything else is a 400."""
    if status not in FINISHED:
        raise SimulatorError(400, {"statusCode": 400, "message": f"final status must be one of {FINISHED}"})


class Attempts:
    """Creates invitations and moves them between states; sends a callback on start and finish."""

    def __init__(self, store: ImochaStore, callbacks: Callbacks, clock: Callable[[], datetime]):
        self._store = store
        self._callbacks = callbacks
        self._clock = clock

    # ----- API: invitations (spec §7) ---------------------------------------------------------

    def invite(self, test_id: int, body: dict[str, Any], link_id: int | None = None) -> dict:
        """Invite (or re-invite, §7.3) a candidate by the default link or a given link; 201 answer."""
        fields = lower_keys(body)
        with self._store.lock:
            test = self._store.test(test_id)
            link = self._store.default_link(test) if link_id is None else test.link(link_id)
            if link_id is not None and link.status != "active":
                raise validation_error(f"Test link {link.test_link_id} is not active.")
            email, name = self._candidate_fields(fields)
            existing = self._latest_for(link.test_link_id, email)
            if existing is not None:
                self._reopen(existing, fields)
                return {"testInvitationId": existing.test_invitation_id, "testUrl": existing.test_url,
                        "status": existing.status}
            inv = self._new_invitation(test, link, email, name, fields)
            return {"testInvitationId": inv.test_invitation_id, "testUrl": inv.test_url, "status": inv.status}

    def _candidate_fields(self, fields: dict[str, Any]) -> tuple[str, str]:
        email = str(fields.get("email") or "").strip()
        name = str(fields.get("name") or "").strip()
        if as_int(fields.get("disablemandatoryfields")) == 1:
            token = self._store.upcoming_invitation_id
            return email or f"candidate{token}@imocha-generated.example", name or f"Candidate {token}"
        errors = []
        if not email:
            errors.append("'Email' must not be empty.")
        elif "@" not in email or "." not in email.split("@")[-1]:
            errors.append("'Email' is not a valid email address.")
        if not name:
            errors.append("'Name' must not be empty.")
        if errors:
            raise validation_error(*errors)
        return email, name

    def _latest_for(self, link_id: int, email: str) -> Invitation | None:
        matches = [inv for inv in self._store.invitations.values()
                   if inv.test_link_id == link_id and inv.email.lower() == email.lower()]
        return max(matches, key=lambda inv: inv.test_invitation_id, default=None)

    def _reopen(self, inv: Invitation, fields: dict[str, Any]) -> None:
        """Re-invite/reattempt of a not-started invitation: new window; Cancelled/Expired → Pending."""
        if inv.status not in (STATUS_PENDING, *REOPENABLE):
            return
        inv.status = STATUS_PENDING
        inv.changed_at = None
        self._apply_window(inv, fields)

    @staticmethod
    def _apply_window(inv: Invitation, fields: dict[str, Any]) -> None:
        inv.window_start = parse_utc(fields.get("startdatetime"))
        inv.window_end = parse_utc(fields.get("enddatetime"))
        inv.time_zone_id = as_int(fields.get("timezoneid"))
        inv.callback_url = fields.get("callbackurl") or inv.callback_url
        inv.redirect_url = fields.get("redirecturl") or inv.redirect_url

    def _new_invitation(self, test: SimTest, link: SimLink, email: str, name: str, fields: dict[str, Any],
                        invitation_type: str = "api", root_id: int | None = None) -> Invitation:
        inv = Invitation(
            test_invitation_id=self._store.take_invitation_id(),
            test_id=test.test_id,
            test_link_id=link.test_link_id,
            email=email,
            name=name,
            test_name=test.name,
            duration=test.duration,
            banks=copy.deepcopy(test.banks),
            invited_at=self._clock(),
            invitation_type=invitation_type,
            root_id=root_id,
        )
        self._apply_window(inv, fields)
        self._store.invitations[inv.test_invitation_id] = inv
        return inv

    def reattempt(self, invitation_id: int, body: dict[str, Any]) -> dict:
        """Allow a retake (§7.4): a new invitation only from a finished one, else the current one."""
        fields = lower_keys(body)
        with self._store.lock:
            original = self._store.invitation(invitation_id)
            if original.status == STATUS_IN_PROGRESS:
                raise SimulatorError(400, {"statusCode": 400, "message": (
                    f"Reattempt is not allowed on Test invitation id: {invitation_id} "
                    "which is in inprogress state.")})
            latest = self._latest_in_chain(original)
            if latest.finished:
                latest = self._retake(latest, fields)
            else:
                self._reopen(latest, fields)
            return {"testInvitationId": latest.test_invitation_id, "testUrl": latest.test_url,
                    "callbackUrlRegistered": bool(latest.callback_url),
                    "redirectUrlRegistered": bool(latest.redirect_url)}

    def _latest_in_chain(self, inv: Invitation) -> Invitation:
        root = inv.root_id or inv.test_invitation_id
        chain = [other for other in self._store.invitations.values()
                 if (other.root_id or other.test_invitation_id) == root]
        return max(chain, key=lambda other: other.test_invitation_id)

    def _retake(self, previous: Invitation, fields: dict[str, Any]) -> Invitation:
        test = self._store.tests.get(previous.test_id)
        inherited = {"callbackurl": previous.callback_url, "redirecturl": previous.redirect_url}
        inherited.update({key: value for key, value in fields.items() if value})
        inv = Invitation(
            test_invitation_id=self._store.take_invitation_id(),
            test_id=previous.test_id,
            test_link_id=previous.test_link_id,
            email=previous.email,
            name=previous.name,
            test_name=test.name if test else previous.test_name,
            duration=test.duration if test else previous.duration,
            banks=copy.deepcopy(test.banks) if test else copy.deepcopy(previous.banks),
            invited_at=self._clock(),
            invitation_type=previous.invitation_type,
            root_id=previous.root_id or previous.test_invitation_id,
        )
        self._apply_window(inv, inherited)
        self._store.invitations[inv.test_invitation_id] = inv
        return inv

    def cancel(self, invitation_id: int) -> dict:
        """Cancel a Pending invitation (§7.5); any other state is the documented 400."""
        with self._store.lock:
            inv = self._store.invitation(invitation_id)
            if inv.status != STATUS_PENDING:
                raise SimulatorError(400, CANCEL_WRONG_STATE_BODY)
            inv.status = STATUS_CANCELLED
            inv.changed_at = self._clock()
            return {"testInvitationId": inv.test_invitation_id, "status": "cancelled"}

    # ----- control: attempts ------------------------------------------------------------------

    def invitation(self, invitation_id: int) -> dict:
        with self._store.lock:
            return self._store.invitation(invitation_id).to_json()

    def complete_attempt(self, test_id: int, email: str, name: str, status: str = STATUS_COMPLETE,
                         bank_scores: float | dict[int, float] | None = None,
                         attempted_on: datetime | None = None, callback_url: str | None = None,
                         time_taken_seconds: int | None = None) -> int:
        """Invite (by the default link), start and finish an attempt in one call; returns its id.

        A candidate who already finished on that link gets a reattempt (a new id). ``bank_scores``:
        None = a deterministic score, a number = that percent of every bank, a dict = points per qbId.
        """
        check_final(status)
        body = {"email": email, "name": name, "callbackUrl": callback_url}
        with self._store.lock:
            inv = self._store.invitation(self.invite(test_id, body)["testInvitationId"])
            if inv.finished:
                inv = self._store.invitation(self.reattempt(inv.test_invitation_id, body)["testInvitationId"])
            taken = time_taken_seconds or max(60, int(inv.duration * 60 * 0.6))
            started = attempted_on or (self._clock() - timedelta(seconds=taken))
            if inv.status == STATUS_PENDING:
                self.start_attempt(inv.test_invitation_id, at=started)
            self._finish(inv, status, bank_scores, inv.started_at + timedelta(seconds=taken), taken)
            return inv.test_invitation_id

    def start_attempt(self, invitation_id: int, at: datetime | None = None) -> dict:
        """Pending → In Progress; sends the In Progress callback."""
        with self._store.lock:
            inv = self._store.invitation(invitation_id)
            self._require(inv, STATUS_PENDING, "start")
            inv.status = STATUS_IN_PROGRESS
            inv.started_at = (parse_utc(at) if at else None) or self._clock()
            self._callbacks.notify(inv)
            return inv.to_json()

    def finish_attempt(self, invitation_id: int, status: str = STATUS_COMPLETE,
                       bank_scores: float | dict[int, float] | None = None, at: datetime | None = None,
                       time_taken_seconds: int | None = None) -> dict:
        """In Progress → Complete / Test Left / Terminated; sends the final callback."""
        with self._store.lock:
            inv = self._store.invitation(invitation_id)
            completed = (parse_utc(at) if at else None) or self._clock()
            self._finish(inv, status, bank_scores, completed, time_taken_seconds)
            return inv.to_json()

    def leave_attempt(self, invitation_id: int, **kwargs: Any) -> dict:
        return self.finish_attempt(invitation_id, STATUS_TEST_LEFT, **kwargs)

    def terminate_attempt(self, invitation_id: int, **kwargs: Any) -> dict:
        return self.finish_attempt(invitation_id, STATUS_TERMINATED, **kwargs)

    def expire_invitation(self, invitation_id: int, at: datetime | None = None) -> dict:
        """Pending → Expired (its access window ended)."""
        with self._store.lock:
            inv = self._store.invitation(invitation_id)
            self._require(inv, STATUS_PENDING, "expire")
            inv.status = STATUS_EXPIRED
            inv.changed_at = (parse_utc(at) if at else None) or self._clock()
            return inv.to_json()

    @staticmethod
    def _require(inv: Invitation, status: str, action: str) -> None:
        if inv.status != status:
            raise SimulatorError(409, {"statusCode": 409, "message": (
                f"cannot {action} invitation {inv.test_invitation_id}: it is {inv.status}, not {status}")})

    def _finish(self, inv: Invitation, status: str, bank_scores: Any, completed: datetime,
                time_taken_seconds: int | None) -> None:
        check_final(status)
        self._require(inv, STATUS_IN_PROGRESS, "finish")
        started = inv.started_at or completed
        inv.status = status
        inv.completed_at = completed
        inv.time_taken_seconds = (int(time_taken_seconds) if time_taken_seconds is not None
                                  else max(0, int((completed - started).total_seconds())))
        inv.bank_scores = self._scores(inv, bank_scores)
        self._callbacks.notify(inv)

    @staticmethod
    def _scores(inv: Invitation, bank_scores: Any) -> dict[int, float]:
        if isinstance(bank_scores, dict):
            given = {int(key): float(value) for key, value in bank_scores.items()}
            return {bank.qb_id: min(bank.max_score, given.get(bank.qb_id, 0.0)) for bank in inv.banks}
        if isinstance(bank_scores, int | float):
            share = min(100.0, max(0.0, float(bank_scores))) / 100
            return {bank.qb_id: round(bank.max_score * share, 2) for bank in inv.banks}
        rng = random.Random(inv.test_invitation_id)
        level = rng.uniform(0.35, 0.95)
        return {bank.qb_id: round(bank.max_score * min(1.0, max(0.0, rng.gauss(level, 0.1))), 2)
                for bank in inv.banks}

"""Retrieve Invites (spec §9, ``POST /v3/candidates/testattempts``): invitations by state and time window."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from imocha_pipeline.timestamps import parse_utc
from imocha_sandbox.imocha.errors import BAD_DATES_BODY, SimulatorError, not_found
from imocha_sandbox.imocha.formats import as_int, lower_keys
from imocha_sandbox.imocha.records import FINISHED, STATUS_CANCELLED, STATUS_EXPIRED, Invitation
from imocha_sandbox.imocha.settings import SimulatorSettings
from imocha_sandbox.imocha.store import ImochaStore


class RetrieveInvites:
    """Finds the invitations in a state whose timestamp (``attempt_window_field``) falls in a window."""

    def __init__(self, store: ImochaStore, settings: SimulatorSettings):
        self._store = store
        self._settings = settings

    def test_attempts(self, state: str | None, body: Any) -> dict:
        """Invites in ``state`` whose timestamp falls in ``[StartDateTime, EndDateTime)``."""
        wanted = {"completed": FINISHED, "cancelled": (STATUS_CANCELLED,), "expired": (STATUS_EXPIRED,)}
        statuses = wanted.get((state or "").lower())
        if statuses is None:
            raise SimulatorError(400, {"result": None,
                                       "errors": ["state must be one of: completed, cancelled, expired"]})
        fields = lower_keys(body) if isinstance(body, dict) else {}
        start = parse_utc(fields.get("startdatetime"))
        end = parse_utc(fields.get("enddatetime"))
        if start is None or end is None or end < start:
            raise SimulatorError(401, BAD_DATES_BODY)
        test_id = fields.get("testid")
        if test_id is not None and as_int(test_id) is None:
            raise SimulatorError(400, {"result": None, "errors": ["'testId' must be a number."]})
        with self._store.lock:
            found = [inv for inv in self._store.invitations.values()
                     if inv.status in statuses and (test_id is None or inv.test_id == as_int(test_id))]
            stamped = [(stamp, inv) for inv in found if (stamp := self._window_stamp(inv)) is not None]
            hits = sorted((pair for pair in stamped if start <= pair[0] < end),
                          key=lambda pair: (pair[0], pair[1].test_invitation_id))
            if not hits and self._settings.empty_attempts_404:
                raise not_found("No test attempts found for the given date range.")
            return {"result": {"testAttempts": [self._attempt_json(inv) for _, inv in hits]}, "errors": None}

    def _window_stamp(self, inv: Invitation) -> datetime | None:
        if not inv.finished:
            return inv.changed_at
        return inv.started_at if self._settings.attempt_window_field == "started" else inv.completed_at

    def _attempt_json(self, inv: Invitation) -> dict[str, Any]:
        return {
            "testInvitationId": inv.test_invitation_id,
            "testId": inv.test_id,
            "name": inv.name,
            "email": inv.email,
            "invitationtype": inv.invitation_type,
            "testStatus": self._settings.test_status_labels.get(inv.status, inv.status),
        }

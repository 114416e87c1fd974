"""Callback notifications (spec §8): the PascalCase payload, sending it on a state change, Process Callbacks."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from imocha_sandbox.imocha.callback_delivery import CallbackDispatcher, Notification
from imocha_sandbox.imocha.errors import FOREIGN_IDS_MESSAGE, SimulatorError
from imocha_sandbox.imocha.formats import as_int, lower_keys
from imocha_sandbox.imocha.records import STATUS_IN_PROGRESS, Invitation
from imocha_sandbox.imocha.settings import SimulatorSettings
from imocha_sandbox.imocha.store import ImochaStore
from imocha_sandbox.seed import performance_category

BASE_IMG_URL = "https://imdatastorage.blob.core.windows.net/imcompanylogo/imocha.jpg"


class Callbacks:
    """Builds notifications and hands them to the ``CallbackDispatcher`` that delivers them."""

    def __init__(self, store: ImochaStore, settings: SimulatorSettings, dispatcher: CallbackDispatcher,
                 clock: Callable[[], datetime]):
        self._store = store
        self._settings = settings
        self._dispatcher = dispatcher
        self._clock = clock

    def payload(self, inv: Invitation) -> dict[str, Any]:
        """The §8.2 PascalCase payload for the invitation's current state."""
        started = inv.started_at or self._clock()
        done = inv.finished
        return {
            "CandidateEmailId": inv.email,
            "AttemptedOn": (started + self._settings.callback_display_offset).strftime("%d-%b-%Y %I:%M %p"),
            "TotalScore": inv.total_points if done else 0,
            "CandidateScore": inv.candidate_points if done else 0,
            "ReportPDFUrl": inv.pdf_report_url if done else None,
            "TestInvitationId": inv.test_invitation_id,
            "Status": self._settings.callback_status_labels.get(inv.status, inv.status),
            "AttemptedOnUtc": started.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
            "PerformanceCategory": performance_category(inv.score_percentage) if done else None,
            "BaseImgUrl": BASE_IMG_URL,
        }

    def notify(self, inv: Invitation, replay: bool = False) -> None:
        """Queue the notification of the invitation's current state, if it has a callback URL."""
        if inv.callback_url:
            self._dispatcher.enqueue(Notification(inv.test_invitation_id, inv.callback_url,
                                                  self.payload(inv), replay))

    def process_callbacks(self, body: Any) -> dict:
        """Re-send the latest notification of each id (≤ limit); any unknown id fails the call (401)."""
        fields = lower_keys(body) if isinstance(body, dict) else {}
        ids = fields.get("testinvitationids")
        if not isinstance(ids, list):
            raise SimulatorError(400, {"result": None, "errors": ["'testinvitationIds' must not be empty."]})
        ids = ids[: self._settings.callbacks_process_limit]
        with self._store.lock:
            invitations = self._store.invitations
            foreign = [str(raw) for raw in ids if as_int(raw) not in invitations]
            if foreign:
                raise SimulatorError(401, {"result": None, "errors": [FOREIGN_IDS_MESSAGE, *foreign]})
            successful, failed = [], []
            for raw in ids:
                inv = invitations[as_int(raw)]
                if inv.callback_url and (inv.finished or inv.status == STATUS_IN_PROGRESS):
                    self.notify(inv, replay=True)
                    successful.append(inv.test_invitation_id)
                else:
                    failed.append(inv.test_invitation_id)
            return {"result": {"testinvitationIds": {"successful": successful, "failed": failed}},
                    "errors": None}

"""``POST /v3/gdpr/requests`` (spec §11): iMocha masks a candidate's records.

``CandidateEmail`` alone masks every attempt of the candidate; with ``testinvitationId`` only that attempt.
An email (or attempt) with nothing to mask is the documented 400 ``{"errors":["No records found for given Email
address: <email>"]}``; a successful request is 200 ``{"result":"Request accepted for processing"}``.

Assumption (the spec says "mask" and nothing of the result's shape): masking happens at once (iMocha says
"accepted for processing"), and replaces the candidate's email with ``masked-{testInvitationId}@masked.imocha.invalid``
and the name with ``Masked candidate`` in every answer (Retrieve Invites, reports, callbacks); the attempt keeps its
id, test, status, times and scores. A masked attempt no longer matches the email, so a second request for it is the
400 "No records found".
"""

from __future__ import annotations

from typing import Any

from imocha_sandbox.imocha.errors import validation_error
from imocha_sandbox.imocha.store import ImochaStore

ACCEPTED = {"result": "Request accepted for processing"}
MASKED_NAME = "Masked candidate"


def masked_email(invitation_id: int) -> str:
    return f"masked-{int(invitation_id)}@masked.imocha.invalid"


class Gdpr:
    """Masks candidates' attempts in the store; ``masked`` lists the attempt ids masked so far."""

    def __init__(self, store: ImochaStore):
        self._store = store
        self.masked: list[int] = []

    def request(self, body: Any) -> dict:
        fields = {str(k).lower(): v for k, v in body.items()} if isinstance(body, dict) else {}
        email = fields.get("candidateemail")
        if not isinstance(email, str) or not email.strip():
            raise validation_error("'CandidateEmail' must not be empty.")
        wanted = email.strip().casefold()
        only = fields.get("testinvitationid")
        with self._store.lock:
            found = [inv for inv in self._store.invitations.values()
                     if inv.email.strip().casefold() == wanted
                     and (only is None or inv.test_invitation_id == int(only))]
            if not found:
                raise validation_error(f"No records found for given Email address: {email}")
            for inv in found:
                inv.email = masked_email(inv.test_invitation_id)
                inv.name = MASKED_NAME
                self.masked.append(inv.test_invitation_id)
        return ACCEPTED

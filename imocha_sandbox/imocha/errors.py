"""``SimulatorError`` and the error bodies the simulator answers with (documented ones verbatim)."""

from __future__ import annotations

import json
from typing import Any

# Documented bodies (spec §4.2), verbatim.
INVALID_KEY_BODY = {
    "statusCode": 401,
    "message": "Access denied due to invalid subscription key. "
    "Make sure to provide a valid key for an active subscription.",
}
BAD_DATES_BODY = {"result": None, "errors": ["Date & time is not invalid or incorrect format"]}
FOREIGN_IDS_MESSAGE = "testinvitationIds does not belong to account or not found"
CANCEL_WRONG_STATE_BODY = {
    "statusCode": 400,
    "message": "Testinvitation state in inprogress, complete, and expired can not be cancelled.",
}
# Assumed bodies (spec §15: the gateway is probably Azure APIM).
SERVER_ERROR_BODY = {"statusCode": 503, "message": "The service is temporarily unavailable. Try again later."}
INTERNAL_ERROR_BODY = {"statusCode": 500, "message": "Internal server error."}
FAULT_RATE_LIMIT_BODY = {"statusCode": 429, "message": "Rate limit is exceeded. Try again in 1 seconds."}


class SimulatorError(Exception):
    """An API or control answer other than success: HTTP ``status`` with a JSON ``body``."""

    def __init__(self, status: int, body: Any):
        self.status = status
        self.body = body
        super().__init__(f"HTTP {status}: {json.dumps(body)}")


def not_found(message: str) -> SimulatorError:
    """A 404 in the gateway shape ``{"statusCode": 404, "message": ...}``."""
    return SimulatorError(404, {"statusCode": 404, "message": message})


def validation_error(*messages: str) -> SimulatorError:
    """A 400 in the validation shape ``{"errors": [...]}``."""
    return SimulatorError(400, {"errors": list(messages)})

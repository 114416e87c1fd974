"""The fixed facts of the iMocha Assessment API v3 this client relies on (``specs/imocha-api.md``).

The endpoint templates name each call in errors and request metrics.
"""

API_NAME = "iMocha"
PROCESS_CALLBACKS_BATCH = 100
"""Invitation ids per ``POST /v3/callbacks/process``."""
ATTEMPT_STATES = ("completed", "cancelled", "expired")

EP_TESTS = "GET /v3/tests"
EP_TEST = "GET /v3/tests/{id}"
EP_TEST_LINKS = "GET /v3/tests/{id}/testlinks"
EP_ATTEMPTS = "POST /v3/candidates/testattempts"
EP_REPORT = "GET /v3/reports/{id}"
EP_PROCESS_CALLBACKS = "POST /v3/callbacks/process"
EP_GDPR = "POST /v3/gdpr/requests"
GDPR_NO_RECORDS = "No records found for given Email address"
"""The start of iMocha's 400 answer to a GDPR request for an email it holds nothing of (spec §4.2)."""


def imocha_root_url(base_url: str) -> str:
    """The API host of ``base_url``, which may be the host (``https://apiv3.imocha.io``) or include ``/v3``."""
    root = base_url.rstrip("/")
    return root[: -len("/v3")] if root.endswith("/v3") else root

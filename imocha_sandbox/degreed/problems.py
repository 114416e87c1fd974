"""The simulator's API errors: ``ApiProblem`` (raised anywhere, answered as a JSON:API error) and its titles."""

from __future__ import annotations

from typing import Any

ERROR_TITLES = {
    400: ("bad-request", "Bad Request"),
    401: ("unauthorized", "Unauthorized"),
    403: ("forbidden", "Forbidden"),
    404: ("not-found", "Not Found"),
    405: ("method-not-allowed", "Method Not Allowed"),
    406: ("not-acceptable", "Not Acceptable"),
    409: ("conflict", "Conflict"),
    429: ("quota-exceeded", "API calls quota exceeded."),
    500: ("server-error", "Internal Server Error"),
    503: ("server-error", "Service Unavailable"),
}
SERVICE_UNAVAILABLE = "The service is temporarily unavailable."


class ApiProblem(Exception):
    """An API error answer in JSON:API form."""

    def __init__(self, status: int, detail: str, *, code: str | None = None, source: str | None = None,
                 headers: dict[str, str] | None = None, body: dict[str, Any] | None = None):
        super().__init__(detail)
        self.status = status
        self.code = code or ERROR_TITLES.get(status, ("error", "Error"))[0]
        self.title = ERROR_TITLES.get(status, ("error", "Error"))[1]
        self.detail = detail
        self.source = source
        self.headers = headers or {}
        self.body = body  # answer this body instead of the JSON:API error (e.g. the bare {} of a 409)


def conflict_problem(conflict_body: str, with_id: str, without_id: str, existing_id: str,
                     source: str | None) -> ApiProblem:
    """A 409 shaped by the ``conflict_body`` setting: ``{}``, an error without the existing id, or one naming it."""
    if conflict_body == "empty":
        return ApiProblem(409, without_id, body={})
    if conflict_body == "error_without_id":
        return ApiProblem(409, without_id, source=source)
    return ApiProblem(409, with_id, source=existing_id)

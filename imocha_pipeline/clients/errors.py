"""Typed errors raised by the API clients.

Every error carries the API name, the endpoint template and the HTTP status (when there was an
answer), and a message that is safe to log: secrets are redacted by the session before an error is
built, and errors never embed request headers.
"""

from __future__ import annotations


class ApiError(Exception):
    """Base class: something went wrong talking to iMocha or Degreed."""

    retryable = False

    def __init__(self, message: str, *, api: str = "", endpoint: str = "", status: int | None = None,
                 detail: str | None = None):
        self.api = api
        self.endpoint = endpoint
        self.status = status
        self.detail = detail
        prefix = " ".join(part for part in (api, endpoint) if part)
        status_text = f" (HTTP {status})" if status else ""
        super().__init__(f"{prefix}{status_text}: {message}" if prefix else message)


class ApiTransportError(ApiError):
    """No usable answer: connection refused or dropped, timeout, after every retry."""

    retryable = True


class AmbiguousWriteError(ApiTransportError):
    """A non-idempotent write got no usable answer (read timeout, connection dropped after sending, 504):
    it may or may not have been applied. Not repeated blindly: read the server's state, then send again."""


class ServerError(ApiError):
    """The API kept answering 5xx after every retry."""

    retryable = True


class RateLimitedError(ApiError):
    """The API kept answering 429 after every retry."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs):
        self.retry_after = retry_after
        super().__init__(message, **kwargs)


class AuthError(ApiError):
    """401/403: bad key, wrong secret, revoked credentials, or a scope the key lacks."""


class NotFoundError(ApiError):
    """404: the resource does not exist."""


class ConflictError(ApiError):
    """409: a resource with the same natural key (e.g. external id) already exists."""

    def __init__(self, message: str, *, existing_id: str | None = None, **kwargs):
        self.existing_id = existing_id
        super().__init__(message, **kwargs)


class DuplicateCompletionError(ConflictError):
    """409 on completion create: Degreed already holds a completion for this learner and content."""


class BadRequestError(ApiError):
    """400 for a reason that will not heal by retrying the same request."""


class LearnerNotFoundError(BadRequestError):
    """400 ``Invalid user identifier``: the learner does not exist in Degreed (yet)."""

    def __init__(self, message: str, *, identifier: str | None = None, **kwargs):
        self.identifier = identifier
        super().__init__(message, **kwargs)


class CursorExpiredError(BadRequestError):
    """A paging cursor expired (no ``next`` request within the snapshot's idle time)."""


class PayloadError(ApiError):
    """The API answered, but the body is not what the contract says (HTML, truncated JSON, wrong shape)."""


class UnresolvedConflictError(BadRequestError):
    """Degreed answered 409 but no record of ours can be found: another record holds the external id or the URL
    (or Degreed does not list the record yet). The record waits in the quarantine and is tried again later."""

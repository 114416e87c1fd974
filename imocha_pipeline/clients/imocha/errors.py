"""iMocha's answers as typed errors: a status that is an error, and a body that is not the contract's shape.

``ImochaPayloadError`` names the endpoint (a template) and the problem; ``payload_errors_about`` adds the
resource and the HTTP status to the payload errors raised while one answer is read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import requests

from imocha_pipeline.clients.errors import ApiError, AuthError, BadRequestError, NotFoundError, PayloadError
from imocha_pipeline.clients.imocha.contract import API_NAME


class ImochaPayloadError(PayloadError):
    """iMocha answered, but the body is not what the contract says."""

    # Its public home: failure messages (Dagster's among them) name the class by module and name.
    __module__ = "imocha_pipeline.clients.imocha"


def payload_error(endpoint: str, problem: str, status: int | None = None) -> ImochaPayloadError:
    return ImochaPayloadError(problem, api=API_NAME, endpoint=endpoint, status=status)


def as_imocha_payload_error(exc: PayloadError, prefix: str = "", status: int | None = None) -> ImochaPayloadError:
    """``exc`` as an ``ImochaPayloadError`` with the same fields, its problem prefixed by ``prefix``."""
    head = " ".join(part for part in (exc.api, exc.endpoint) if part)
    head += f" (HTTP {exc.status})" if exc.status else ""
    text = str(exc)
    problem = text[len(head) + 2:] if head and text.startswith(head + ": ") else text
    return ImochaPayloadError(prefix + problem, api=exc.api or API_NAME, endpoint=exc.endpoint,
                              status=exc.status or status)


@contextmanager
def payload_errors_about(subject: str, response: requests.Response) -> Iterator[None]:
    """Name the resource (and the HTTP status) in payload errors raised inside: the endpoint is a template."""
    try:
        yield
    except PayloadError as exc:
        raise as_imocha_payload_error(exc, f"{subject}: ", response.status_code) from None


def error_text(body: Any, fallback: str) -> str:
    """The human part of an iMocha error body, whichever of the three shapes it has (spec §3.3)."""
    if isinstance(body, Mapping):
        errors = body.get("errors")
        if isinstance(errors, list) and errors:
            return "; ".join(str(error) for error in errors)
        if body.get("message"):
            return str(body["message"])
    return fallback


def error_from_status(response: requests.Response, endpoint: str, redact: Callable[[str], str]) -> ApiError:
    """A final 4xx/5xx answer as the matching typed error (its text redacted)."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    text = redact(error_text(body, " ".join(response.text.split())[:200] or "no body"))
    kwargs = {"api": API_NAME, "endpoint": endpoint, "status": status, "detail": text}
    # iMocha answers some client errors with 401 in the result/errors envelope (bad dates,
    # foreign invitation ids, spec §4.2): those are bad requests, not bad keys.
    envelope = isinstance(body, Mapping) and isinstance(body.get("errors"), list)
    if status in (401, 403) and not envelope:
        return AuthError(f"access denied: {text}", **kwargs)
    if status == 404:
        return NotFoundError(f"not found: {text}", **kwargs)
    if 400 <= status < 500:
        return BadRequestError(f"request rejected: {text}", **kwargs)
    return ApiError(f"unexpected answer: {text}", **kwargs)

"""Degreed's error answers as the typed errors of ``clients/errors.py`` (messages redacted, never the secret)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

import requests

from imocha_pipeline.clients.degreed.contract import API_NAME
from imocha_pipeline.clients.degreed.values import optional_text
from imocha_pipeline.clients.errors import (
    ApiError,
    AuthError,
    BadRequestError,
    ConflictError,
    CursorExpiredError,
    LearnerNotFoundError,
    NotFoundError,
)


def error_from_answer(response: requests.Response, endpoint: str, *, client_id: str,
                      redact: Callable[[str], str]) -> ApiError:
    """Turn a JSON:API error answer into the matching typed error (messages are redacted)."""
    status = response.status_code
    error = _first_error(response)
    code = optional_text(error.get("code")) or ""
    detail = redact(optional_text(error.get("detail")) or optional_text(error.get("title"))
                    or response.text[:200] or f"HTTP {status}")
    source = optional_text(error.get("source")) if not isinstance(error.get("source"), Mapping) else None
    common = {"api": API_NAME, "endpoint": endpoint, "status": status, "detail": detail}
    if status == 400 and detail.lower().startswith("invalid user identifier"):
        identifier = source or detail.partition(":")[2].strip() or None
        return LearnerNotFoundError(detail, identifier=identifier, **common)
    if status == 400 and code == "cursor-expired":
        return CursorExpiredError(detail, **common)
    if status == 400:
        return BadRequestError(detail, **common)
    if status in (401, 403):
        return AuthError(f"client {client_id!r} is not allowed: {detail}", **common)
    if status in (404, 410):
        return NotFoundError(detail, **common)
    if status == 409:
        return ConflictError(detail, existing_id=_existing_id(detail, source), **common)
    return ApiError(f"unexpected answer: {detail}", **common)


def _first_error(response: requests.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    errors = body.get("errors") if isinstance(body, dict) else None
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        return errors[0]
    return body if isinstance(body, dict) else {}


def _existing_id(detail: str, source: str | None) -> str | None:
    """The id of the record a 409 collided with, when the answer names it (``source`` or ``...: <id>``)."""
    if source and re.fullmatch(r"[A-Za-z0-9_-]{4,40}", source) and source in detail:
        return source
    match = re.search(r":\s*([A-Za-z0-9_-]{4,40})\s*\.?$", detail)
    return match.group(1) if match else None

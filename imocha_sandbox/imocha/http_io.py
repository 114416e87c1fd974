"""HTTP in and out for the routes: reading queries and JSON bodies, answering errors as JSON."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from imocha_sandbox.imocha.errors import INTERNAL_ERROR_BODY, SimulatorError, validation_error
from imocha_sandbox.imocha.formats import as_int


def query_params(request: Request) -> dict[str, str]:
    """Query parameters with lower-cased names (ASP.NET binds them case-insensitively)."""
    return {key.lower(): value for key, value in parse_qsl(request.url.query, keep_blank_values=True)}


def query_int(query: dict[str, str], name: str, default: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    value = as_int(raw)
    if value is None:
        raise validation_error(f"The value '{raw}' is not valid for {name}.")
    return value


async def json_any(request: Request) -> Any:
    """The JSON body, or None when the body is empty; invalid JSON is a 400."""
    raw = await request.body()
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise validation_error("The request body is not valid JSON.") from exc


async def json_object(request: Request, allow_empty: bool = False) -> dict[str, Any]:
    """The JSON body, which must be an object (or empty, when ``allow_empty``: then ``{}``)."""
    body = await json_any(request)
    if body is None and allow_empty:
        return {}
    if not isinstance(body, dict):
        raise validation_error("A non-empty request body is required.")
    return body


async def _error_response(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SimulatorError)
    return JSONResponse(exc.body, status_code=exc.status)


async def _http_error_response(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = "Resource not found" if exc.status_code == 404 else str(exc.detail)
    return JSONResponse({"statusCode": exc.status_code, "message": message}, status_code=exc.status_code)


async def _internal_error_response(_request: Request, _exc: Exception) -> Response:
    return JSONResponse(INTERNAL_ERROR_BODY, status_code=500)


EXCEPTION_HANDLERS = {
    SimulatorError: _error_response,
    HTTPException: _http_error_response,
    Exception: _internal_error_response,
}

"""Reading an answer's JSON body, or saying what came back instead (``PayloadError``)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import requests

from imocha_pipeline.clients.errors import PayloadError


def decode_json(response: requests.Response, *, api: str, endpoint: str,
                redact: Callable[[str], str] = lambda text: text) -> Any:
    """Parse a JSON body; an empty body, an HTML page or truncated JSON raise ``PayloadError``."""
    text = response.text
    status = response.status_code
    if not text.strip():
        raise PayloadError("empty response body where JSON was expected", api=api, endpoint=endpoint,
                           status=status)
    content_type = response.headers.get("Content-Type", "")
    if "html" in content_type.lower() or text.lstrip().lower().startswith(("<!doctype", "<html")):
        raise PayloadError(f"HTML page instead of JSON: {redact(_snippet(text))!r}", api=api,
                           endpoint=endpoint, status=status)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise PayloadError(f"invalid JSON ({exc.msg} at char {exc.pos}): {redact(_snippet(text))!r}",
                           api=api, endpoint=endpoint, status=status) from None


def _snippet(text: str, limit: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"

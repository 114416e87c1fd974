"""One authorised API request (``ApiRequest``) and the checks made of it: Accept header, JSON body, resource
type and id, date-time attributes."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from starlette.requests import Request

from imocha_pipeline.timestamps import parse_utc
from imocha_sandbox.degreed.auth import ApiClientSpec
from imocha_sandbox.degreed.problems import ApiProblem


@dataclass
class ApiRequest:
    """What a handler needs about one authorised API request."""

    request: Request
    client_id: str
    client: ApiClientSpec
    base: str
    now: datetime
    body: dict[str, Any] | None = None

    @property
    def query(self):
        return self.request.query_params

    def path_param(self, name: str) -> str:
        return self.request.path_params[name]

    @property
    def attributes(self) -> dict[str, Any]:
        data = (self.body or {}).get("data") or {}
        return data.get("attributes") or {}

    def sees(self, provider_code: str | None) -> bool:
        """A provider key sees only its provider's records; an organization key sees everything."""
        return self.client.provider_code is None or self.client.provider_code == provider_code

    def visible_record(self, table: dict[str, Any], record_id: str, noun: str) -> Any:
        """The record ``record_id`` of ``table`` if this key sees it; else 404 ``<noun> <id> was not found.``"""
        record = table.get(record_id)
        if record is None or not self.sees(record.provider_code):
            raise ApiProblem(404, f"{noun} {record_id} was not found.", source=record_id)
        return record


def check_accept(request: Request) -> None:
    accept = request.headers.get("accept", "").lower()
    if accept and not any(kind in accept for kind in ("json", "*/*", "application/*")):
        raise ApiProblem(406, "Only application/json is supported.")


def parse_json_body(request: Request, body: bytes) -> dict[str, Any]:
    """A write's body: JSON, shaped ``{"data": {"attributes": {...}}}``."""
    content_type = request.headers.get("content-type", "").lower()
    if "json" not in content_type:
        raise ApiProblem(406, "The request body must be application/json or application/vnd.api+json.")
    try:
        parsed = json.loads(body or b"null")
    except ValueError as exc:
        raise ApiProblem(400, "The request body is not valid JSON.") from exc
    data = parsed.get("data") if isinstance(parsed, dict) else None
    if not isinstance(data, dict) or not isinstance(data.get("attributes", {}), dict):
        raise ApiProblem(400, 'The request body must be {"data": {"attributes": {...}}}.', source="data")
    return parsed


def require_attributes(attrs: dict[str, Any], names: Iterable[str]) -> None:
    """400 ``Attribute <name> is required.`` for the first of ``names`` that is missing, null or empty."""
    for name in names:
        if attrs.get(name) in (None, ""):
            raise ApiProblem(400, f"Attribute {name} is required.", source=name)


def require_type(ctx: ApiRequest, allowed: Iterable[str]) -> None:
    kind = ((ctx.body or {}).get("data") or {}).get("type")
    if kind is not None and str(kind).lower() not in allowed:
        raise ApiProblem(400, f"Unexpected resource type: {kind}", source="type")


def require_matching_id(ctx: ApiRequest, record_id: str) -> None:
    body_id = ((ctx.body or {}).get("data") or {}).get("id")
    if body_id is not None and str(body_id) != record_id:
        raise ApiProblem(400, f"The id in the body ({body_id}) does not match the URL ({record_id}).",
                         source="id")


def parse_attr_timestamp(attrs: dict[str, Any], name: str) -> datetime:
    try:
        return parse_utc(attrs.get(name), strict=True)
    except ValueError as exc:
        raise ApiProblem(400, f"Attribute {name} must be a date-time (yyyy-mm-ddTHH:MM:SS).",
                         source=name) from exc

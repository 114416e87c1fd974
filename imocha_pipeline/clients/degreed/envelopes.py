"""JSON:API envelopes both ways: attribute names for request bodies, and the ``data`` and ``links`` of answers."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from imocha_pipeline.clients.degreed.contract import API_NAME
from imocha_pipeline.clients.degreed.values import optional_text
from imocha_pipeline.clients.errors import PayloadError


def kebab_attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    """Attribute names as Degreed spells them: ``external_id`` → ``external-id`` (kebab-case names stay)."""
    return {str(name).replace("_", "-"): value for name, value in attributes.items()}


def single_resource(payload: Any, endpoint: str) -> dict[str, Any]:
    """The one resource of ``{"data": {...}}``; ``PayloadError`` for any other shape."""
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, dict):
        raise PayloadError("expected {\"data\": {...}} with one resource", api=API_NAME, endpoint=endpoint)
    return data


def resource_list(payload: Any, endpoint: str) -> list[dict[str, Any]]:
    """The resources of ``{"data": [...]}`` (entries that are not objects are skipped); ``PayloadError`` else."""
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list):
        raise PayloadError("expected {\"data\": [...]} with a list of resources", api=API_NAME,
                           endpoint=endpoint)
    return [item for item in data if isinstance(item, dict)]


def next_page_link(payload: Any) -> str | None:
    """``links.next`` of a list page, or None on the last page."""
    links = payload.get("links") if isinstance(payload, dict) else None
    return optional_text(links.get("next")) if isinstance(links, dict) else None

"""The typed records the Degreed client returns, each read from one JSON:API resource.

Reading is tolerant (``values.py``): ``"None"`` strings become None, numbers and booleans may come as text, and
a completion whose identifiers Degreed does not echo gets the Degreed ids of its ``relationships``. ``raw`` keeps
the resource as sent (not compared, not shown).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from imocha_pipeline.clients.degreed.values import (
    first_relationship_id,
    optional_bool,
    optional_int,
    optional_number,
    optional_text,
)
from imocha_pipeline.timestamps import parse_utc


def resource_attributes(resource: Mapping[str, Any]) -> Mapping[str, Any]:
    """The ``attributes`` of a JSON:API resource; ``ValueError`` when it has no id or no attributes object."""
    attributes = resource.get("attributes")
    if not isinstance(attributes, Mapping) or not resource.get("id"):
        raise ValueError("a JSON:API resource needs an id and an attributes object")
    return attributes


@dataclass(frozen=True)
class DegreedAssessment:
    """Assessment content (``content/assessments``) as Degreed holds it."""

    id: str
    external_id: str | None
    title: str | None
    summary: str | None
    url: str | None
    duration: float | int | None
    duration_type: str | None
    language: str | None
    obsolete: bool
    provider_code: str | None
    degreed_url: str | None
    modified_at: datetime | None
    created_at: datetime | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)

    @classmethod
    def from_resource(cls, resource: Mapping[str, Any]) -> DegreedAssessment:
        a = resource_attributes(resource)
        obsolete = optional_bool(a.get("obsolete"))
        if obsolete is None:
            obsolete = optional_bool(a.get("is-obsolete"))
        return cls(
            id=str(resource["id"]),
            external_id=optional_text(a.get("external-id")),
            title=optional_text(a.get("title")),
            summary=optional_text(a.get("summary")),
            url=optional_text(a.get("url")),
            duration=optional_number(a.get("duration")),
            duration_type=optional_text(a.get("duration-type")),
            language=optional_text(a.get("language")),
            obsolete=bool(obsolete),
            provider_code=optional_text(a.get("provider-code")),
            degreed_url=optional_text(a.get("degreed-url")),
            modified_at=parse_utc(a.get("modified-at"), strict=True),
            created_at=parse_utc(a.get("created-at"), strict=True),
            raw=dict(resource),
        )


@dataclass(frozen=True)
class DegreedCompletion:
    """A completion. ``user_id``/``content_id`` are the identifiers Degreed echoes (email, external id);
    when it does not echo them, the Degreed ids from ``relationships`` with types ``UserId``/``Id``."""

    id: str
    user_id: str | None
    user_identifier_type: str | None
    employee_id: str | None
    content_id: str | None
    completed_at: datetime | None
    percentile: float | int | None
    added_at: datetime | None
    content_id_type: str | None = None
    content_type: str | None = None
    provider_code: str | None = None
    degreed_user_id: str | None = None
    degreed_content_id: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)

    @classmethod
    def from_resource(cls, resource: Mapping[str, Any]) -> DegreedCompletion:
        a = resource_attributes(resource)
        degreed_user = first_relationship_id(resource, "user")
        degreed_content = first_relationship_id(resource, "content")
        user_id = optional_text(a.get("user-id"))
        content_id = optional_text(a.get("content-id"))
        return cls(
            id=str(resource["id"]),
            user_id=user_id or degreed_user,
            user_identifier_type=(optional_text(a.get("user-identifier-type"))
                                  or (None if user_id else degreed_user and "UserId")),
            employee_id=optional_text(a.get("employee-id")),
            content_id=content_id or degreed_content,
            completed_at=parse_utc(a.get("completed-at"), strict=True),
            percentile=optional_number(a.get("percentile")),
            added_at=parse_utc(a.get("added-at"), strict=True),
            content_id_type=(optional_text(a.get("content-id-type"))
                             or (None if content_id else degreed_content and "Id")),
            content_type=optional_text(a.get("content-type")),
            provider_code=optional_text(a.get("provider-code")),
            degreed_user_id=degreed_user,
            degreed_content_id=degreed_content,
            raw=dict(resource),
        )


@dataclass(frozen=True)
class DegreedSkillRating:
    """A skill rating on Degreed's 1-8 scale."""

    id: str
    user_id: str | None
    employee_id: str | None
    skill_name: str | None
    rating: int | None
    rating_type: str | None
    rated_at: datetime | None
    provider_code: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)

    @classmethod
    def from_resource(cls, resource: Mapping[str, Any]) -> DegreedSkillRating:
        a = resource_attributes(resource)
        return cls(
            id=str(resource["id"]),
            user_id=optional_text(a.get("user-id")) or first_relationship_id(resource, "user"),
            employee_id=optional_text(a.get("employee-id")),
            skill_name=optional_text(a.get("skill-name")),
            rating=optional_int(a.get("rating")),
            rating_type=optional_text(a.get("rating-type")),
            rated_at=parse_utc(a.get("rated-at"), strict=True),
            provider_code=optional_text(a.get("provider-code")),
            raw=dict(resource),
        )


@dataclass(frozen=True)
class DegreedUser:
    id: str
    employee_id: str | None
    email: str | None
    first_name: str | None
    last_name: str | None
    full_name: str | None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)

    @classmethod
    def from_resource(cls, resource: Mapping[str, Any]) -> DegreedUser:
        a = resource_attributes(resource)
        return cls(
            id=str(resource["id"]),
            employee_id=optional_text(a.get("employee-id")),
            email=optional_text(a.get("organization-email")),
            first_name=optional_text(a.get("first-name")),
            last_name=optional_text(a.get("last-name")),
            full_name=optional_text(a.get("full-name")),
            raw=dict(resource),
        )


@dataclass(frozen=True)
class DegreedProvider:
    id: str
    name: str | None
    url: str | None
    code: str | None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False, hash=False)

    @classmethod
    def from_resource(cls, resource: Mapping[str, Any]) -> DegreedProvider:
        a = resource_attributes(resource)
        return cls(id=str(resource["id"]), name=optional_text(a.get("name")), url=optional_text(a.get("url")),
                   code=optional_text(a.get("code")), raw=dict(resource))

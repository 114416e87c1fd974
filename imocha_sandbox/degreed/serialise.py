"""What the API answers: JSON:API resources in each read shape and relationships style, and error bodies.

``read_shape`` "echo" echoes what was posted; "documented" is spec §8.3/§9.2 (only Degreed's own attributes,
learner, content and provider by Degreed id, .NET timestamps). ``relationships_style`` "object" is JSON:API,
"array" a list of single-key objects. Content answers are the same in both shapes.
"""

from __future__ import annotations

import json
import zlib
from typing import Any

from starlette.responses import Response

from imocha_sandbox.degreed.ids import IdMint
from imocha_sandbox.degreed.paths import API_PREFIX
from imocha_sandbox.degreed.problems import ApiProblem
from imocha_sandbox.degreed.settings import DegreedSimSettings
from imocha_sandbox.degreed.store import (
    DegreedStore,
    SimAssessment,
    SimCompletion,
    SimProvider,
    SimSkillRating,
    SimUser,
)
from imocha_sandbox.degreed.timestamps import format_degreed_timestamp, format_dotnet_timestamp

# Spec §8.3 and §9.2: the only attributes a documented completion / skill rating answer carries.
DOCUMENTED_COMPLETION_ATTRIBUTES = ("employee-id", "completed-at", "added-at", "points-earned", "is-verified",
                                    "rating", "access-method")
DOCUMENTED_CONTENT_SUMMARY_ATTRIBUTES = ("content-type", "url", "title", "provider", "content-duration",
                                         "content-duration-type", "is-internal")
DOCUMENTED_SKILL_RATING_ATTRIBUTES = ("employee-id", "skill-name", "rating", "rating-type",
                                      "certifiable-skill-guid", "rated-at")


class Serialiser:
    """Renders records as the API shows them, reading the live settings on every call."""

    def __init__(self, store: DegreedStore, settings: DegreedSimSettings, web_base_url: str, ids: IdMint):
        self.store = store
        self.settings = settings
        self.web_base_url = web_base_url
        self._ids = ids

    def _relationships(self, links: dict[str, dict[str, Any] | None]) -> Any:
        present = {name: {"data": data} for name, data in links.items() if data is not None}
        if self.settings.relationships_style == "array":
            return [{name: value} for name, value in present.items()]
        return present

    def _provider_ref(self, code: str | None) -> dict[str, str] | None:
        provider = self.store.provider_with_code(code)
        return {"id": provider.id, "type": "providers"} if provider else None

    def _provider_name(self, code: str | None) -> str | None:
        provider = self.store.provider_with_code(code)
        return provider.name if provider else None

    def _employee_id(self, record: SimCompletion | SimSkillRating) -> str:
        """The learner's employee id as Degreed has it now (the one recorded when the user is gone)."""
        user = self.store.users.get(record.user_id)
        return user.employee_id if user else record.employee_id

    def _learner_email(self, record: SimCompletion | SimSkillRating) -> str:
        user = self.store.users.get(record.user_id)
        return user.email if user else record.user_email

    def assessment_resource(self, record: SimAssessment, base: str) -> dict[str, Any]:
        return {
            "type": "content/assessments",
            "id": record.id,
            "attributes": {
                "provider-code": record.provider_code,
                "external-id": record.external_id,
                "degreed-url": f"{self.web_base_url}/assessments/?d={record.id}",
                "title": record.title,
                "summary": record.summary,
                "url": record.url,
                "obsolete": record.obsolete,
                "image-url": record.image_url,
                "language": record.language,
                "duration": record.duration,
                "duration-type": record.duration_type,
                "format": record.format,
                "created-at": format_degreed_timestamp(record.created_at),
                "modified-at": format_degreed_timestamp(record.modified_at),
            },
            "links": {"self": f"{base}{API_PREFIX}/content/assessments/{record.id}"},
            "relationships": self._relationships({"provider": self._provider_ref(record.provider_code)}),
        }

    def content_resource(self, record: SimAssessment, base: str) -> dict[str, Any]:
        return {
            "type": "content",
            "id": record.id,
            "attributes": {
                "content-type": "Assessment",
                "external-id": record.external_id,
                "title": record.title,
                "summary": record.summary,
                "url": record.url,
                "degreed-url": f"{self.web_base_url}/assessments/?d={record.id}",
                "format": record.format,
                "is-obsolete": record.obsolete,
                "image-url": record.image_url,
                "language": record.language,
                "duration": record.duration,
                "duration-type": record.duration_type,
                "provider": self._provider_name(record.provider_code),
                "is-internal": record.provider_code is None,
                "owner": None,
                "learning-minutes": duration_minutes(record.duration, record.duration_type),
                "publish-date": None,
                "created-at": format_degreed_timestamp(record.created_at),
                "modified-at": format_degreed_timestamp(record.modified_at),
            },
            "links": {"self": f"{base}{API_PREFIX}/content/{record.id}"},
        }

    def _completion_relationships(self, record: SimCompletion) -> Any:
        return self._relationships({
            "content": {"id": record.content_id, "type": "content"},
            "provider": self._provider_ref(record.provider_code),
            "user": {"id": record.user_id, "type": "users"},
        })

    def completion_resource(self, record: SimCompletion, base: str) -> dict[str, Any]:
        if self.settings.read_shape == "documented":
            return self._documented_completion(record, base)
        return {
            "type": "completions",
            "id": record.id,
            "attributes": {
                "employee-id": self._employee_id(record),
                "user-id": self._learner_email(record),
                "user-identifier-type": "Email",
                "content-id": record.content_external_id,
                "content-id-type": "ExternalId",
                "content-type": record.content_type,
                "completed-at": format_degreed_timestamp(record.completed_at),
                "added-at": format_degreed_timestamp(record.added_at),
                "percentile": record.percentile,
                "provider-code": record.provider_code,
                "points-earned": "0.0000000",
                "is-verified": record.is_verified,
                "rating": 0,
                "access-method": None,
            },
            "links": {"self": f"{base}{API_PREFIX}/completions/{record.id}"},
            "relationships": self._completion_relationships(record),
        }

    def _documented_completion(self, record: SimCompletion, base: str) -> dict[str, Any]:
        """Spec §8.3: only Degreed's own attributes; learner, content and provider by Degreed id."""
        attributes = {
            "employee-id": self._employee_id(record),
            "completed-at": format_dotnet_timestamp(record.completed_at),
            "added-at": format_dotnet_timestamp(record.added_at),
            "points-earned": points_earned(record.id),
            "is-verified": record.is_verified,
            "rating": 0,
            "access-method": None,
        }
        return {
            "type": "completions",
            "id": record.id,
            "attributes": {name: attributes[name] for name in DOCUMENTED_COMPLETION_ATTRIBUTES},
            "links": {"self": f"{base}{API_PREFIX}/completions/{record.id}"},
            "relationships": self._completion_relationships(record),
        }

    def content_summary(self, content_id: str) -> list[dict[str, Any]]:
        """The ``included`` entry for one referenced content item (none when it no longer exists)."""
        record = self.store.assessments.get(content_id)
        if record is None:
            return []
        attributes = {
            "content-type": "Assessment",
            "url": record.url,
            "title": record.title,
            "provider": self._provider_name(record.provider_code),
            "content-duration": record.duration,
            "content-duration-type": record.duration_type,
            "is-internal": record.provider_code is None,
        }
        return [{"type": "content", "id": record.id,
                 "attributes": {name: attributes[name] for name in DOCUMENTED_CONTENT_SUMMARY_ATTRIBUTES}}]

    def skill_rating_resource(self, record: SimSkillRating, base: str) -> dict[str, Any]:
        if self.settings.read_shape == "documented":
            return self._documented_skill_rating(record, base)
        return {
            "type": "skill-ratings",
            "id": record.id,
            "attributes": {
                "employee-id": self._employee_id(record),
                "user-id": self._learner_email(record),
                "skill-name": record.skill_name,
                "rating": record.rating,
                "rating-type": record.rating_type,
                "rated-at": format_degreed_timestamp(record.rated_at),
                "certifiable-skill-guid": None,
                "provider-code": record.provider_code,
                "created-at": format_degreed_timestamp(record.created_at),
                "modified-at": format_degreed_timestamp(record.modified_at),
            },
            "links": {"self": f"{base}{API_PREFIX}/skill-ratings/{record.id}"},
            "relationships": self._relationships({"user": {"id": record.user_id, "type": "users"}}),
        }

    def _documented_skill_rating(self, record: SimSkillRating, base: str) -> dict[str, Any]:
        """Spec §9.2: the rated user's employee id, the skill by name, the rating; the user by Degreed id."""
        attributes = {
            "employee-id": self._employee_id(record),
            "skill-name": record.skill_name,
            "rating": record.rating,
            "rating-type": record.rating_type,
            "certifiable-skill-guid": None,
            "rated-at": format_dotnet_timestamp(record.rated_at),
        }
        return {
            "type": "skill-ratings",
            "id": record.id,
            "attributes": {name: attributes[name] for name in DOCUMENTED_SKILL_RATING_ATTRIBUTES},
            "links": {"self": f"{base}{API_PREFIX}/skill-ratings/{record.id}"},
            "relationships": self._relationships({"user": {"id": record.user_id, "type": "users"}}),
        }

    def user_resource(self, user: SimUser, base: str) -> dict[str, Any]:
        return {
            "type": "users",
            "id": user.id,
            "attributes": {
                "employee-id": user.employee_id,
                "first-name": user.first_name,
                "last-name": user.last_name,
                "full-name": f"{user.first_name} {user.last_name}".strip(),
                "organization-email": user.email,
                "personal-email": None,
                "profile-visibility": "Organization",
                "permission-role": "Member",
                "login-disabled": False,
                "restricted": False,
                "is-active-learner": True,
                "created-at": format_degreed_timestamp(user.created_at),
                "last-login-at": None,
                "total-points": 0,
                "daily-logins": 0,
            },
            "links": {"self": f"{base}{API_PREFIX}/users/{user.id}"},
        }

    def provider_resource(self, provider: SimProvider, base: str) -> dict[str, Any]:
        return {
            "type": "providers",
            "id": provider.id,
            "attributes": {"name": provider.name, "url": provider.url, "code": provider.code},
            "links": {"self": f"{base}{API_PREFIX}/providers/{provider.id}"},
        }

    def error_body(self, problem: ApiProblem) -> dict[str, Any]:
        """A JSON:API error with a fresh id, or the problem's own body (the bare ``{}`` of a 409)."""
        if problem.body is not None:
            return problem.body
        return {"errors": [{"id": self._ids.error_id(), "code": problem.code, "status": problem.status,
                            "title": problem.title, "detail": problem.detail, "source": problem.source}]}


def json_response(status: int, payload: Any) -> Response:
    return Response(json.dumps(payload), status_code=status, media_type="application/json")


def duration_minutes(duration: float | None, duration_type: str | None) -> float | None:
    factors = {"Seconds": 1 / 60, "Minutes": 1, "Hours": 60, "Days": 1440}
    if duration is None or duration_type not in factors:
        return None
    return round(duration * factors[duration_type], 2)


def points_earned(record_id: str) -> str:
    """A stable decimal string in Degreed's form (``"0.0643720"``), derived from the record id."""
    return f"{zlib.crc32(record_id.encode()) % 1_000_000 / 10_000_000:.7f}"

"""Entity writers: the Degreed calls behind the generic apply loop, one class per entity."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from imocha_pipeline.clients.degreed import DegreedClient
from imocha_pipeline.clients.errors import ConflictError, DuplicateCompletionError
from imocha_pipeline.sync.apply import WriteOutcome
from imocha_pipeline.sync.mapping import DESIRED_ASSESSMENT_FIELDS
from imocha_pipeline.sync.values import same_value

# Our snake_case fields and the kebab-case attributes Degreed speaks.
ASSESSMENT_ATTRIBUTES = {
    "title": "title",
    "summary": "summary",
    "url": "url",
    "duration": "duration",
    "duration_type": "duration-type",
    "language": "language",
    "obsolete": "obsolete",
}


def assessment_fields(record: Any) -> dict[str, Any]:
    """Our field values as read back from a ``DegreedAssessment``."""
    return {name: getattr(record, name, None) for name in DESIRED_ASSESSMENT_FIELDS}


class AssessmentWriter:
    """Creates, patches and retires Degreed Assessment content keyed by external id."""

    def __init__(self, client: DegreedClient):
        self.client = client

    @staticmethod
    def attributes(record: dict[str, Any], fields: list[str] | tuple[str, ...]) -> dict[str, Any]:
        return {ASSESSMENT_ATTRIBUTES[name]: record.get(name) for name in fields if name in ASSESSMENT_ATTRIBUTES}

    def create(self, record: dict[str, Any]) -> WriteOutcome:
        attributes = {"external-id": record["record_key"], **self.attributes(record, DESIRED_ASSESSMENT_FIELDS)}
        try:
            created = self.client.create_assessment(attributes)
        except ConflictError as exc:
            # Someone (or an earlier run that never heard back) created it already: adopt it. A search may not
            # list it yet (Degreed's listings lag behind writes): then read it by the id the 409 named.
            existing = self.find_existing(record)
            if existing is None and exc.existing_id:
                found = self.client.get_assessment(exc.existing_id)
                existing = {"degreed_id": found.id, "obsolete": bool(found.obsolete), **assessment_fields(found)}
            if existing is None:
                raise
            changed = [n for n in DESIRED_ASSESSMENT_FIELDS if not same_value(existing.get(n), record.get(n))]
            if existing.get("obsolete"):
                changed.append("obsolete")
            if changed:
                self.update(existing["degreed_id"], record, changed)
            return WriteOutcome(existing["degreed_id"], "adopted")
        return WriteOutcome(created.id, "create")

    def update(self, degreed_id: str, record: dict[str, Any], changed_fields: list[str]) -> WriteOutcome:
        fields = [name for name in changed_fields if name != "obsolete"]
        attributes = self.attributes(record, fields)
        if "obsolete" in changed_fields:
            attributes["obsolete"] = False
        if attributes:
            self.client.update_assessment(degreed_id, attributes)
        return WriteOutcome(degreed_id, "update")

    def retire(self, degreed_id: str, record: dict[str, Any]) -> WriteOutcome:
        self.client.update_assessment(degreed_id, {"obsolete": True})
        return WriteOutcome(degreed_id, "retire")

    def find_existing(self, record: dict[str, Any]) -> dict[str, Any] | None:
        found = self.client.find_assessment(record["record_key"])
        if found is None:
            return None
        return {"degreed_id": found.id, "obsolete": bool(found.obsolete), **assessment_fields(found)}


def _moment(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


class CompletionWriter:
    """Posts completions; a completion Degreed already has (409 or an update answer) counts as delivered."""

    def __init__(self, client: DegreedClient):
        self.client = client

    def create(self, record: dict[str, Any]) -> WriteOutcome:
        try:
            created = self.client.create_completion(
                record["user_id"], record["content_id"], _moment(record["completed_at"]),
                percentile=record.get("percentile"), user_identifier_type=record["user_identifier_type"],
                content_id_type=record.get("content_id_type") or "ExternalId",
                content_type=record.get("content_type") or "Assessment",
            )
        except DuplicateCompletionError as exc:
            if not exc.existing_id:
                raise
            # Already there (an earlier send, or a retake under Degreed's one-per-learner-and-content rule):
            # bring it to this attempt's values.
            self.client.update_completion(exc.existing_id, completed_at=_moment(record["completed_at"]),
                                          percentile=record.get("percentile"))
            return WriteOutcome(exc.existing_id, "adopted")
        return WriteOutcome(created.id, "create")

    def update(self, degreed_id: str, record: dict[str, Any], changed_fields: list[str]) -> WriteOutcome:
        changes: dict[str, Any] = {}
        if "completed_at" in changed_fields:
            changes["completed_at"] = _moment(record["completed_at"])
        if "percentile" in changed_fields:
            changes["percentile"] = record.get("percentile")
        if changes:
            self.client.update_completion(degreed_id, **changes)
        return WriteOutcome(degreed_id, "update")

    def retire(self, degreed_id: str, record: dict[str, Any]) -> WriteOutcome:
        raise NotImplementedError("completions are never retired")

    def find_existing(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """The learner's completion of this content around the attempt's date, if Degreed has it.

        Read before re-sending a create whose earlier send is unresolved (a crash, a lost answer). A completion
        Degreed holds under another date is not found here; the create then answers 409 (or updates it) and
        is adopted.
        """
        user = self.client.get_user(record["user_id"], _identifier(record))
        when = _moment(record["completed_at"])
        if when is None:
            return None
        for completion in self.client.iter_user_completions(user.id, when.date() - timedelta(days=1),
                                                            when.date() + timedelta(days=1)):
            if completion.content_id == record["content_id"]:
                return {"degreed_id": completion.id, "completed_at": _text_time(completion.completed_at),
                        "percentile": completion.percentile}
        return None


class SkillRatingWriter:
    """Posts skill ratings (level 1-8); a later attempt's rating replaces the earlier one."""

    def __init__(self, client: DegreedClient):
        self.client = client

    def create(self, record: dict[str, Any]) -> WriteOutcome:
        created = self.client.create_skill_rating(
            record["user_id"], record["skill_name"], int(record["rating"]),
            rating_type=record.get("rating_type") or "Evaluation", rated_at=_moment(record.get("rated_at")),
            user_identifier_type=record["user_identifier_type"],
        )
        return WriteOutcome(created.id, "create")

    def update(self, degreed_id: str, record: dict[str, Any], changed_fields: list[str]) -> WriteOutcome:
        changes: dict[str, Any] = {}
        if "rating" in changed_fields:
            changes["rating"] = int(record["rating"])
        if "rated_at" in changed_fields:
            changes["rated_at"] = _moment(record.get("rated_at"))
        if changes:
            self.client.update_skill_rating(degreed_id, **changes)
        return WriteOutcome(degreed_id, "update")

    def retire(self, degreed_id: str, record: dict[str, Any]) -> WriteOutcome:
        raise NotImplementedError("skill ratings are never retired")

    def find_existing(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """The learner's rating of this skill (and rating type), if Degreed has it: read before re-sending a
        create whose earlier send is unresolved, so a rating is never posted twice."""
        user = self.client.get_user(record["user_id"], _identifier(record))
        skill = str(record["skill_name"]).strip().casefold()
        kind = str(record.get("rating_type") or "Evaluation").casefold()
        for rating in self.client.iter_user_skill_ratings(user.id):
            if (rating.skill_name or "").strip().casefold() == skill and (rating.rating_type or "").casefold() == kind:
                return {"degreed_id": rating.id, "rating": rating.rating, "rated_at": _text_time(rating.rated_at)}
        return None


def _identifier(record: dict[str, Any]) -> str:
    """How ``get_user`` looks a learner up for a record's ``user_identifier_type``."""
    return "employee-id" if record.get("user_identifier_type") == "EmployeeId" else "email"


def _text_time(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def writer_for(entity, client: DegreedClient):
    """The writer of an entity (an ``EntityDef`` or its name)."""
    name = getattr(entity, "name", entity)
    writers = {"assessment": AssessmentWriter, "completion": CompletionWriter, "skill_rating": SkillRatingWriter}
    return writers[name](client)

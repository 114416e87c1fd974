"""The Degreed calls behind the apply loop for completions and skill ratings.

Records are identified the way the real API allows (``sync/identities.py``): a learner's Degreed id through the
users endpoint, our content's Degreed id through the content snapshot or a look-up by external id; a learner's
existing completion or rating through that learner's own list. A 409 on create is resolved by such a look-up,
never by reading the 409's body (the only public one is ``{}``); the body's id is used only when the look-up
cannot see the record yet (Degreed's listings lag behind its writes).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from imocha_pipeline.clients.degreed import DegreedClient
from imocha_pipeline.clients.errors import (
    ConflictError,
    DuplicateCompletionError,
    NotFoundError,
    UnresolvedConflictError,
)
from imocha_pipeline.sync.core.apply import WriteOutcome
from imocha_pipeline.sync.core.identities import DegreedDirectory


def _moment(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


class _LearnerRecords:
    """A learner's own records in Degreed, found through the directory (no field Degreed does not return)."""

    def __init__(self, client: DegreedClient, directory: DegreedDirectory | None = None):
        self.client = client
        self.directory = directory or DegreedDirectory(None, client)

    def learner(self, record: dict[str, Any]) -> str:
        return self.directory.user_id(record["user_id"], record.get("user_identifier_type") or "Email")

    def listed(self, record: dict[str, Any], read) -> list:
        """``read(degreed user id)`` for the record's learner; a cached id Degreed no longer knows is looked up
        again once."""
        user = self.learner(record)
        try:
            return list(read(user))
        except NotFoundError:
            self.directory.forget_user(user)
            return list(read(self.learner(record)))


class CompletionWriter(_LearnerRecords):
    """Posts completions; a completion Degreed already has (409 or an update answer) counts as delivered."""

    def create(self, record: dict[str, Any]) -> WriteOutcome:
        try:
            created = self.client.create_completion(
                record["user_id"], record["content_id"], _moment(record["completed_at"]),
                percentile=record.get("percentile"), user_identifier_type=record["user_identifier_type"],
                content_id_type=record.get("content_id_type") or "ExternalId",
                content_type=record.get("content_type") or "Assessment",
            )
        except DuplicateCompletionError as exc:
            # Already there (an earlier send, or a retake under Degreed's one-per-learner-and-content rule):
            # find it in the learner's completions and bring it to this attempt's values.
            existing = self.find_existing(record)
            existing_id = existing["degreed_id"] if existing else exc.existing_id
            if not existing_id:
                raise UnresolvedConflictError(
                    f"Degreed answered 409 (conflict) to the completion {record['record_key']}, and the learner's "
                    "completions list shows none of this content yet; tried again later",
                    api=exc.api, endpoint=exc.endpoint, status=409, detail=exc.detail) from exc
            self.client.update_completion(existing_id, completed_at=_moment(record["completed_at"]),
                                          percentile=record.get("percentile"))
            return WriteOutcome(existing_id, "adopted")
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
        """The learner's completion of this content, if Degreed has it: read from the learner's completions
        (Degreed names the content by its Degreed id), before re-sending a create whose earlier send is
        unresolved or after a 409. ``percentile`` is None where Degreed does not return it."""
        content = self.directory.content_id(record["content_id"])
        for completion in self.listed(record, self.client.iter_user_completions_all):
            same = (content is not None and completion.degreed_content_id == content) or \
                completion.content_id == record["content_id"]
            if same:
                return {"degreed_id": completion.id, "completed_at": _text_time(completion.completed_at),
                        "percentile": completion.percentile}
        return None


class SkillRatingWriter(_LearnerRecords):
    """Posts skill ratings (level 1-8); a later attempt's rating replaces the earlier one."""

    def create(self, record: dict[str, Any]) -> WriteOutcome:
        try:
            created = self.client.create_skill_rating(
                record["user_id"], record["skill_name"], int(record["rating"]),
                rating_type=record.get("rating_type") or "Evaluation", rated_at=_moment(record.get("rated_at")),
                user_identifier_type=record["user_identifier_type"],
            )
        except ConflictError as exc:
            existing = self.find_existing(record)
            if existing is None:
                raise UnresolvedConflictError(
                    f"Degreed answered 409 (conflict) to the skill rating {record['record_key']}, and the learner's "
                    "ratings show none of this skill yet; tried again later",
                    api=exc.api, endpoint=exc.endpoint, status=409, detail=exc.detail) from exc
            self.update(existing["degreed_id"], record, ["rating", "rated_at"])
            return WriteOutcome(existing["degreed_id"], "adopted")
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
        skill = str(record["skill_name"]).strip().casefold()
        kind = str(record.get("rating_type") or "Evaluation").casefold()
        for rating in self.listed(record, self.client.iter_user_skill_ratings):
            if (rating.skill_name or "").strip().casefold() == skill and (rating.rating_type or "").casefold() == kind:
                return {"degreed_id": rating.id, "rating": rating.rating, "rated_at": _text_time(rating.rated_at)}
        return None


def _text_time(moment: datetime | None) -> str | None:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None

"""The completion endpoints: ``/completions`` (create, read, list, PATCH, DELETE) and ``/users/{id}/completions``.

A duplicate (same user and content) answers 409 or updates the existing completion, as
``completion_duplicates`` says. The organisation-wide list without date filters reads the last
``max_date_range_days`` days up to today [A]; one learner's list without filters lists everything. In the
documented read shape both lists add ``included``: one content summary per referenced content item.
"""

from __future__ import annotations

from typing import Any

from imocha_sandbox.degreed.api_request import (
    ApiRequest,
    parse_attr_timestamp,
    require_attributes,
    require_matching_id,
    require_type,
)
from imocha_sandbox.degreed.paging import Pager, date_window
from imocha_sandbox.degreed.problems import ApiProblem, conflict_problem
from imocha_sandbox.degreed.serialise import Serialiser
from imocha_sandbox.degreed.settings import DegreedSimSettings
from imocha_sandbox.degreed.store import DegreedStore, SimAssessment, SimCompletion

COMPLETION_TYPES = {"completions", "completion"}
CONTENT_ID_TYPES = {"externalid": "ExternalId", "id": "Id", "contenturl": "ContentUrl"}
CONTENT_TYPES = {"article", "book", "course", "event", "video", "assessment", "podcast"}


class CompletionsApi:
    """Handlers of the completion endpoints: each takes an ``ApiRequest`` and returns (status, payload)."""

    def __init__(self, store: DegreedStore, serialiser: Serialiser, pager: Pager, settings: DegreedSimSettings):
        self.store = store
        self.serialiser = serialiser
        self.pager = pager
        self.settings = settings

    def create_completion(self, ctx: ApiRequest):
        require_type(ctx, COMPLETION_TYPES)
        attrs = ctx.attributes
        require_attributes(attrs, ("user-id", "user-identifier-type", "content-id", "content-id-type",
                                   "content-type", "completed-at"))
        user = self.store.resolve_user(attrs["user-id"], attrs["user-identifier-type"])
        content = self._resolve_content(ctx, attrs)
        completed_at = parse_attr_timestamp(attrs, "completed-at")
        percentile = parse_percentile(attrs)
        existing = next((c for c in self.store.completions.values()
                         if c.user_id == user.id and c.content_id == content.id), None)
        if existing is not None:
            if self.settings.completion_duplicates == "409":
                raise conflict_problem(
                    self.settings.conflict_body,
                    f"A completion for this user and content already exists: {existing.id}",
                    "A completion for this user and content already exists.", existing.id, None)
            existing.completed_at = completed_at
            if "percentile" in attrs:
                existing.percentile = percentile
            existing.modified_at = ctx.now
            return 200, {"data": self.serialiser.completion_resource(existing, ctx.base)}
        record = self.store.insert_completion(user, content, completed_at, percentile, ctx.client.provider_code,
                                              ctx.now)
        return 201, {"data": self.serialiser.completion_resource(record, ctx.base)}

    def get_completion(self, ctx: ApiRequest):
        return 200, {"data": self.serialiser.completion_resource(self._visible_completion(ctx), ctx.base)}

    def patch_completion(self, ctx: ApiRequest):
        record = self._visible_completion(ctx)
        require_type(ctx, COMPLETION_TYPES)
        require_matching_id(ctx, record.id)
        attrs = ctx.attributes
        completed_at = parse_attr_timestamp(attrs, "completed-at") if "completed-at" in attrs else None
        percentile = parse_percentile(attrs)
        if "is-verified" in attrs and not isinstance(attrs["is-verified"], bool):
            raise ApiProblem(400, "Attribute is-verified must be a boolean.", source="is-verified")
        if completed_at is not None:
            record.completed_at = completed_at
        if "percentile" in attrs:
            record.percentile = percentile
        if "is-verified" in attrs:
            record.is_verified = attrs["is-verified"]
        record.modified_at = ctx.now
        return 200, {"data": self.serialiser.completion_resource(record, ctx.base)}

    def delete_completion(self, ctx: ApiRequest):
        record = self._visible_completion(ctx)
        del self.store.completions[record.id]
        return 204, None

    def list_completions(self, ctx: ApiRequest):
        return self._completion_list(ctx, None)

    def list_user_completions(self, ctx: ApiRequest):
        return self._completion_list(ctx, self.store.require_user(ctx.path_param("id")).id)

    def _completion_list(self, ctx: ApiRequest, user_id: str | None):
        # The organisation-wide list falls back to the latest window; one learner's list to all of it.
        window = date_window(ctx, self.settings.max_date_range_days, default_window=user_id is None)
        by_added = self.settings.completion_date_field == "added-at"
        documented = self.settings.read_shape == "documented"

        def build():
            chosen = []
            for record in self.store.completions.values():
                moment = record.added_at if by_added else record.completed_at
                if (ctx.sees(record.provider_code)
                        and (user_id is None or record.user_id == user_id)
                        and (window is None or window[0] <= moment.date() <= window[1])):
                    chosen.append(record)
            chosen.sort(key=lambda c: (c.added_at if by_added else c.completed_at, c.id))
            if documented:
                return [(self.serialiser.completion_resource(c, ctx.base),
                         self.serialiser.content_summary(c.content_id)) for c in chosen]
            return [self.serialiser.completion_resource(c, ctx.base) for c in chosen]

        return self.pager.page(ctx, build, with_included=documented)

    def _visible_completion(self, ctx: ApiRequest) -> SimCompletion:
        return ctx.visible_record(self.store.completions, ctx.path_param("id"), "Completion")

    def _resolve_content(self, ctx: ApiRequest, attrs: dict[str, Any]) -> SimAssessment:
        kind = CONTENT_ID_TYPES.get(str(attrs.get("content-id-type") or "").replace("-", "").lower())
        if kind is None:
            raise ApiProblem(400, f"Invalid content-id-type: {attrs.get('content-id-type')}",
                             source="content-id-type")
        content_type = str(attrs.get("content-type") or "").lower()
        if content_type not in CONTENT_TYPES:
            raise ApiProblem(400, f"Invalid content-type: {attrs.get('content-type')}", source="content-type")
        value = str(attrs.get("content-id"))
        field_of = {"ExternalId": "external_id", "Id": "id", "ContentUrl": "url"}[kind]
        for record in self.store.assessments.values():
            if (getattr(record, field_of) == value and content_type == "assessment"
                    and ctx.sees(record.provider_code)):
                return record
        raise ApiProblem(400, f"Content not found: {value} ({kind}, {attrs.get('content-type')})",
                         source=value)


def parse_percentile(attrs: dict[str, Any]) -> float | None:
    value = attrs.get("percentile")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
        raise ApiProblem(400, "Attribute percentile must be a number from 0 to 100.", source="percentile")
    return value

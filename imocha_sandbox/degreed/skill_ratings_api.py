"""The skill rating endpoints (the spec's proposed §9.4 contract): ``/skill-ratings`` and
``/users/{id}/skill-ratings``.

Under ``skill_rating_duplicates="upsert"`` a rating for the same user, skill and rating type replaces the
existing one; under "always-new" every POST adds a record. Lists without date filters list everything.
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
from imocha_sandbox.degreed.problems import ApiProblem
from imocha_sandbox.degreed.serialise import Serialiser
from imocha_sandbox.degreed.settings import DegreedSimSettings
from imocha_sandbox.degreed.store import DegreedStore, SimSkillRating

SKILL_RATING_TYPES = {"skill-ratings", "skill_ratings", "skillratings", "skill-rating"}


class SkillRatingsApi:
    """Handlers of the skill rating endpoints: each takes an ``ApiRequest`` and returns (status, payload)."""

    def __init__(self, store: DegreedStore, serialiser: Serialiser, pager: Pager, settings: DegreedSimSettings):
        self.store = store
        self.serialiser = serialiser
        self.pager = pager
        self.settings = settings

    def create_skill_rating(self, ctx: ApiRequest):
        require_type(ctx, SKILL_RATING_TYPES)
        attrs = ctx.attributes
        require_attributes(attrs, ("user-id", "user-identifier-type", "skill-name", "rating"))
        user = self.store.resolve_user(attrs["user-id"], attrs["user-identifier-type"])
        skill_name = str(attrs["skill-name"]).strip()
        rating = parse_rating(attrs["rating"])
        rating_type = str(attrs.get("rating-type") or "Evaluation")
        rated_at = parse_attr_timestamp(attrs, "rated-at") if attrs.get("rated-at") else ctx.now
        if self.settings.skill_rating_duplicates == "upsert":
            existing = next((r for r in self.store.skill_ratings.values()
                             if r.user_id == user.id and r.skill_name.casefold() == skill_name.casefold()
                             and r.rating_type.casefold() == rating_type.casefold()), None)
            if existing is not None:
                existing.rating, existing.rated_at, existing.modified_at = rating, rated_at, ctx.now
                return 200, {"data": self.serialiser.skill_rating_resource(existing, ctx.base)}
        record = self.store.insert_skill_rating(user, skill_name, rating, rating_type, rated_at,
                                                ctx.client.provider_code, ctx.now)
        return 201, {"data": self.serialiser.skill_rating_resource(record, ctx.base)}

    def get_skill_rating(self, ctx: ApiRequest):
        return 200, {"data": self.serialiser.skill_rating_resource(self._visible_skill_rating(ctx), ctx.base)}

    def patch_skill_rating(self, ctx: ApiRequest):
        record = self._visible_skill_rating(ctx)
        require_type(ctx, SKILL_RATING_TYPES)
        require_matching_id(ctx, record.id)
        attrs = ctx.attributes
        rating = parse_rating(attrs["rating"]) if "rating" in attrs else record.rating
        rated_at = parse_attr_timestamp(attrs, "rated-at") if "rated-at" in attrs else record.rated_at
        record.rating, record.rated_at = rating, rated_at
        if attrs.get("rating-type"):
            record.rating_type = str(attrs["rating-type"])
        record.modified_at = ctx.now
        return 200, {"data": self.serialiser.skill_rating_resource(record, ctx.base)}

    def delete_skill_rating(self, ctx: ApiRequest):
        record = self._visible_skill_rating(ctx)
        del self.store.skill_ratings[record.id]
        return 204, None

    def list_skill_ratings(self, ctx: ApiRequest):
        return self._skill_rating_list(ctx, None)

    def list_user_skill_ratings(self, ctx: ApiRequest):
        return self._skill_rating_list(ctx, self.store.require_user(ctx.path_param("id")).id)

    def _skill_rating_list(self, ctx: ApiRequest, user_id: str | None):
        window = date_window(ctx, self.settings.max_date_range_days, default_window=False)

        def build():
            chosen = [r for r in self.store.skill_ratings.values()
                      if ctx.sees(r.provider_code) and (user_id is None or r.user_id == user_id)
                      and (window is None or window[0] <= r.rated_at.date() <= window[1])]
            chosen.sort(key=lambda r: (r.rated_at, r.id))
            return [self.serialiser.skill_rating_resource(r, ctx.base) for r in chosen]

        return self.pager.page(ctx, build)

    def _visible_skill_rating(self, ctx: ApiRequest) -> SimSkillRating:
        return ctx.visible_record(self.store.skill_ratings, ctx.path_param("id"), "Skill rating")


def parse_rating(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 8:
        raise ApiProblem(400, f"Attribute rating must be a whole number from 1 to 8, got {value!r}.",
                         source="rating")
    return value

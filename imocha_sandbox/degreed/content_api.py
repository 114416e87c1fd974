"""The content endpoints: ``/content/assessments`` (create, read, list, PATCH, DELETE) and ``/content``.

Content urls (not a variant): a create or PATCH whose ``url`` equals another content item's url answers 409,
like a duplicate external id. The url is compared as an exact string against every content item of the
organisation — every provider's, obsolete ones included — [A] where Degreed draws the line is not documented.
An assessment created less than ``content_listing_lag_seconds`` ago is missing from every listing, while a read
by id finds it at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from imocha_sandbox.degreed.api_request import ApiRequest, require_matching_id, require_type
from imocha_sandbox.degreed.paging import Pager
from imocha_sandbox.degreed.problems import ApiProblem, conflict_problem
from imocha_sandbox.degreed.serialise import Serialiser
from imocha_sandbox.degreed.settings import DegreedSimSettings
from imocha_sandbox.degreed.store import DegreedStore, SimAssessment, apply_assessment_attributes

ASSESSMENT_TYPES = {"content/assessments", "assessments", "content", "assessment"}


class ContentApi:
    """Handlers of the content endpoints: each takes an ``ApiRequest`` and returns (status, payload)."""

    def __init__(self, store: DegreedStore, serialiser: Serialiser, pager: Pager, settings: DegreedSimSettings,
                 clock: Callable[[], float]):
        self.store = store
        self.serialiser = serialiser
        self.pager = pager
        self.settings = settings
        self._clock = clock

    def list_assessments(self, ctx: ApiRequest):
        wanted = ctx.query.get("filter[external_id]")

        def build():
            return [self.serialiser.assessment_resource(a, ctx.base) for a in self.store.assessments.values()
                    if ctx.sees(a.provider_code) and (wanted is None or a.external_id == wanted)
                    and self._listed(a)]

        return self.pager.page(ctx, build)

    def create_assessment(self, ctx: ApiRequest):
        attrs = dict(ctx.attributes)
        require_type(ctx, ASSESSMENT_TYPES)
        for name in ("external-id", "title", "url"):
            if not isinstance(attrs.get(name), str) or not attrs[name].strip():
                raise ApiProblem(400, f"Attribute {name} is required.", source=name)
        code = ctx.client.provider_code if ctx.client.provider_code else attrs.get("provider-code")
        if code is not None and self.store.provider_with_code(code) is None:
            raise ApiProblem(400, f"Unknown provider-code: {code}", source="provider-code")
        self._ensure_unique_external_id(attrs["external-id"], code, None)
        self._ensure_unique_url(attrs["url"], None)
        record = SimAssessment(id="", external_id="", title="", url="", provider_code=code,
                               created_at=ctx.now, modified_at=ctx.now)
        apply_assessment_attributes(record, attrs)
        record.id = self.store.ids.record_id(7)  # drawn only once the content is valid
        self.store.assessments[record.id] = record
        return 201, {"data": self.serialiser.assessment_resource(record, ctx.base)}

    def get_assessment(self, ctx: ApiRequest):
        record = self._visible_assessment(ctx)
        return 200, {"data": self.serialiser.assessment_resource(record, ctx.base)}

    def patch_assessment(self, ctx: ApiRequest):
        record = self._visible_assessment(ctx)
        require_type(ctx, ASSESSMENT_TYPES)
        require_matching_id(ctx, record.id)
        attrs = dict(ctx.attributes)
        code = record.provider_code
        requested_code = attrs.pop("provider-code", code)
        if not ctx.client.provider_code and requested_code != code:  # a provider key cannot move content
            known = {p.code for p in self.store.providers.values()}
            if requested_code is not None and requested_code not in known:
                raise ApiProblem(400, f"Unknown provider-code: {requested_code}", source="provider-code")
            code = requested_code
        if "external-id" in attrs or code != record.provider_code:
            self._ensure_unique_external_id(attrs.get("external-id", record.external_id), code, record.id)
        if "url" in attrs:
            self._ensure_unique_url(attrs["url"], record.id)
        scratch = SimAssessment(**asdict(record))
        apply_assessment_attributes(scratch, attrs)  # validate everything before changing anything
        apply_assessment_attributes(record, attrs)
        record.provider_code = code
        record.modified_at = ctx.now
        return 200, {"data": self.serialiser.assessment_resource(record, ctx.base)}

    def delete_assessment(self, ctx: ApiRequest):
        record = self._visible_assessment(ctx)
        del self.store.assessments[record.id]
        return 204, None

    def list_content(self, ctx: ApiRequest):
        def build():
            return [self.serialiser.content_resource(a, ctx.base) for a in self.store.assessments.values()
                    if ctx.sees(a.provider_code) and not a.obsolete and self._listed(a)]

        return self.pager.page(ctx, build)

    def get_content(self, ctx: ApiRequest):
        record = self._visible_assessment(ctx)
        return 200, {"data": self.serialiser.content_resource(record, ctx.base)}

    def _visible_assessment(self, ctx: ApiRequest) -> SimAssessment:
        return ctx.visible_record(self.store.assessments, ctx.path_param("id"), "Content")

    def _listed(self, record: SimAssessment) -> bool:
        """False while ``content_listing_lag_seconds`` have not passed since the record was created."""
        lag = self.settings.content_listing_lag_seconds
        return not lag or record.created_at.timestamp() <= self._clock() - lag

    def _ensure_unique_external_id(self, external_id: str, code: str | None, own_id: str | None) -> None:
        for other in self.store.assessments.values():
            if other.id != own_id and other.external_id == external_id and other.provider_code == code:
                raise conflict_problem(self.settings.conflict_body,
                                       f"Content with external-id {external_id} already exists: {other.id}",
                                       "Content with the same external-id already exists.", other.id,
                                       "external-id")

    def _ensure_unique_url(self, url: Any, own_id: str | None) -> None:
        """No two content items of the organisation share a url (spec §6: 409 for "same ExternalID or URL
        used for multiple resources"): every provider's items count, obsolete ones included, compared as
        exact strings."""
        for other in self.store.assessments.values():
            if other.id != own_id and other.url == url:
                raise conflict_problem(self.settings.conflict_body,
                                       f"Content with url {url} already exists: {other.id}",
                                       "Content with the same url already exists.", other.id, "url")

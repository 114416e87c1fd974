"""The read-only directory endpoints: ``/users`` (by Degreed id, or by email / employee id with
``?identifier=``) and ``/providers``."""

from __future__ import annotations

from imocha_sandbox.degreed.api_request import ApiRequest
from imocha_sandbox.degreed.paging import Pager
from imocha_sandbox.degreed.problems import ApiProblem
from imocha_sandbox.degreed.serialise import Serialiser
from imocha_sandbox.degreed.store import DegreedStore

USER_LOOKUP_IDENTIFIERS = {"email": "Email", "employee-id": "EmployeeId", "employeeid": "EmployeeId",
                           "id": "UserId"}


class DirectoryApi:
    """Handlers of the users and providers endpoints: each takes an ``ApiRequest`` and returns (status, payload)."""

    def __init__(self, store: DegreedStore, serialiser: Serialiser, pager: Pager):
        self.store = store
        self.serialiser = serialiser
        self.pager = pager

    def list_users(self, ctx: ApiRequest):
        return self.pager.page(ctx, lambda: [self.serialiser.user_resource(u, ctx.base)
                                             for u in self.store.users.values()])

    def get_user(self, ctx: ApiRequest):
        identifier = ctx.query.get("identifier")
        if identifier is None:
            user = self.store.require_user(ctx.path_param("id"))
            return 200, {"data": self.serialiser.user_resource(user, ctx.base)}
        if identifier.lower() not in USER_LOOKUP_IDENTIFIERS:
            raise ApiProblem(400, f"Invalid identifier: {identifier}", source="identifier")
        user = self.store.resolve_user(ctx.path_param("id"), USER_LOOKUP_IDENTIFIERS[identifier.lower()])
        return 200, {"data": self.serialiser.user_resource(user, ctx.base)}

    def list_providers(self, ctx: ApiRequest):
        return self.pager.page(ctx, lambda: [self.serialiser.provider_resource(p, ctx.base)
                                             for p in self.store.providers.values()])

    def get_provider(self, ctx: ApiRequest):
        provider_id = ctx.path_param("id")
        provider = self.store.providers.get(provider_id)
        if provider is None:
            raise ApiProblem(404, f"Provider {provider_id} was not found.", source=provider_id)
        return 200, {"data": self.serialiser.provider_resource(provider, ctx.base)}

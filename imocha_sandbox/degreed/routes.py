"""The HTTP side of the simulator: the route table, the pipeline every ``/api/v2`` request goes through,
the token endpoint, and the hooks ``SimulatorMiddleware`` calls (who the client is, how a fault answers).

Every ``/api/v2`` answer carries ``X-Rate-Limit-Limit``, ``X-Rate-Limit-Remaining`` and
``X-Rate-Limit-Reset`` — errors, 401s, unknown paths, and the 429 and 503 answers injected through
``/_sandbox/faults`` too — and every 429 adds ``Retry-After``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from imocha_sandbox.degreed.api_request import ApiRequest, check_accept, parse_json_body
from imocha_sandbox.degreed.auth import OAuthServer, check_org_code, check_scope
from imocha_sandbox.degreed.completions_api import CompletionsApi
from imocha_sandbox.degreed.content_api import ContentApi
from imocha_sandbox.degreed.directory_api import DirectoryApi
from imocha_sandbox.degreed.paging import Pager
from imocha_sandbox.degreed.paths import API_PREFIX, TOKEN_PATH
from imocha_sandbox.degreed.problems import SERVICE_UNAVAILABLE, ApiProblem
from imocha_sandbox.degreed.rate_limit import RateDecision, RateLimiter, quota_problem, rate_headers
from imocha_sandbox.degreed.serialise import Serialiser, json_response
from imocha_sandbox.degreed.settings import DegreedSimSettings
from imocha_sandbox.degreed.skill_ratings_api import SkillRatingsApi
from imocha_sandbox.degreed.store import DegreedStore
from imocha_sandbox.degreed.timestamps import utc_now
from imocha_sandbox.server import FaultConfig, FaultInjector, RequestLog, SimulatorMiddleware, json_bytes

Handler = Callable[[ApiRequest], Any]


class DegreedRoutes:
    """Turns HTTP requests into handler calls under the store's lock, and handler results into answers."""

    def __init__(self, *, store: DegreedStore, settings: DegreedSimSettings, oauth: OAuthServer,
                 limiter: RateLimiter, pager: Pager, serialiser: Serialiser, clock: Callable[[], float]):
        self.store = store
        self.settings = settings
        self.oauth = oauth
        self.limiter = limiter
        self.serialiser = serialiser
        self._clock = clock
        self.content = ContentApi(store, serialiser, pager, settings, clock)
        self.completions = CompletionsApi(store, serialiser, pager, settings)
        self.skill_ratings = SkillRatingsApi(store, serialiser, pager, settings)
        self.directory = DirectoryApi(store, serialiser, pager)

    def app(self, log: RequestLog, faults: FaultInjector, control_routes: list[Route]) -> SimulatorMiddleware:
        """The ASGI app: the API and ``control_routes`` behind the request log and fault injection.

        The fixed fault bodies are only a fallback: ``fault_answer`` builds each injected 429/503 when it is
        sent, with the rate-limit headers and the live limit in the 429 detail.
        """
        return SimulatorMiddleware(
            self._starlette(control_routes), log, faults,
            error_body_5xx=json_bytes(self.serialiser.error_body(ApiProblem(503, SERVICE_UNAVAILABLE))),
            error_body_429=json_bytes(self.serialiser.error_body(self._quota_problem(0))),
            client_of=self.client_of,
            fault_answer=self.fault_answer,
        )

    def _starlette(self, control_routes: list[Route]) -> Starlette:
        api = self._api_route
        content, completions, ratings = self.content, self.completions, self.skill_ratings
        directory = self.directory
        routes = [
            Route(TOKEN_PATH, self._token_endpoint, methods=["POST"]),
            api("GET", "/content/assessments", "content", content.list_assessments),
            api("POST", "/content/assessments", "content", content.create_assessment),
            api("GET", "/content/assessments/{id}", "content", content.get_assessment),
            api("PATCH", "/content/assessments/{id}", "content", content.patch_assessment),
            api("DELETE", "/content/assessments/{id}", "content", content.delete_assessment),
            api("GET", "/content", "content", content.list_content),
            api("GET", "/content/{id}", "content", content.get_content),
            api("GET", "/completions", "completions", completions.list_completions),
            api("POST", "/completions", "completions", completions.create_completion),
            api("GET", "/completions/{id}", "completions", completions.get_completion),
            api("PATCH", "/completions/{id}", "completions", completions.patch_completion),
            api("DELETE", "/completions/{id}", "completions", completions.delete_completion),
            api("GET", "/skill-ratings", "skill_ratings", ratings.list_skill_ratings),
            api("POST", "/skill-ratings", "skill_ratings", ratings.create_skill_rating),
            api("GET", "/skill-ratings/{id}", "skill_ratings", ratings.get_skill_rating),
            api("PATCH", "/skill-ratings/{id}", "skill_ratings", ratings.patch_skill_rating),
            api("DELETE", "/skill-ratings/{id}", "skill_ratings", ratings.delete_skill_rating),
            api("GET", "/users", "users", directory.list_users),
            api("GET", "/users/{id}/skill-ratings", "skill_ratings", ratings.list_user_skill_ratings),
            api("GET", "/users/{id}/completions", "completions", completions.list_user_completions),
            api("GET", "/users/{id}", "users", directory.get_user),
            api("GET", "/providers", "providers", directory.list_providers),
            api("GET", "/providers/{id}", "providers", directory.get_provider),
            *control_routes,
        ]
        return Starlette(routes=routes, exception_handlers={HTTPException: self._http_exception})

    async def _http_exception(self, request: Request, exc: HTTPException) -> Response:
        """Unknown path or wrong method: a JSON:API error, authenticated and rate-counted like any API call."""
        detail = "No such endpoint." if exc.status_code == 404 else str(exc.detail)
        problem = ApiProblem(exc.status_code, detail)
        if not request.url.path.startswith(API_PREFIX):
            return json_response(problem.status, self.serialiser.error_body(problem))

        def refuse(ctx: ApiRequest):
            raise problem

        with self.store.lock:
            return self._dispatch(request, b"", request.method, None, refuse)

    def _api_route(self, method: str, path: str, family: str, handler: Handler) -> Route:
        async def endpoint(request: Request) -> Response:
            body = await request.body()
            with self.store.lock:
                return self._dispatch(request, body, method, family, handler)

        return Route(f"{API_PREFIX}{path}", endpoint, methods=[method])

    def _dispatch(self, request: Request, body: bytes, method: str, family: str | None,
                  handler: Handler) -> Response:
        """Authenticate, rate-limit, authorise, parse, run the handler, and stamp rate-limit headers.

        ``family`` names the scope family (``content`` …); None skips the scope check and body parsing.
        """
        now = self._clock()
        token = self.oauth.live_token(request.headers.get("authorization", ""), now)
        if token is None:
            detail = "The access token is missing, invalid, expired or revoked."
            return self._problem_response(ApiProblem(401, detail), self.limiter.idle(now))
        decision = self.limiter.charge(token.client_id, now)
        if not decision.allowed:
            return self._problem_response(self._quota_problem(decision.retry_after), decision)
        try:
            client = self.oauth.clients[token.client_id]
            check_org_code(request.headers, client)
            if family is not None:
                check_scope(token.scopes, family, method)
            check_accept(request)
            ctx = ApiRequest(request=request, client_id=token.client_id, client=client,
                             base=str(request.base_url).rstrip("/"), now=utc_now(self._clock))
            if family is not None and method in {"POST", "PATCH"}:
                ctx.body = parse_json_body(request, body)
            status, payload = handler(ctx)
        except ApiProblem as problem:
            return self._problem_response(problem, decision)
        except Exception:  # a simulator bug still answers like Degreed would: a JSON:API 500 with headers
            logging.getLogger(__name__).exception("Degreed simulator failed on %s %s", method, request.url.path)
            return self._problem_response(ApiProblem(500, "An unexpected error occurred."), decision)
        response = Response(status_code=status) if payload is None else json_response(status, payload)
        response.headers.update(rate_headers(decision))
        return response

    def _quota_problem(self, retry_after: int) -> ApiProblem:
        return quota_problem(self.settings.rate_limit_per_minute, retry_after)

    def _problem_response(self, problem: ApiProblem, decision: RateDecision) -> Response:
        response = json_response(problem.status, self.serialiser.error_body(problem))
        response.headers.update(rate_headers(decision))
        response.headers.update(problem.headers)
        return response

    async def _token_endpoint(self, request: Request) -> Response:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        value = {name: values[0] for name, values in form.items() if values}
        with self.store.lock:
            decision = None
            client_id = value.get("client_id", "")
            if self.settings.token_requests_count and client_id in self.oauth.clients:
                # [A] The token request is charged to the client it names, whatever the outcome.
                decision = self.limiter.charge(client_id, self._clock())
                if not decision.allowed:
                    response = self._problem_response(self._quota_problem(decision.retry_after), decision)
                    response.headers["Cache-Control"] = "no-store"
                    return response
            status, payload = self.oauth.issue_token(value)
        response = json_response(status, payload)
        response.headers["Cache-Control"] = "no-store"
        if decision is not None:
            response.headers.update(rate_headers(decision))
        return response

    def client_of(self, scope: dict[str, Any], body: bytes) -> str | None:
        """Name the API client of a request for the log: the token's owner, or the token form's client_id."""
        if scope["path"] == TOKEN_PATH:
            values = parse_qs(body.decode("utf-8", "replace")).get("client_id")
            return values[0] if values else None
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                token = value.decode("latin-1").partition(" ")[2].strip()
                with self.store.lock:
                    return self.oauth.owner_of(token)
        return None

    def fault_answer(self, kind: str, scope: dict[str, Any], client: str | None,
                     config: FaultConfig) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        """Body and headers of an injected 429 or 503 (``SimulatorMiddleware``'s ``fault_answer`` hook).

        API answers carry the rate-limit headers like every other answer: an injected 429 says no budget is
        left until ``retry_after_seconds`` from now; an injected 503 shows the client's budget as it stands
        (a faulted request never reaches the limiter, so it is not charged). Token answers carry them only
        when ``token_requests_count`` is on. The 429 body names the live ``rate_limit_per_minute``.
        """
        with self.store.lock:
            now = self._clock()
            path = scope.get("path", "")
            if path == TOKEN_PATH:
                with_rate = self.settings.token_requests_count
                client = client if client in self.oauth.clients else None
            else:
                with_rate = path.startswith(API_PREFIX)
            if kind == "rate_429":
                retry_after = max(0, int(config.retry_after_seconds))
                problem = self._quota_problem(retry_after)
                decision = RateDecision(False, 0, now + retry_after, retry_after)
            else:
                problem = ApiProblem(503, SERVICE_UNAVAILABLE)
                decision = self.limiter.peek(client, now)
            headers = {**(rate_headers(decision) if with_rate else {}), **problem.headers}
            body = json_bytes(self.serialiser.error_body(problem))
        return body, [(name.lower().encode(), value.encode()) for name, value in headers.items()]

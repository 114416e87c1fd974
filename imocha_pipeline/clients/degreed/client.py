"""``DegreedClient``: the endpoints of Degreed's REST API v2 the pipeline uses, returning typed records.

Built on ``ApiSession`` (retries, backoff, ``Retry-After``, rate budget, metrics, secret redaction) with
``DegreedAuth`` (the OAuth2 client-credentials token), ``ListReader`` (page chains, date windows) and the
mapping of Degreed's error answers to typed errors (``errors.py``). Facts and assumptions come from
``specs/degreed-api.md``; where Degreed's behaviour is unknown the client copes with every variant the simulator
can be set to (duplicate completions answered with 409 or with an update, end dates inclusive or exclusive).

The client id may appear in logs and errors; the client secret and tokens never do.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import quote

from imocha_pipeline.clients.degreed.auth import DegreedAuth
from imocha_pipeline.clients.degreed.contract import (
    API_NAME,
    LANE_COMPLETIONS,
    LANE_CONTENT,
    LANE_READS,
    MAX_PAGE_LIMIT,
    V2,
)
from imocha_pipeline.clients.degreed.envelopes import kebab_attributes, single_resource
from imocha_pipeline.clients.degreed.errors import error_from_answer
from imocha_pipeline.clients.degreed.paging import ListReader
from imocha_pipeline.clients.degreed.records import (
    DegreedAssessment,
    DegreedCompletion,
    DegreedProvider,
    DegreedSkillRating,
    DegreedUser,
)
from imocha_pipeline.clients.degreed.values import format_degreed_datetime
from imocha_pipeline.clients.errors import AuthError, ConflictError, DuplicateCompletionError
from imocha_pipeline.clients.http import ApiSession, LocalRateBudget, RateBudget, RequestMetrics, Unlimited
from imocha_pipeline.settings import DEGREED_DEFAULT_RATE_LIMIT_PER_MINUTE, DEGREED_REQUIRED_SCOPES

logger = logging.getLogger("imocha_pipeline.degreed")


class DegreedClient:
    """Degreed API v2 over OAuth2 client credentials.

    The token (``auth``, a ``DegreedAuth``) is fetched lazily, renewed ``refresh_skew_seconds`` before it
    expires, and renewed once when a call answers 401 (the call is then repeated). Lists (``lists``, a
    ``ListReader``) are read a whole page chain at a time (``page_limit`` per page, Degreed's maximum 1000) so a
    chain finishes inside the cursor's life; a chain whose cursor expires anyway is read again from its first page.

    ``session``: a prepared ``ApiSession`` for the API host (its auth hook is set here); by default
    one is built with ``rate_budget`` (default: this process's 70-a-minute ``LocalRateBudget``).
    ``token_session``: the ``ApiSession`` for the token host; by default an unlimited one sharing the metrics.
    """

    def __init__(
        self,
        api_base_url: str,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        scopes: tuple[str, ...] | list[str] = DEGREED_REQUIRED_SCOPES,
        session: ApiSession | None = None,
        token_session: ApiSession | None = None,
        rate_budget: RateBudget | None = None,
        metrics: RequestMetrics | None = None,
        page_limit: int = MAX_PAGE_LIMIT,
        organization_code: str | None = None,
        refresh_skew_seconds: float = 60.0,
        date_window_days: int = 7,
        max_chain_restarts: int = 3,
    ):
        if not 1 <= page_limit <= MAX_PAGE_LIMIT:
            raise ValueError(f"page_limit must be within 1..{MAX_PAGE_LIMIT}")
        self.api_base_url = api_base_url.rstrip("/")
        self.session = session or ApiSession(
            self.api_base_url, api_name=API_NAME, metrics=metrics,
            rate_budget=rate_budget or LocalRateBudget(DEGREED_DEFAULT_RATE_LIMIT_PER_MINUTE),
        )
        # The token endpoint is not rate limited and lives on another host: its own session.
        self.token_session = token_session or ApiSession(
            token_url, api_name=f"{API_NAME}-oauth", rate_budget=Unlimited(), metrics=self.session.metrics,
        )
        self.auth = DegreedAuth(token_url, client_id, client_secret, api_session=self.session,
                                token_session=self.token_session, scopes=tuple(scopes),
                                organization_code=organization_code, refresh_skew_seconds=refresh_skew_seconds)
        self.session.auth_headers = self.auth.headers
        self.lists = ListReader(self._send, self.api_base_url, page_limit=page_limit,
                                max_chain_restarts=max_chain_restarts, date_window_days=date_window_days)

    def __repr__(self) -> str:
        return f"DegreedClient(client_id={self.client_id!r}, api_base_url={self.api_base_url!r})"

    # -- settings, as given ---------------------------------------------------------------------------

    @property
    def client_id(self) -> str:
        return self.auth.client_id

    @property
    def token_url(self) -> str:
        return self.auth.token_url

    @property
    def scopes(self) -> tuple[str, ...]:
        return self.auth.scopes

    @property
    def organization_code(self) -> str | None:
        return self.auth.organization_code

    @property
    def refresh_skew_seconds(self) -> float:
        return self.auth.refresh_skew_seconds

    @property
    def page_limit(self) -> int:
        return self.lists.page_limit

    @property
    def date_window_days(self) -> int:
        return self.lists.date_window_days

    @property
    def max_chain_restarts(self) -> int:
        return self.lists.max_chain_restarts

    @property
    def metrics(self) -> RequestMetrics:
        return self.session.metrics

    def close(self) -> None:
        self.session.close()
        self.token_session.close()

    # -- token --------------------------------------------------------------------------------------

    def check_scope(self, scope: str) -> bool:
        """Whether the API key is granted ``scope``: asks for a token with only that scope (403 = no)."""
        return self.auth.check_scope(scope)

    def token_works(self) -> bool:
        """Health check: a fresh token with every configured scope is issued and the API accepts it."""
        self.auth.forget()
        try:
            if "providers:read" in self.scopes:
                self._send("GET", f"{V2}/providers", endpoint="GET /api/v2/providers", lane=LANE_READS,
                           params={"limit": 1})
            else:
                self.auth.headers()
        except AuthError as exc:
            logger.warning("Degreed token check failed for client %s: %s", self.client_id, exc)
            return False
        return True

    # -- one call -----------------------------------------------------------------------------------

    def _send(self, method: str, path: str, *, endpoint: str, lane: str, params: Mapping[str, Any] | None = None,
              body: Any = None, expect: tuple[int, ...] = (200,)) -> Any:
        """One API call: renew the token once on 401, map error answers to typed errors, decode JSON."""
        response = self.session.request(method, path, endpoint=endpoint, params=params, json_body=body,
                                        lane=lane)
        if response.status_code == 401:
            logger.info("Degreed answered 401 for %s; renewing the token for client %s", endpoint,
                        self.client_id)
            self.auth.forget()
            response = self.session.request(method, path, endpoint=endpoint, params=params, json_body=body,
                                            lane=lane)
        if response.status_code not in expect:
            raise error_from_answer(response, endpoint, client_id=self.client_id, redact=self.session.redact)
        if response.status_code == 204 or not response.content:
            return None
        return self.session.decode_json(response, endpoint)

    # -- content ------------------------------------------------------------------------------------

    def iter_assessments(self, external_id: str | None = None) -> Iterator[DegreedAssessment]:
        """Every assessment this key sees (obsolete ones included), optionally one external id."""
        params = {"filter[external_id]": external_id} if external_id is not None else None
        for resource in self.lists.chain(f"{V2}/content/assessments", endpoint="GET /api/v2/content/assessments",
                                         params=params):
            yield DegreedAssessment.from_resource(resource)

    def find_assessment(self, external_id: str) -> DegreedAssessment | None:
        """The assessment with exactly this external id, or None."""
        matches = [a for a in self.iter_assessments(external_id) if a.external_id == external_id]
        return matches[0] if matches else None

    def get_assessment(self, assessment_id: str) -> DegreedAssessment:
        payload = self._send("GET", f"{V2}/content/assessments/{quote(assessment_id, safe='')}",
                             endpoint="GET /api/v2/content/assessments/{id}", lane=LANE_READS)
        return DegreedAssessment.from_resource(single_resource(payload, "GET /api/v2/content/assessments/{id}"))

    def create_assessment(self, attributes: Mapping[str, Any]) -> DegreedAssessment:
        """Create assessment content (kebab- or snake_case attribute names). 409 → ``ConflictError``."""
        body = {"data": {"type": "content/assessments", "attributes": kebab_attributes(attributes)}}
        endpoint = "POST /api/v2/content/assessments"
        payload = self._send("POST", f"{V2}/content/assessments", endpoint=endpoint, lane=LANE_CONTENT,
                             body=body, expect=(200, 201))
        return DegreedAssessment.from_resource(single_resource(payload, endpoint))

    def update_assessment(self, assessment_id: str, attributes: Mapping[str, Any]) -> DegreedAssessment:
        """PATCH only the given attributes (e.g. ``{"obsolete": True}`` to retire)."""
        body = {"data": {"type": "content/assessments", "id": assessment_id,
                         "attributes": kebab_attributes(attributes)}}
        endpoint = "PATCH /api/v2/content/assessments/{id}"
        payload = self._send("PATCH", f"{V2}/content/assessments/{quote(assessment_id, safe='')}",
                             endpoint=endpoint, lane=LANE_CONTENT, body=body)
        return DegreedAssessment.from_resource(single_resource(payload, endpoint))

    def delete_assessment(self, assessment_id: str) -> None:
        self._send("DELETE", f"{V2}/content/assessments/{quote(assessment_id, safe='')}",
                   endpoint="DELETE /api/v2/content/assessments/{id}", lane=LANE_CONTENT, expect=(200, 204))

    # -- completions --------------------------------------------------------------------------------

    def create_completion(
        self,
        user_id: str,
        content_id: str,
        completed_at: datetime,
        *,
        percentile: float | None = None,
        user_identifier_type: str = "Email",
        content_id_type: str = "ExternalId",
        content_type: str = "Assessment",
    ) -> DegreedCompletion:
        """Record a completion.

        Raises ``LearnerNotFoundError`` when Degreed does not know the learner, and
        ``DuplicateCompletionError`` (with ``existing_id`` when Degreed names it) when it already
        holds one for this learner and content. Some tenants update instead; then this returns it.
        """
        attributes: dict[str, Any] = {
            "user-id": user_id, "user-identifier-type": user_identifier_type,
            "content-id": content_id, "content-id-type": content_id_type, "content-type": content_type,
            "completed-at": format_degreed_datetime(completed_at),
        }
        if percentile is not None:
            attributes["percentile"] = percentile
        endpoint = "POST /api/v2/completions"
        try:
            payload = self._send("POST", f"{V2}/completions", endpoint=endpoint, lane=LANE_COMPLETIONS,
                                 body={"data": {"type": "completions", "attributes": attributes}},
                                 expect=(200, 201))
        except ConflictError as exc:
            raise DuplicateCompletionError(exc.detail or str(exc), existing_id=exc.existing_id, api=API_NAME,
                                           endpoint=endpoint, status=409, detail=exc.detail) from None
        return DegreedCompletion.from_resource(single_resource(payload, endpoint))

    def get_completion(self, completion_id: str) -> DegreedCompletion:
        endpoint = "GET /api/v2/completions/{id}"
        payload = self._send("GET", f"{V2}/completions/{quote(completion_id, safe='')}", endpoint=endpoint,
                             lane=LANE_READS)
        return DegreedCompletion.from_resource(single_resource(payload, endpoint))

    def iter_completions(self, start: date, end: date) -> Iterator[DegreedCompletion]:
        """Completions dated ``start``..``end`` (inclusive), read in windows of at most 7 days."""
        for resource in self.lists.windowed(f"{V2}/completions", "GET /api/v2/completions", start, end):
            yield DegreedCompletion.from_resource(resource)

    def iter_user_completions_all(self, user_id: str) -> Iterator[DegreedCompletion]:
        """Every completion of one learner (Degreed user id), without a date filter, page by page."""
        path = f"{V2}/users/{quote(user_id, safe='')}/completions"
        for resource in self.lists.chain(path, endpoint="GET /api/v2/users/{id}/completions"):
            yield DegreedCompletion.from_resource(resource)

    def iter_user_completions(self, user_id: str, start: date, end: date) -> Iterator[DegreedCompletion]:
        """One learner's completions dated ``start``..``end`` (Degreed user id; windows of at most 7 days)."""
        path = f"{V2}/users/{quote(user_id, safe='')}/completions"
        for resource in self.lists.windowed(path, "GET /api/v2/users/{id}/completions", start, end):
            yield DegreedCompletion.from_resource(resource)

    def update_completion(self, completion_id: str, *, completed_at: datetime | None = None,
                          percentile: float | None = None, **attributes: Any) -> DegreedCompletion:
        """PATCH only what is given (``completed_at``, ``percentile``, or other attributes by name)."""
        changes = kebab_attributes(attributes)
        if completed_at is not None:
            changes["completed-at"] = format_degreed_datetime(completed_at)
        if percentile is not None:
            changes["percentile"] = percentile
        if not changes:
            raise ValueError("update_completion needs at least one attribute to change")
        endpoint = "PATCH /api/v2/completions/{id}"
        payload = self._send("PATCH", f"{V2}/completions/{quote(completion_id, safe='')}", endpoint=endpoint,
                             lane=LANE_COMPLETIONS,
                             body={"data": {"type": "completions", "id": completion_id, "attributes": changes}})
        return DegreedCompletion.from_resource(single_resource(payload, endpoint))

    def delete_completion(self, completion_id: str) -> None:
        self._send("DELETE", f"{V2}/completions/{quote(completion_id, safe='')}",
                   endpoint="DELETE /api/v2/completions/{id}", lane=LANE_COMPLETIONS, expect=(200, 204))

    # -- skill ratings ------------------------------------------------------------------------------

    def create_skill_rating(
        self,
        user_id: str,
        skill_name: str,
        rating: int,
        *,
        rating_type: str = "Evaluation",
        rated_at: datetime | None = None,
        user_identifier_type: str = "Email",
    ) -> DegreedSkillRating:
        """Post a rating (1-8). Degreed may replace the learner's rating for the skill (200) or add one."""
        if isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 8:
            raise ValueError(f"a Degreed skill rating is a whole number from 1 to 8, got {rating!r}")
        attributes: dict[str, Any] = {"user-id": user_id, "user-identifier-type": user_identifier_type,
                                      "skill-name": skill_name, "rating": rating, "rating-type": rating_type}
        if rated_at is not None:
            attributes["rated-at"] = format_degreed_datetime(rated_at)
        endpoint = "POST /api/v2/skill-ratings"
        payload = self._send("POST", f"{V2}/skill-ratings", endpoint=endpoint, lane=LANE_COMPLETIONS,
                             body={"data": {"type": "skill-ratings", "attributes": attributes}},
                             expect=(200, 201))
        return DegreedSkillRating.from_resource(single_resource(payload, endpoint))

    def iter_skill_ratings(self, start: date | None = None, end: date | None = None
                           ) -> Iterator[DegreedSkillRating]:
        """All skill ratings this key sees, or those rated ``start``..``end`` (7-day windows)."""
        endpoint = "GET /api/v2/skill-ratings"
        if start is None and end is None:
            resources: Iterator[dict[str, Any]] = iter(self.lists.chain(f"{V2}/skill-ratings", endpoint=endpoint))
        else:
            start = start or end
            end = end or datetime.now(UTC).date()
            resources = self.lists.windowed(f"{V2}/skill-ratings", endpoint, start, end)
        for resource in resources:
            yield DegreedSkillRating.from_resource(resource)

    def iter_user_skill_ratings(self, user_id: str) -> Iterator[DegreedSkillRating]:
        """One learner's skill ratings (Degreed user id)."""
        path = f"{V2}/users/{quote(user_id, safe='')}/skill-ratings"
        for resource in self.lists.chain(path, endpoint="GET /api/v2/users/{id}/skill-ratings"):
            yield DegreedSkillRating.from_resource(resource)

    def update_skill_rating(self, rating_id: str, *, rating: int | None = None, rated_at: datetime | None = None,
                            **attributes: Any) -> DegreedSkillRating:
        """PATCH only what is given (``rating``, ``rated_at``, or other attributes by name)."""
        changes = kebab_attributes(attributes)
        if rating is not None:
            if isinstance(rating, bool) or not isinstance(rating, int) or not 1 <= rating <= 8:
                raise ValueError(f"a Degreed skill rating is a whole number from 1 to 8, got {rating!r}")
            changes["rating"] = rating
        if rated_at is not None:
            changes["rated-at"] = format_degreed_datetime(rated_at)
        endpoint = "PATCH /api/v2/skill-ratings/{id}"
        payload = self._send("PATCH", f"{V2}/skill-ratings/{quote(rating_id, safe='')}", endpoint=endpoint,
                             lane=LANE_COMPLETIONS,
                             body={"data": {"type": "skill-ratings", "id": rating_id, "attributes": changes}},
                             expect=(200,))
        return DegreedSkillRating.from_resource(single_resource(payload, endpoint))

    def delete_skill_rating(self, rating_id: str) -> None:
        self._send("DELETE", f"{V2}/skill-ratings/{quote(rating_id, safe='')}",
                   endpoint="DELETE /api/v2/skill-ratings/{id}", lane=LANE_COMPLETIONS, expect=(200, 204))

    # -- users and providers ------------------------------------------------------------------------

    def get_user(self, value: str, identifier: str = "email") -> DegreedUser:
        """A user by ``email``, ``employee-id`` or Degreed ``id``.

        Unknown email/employee id → ``LearnerNotFoundError``; unknown Degreed id → ``NotFoundError``.
        """
        path = f"{V2}/users/{quote(value, safe='')}"
        params = None if identifier == "id" else {"identifier": identifier}
        endpoint = ("GET /api/v2/users/{id}" if identifier == "id"
                    else f"GET /api/v2/users/{{value}}?identifier={identifier}")
        payload = self._send("GET", path, endpoint=endpoint, lane=LANE_READS, params=params)
        return DegreedUser.from_resource(single_resource(payload, endpoint))

    def iter_users(self) -> Iterator[DegreedUser]:
        for resource in self.lists.chain(f"{V2}/users", endpoint="GET /api/v2/users"):
            yield DegreedUser.from_resource(resource)

    def list_providers(self) -> list[DegreedProvider]:
        resources = self.lists.chain(f"{V2}/providers", endpoint="GET /api/v2/providers")
        return [DegreedProvider.from_resource(resource) for resource in resources]

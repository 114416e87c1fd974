"""The control surface: the Python methods tests call (from their own threads, under the store's lock) and
their HTTP twins under ``/_sandbox/`` (JSON in, JSON out; KeyError → 404, ValueError/TypeError → 400)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from imocha_pipeline.timestamps import parse_utc
from imocha_sandbox.degreed.auth import ApiClientSpec, OAuthServer
from imocha_sandbox.degreed.file_ingest import CompletionFileIngest
from imocha_sandbox.degreed.paging import Pager
from imocha_sandbox.degreed.problems import ApiProblem
from imocha_sandbox.degreed.rate_limit import RateLimiter
from imocha_sandbox.degreed.serialise import json_response
from imocha_sandbox.degreed.settings import DegreedSimSettings
from imocha_sandbox.degreed.store import DegreedStore, apply_assessment_attributes, state_of
from imocha_sandbox.degreed.timestamps import utc_now
from imocha_sandbox.server import CONTROL_PREFIX, FaultConfig, FaultInjector, RequestLog

ControlAction = Callable[[Request, dict[str, Any]], Any]


class DegreedControl:
    """Change settings, keys, tokens, cursors and records behind the API's back, and read the whole state."""

    def __init__(self, *, store: DegreedStore, settings: DegreedSimSettings, oauth: OAuthServer,
                 limiter: RateLimiter, pager: Pager, log: RequestLog, faults: FaultInjector,
                 clock: Callable[[], float], provider_code: str):
        self.settings = settings
        self.provider_code = provider_code
        self.log = log
        self.faults = faults
        self._store = store
        self._oauth = oauth
        self._limiter = limiter
        self._pager = pager
        self._clock = clock
        self._files = CompletionFileIngest(store)
        self.file_drop_folder: str | None = None
        """The SFTP drop folder ``ingest_completion_files`` reads when not given one (set by the sandbox)."""

    # -- settings, keys, tokens, rate limits, cursors -------------------------------------------------

    def configure(self, **changes: Any) -> dict[str, Any]:
        """Change settings at run time (e.g. ``rate_limit_per_minute``, ``completion_duplicates``)."""
        with self._store.lock:
            window_before = self.settings.rate_window
            self.settings.update(**changes)
            if self.settings.rate_window != window_before:
                self._limiter.reset()
            return asdict(self.settings)

    def reset_rate_limits(self) -> None:
        """Forget every client's used budget (``max_requests_in_any_minute`` keeps its history)."""
        with self._store.lock:
            self._limiter.reset()

    def max_requests_in_any_minute(self, client_id: str, since: float | None = None) -> int:
        """The most requests accepted from ``client_id`` within any rolling 60 s, by the simulator's clock.

        Counts what the rate limiter charged: every API request with a live token that was not refused
        with 429 (whatever it answered), plus token requests when ``token_requests_count`` is on. Not counted:
        429 refusals, 401s, and injected faults (they never reach the simulator). A window is half-open,
        ``[t, t + 60)``, as in the sliding limiter: requests at t and t + 60 are never in the same minute.
        ``since`` (epoch seconds) ignores requests accepted before it.
        """
        with self._store.lock:
            return self._limiter.max_requests_in_any_minute(client_id, since)

    def add_client(self, client_id: str, spec: ApiClientSpec) -> None:
        """Create or replace an API key (also un-revokes it)."""
        with self._store.lock:
            self._oauth.add_client(client_id, spec)

    def revoke_client(self, client_id: str) -> None:
        """The key's secret stops working and every token issued to it dies."""
        with self._store.lock:
            self._oauth.revoke_client(client_id)

    def expire_tokens(self) -> int:
        """Expire every live token now; returns how many were live."""
        with self._store.lock:
            return self._oauth.expire_tokens()

    def issued_tokens(self) -> list[str]:
        """Every access and refresh token handed out (for tests that prove tokens never leak)."""
        with self._store.lock:
            return list(self._oauth.issued)

    def expire_cursors(self) -> None:
        """Drop every paging snapshot now: the next ``next=`` request answers ``cursor-expired``."""
        with self._store.lock:
            self._pager.expire_all()

    def schedule_cursor_expiry(self, skip: int = 0, count: int = 1) -> None:
        """Let ``skip`` cursor requests pass, then answer the following ``count`` with ``cursor-expired``."""
        with self._store.lock:
            self._pager.schedule_expiry(skip, count)

    # -- records ----------------------------------------------------------------------------------------

    def _provider_or_default(self, provider_code: str | None) -> str | None:
        return self.provider_code if provider_code == "__default__" else provider_code

    def add_user(self, email: str, employee_id: str | None = None, first_name: str = "Sandbox",
                 last_name: str = "Learner") -> dict[str, Any]:
        """Provision a learner in Degreed (e.g. one who was missing)."""
        store = self._store
        with store.lock:
            if store.user_by_email(email):
                raise ValueError(f"a user with email {email} already exists")
            employee_id = employee_id or f"X{len(store.users) + 90000}"
            user = store.insert_user(email, employee_id, first_name, last_name, utc_now(self._clock))
            return state_of(user)

    def remove_user(self, key: str) -> None:
        """Remove a user by Degreed id or email; completions and ratings stay."""
        store = self._store
        with store.lock:
            user = store.user_by_id_or_email(key)
            if user is None:
                raise KeyError(f"unknown user {key}")
            del store.users[user.id]

    def add_assessment(self, external_id: str, title: str | None = None, url: str | None = None, *,
                       provider_code: str | None = "__default__", **attributes: Any) -> dict[str, Any]:
        """Add content directly, as if someone else created it (bypasses the 409 check on purpose)."""
        with self._store.lock:
            attrs = {"external-id": external_id, "title": title or f"Content {external_id}",
                     "url": url or f"https://content.example/{external_id}", **_kebab(attributes)}
            record = self._store.insert_assessment(attrs, self._provider_or_default(provider_code),
                                                   utc_now(self._clock))
            return state_of(record)

    def update_assessment(self, assessment_id: str, **changes: Any) -> dict[str, Any]:
        """Edit content directly (bypasses the 409 checks on purpose)."""
        with self._store.lock:
            record = self._store.get(self._store.assessments, assessment_id)
            apply_assessment_attributes(record, _kebab(changes))
            record.modified_at = utc_now(self._clock)
            return state_of(record)

    def delete_assessment(self, assessment_id: str) -> None:
        self._delete(self._store.assessments, assessment_id)

    def add_completion(self, user: str, content: str, completed_at: datetime | str,
                       percentile: float | None = None, *, provider_code: str | None = "__default__",
                       ) -> dict[str, Any]:
        """Add a completion directly. ``user`` is a Degreed id or email; ``content`` an id or external id."""
        store = self._store
        with store.lock:
            person = store.user_by_id_or_email(user)
            item = store.assessments.get(content) or next(
                (a for a in store.assessments.values() if a.external_id == content), None)
            if person is None or item is None:
                raise KeyError(f"unknown user {user!r} or content {content!r}")
            code = self._provider_or_default(provider_code)
            now = utc_now(self._clock)
            moment = parse_utc(completed_at, strict=True)
            return state_of(store.insert_completion(person, item, moment, percentile, code, now))

    def update_completion(self, completion_id: str, **changes: Any) -> dict[str, Any]:
        """Edit a completion directly: ``percentile``, ``completed_at``, ``is_verified``."""
        with self._store.lock:
            record = self._store.get(self._store.completions, completion_id)
            for name, value in changes.items():
                if name == "completed_at":
                    value = parse_utc(value, strict=True)
                if name not in {"percentile", "completed_at", "is_verified"}:
                    raise ValueError(f"cannot change completion field {name}")
                setattr(record, name, value)
            record.modified_at = utc_now(self._clock)
            return state_of(record)

    def delete_completion(self, completion_id: str) -> None:
        self._delete(self._store.completions, completion_id)

    def add_skill_rating(self, user: str, skill_name: str, rating: int, rating_type: str = "Evaluation",
                         rated_at: datetime | str | None = None) -> dict[str, Any]:
        """Add a skill rating directly (always a new record)."""
        store = self._store
        with store.lock:
            person = store.user_by_id_or_email(user)
            if person is None:
                raise KeyError(f"unknown user {user!r}")
            now = utc_now(self._clock)
            moment = parse_utc(rated_at, strict=True) if rated_at else now
            return state_of(store.insert_skill_rating(person, skill_name, rating, rating_type, moment,
                                                      self.provider_code, now))

    def update_skill_rating(self, rating_id: str, **changes: Any) -> dict[str, Any]:
        with self._store.lock:
            record = self._store.get(self._store.skill_ratings, rating_id)
            for name, value in changes.items():
                if name not in {"rating", "rating_type", "rated_at", "skill_name"}:
                    raise ValueError(f"cannot change skill rating field {name}")
                setattr(record, name, parse_utc(value, strict=True) if name == "rated_at" else value)
            record.modified_at = utc_now(self._clock)
            return state_of(record)

    def delete_skill_rating(self, rating_id: str) -> None:
        self._delete(self._store.skill_ratings, rating_id)

    def _delete(self, table: dict[str, Any], key: str) -> None:
        with self._store.lock:
            self._store.get(table, key)
            del table[key]

    def ingest_completion_files(self, folder: str | None = None) -> dict[str, Any]:
        """Degreed's overnight job: process the Completions Template files in the drop folder (``folder`` or
        ``file_drop_folder``); returns the ingest report (created, updated, unchanged, rejected rows)."""
        chosen = folder or self.file_drop_folder
        if not chosen:
            raise ValueError("no drop folder: pass folder or set file_drop_folder")
        with self._store.lock:
            return self._files.ingest(Path(chosen), utc_now(self._clock))

    def ingest_reports(self) -> list[dict[str, Any]]:
        with self._store.lock:
            return list(self._files.reports)

    def state(self) -> dict[str, Any]:
        """Everything Degreed holds, JSON-ready, snake_case, UTC ISO timestamps."""
        with self._store.lock:
            return {
                **self._store.snapshot(),
                "settings": asdict(self.settings),
                "clients": sorted(self._oauth.clients),
                "revoked_clients": sorted(self._oauth.revoked),
            }

    # -- the HTTP twins -------------------------------------------------------------------------------

    def control_routes(self) -> list[Route]:
        c = CONTROL_PREFIX
        table: list[tuple[str, str, ControlAction]] = [
            ("GET", "/state", lambda r, b: self.state()),
            ("GET", "/settings", lambda r, b: asdict(self.settings)),
            ("PUT", "/settings", lambda r, b: self.configure(**b)),
            ("POST", "/users", lambda r, b: self.add_user(**b)),
            ("DELETE", "/users/{key}", lambda r, b: self.remove_user(r.path_params["key"])),
            ("POST", "/tokens/expire", lambda r, b: {"expired": self.expire_tokens()}),
            ("POST", "/clients/{client_id}/revoke",
             lambda r, b: self.revoke_client(r.path_params["client_id"])),
            ("PUT", "/clients/{client_id}", lambda r, b: self.add_client(
                r.path_params["client_id"], ApiClientSpec(b["secret"], frozenset(b.get("scopes", ())),
                                                          b.get("provider_code")))),
            ("POST", "/rate-limit/reset", lambda r, b: self.reset_rate_limits()),
            ("GET", "/rate-limit/max-in-any-minute/{client_id}", lambda r, b: {
                "client_id": r.path_params["client_id"],
                "max_requests_in_any_minute": self.max_requests_in_any_minute(
                    r.path_params["client_id"],
                    float(r.query_params["since"]) if r.query_params.get("since") else None)}),
            ("POST", "/cursors/expire", lambda r, b: self.expire_cursors()),
            ("POST", "/cursors/schedule-expiry", lambda r, b: self.schedule_cursor_expiry(**b)),
            ("POST", "/assessments", lambda r, b: self.add_assessment(**b)),
            ("PATCH", "/assessments/{id}", lambda r, b: self.update_assessment(r.path_params["id"], **b)),
            ("DELETE", "/assessments/{id}", lambda r, b: self.delete_assessment(r.path_params["id"])),
            ("POST", "/completions", lambda r, b: self.add_completion(**b)),
            ("PATCH", "/completions/{id}", lambda r, b: self.update_completion(r.path_params["id"], **b)),
            ("DELETE", "/completions/{id}", lambda r, b: self.delete_completion(r.path_params["id"])),
            ("POST", "/skill-ratings", lambda r, b: self.add_skill_rating(**b)),
            ("PATCH", "/skill-ratings/{id}", lambda r, b: self.update_skill_rating(r.path_params["id"], **b)),
            ("DELETE", "/skill-ratings/{id}", lambda r, b: self.delete_skill_rating(r.path_params["id"])),
            ("POST", "/files/ingest", lambda r, b: self.ingest_completion_files(b.get("folder"))),
            ("GET", "/files/reports", lambda r, b: self.ingest_reports()),
            ("GET", "/requests", lambda r, b: [e.to_dict() for e in self.log.entries(
                int(r.query_params.get("since", "0")))]),
            ("DELETE", "/requests", lambda r, b: self.log.clear()),
            ("GET", "/faults", lambda r, b: asdict(self.faults.config)),
            ("PUT", "/faults", lambda r, b: self.faults.set(FaultConfig.from_dict(b))),
            ("DELETE", "/faults", lambda r, b: self.faults.clear()),
        ]
        return [Route(f"{c}{path}", _control_endpoint(action), methods=[method])
                for method, path, action in table]


def _control_endpoint(action: ControlAction):
    """Wrap a control action: JSON body in, JSON out; KeyError → 404, ValueError/TypeError → 400."""

    async def endpoint(request: Request) -> Response:
        raw = await request.body()
        try:
            body = json.loads(raw) if raw.strip() else {}
            result = action(request, body)
        except KeyError as exc:
            return json_response(404, {"error": str(exc.args[0]) if exc.args else "not found"})
        except (ValueError, TypeError, ApiProblem) as exc:
            return json_response(400, {"error": str(exc)})
        return json_response(200, {"ok": True} if result is None else result)

    return endpoint


def _kebab(values: dict[str, Any]) -> dict[str, Any]:
    return {name.replace("_", "-"): value for name, value in values.items()}

"""Everything the simulated Degreed holds: the records, their tables, the one lock, and the look-ups the API makes.

State lives in memory behind one lock (``DegreedStore.lock``): request handlers run on uvicorn's event loop
while tests call the control methods from their own threads. The lock guards every part of the simulator,
not only these tables (tokens, rate windows and paging snapshots too).
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from imocha_sandbox.degreed.ids import IdMint
from imocha_sandbox.degreed.problems import ApiProblem
from imocha_sandbox.degreed.timestamps import iso_z
from imocha_sandbox.seed import World

OTHER_PROVIDER_CODE = "ACMELEARN"
DURATION_TYPES = {"seconds": "Seconds", "minutes": "Minutes", "hours": "Hours", "days": "Days"}
USER_IDENTIFIER_TYPES = {"email": "Email", "employeeid": "EmployeeId", "userid": "UserId"}


@dataclass
class SimUser:
    id: str
    employee_id: str
    first_name: str
    last_name: str
    email: str
    created_at: datetime


@dataclass
class SimProvider:
    id: str
    code: str
    name: str
    url: str


@dataclass
class SimAssessment:
    id: str
    external_id: str
    title: str
    url: str
    provider_code: str | None
    created_at: datetime
    modified_at: datetime
    summary: str | None = None
    duration: float | None = None
    duration_type: str | None = None
    language: str | None = None
    image_url: str | None = None
    format: str | None = None
    obsolete: bool = False


@dataclass
class SimCompletion:
    id: str
    user_id: str
    user_email: str
    employee_id: str
    content_id: str
    content_external_id: str
    content_type: str
    completed_at: datetime
    added_at: datetime
    modified_at: datetime
    provider_code: str | None
    percentile: float | None = None
    is_verified: bool = True


@dataclass
class SimSkillRating:
    id: str
    user_id: str
    user_email: str
    employee_id: str
    skill_name: str
    rating: int
    rating_type: str
    rated_at: datetime
    created_at: datetime
    modified_at: datetime
    provider_code: str | None


def state_of(record: Any) -> dict[str, Any]:
    """A record as ``state()`` shows it: JSON-ready, snake_case, UTC ISO timestamps."""
    return {name: iso_z(value) if isinstance(value, datetime) else value
            for name, value in asdict(record).items()}


def apply_assessment_attributes(record: SimAssessment, attrs: dict[str, Any]) -> None:
    """Validate and copy the writable assessment attributes present in ``attrs``."""
    text_fields = {"external-id": "external_id", "title": "title", "url": "url", "summary": "summary",
                   "language": "language", "image-url": "image_url", "format": "format"}
    for name, attr in text_fields.items():
        if name in attrs:
            value = attrs[name]
            if value is not None and not isinstance(value, str):
                raise ApiProblem(400, f"Attribute {name} must be a string.", source=name)
            if name in {"external-id", "title", "url"} and not (value or "").strip():
                raise ApiProblem(400, f"Attribute {name} is required.", source=name)
            setattr(record, attr, value)
    if "duration" in attrs:
        value = attrs["duration"]
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                  or value < 0):
            raise ApiProblem(400, "Attribute duration must be a non-negative number.", source="duration")
        record.duration = value
    if "duration-type" in attrs:
        value = attrs["duration-type"]
        if value is not None and str(value).lower() not in DURATION_TYPES:
            raise ApiProblem(400, f"Invalid duration-type: {value}", source="duration-type")
        record.duration_type = None if value is None else DURATION_TYPES[str(value).lower()]
    if "obsolete" in attrs:
        if not isinstance(attrs["obsolete"], bool):
            raise ApiProblem(400, "Attribute obsolete must be a boolean.", source="obsolete")
        record.obsolete = attrs["obsolete"]


class DegreedStore:
    """The tables of users, providers, content, completions and skill ratings, keyed by Degreed id."""

    def __init__(self, seed: object):
        self.lock = threading.RLock()
        self.ids = IdMint(seed)
        self.users: dict[str, SimUser] = {}
        self.providers: dict[str, SimProvider] = {}
        self.assessments: dict[str, SimAssessment] = {}
        self.completions: dict[str, SimCompletion] = {}
        self.skill_ratings: dict[str, SimSkillRating] = {}

    # -- seeding and inserts --------------------------------------------------------------------------

    def seed(self, world: World, provider_code: str, provider_name: str, foreign: int) -> None:
        """Two providers (ours and Acme), the world's learners who are in Degreed, ``foreign`` Acme items."""
        for code, name, url in (
            (provider_code, provider_name, "https://www.imocha.io"),
            (OTHER_PROVIDER_CODE, "Acme Learning", "https://learn.acme.example"),
        ):
            provider = SimProvider(self.ids.record_id(6), code, name, url)
            self.providers[provider.id] = provider
        for index, learner in enumerate(world.learners):
            if learner.in_degreed:
                first, _, last = learner.name.partition(" ")
                self.insert_user(learner.email, learner.employee_id, first, last,
                                 world.now - timedelta(days=400 - index))
        for index in range(foreign):
            self.insert_assessment(
                {"external-id": f"acme-{index + 1:03d}", "title": f"Acme Skills Check {index + 1}",
                 "url": f"https://learn.acme.example/check/{index + 1}", "duration": 15,
                 "duration-type": "Minutes"},
                OTHER_PROVIDER_CODE, world.now - timedelta(days=90),
            )

    def insert_user(self, email: str, employee_id: str, first: str, last: str, created: datetime) -> SimUser:
        user = SimUser(self.ids.record_id(6), employee_id, first, last, email, created)
        self.users[user.id] = user
        return user

    def insert_assessment(self, attrs: dict[str, Any], provider_code: str | None,
                          now: datetime) -> SimAssessment:
        """Content as the control surface adds it: no uniqueness checks (the API's create makes them)."""
        record = SimAssessment(
            id=self.ids.record_id(7), external_id=attrs["external-id"], title=attrs["title"], url=attrs["url"],
            provider_code=provider_code, created_at=now, modified_at=now,
        )
        apply_assessment_attributes(record, attrs)
        self.assessments[record.id] = record
        return record

    def insert_completion(self, user: SimUser, item: SimAssessment, completed_at: datetime,
                          percentile: float | None, provider_code: str | None,
                          now: datetime) -> SimCompletion:
        record = SimCompletion(
            id=self.ids.record_id(8), user_id=user.id, user_email=user.email, employee_id=user.employee_id,
            content_id=item.id, content_external_id=item.external_id, content_type="Assessment",
            completed_at=completed_at, added_at=now, modified_at=now, provider_code=provider_code,
            percentile=percentile,
        )
        self.completions[record.id] = record
        return record

    def insert_skill_rating(self, user: SimUser, skill_name: str, rating: int, rating_type: str,
                            rated_at: datetime, provider_code: str | None, now: datetime) -> SimSkillRating:
        record = SimSkillRating(
            id=self.ids.record_id(8), user_id=user.id, user_email=user.email, employee_id=user.employee_id,
            skill_name=skill_name, rating=rating, rating_type=rating_type, rated_at=rated_at,
            created_at=now, modified_at=now, provider_code=provider_code,
        )
        self.skill_ratings[record.id] = record
        return record

    # -- look-ups ---------------------------------------------------------------------------------------

    @staticmethod
    def get(table: dict[str, Any], key: str) -> Any:
        """The record under ``key``; KeyError (a 404 on the control surface) when there is none."""
        if key not in table:
            raise KeyError(f"unknown id {key}")
        return table[key]

    def user_by_email(self, email: str) -> SimUser | None:
        wanted = email.strip().casefold()
        return next((u for u in self.users.values() if u.email.casefold() == wanted), None)

    def user_by_id_or_email(self, key: str) -> SimUser | None:
        return self.users.get(key) or self.user_by_email(key)

    def provider_with_code(self, code: str | None) -> SimProvider | None:
        return next((p for p in self.providers.values() if p.code == code), None)

    def require_user(self, user_id: str) -> SimUser:
        """The user a ``/users/{id}`` path names; 404 when there is none."""
        if user_id not in self.users:
            raise ApiProblem(404, f"User {user_id} was not found.", source=user_id)
        return self.users[user_id]

    def resolve_user(self, value: Any, identifier_type: Any) -> SimUser:
        """Find a user by identifier type; unknown → 400 ``Invalid user identifier: <value>``."""
        kind = USER_IDENTIFIER_TYPES.get(str(identifier_type or "").replace("-", "").lower())
        if kind is None:
            raise ApiProblem(400, f"Invalid user-identifier-type: {identifier_type}",
                             source="user-identifier-type")
        text = str(value or "").strip()
        user = None
        if kind == "Email":
            user = self.user_by_email(text)
        elif kind == "EmployeeId":
            user = next((u for u in self.users.values() if u.employee_id == text), None)
        else:
            user = self.users.get(text)
        if user is None:
            raise ApiProblem(400, f"Invalid user identifier: {value}", source=str(value))
        return user

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        """Every record, JSON-ready (the record part of ``state()``)."""
        return {
            "users": [state_of(u) for u in self.users.values()],
            "providers": [state_of(p) for p in self.providers.values()],
            "assessments": [state_of(a) for a in self.assessments.values()],
            "completions": [state_of(c) for c in self.completions.values()],
            "skill_ratings": [state_of(r) for r in self.skill_ratings.values()],
        }

"""Who and what a Degreed answer is about, the way the real API lets us know.

Degreed's read answers for completions and skill ratings name the learner and the content only by Degreed ids
(spec §8.3: ``relationships`` with ids; no email, no external content id). ``DegreedDirectory`` maps them:

- content: Degreed content id <-> our external id, from what the pipeline already knows (the assessment ledger,
  Degreed's content snapshot in ``degreed_assessments``), else ``GET /content/assessments?filter[external_id]``
  or ``GET /content/assessments/{id}``;
- learners: Degreed user id <-> email or employee id, through the users endpoint, cached in ``degreed_users``
  and refreshed on a miss; a read of many unknown learners warms the cache from ``GET /api/v2/users`` (pages of
  1000) instead of one request per learner.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from imocha_pipeline import staging
from imocha_pipeline.clients.degreed import DegreedClient, DegreedUser
from imocha_pipeline.clients.errors import NotFoundError

# Reading all users (a page is 1000) is cheaper than this many single look-ups.
WARM_THRESHOLD = 20


def _email(value: str | None) -> str | None:
    return value.strip().lower() if value else None


class DegreedDirectory:
    """Degreed ids for our records and our keys for Degreed ids (see the module docstring). Without an engine
    nothing is cached: every question goes to Degreed."""

    def __init__(self, engine: Engine | None, client: DegreedClient):
        self.engine = engine
        self.client = client
        self._content: dict[str, str] | None = None  # external id -> Degreed content id
        self._warmed = False

    # -- content ------------------------------------------------------------------------------------------

    def _content_map(self) -> dict[str, str]:
        if self._content is None and self.engine is None:
            self._content = {}
        if self._content is None:
            ledger, snapshot = staging.sync_ledger, staging.degreed_assessments
            with self.engine.connect() as conn:
                seen = conn.execute(sa.select(snapshot.c.external_id, snapshot.c.degreed_id)).all()
                ours = conn.execute(sa.select(ledger.c.record_key, ledger.c.degreed_id).where(
                    ledger.c.entity == "assessment", ledger.c.degreed_id.is_not(None))).all()
            self._content = {external: degreed for external, degreed in [*seen, *ours] if external and degreed}
        return self._content

    def content_id(self, external_id: str) -> str | None:
        """The Degreed id of our content ``external_id`` (None: Degreed does not have it)."""
        found = self._content_map().get(external_id)
        if found is None:
            assessment = self.client.find_assessment(external_id)
            if assessment is not None:
                found = assessment.id
                self._content_map()[external_id] = found
        return found

    def external_id(self, content_id: str) -> str | None:
        """Our external id of Degreed content ``content_id`` (None: not content of ours, or gone)."""
        for external, degreed in self._content_map().items():
            if degreed == content_id:
                return external
        try:
            assessment = self.client.get_assessment(content_id)
        except NotFoundError:
            return None
        if assessment.external_id:
            self._content_map()[assessment.external_id] = content_id
        return assessment.external_id

    # -- learners -----------------------------------------------------------------------------------------

    def _store(self, users: Iterable[DegreedUser]) -> None:
        now = staging.utcnow()
        rows = [{"degreed_id": user.id, "email": _email(user.email), "employee_id": user.employee_id,
                 "fetched_at": now} for user in users]
        if rows and self.engine is not None:
            with self.engine.begin() as conn:
                staging.upsert(conn, staging.degreed_users, rows)

    def _cached(self, column: sa.Column, value: str) -> dict | None:
        if self.engine is None:
            return None
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(staging.degreed_users).where(column == value)).first()
        return dict(row._mapping) if row else None

    def forget_user(self, user_id: str) -> None:
        """Drop a cached learner (Degreed answered 404 for the id: deleted, or merged)."""
        if self.engine is not None:
            with self.engine.begin() as conn:
                conn.execute(staging.degreed_users.delete().where(staging.degreed_users.c.degreed_id == user_id))

    def user_id(self, value: str, identifier_type: str = "Email") -> str:
        """The Degreed user id of a learner known by email (or employee id). Raises ``LearnerNotFoundError``
        when Degreed does not know the learner."""
        by_employee = identifier_type == "EmployeeId"
        column = staging.degreed_users.c.employee_id if by_employee else staging.degreed_users.c.email
        key = value.strip() if by_employee else _email(value)
        cached = self._cached(column, key)
        if cached is not None:
            return cached["degreed_id"]
        user = self.client.get_user(value, "employee-id" if by_employee else "email")
        self._store([user])
        return user.id

    def emails(self, user_ids: Iterable[str]) -> dict[str, str | None]:
        """Degreed user id -> email, from the cache; the misses read from Degreed (all users at once when many)."""
        wanted = {i for i in user_ids if i}
        found = self._lookup_emails(wanted)
        missing = wanted - set(found)
        if len(missing) >= WARM_THRESHOLD and not self._warmed:
            self._warmed = True
            self._store(self.client.iter_users())
            found |= self._lookup_emails(missing)
            missing = wanted - set(found)
        for user_id in sorted(missing):
            try:
                user = self.client.get_user(user_id, "id")
            except NotFoundError:
                continue
            self._store([user])
            found[user_id] = _email(user.email)
        return found

    def _lookup_emails(self, user_ids: set[str]) -> dict[str, str | None]:
        found: dict[str, str | None] = {}
        ids = sorted(user_ids)
        if self.engine is None:
            return found
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 500):
                rows = conn.execute(sa.select(staging.degreed_users.c.degreed_id, staging.degreed_users.c.email)
                                    .where(staging.degreed_users.c.degreed_id.in_(ids[start:start + 500])))
                found.update({degreed_id: email for degreed_id, email in rows})
        return found

"""The shared rate budgets' state in the staging database: one row of ``rate_budget`` per budget.

``DatabaseBudgetStore`` is the ``BudgetStore`` (``imocha_pipeline.clients.http.shared_budget``) that lets
separate processes, runs and hosts draw from one ``SharedRateBudget``: the row is read and written in one short
transaction that locks it (PostgreSQL: ``SELECT ... FOR UPDATE``; SQLite: ``BEGIN IMMEDIATE``). Its clock is the
database server's on PostgreSQL (hosts may disagree, the database is the one clock they share) and ``time.time``
on SQLite, unless a ``clock`` is given.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from imocha_pipeline.clients.http.shared_budget import BudgetState
from imocha_pipeline.staging.engine import upsert, utcnow
from imocha_pipeline.staging.tables import rate_budget

T = TypeVar("T")


class DatabaseBudgetStore:
    """The state in one row of ``rate_budget``, read and written in one short locked transaction."""

    def __init__(self, engine: Engine, name: str, clock: Callable[[], float] | None):
        self.engine = engine
        self.name = name
        self._clock = clock
        try:
            rate_budget.create(engine, checkfirst=True)
        except sa.exc.DBAPIError:
            # Another process created it between the check and the create.
            if not sa.inspect(engine).has_table(rate_budget.name):
                raise

    def _now(self, conn: Connection) -> float:
        if self._clock is not None:
            return self._clock()
        if conn.dialect.name == "postgresql":
            return float(conn.execute(sa.text("SELECT extract(epoch FROM clock_timestamp())")).scalar_one())
        return time.time()

    def _load(self, conn: Connection, *, lock: bool) -> BudgetState | None:
        columns = rate_budget.c
        query = sa.select(columns.sent, columns.paused_until, columns.waiting).where(columns.name == self.name)
        row = conn.execute(query.with_for_update() if lock else query).one_or_none()
        if row is None:
            return None
        return BudgetState(list(row.sent or []), float(row.paused_until or 0.0), dict(row.waiting or {}))

    def transact(self, fn: Callable[[BudgetState, float], T]) -> T:
        with self.engine.connect() as conn:
            if conn.dialect.name == "sqlite":
                # Take the write lock up front: a deferred transaction could not upgrade under contention.
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            state = self._load(conn, lock=True)
            if state is None:
                upsert(conn, rate_budget, [{"name": self.name, "sent": [], "paused_until": 0.0, "waiting": {},
                                            "updated_at": utcnow()}], only_insert=True)
                state = self._load(conn, lock=True) or BudgetState()
            # The time is read after the lock is held, so it is never older than the row it judges.
            result = fn(state, self._now(conn))
            conn.execute(rate_budget.update().where(rate_budget.c.name == self.name).values(
                sent=[round(t, 6) for t in state.sent], paused_until=state.paused_until, waiting=state.waiting,
                updated_at=utcnow()))
            conn.commit()
        return result

    def peek(self, fn: Callable[[BudgetState, float], T]) -> T:
        with self.engine.connect() as conn:
            state = self._load(conn, lock=False) or BudgetState()
            return fn(state, self._now(conn))

"""One rate budget shared by every process and run that uses the same API client id.

``SharedRateBudget`` implements the ``RateBudget`` protocol of ``clients/http.py`` with its state in one
row of the staging database's ``rate_budget`` table, so separate processes, runs and hosts draw from
one budget (DESIGN.md §2 "One rate budget"). Without an engine the same rules apply to this process only.

The rules:

- **Window.** At most ``per_minute`` sends in any ``window + margin`` seconds (a sliding window log of
  send times). A sliding window never exceeds a fixed-window server limit either; ``margin`` absorbs the
  delay between taking a slot and the server counting the request.
- **Short transactions.** A slot is taken in one short transaction that locks the budget row (PostgreSQL:
  ``SELECT ... FOR UPDATE``; SQLite: ``BEGIN IMMEDIATE``). Waiting happens outside it: a taker sleeps until
  the next slot frees (at most ``HEARTBEAT`` seconds at a time), never spins.
- **Server hints.** A 429 (``Retry-After``) or ``X-Rate-Limit-Remaining: 0`` pauses every taker until the
  server's time. When ``Remaining`` says fewer requests are left than the budget counts (another tool uses
  the same key, or the real limit is lower), the difference is booked as sends by someone else that free
  up at ``X-Rate-Limit-Reset``.
- **Lanes.** ``lanes`` lists lanes from highest priority down (default auth, completions, content, reads;
  any other lane ranks below them; ``auth`` is a token request when they count, see below: one token
  unblocks every request waiting for it). A taker that must wait registers interest (refreshed every
  wake-up, forgotten ``3 × HEARTBEAT`` seconds after its last one); a taker that got a slot stays registered
  for ``linger`` seconds, since it usually comes straight back. When no more than ``reserve`` slots are free,
  a taker only gets one if no taker of a higher lane is registered: the last free slots go to the higher
  lanes. With more free slots everyone proceeds, so priority costs nothing while the budget is ample.
- **A slot marks the send.** ``ApiSession`` takes a slot when its request is ready to go: auth headers
  (and so any token fetch) first, never between the slot and the send.
- **Token requests [assumption].** Whether Degreed's token endpoint counts against the 70 a minute is not
  documented (specs/degreed-api.md §2, §5). ``DEGREED_TOKEN_REQUESTS_COUNT`` (default false) says it does:
  each token request then takes a slot of the client's budget in lane ``auth``.

Every client of every command, sensor and job is built by ``shared_degreed_client`` / ``shared_imocha_client``
(below): the one place that wires a client to the budget of its API and client id in a staging database.

All takers of one budget must use the same ``per_minute`` and ``window``. Times in the row are seconds on
the budget's clock: the database server's clock on PostgreSQL (hosts may disagree, the database is the one
clock they share), ``time.time`` on SQLite, ``time.monotonic`` in process; ``clock`` overrides it.
"""

from __future__ import annotations

import bisect
import contextlib
import copy
import math
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from imocha_pipeline import settings
from imocha_pipeline.clients.degreed import API_NAME as DEGREED_API_NAME
from imocha_pipeline.clients.degreed import DegreedClient
from imocha_pipeline.clients.http import (
    ApiSession,
    RateBudget,
    RequestMetrics,
    Unlimited,
    parse_reset,
    pause_from_headers,
)
from imocha_pipeline.clients.imocha import API_NAME as IMOCHA_API_NAME
from imocha_pipeline.clients.imocha import ImochaClient
from imocha_pipeline.staging import get_engine, rate_budget, upsert, utcnow

LANE_AUTH = "auth"
DEFAULT_LANES = (LANE_AUTH, "completions", "content", "reads")
DEFAULT_MARGIN_SECONDS = 1.0
DEFAULT_LINGER_SECONDS = 2.0
IMOCHA_RATE_LIMIT_SETTING = "IMOCHA_RATE_LIMIT_PER_MINUTE"
TOKEN_REQUESTS_COUNT_SETTING = "DEGREED_TOKEN_REQUESTS_COUNT"
MIN_WAIT_SECONDS = 0.01

T = TypeVar("T")


@dataclass
class BudgetState:
    """The shared state of one budget: what the ``rate_budget`` row holds."""

    sent: list[float] = field(default_factory=list)
    paused_until: float = 0.0
    waiting: dict[str, list[float]] = field(default_factory=dict)


class _Store(Protocol):
    def transact(self, fn: Callable[[BudgetState, float], T]) -> T:
        """Run ``fn(state, now)`` with the state locked and store what it leaves behind."""

    def peek(self, fn: Callable[[BudgetState, float], T]) -> T:
        """Run ``fn`` on a copy of the state, without a lock; changes are discarded."""


class _MemoryStore:
    """The per-process fallback: the state lives in this object."""

    def __init__(self, clock: Callable[[], float]):
        self._clock = clock
        self._state = BudgetState()
        self._lock = threading.Lock()

    def transact(self, fn: Callable[[BudgetState, float], T]) -> T:
        with self._lock:
            return fn(self._state, self._clock())

    def peek(self, fn: Callable[[BudgetState, float], T]) -> T:
        with self._lock:
            state = copy.deepcopy(self._state)
        return fn(state, self._clock())


class _DatabaseStore:
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


class SharedRateBudget:
    """A ``RateBudget`` shared through the staging database (or, with ``engine=None``, in this process).

    ``per_minute`` requests per ``window`` seconds (60 for Degreed); see the module docstring for the rules.
    ``reserve`` defaults to a tenth of ``per_minute`` (at least one slot).
    """

    HEARTBEAT = 5.0

    def __init__(
        self,
        engine: Engine | None,
        name: str,
        per_minute: int,
        *,
        window: float = 60.0,
        margin: float = DEFAULT_MARGIN_SECONDS,
        lanes: Sequence[str] = DEFAULT_LANES,
        reserve: int | None = None,
        linger: float = DEFAULT_LINGER_SECONDS,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if per_minute < 1:
            raise ValueError("per_minute must be at least 1")
        if window <= 0 or margin < 0 or linger < 0:
            raise ValueError("window must be positive, margin and linger not negative")
        self.name = name
        self.per_minute = per_minute
        self.window = window
        self.margin = margin
        self.span = window + margin
        self.lanes = tuple(lanes)
        self.reserve = max(1, per_minute // 10) if reserve is None else max(0, reserve)
        self.linger = linger
        self._sleep = sleep
        self._store: _Store = (_MemoryStore(clock or time.monotonic) if engine is None
                               else _DatabaseStore(engine, name, clock))
        self._id = uuid.uuid4().hex[:12]

    def __repr__(self) -> str:
        where = "process" if isinstance(self._store, _MemoryStore) else "database"
        return (f"SharedRateBudget(name={self.name!r}, per_minute={self.per_minute}, window={self.window}, "
                f"shared_in={where})")

    def rank(self, lane: str) -> int:
        """0 for the highest-priority lane; unknown lanes share the lowest rank."""
        return self.lanes.index(lane) if lane in self.lanes else len(self.lanes)

    # -- RateBudget ------------------------------------------------------------------------------------

    def acquire(self, lane: str) -> None:
        try:
            while (wait := self.try_acquire(lane)) > 0:
                self._sleep(min(wait, self.HEARTBEAT))
        except BaseException:
            self._withdraw()
            raise

    def observe(self, status: int, headers: Mapping[str, str]) -> None:
        pause = pause_from_headers(status, headers)
        remaining = _whole_number(headers.get("X-Rate-Limit-Remaining"))
        if pause <= 0 and remaining is None:
            return
        reset_in = parse_reset(headers.get("X-Rate-Limit-Reset"))

        def adjust(state: BudgetState, now: float) -> bool:
            self._prune(state, now)
            changed = False
            if pause > 0 and now + pause > state.paused_until:
                state.paused_until = now + pause
                changed = True
            if remaining is not None and status != 429:
                unseen = self.per_minute - len(state.sent) - remaining
                if unseen > 0:
                    # Book the sends we did not make so that they free up when the server's window resets.
                    frees_in = self.span if reset_in is None else min(reset_in, self.span)
                    for _ in range(unseen):
                        bisect.insort(state.sent, now + frees_in - self.span)
                    changed = True
            return changed

        # Most answers change nothing: look first, lock only when there is something to write.
        if self._store.peek(adjust):
            self._store.transact(adjust)

    # -- more ------------------------------------------------------------------------------------------

    def try_acquire(self, lane: str) -> float:
        """Take a slot in ``lane`` now (returns 0.0), or register interest and return seconds to wait."""
        taker, rank = self._taker(), self.rank(lane)
        return self._store.transact(lambda state, now: self._take(state, now, taker, rank))

    def status(self) -> dict[str, Any]:
        """What the budget looks like now: used and free slots, pause left, waiting takers by lane."""

        def describe(state: BudgetState, now: float) -> dict[str, Any]:
            self._prune(state, now)
            waiting: dict[str, int] = {}
            for rank, _ in state.waiting.values():
                lane = self.lanes[int(rank)] if int(rank) < len(self.lanes) else "other"
                waiting[lane] = waiting.get(lane, 0) + 1
            return {"name": self.name, "limit": self.per_minute, "used": len(state.sent),
                    "free": max(0, self.per_minute - len(state.sent)),
                    "paused_for": max(0.0, state.paused_until - now), "registered": waiting}

        return self._store.peek(describe)

    # -- internals -------------------------------------------------------------------------------------

    def _taker(self) -> str:
        return f"{self._id}:{threading.get_ident()}"

    def _prune(self, state: BudgetState, now: float) -> None:
        state.sent = sorted(t for t in state.sent if now - t < self.span)
        state.waiting = {taker: entry for taker, entry in state.waiting.items() if entry[1] > now}

    def _take(self, state: BudgetState, now: float, taker: str, rank: int) -> float:
        self._prune(state, now)
        free = self.per_minute - len(state.sent)
        ahead = [expires for other, (other_rank, expires) in state.waiting.items()
                 if other != taker and other_rank < rank]
        if state.paused_until > now:
            wait = state.paused_until - now
        elif free <= 0:
            wait = state.sent[-self.per_minute] + self.span - now
        elif ahead and free <= self.reserve:
            # Wake when a higher taker's interest lapses or another slot frees, whichever comes first.
            next_free = state.sent[0] + self.span if state.sent else math.inf
            wait = min(min(ahead), next_free, now + self.linger) - now
        else:
            bisect.insort(state.sent, now)
            state.waiting[taker] = [rank, now + self.linger]
            return 0.0
        state.waiting[taker] = [rank, now + 3 * self.HEARTBEAT]
        return max(wait, MIN_WAIT_SECONDS)

    def _withdraw(self) -> None:
        """Forget this thread's interest (best effort: the entry also lapses on its own)."""
        taker = self._taker()

        def forget(state: BudgetState, _now: float) -> None:
            state.waiting.pop(taker, None)

        with contextlib.suppress(Exception):
            self._store.transact(forget)


def _whole_number(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return max(0, int(float(value.strip())))
    except ValueError:
        return None


# ---------------------------------------------------------------------------------------------------------
# Factories
# ---------------------------------------------------------------------------------------------------------


def degreed_budget_name(client_id: str) -> str:
    """The budget row every process using this Degreed API client shares."""
    return f"degreed:{client_id}"


def degreed_rate_budget(client_id: str, per_minute: int = settings.DEGREED_DEFAULT_RATE_LIMIT_PER_MINUTE,
                        engine: Engine | None = None, **options: Any) -> SharedRateBudget:
    """Degreed's budget for one client id: in the staging database when ``engine`` is given."""
    return SharedRateBudget(engine, degreed_budget_name(client_id), per_minute, **options)


def imocha_rate_budget(engine: Engine | None = None, per_minute: int | None = None,
                       name: str = "imocha") -> RateBudget:
    """iMocha's optional budget: ``IMOCHA_RATE_LIMIT_PER_MINUTE`` (unset or 0: unlimited, its limit is unknown)."""
    if per_minute is None:
        per_minute = settings.optional_int(IMOCHA_RATE_LIMIT_SETTING, 0)
    if per_minute <= 0:
        return Unlimited()
    return SharedRateBudget(engine, name, per_minute)


# ---------------------------------------------------------------------------------------------------------
# Clients with the shared budget: every construction of an iMocha or Degreed client goes through these
# ---------------------------------------------------------------------------------------------------------

_shared: dict[tuple[str | None, str, int], SharedRateBudget] = {}
_shared_lock = threading.Lock()


def _staging(staging_url: str | None) -> str | None:
    """``""``: the pipeline's staging database (IMOCHA_PIPELINE_STAGING_DB_URL, else the default file);
    None: no database, the budget is shared by this process only (tests)."""
    if staging_url is None:
        return None
    return staging_url or settings.staging_db_url()


def _shared_budget(staging_url: str | None, name: str, per_minute: int) -> SharedRateBudget:
    """One budget object per (database, name, limit) in this process, so every client built here shares it
    (the only sharing there is without a database)."""
    url = _staging(staging_url)
    with _shared_lock:
        key = (url, name, per_minute)
        if key not in _shared:
            _shared[key] = SharedRateBudget(get_engine(url) if url else None, name, per_minute)
        return _shared[key]


def shared_degreed_budget(client_id: str, per_minute: int = settings.DEGREED_DEFAULT_RATE_LIMIT_PER_MINUTE,
                          staging_url: str | None = "") -> SharedRateBudget:
    """The Degreed budget of ``client_id``, kept in the staging database at ``staging_url`` (``""``: the
    pipeline's; None: this process only)."""
    return _shared_budget(staging_url, degreed_budget_name(client_id), per_minute)


def shared_imocha_budget(staging_url: str | None = "", per_minute: int | None = None) -> RateBudget:
    """iMocha's budget (``IMOCHA_RATE_LIMIT_PER_MINUTE``) in the staging database at ``staging_url``;
    unlimited, and no database opened, while the setting is unset or 0."""
    if per_minute is None:
        per_minute = settings.optional_int(IMOCHA_RATE_LIMIT_SETTING, 0)
    if per_minute <= 0:
        return Unlimited()
    return _shared_budget(staging_url, "imocha", per_minute)


def token_requests_count() -> bool:
    """``DEGREED_TOKEN_REQUESTS_COUNT``: whether a Degreed token request draws a slot of the client's budget.

    **Assumption**, to be confirmed against the tenant: Degreed documents 70 requests a minute per API client
    (specs/degreed-api.md §5) but not whether ``POST /oauth/token`` is one of them (§2). Default false: a
    token request (one per token lifetime and process, and one per scope in ``doctor``) goes outside the
    budget. True: it takes a slot in lane ``auth`` of the same shared budget, before any other lane.
    """
    raw = settings.optional(TOKEN_REQUESTS_COUNT_SETTING, "0").lower()
    if raw in {"1", "true", "yes", "on"}:
        return True
    if raw in {"0", "false", "no", "off"}:
        return False
    raise settings.InvalidSettingError(
        TOKEN_REQUESTS_COUNT_SETTING, f"setting {TOKEN_REQUESTS_COUNT_SETTING} must be true or false, got {raw!r}")


def shared_degreed_client(
    cfg: settings.DegreedSettings,
    staging_url: str | None = "",
    *,
    metrics: RequestMetrics | None = None,
    session_options: Mapping[str, Any] | None = None,
    api_names: tuple[str, str] = (DEGREED_API_NAME, f"{DEGREED_API_NAME}-oauth"),
    **client_options: Any,
) -> DegreedClient:
    """A Degreed client drawing from the shared budget of ``cfg.client_id`` in the staging database at
    ``staging_url`` (``""``: the pipeline's, IMOCHA_PIPELINE_STAGING_DB_URL or the default file; None: this
    process only). Token requests draw from it too when ``DEGREED_TOKEN_REQUESTS_COUNT`` is on.

    ``session_options`` go to both ``ApiSession``s (API and token host; e.g. ``doctor``'s short timeouts),
    ``api_names`` names them in errors and metrics; ``client_options`` go to ``DegreedClient``.
    """
    budget = shared_degreed_budget(cfg.client_id, cfg.rate_limit_per_minute, staging_url)
    options = dict(session_options or {})
    session = ApiSession(cfg.api_base_url, api_name=api_names[0], rate_budget=budget, metrics=metrics,
                         secrets=[cfg.client_secret], **options)
    token_session = ApiSession(cfg.token_url, api_name=api_names[1],
                               rate_budget=budget if token_requests_count() else Unlimited(),
                               metrics=session.metrics, secrets=[cfg.client_secret], **options)
    client_options.setdefault("organization_code", cfg.organization_code or None)
    return DegreedClient(cfg.api_base_url, cfg.token_url, cfg.client_id, cfg.client_secret, session=session,
                         token_session=token_session, **client_options)


def shared_imocha_client(
    base_url: str,
    api_key: str,
    staging_url: str | None = "",
    *,
    metrics: RequestMetrics | None = None,
    session_options: Mapping[str, Any] | None = None,
    **client_options: Any,
) -> ImochaClient:
    """An iMocha client drawing from iMocha's shared budget (``IMOCHA_RATE_LIMIT_PER_MINUTE``) in the staging
    database at ``staging_url`` (``""``: the pipeline's; None: this process only).

    ``session_options`` go to its ``ApiSession`` (timeouts, retries); ``client_options`` to ``ImochaClient``.
    """
    root = base_url.rstrip("/")
    root = root[: -len("/v3")] if root.endswith("/v3") else root
    session = ApiSession(root, api_name=IMOCHA_API_NAME, rate_budget=shared_imocha_budget(staging_url),
                         metrics=metrics, secrets=[api_key], **dict(session_options or {}))
    return ImochaClient(root, api_key, session=session, **client_options)

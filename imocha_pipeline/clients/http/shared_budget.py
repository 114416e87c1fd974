"""One rate budget shared by every process and run that uses the same API client id: the algorithm.

``SharedRateBudget`` implements the ``RateBudget`` protocol (``budget.py``) over a ``BudgetStore`` that holds
its state: ``MemoryBudgetStore`` (this process only) here, or the row of the staging database's ``rate_budget``
table (``imocha_pipeline.staging.rate_budget_store``), so separate processes, runs and hosts draw from one budget
(DESIGN.md §2 "One rate budget"). ``imocha_pipeline.connections`` builds the budgets and the clients using them.

The rules:

- **Window.** At most ``per_minute`` sends in any ``window + margin`` seconds (a sliding window log of
  send times). A sliding window never exceeds a fixed-window server limit either; ``margin`` absorbs the
  delay between taking a slot and the server counting the request.
- **Short transactions.** A slot is taken in one short transaction that locks the budget's state (in the
  database: the row, with ``SELECT ... FOR UPDATE`` on PostgreSQL and ``BEGIN IMMEDIATE`` on SQLite). Waiting
  happens outside it: a taker sleeps until the next slot frees (at most ``HEARTBEAT`` seconds at a time), never
  spins.
- **Server hints.** A 429 (``Retry-After``) or ``X-Rate-Limit-Remaining: 0`` pauses every taker until the
  server's time. When ``Remaining`` says fewer requests are left than the budget counts (another tool uses
  the same key, or the real limit is lower), the difference is booked as sends by someone else that free
  up at ``X-Rate-Limit-Reset``.
- **Lanes.** ``lanes`` lists lanes from highest priority down (default auth, completions, content, reads;
  any other lane ranks below them; ``auth`` is a token request when they count, see
  ``connections.token_requests_count``: one token unblocks every request waiting for it). A taker that must
  wait registers interest (refreshed every wake-up, forgotten ``3 × HEARTBEAT`` seconds after its last one); a
  taker that got a slot stays registered for ``linger`` seconds, since it usually comes straight back. When no
  more than ``reserve`` slots are free, a taker only gets one if no taker of a higher lane is registered: the
  last free slots go to the higher lanes. With more free slots everyone proceeds, so priority costs nothing
  while the budget is ample.
- **A slot marks the send.** ``ApiSession`` takes a slot when its request is ready to go: auth headers
  (and so any token fetch) first, never between the slot and the send.

All takers of one budget must use the same ``per_minute`` and ``window``. Times in the state are seconds on
the store's clock: the database server's clock on PostgreSQL (hosts may disagree, the database is the one
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

from imocha_pipeline.clients.http.budget import parse_reset, pause_from_headers, remaining_from_headers

LANE_AUTH = "auth"
DEFAULT_LANES = (LANE_AUTH, "completions", "content", "reads")
DEFAULT_MARGIN_SECONDS = 1.0
DEFAULT_LINGER_SECONDS = 2.0
MIN_WAIT_SECONDS = 0.01

T = TypeVar("T")


@dataclass
class BudgetState:
    """The shared state of one budget: what the ``rate_budget`` row holds."""

    sent: list[float] = field(default_factory=list)
    paused_until: float = 0.0
    waiting: dict[str, list[float]] = field(default_factory=dict)


class BudgetStore(Protocol):
    """Where one budget's state lives, and the clock its times are on."""

    def transact(self, fn: Callable[[BudgetState, float], T]) -> T:
        """Run ``fn(state, now)`` with the state locked and store what it leaves behind."""

    def peek(self, fn: Callable[[BudgetState, float], T]) -> T:
        """Run ``fn`` on a copy of the state, without a lock; changes are discarded."""


class MemoryBudgetStore:
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


class SharedRateBudget:
    """A ``RateBudget`` whose state lives in ``store`` (None: a ``MemoryBudgetStore``, this process only).

    ``per_minute`` requests per ``window`` seconds (60 for Degreed); see the module docstring for the rules.
    ``reserve`` defaults to a tenth of ``per_minute`` (at least one slot). ``clock`` is the clock of the
    memory store built when ``store`` is None (default ``time.monotonic``); a given store has its own.
    """

    HEARTBEAT = 5.0

    def __init__(
        self,
        store: BudgetStore | None,
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
        self._store: BudgetStore = MemoryBudgetStore(clock or time.monotonic) if store is None else store
        self._id = uuid.uuid4().hex[:12]

    def __repr__(self) -> str:
        where = "process" if isinstance(self._store, MemoryBudgetStore) else "database"
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
        remaining = remaining_from_headers(headers)
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

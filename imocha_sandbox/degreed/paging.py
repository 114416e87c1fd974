"""Lists: cursor paging over frozen snapshots, cursor expiry, ``limit``, and the date-window filters.

A list is frozen at its first request; ``next=`` cursors point into that snapshot by offset. A snapshot
idle longer than ``cursor_idle_seconds`` is dropped; its cursors then answer as ``cursor_expiry`` says.

Date filters: ``filter[start_date]``/``filter[end_date]`` are calendar days, both included, at most
``max_date_range_days`` of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from imocha_sandbox.degreed.api_request import ApiRequest
from imocha_sandbox.degreed.ids import IdMint
from imocha_sandbox.degreed.problems import ApiProblem
from imocha_sandbox.degreed.settings import MAX_PAGE_LIMIT, DegreedSimSettings

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass
class ListSnapshot:
    """A list result frozen at its first request; cursors point into it by offset."""

    id: str
    path: str
    items: list[dict[str, Any]]
    last_used: float
    # For each item, the resources it brings into ``included`` (None: the list answers without ``included``).
    included: list[list[dict[str, Any]]] | None = None


class Pager:
    """The live snapshots and cursors, and the forced expiries tests schedule. Callers hold the store's lock."""

    def __init__(self, settings: DegreedSimSettings, ids: IdMint, clock: Callable[[], float]):
        self.settings = settings
        self._ids = ids
        self._clock = clock
        self._snapshots: dict[str, ListSnapshot] = {}
        self._cursors: dict[str, tuple[str, int]] = {}
        self._forced_cursor_skip = 0
        self._forced_cursor_count = 0

    def page(self, ctx: ApiRequest, build: Callable[[], list[Any]], *,
             with_included: bool = False) -> tuple[int, dict[str, Any]]:
        """Serve one page of a snapshotted list; ``build`` runs only for the first page of a chain.

        With ``with_included``, ``build`` returns ``(resource, included resources)`` pairs and every page of
        the chain answers with ``included``: the distinct included resources of that page's items, frozen
        with the snapshot like the items themselves.
        """
        limit = parse_limit(ctx.query.get("limit"), self.settings.default_page_limit)
        now = self._clock()
        path = ctx.request.url.path
        cursor = ctx.query.get("next")
        if cursor:
            snapshot, offset = self._resume(cursor, path, now)
        else:
            self._drop_idle_snapshots(now)
            built = build()
            items = [item for item, _ in built] if with_included else built
            included = [extra for _, extra in built] if with_included else None
            snapshot, offset = ListSnapshot(self._ids.aux_id(12), path, items, now, included), 0
            self._snapshots[snapshot.id] = snapshot
        snapshot.last_used = now
        page = snapshot.items[offset: offset + limit]
        links = {"self": str(ctx.request.url)}
        if offset + len(page) < len(snapshot.items):
            next_cursor = self._ids.aux_id(10)
            self._cursors[next_cursor] = (snapshot.id, offset + len(page))
            links["next"] = f"{ctx.base}{path}?limit={limit}&next={next_cursor}"
        payload: dict[str, Any] = {"links": links, "data": page}
        if snapshot.included is not None:
            seen: set[tuple[str, str]] = set()
            payload["included"] = []
            for extras in snapshot.included[offset: offset + len(page)]:
                for extra in extras:
                    if (extra["type"], extra["id"]) not in seen:
                        seen.add((extra["type"], extra["id"]))
                        payload["included"].append(extra)
        return 200, payload

    def expire_all(self) -> None:
        """Drop every snapshot now: the next ``next=`` request answers as ``cursor_expiry`` says."""
        self._snapshots.clear()
        self._cursors.clear()

    def schedule_expiry(self, skip: int, count: int) -> None:
        """Let ``skip`` cursor requests pass, then answer the following ``count`` as expired."""
        self._forced_cursor_skip = skip
        self._forced_cursor_count = count

    def _cursor_expired(self) -> ApiProblem:
        """The answer to a cursor whose snapshot is gone, as ``cursor_expiry`` says."""
        if self.settings.cursor_expiry == "bare_400":
            return ApiProblem(400, "Invalid request.")
        if self.settings.cursor_expiry == "not_found":
            return ApiProblem(404, "The requested resource was not found.")
        return ApiProblem(400, "The paging cursor has expired; start again from the first page.",
                          code="cursor-expired", source="next")

    def _resume(self, cursor: str, path: str, now: float) -> tuple[ListSnapshot, int]:
        expired = self._cursor_expired()
        if self._forced_cursor_skip > 0:
            self._forced_cursor_skip -= 1
        elif self._forced_cursor_count > 0:
            self._forced_cursor_count -= 1
            self._forget_cursor_snapshot(cursor)
            raise expired
        position = self._cursors.get(cursor)
        snapshot = self._snapshots.get(position[0]) if position else None
        if snapshot is None or now - snapshot.last_used > self.settings.cursor_idle_seconds:
            self._forget_cursor_snapshot(cursor)
            raise expired
        if snapshot.path != path:
            raise ApiProblem(400, "The paging cursor belongs to another list.", source="next")
        return snapshot, position[1]

    def _forget_cursor_snapshot(self, cursor: str) -> None:
        position = self._cursors.get(cursor)
        if position:
            self._snapshots.pop(position[0], None)
            for key in [k for k, v in self._cursors.items() if v[0] == position[0]]:
                del self._cursors[key]

    def _drop_idle_snapshots(self, now: float) -> None:
        idle = [key for key, snap in self._snapshots.items()
                if now - snap.last_used > self.settings.cursor_idle_seconds]
        for key in idle:
            del self._snapshots[key]
        if idle:
            gone = set(idle)
            self._cursors = {k: v for k, v in self._cursors.items() if v[0] not in gone}


def parse_limit(raw: str | None, default: int) -> int:
    if raw is None or raw == "":
        return default
    try:
        limit = int(raw)
    except ValueError as exc:
        raise ApiProblem(400, f"limit must be a whole number, got {raw}", source="limit") from exc
    if not 1 <= limit <= MAX_PAGE_LIMIT:
        raise ApiProblem(400, f"limit must be between 1 and {MAX_PAGE_LIMIT}.", source="limit")
    return limit


def date_window(ctx: ApiRequest, days: int, *, default_window: bool) -> tuple[date, date] | None:
    """Read filter[start_date]/filter[end_date]: calendar days, both ends inclusive, at most ``days`` of them
    (``max_date_range_days``; 7: 2024-05-01..2024-05-07 is allowed, ..2024-05-08 is not).

    With only one end given the window runs ``days`` days from it. With neither, ``default_window`` picks the
    most recent ``days`` days up to today ([A]: Degreed's default for completions is not documented); without
    it there is no date filter at all.
    """
    raw_start, raw_end = ctx.query.get("filter[start_date]"), ctx.query.get("filter[end_date]")
    span = timedelta(days=days - 1)  # end - start of the longest allowed window
    if raw_start is None and raw_end is None:
        if not default_window:
            return None
        today = ctx.now.date()
        return today - span, today
    start = _parse_day(raw_start, "filter[start_date]") if raw_start is not None else None
    end = _parse_day(raw_end, "filter[end_date]") if raw_end is not None else None
    start = start or end - span
    end = end or start + span
    if end < start:
        raise ApiProblem(400, "filter[end_date] must not be before filter[start_date].",
                         source="filter[end_date]")
    covered = (end - start).days + 1
    if covered > days:
        raise ApiProblem(
            400, f"The date range cannot exceed {days} days: filter[start_date] {start.isoformat()} to "
                 f"filter[end_date] {end.isoformat()} covers {covered} days (both dates are included).",
            source="filter[end_date]")
    return start, end


def _parse_day(raw: str, name: str) -> date:
    if not _DATE.match(raw):
        raise ApiProblem(400, f"{name} must be a date in YYYY-MM-DD form.", source=name)
    try:
        return date.fromisoformat(raw)
    except ValueError as exc:
        raise ApiProblem(400, f"{name} is not a valid date.", source=name) from exc

"""Reading Degreed's lists: JSON:API page chains (restarted when their cursor expires) and date windows.

A list is read a whole page chain at a time (``page_limit`` per page, Degreed's maximum 1000) so a chain
finishes inside the cursor's life; a chain whose cursor expires anyway is read again from its first page.
Date-filtered lists are read in windows of at most ``date_window_days`` (Degreed allows 7), each record once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from datetime import date, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from imocha_pipeline.clients.degreed.contract import API_NAME, LANE_READS
from imocha_pipeline.clients.degreed.envelopes import next_page_link, resource_list
from imocha_pipeline.clients.errors import BadRequestError, CursorExpiredError, NotFoundError

logger = logging.getLogger("imocha_pipeline.degreed")

Send = Callable[..., Any]
"""One API call, as ``DegreedClient._send``: ``send(method, path, *, endpoint, lane, params=None)`` → the JSON."""


def date_windows(start: date, end: date, days: int = 7) -> list[tuple[date, date]]:
    """Split ``[start, end]`` into windows of at most ``days`` calendar days, both ends included, that share their
    boundary day: ``2024-05-01..2024-05-07``, ``2024-05-07..2024-05-13``, ...

    Degreed allows a range of at most 7 days and does not say whether ``end_date`` is inclusive; public clients
    send ``start..start+6`` (tap-degreed). A window of 7 calendar days counted inclusively is accepted under either
    reading, and sharing the boundary day reads every day under either; the caller drops repeats by id.
    """
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    if days < 2:
        raise ValueError(f"a window needs at least 2 days to share its boundary day, got {days}")
    windows = []
    cursor = start
    while True:
        stop = min(end, cursor + timedelta(days=days - 1))
        windows.append((cursor, stop))
        if stop >= end:
            return windows
        cursor = stop


class ListReader:
    """Reads whole lists through ``send``, following ``links.next`` on the API host ``api_base_url`` only."""

    def __init__(self, send: Send, api_base_url: str, *, page_limit: int, max_chain_restarts: int,
                 date_window_days: int):
        self._send = send
        self.api_base_url = api_base_url
        self.page_limit = page_limit
        self.max_chain_restarts = max_chain_restarts
        self.date_window_days = date_window_days

    def chain(self, path: str, *, endpoint: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """Every resource of one list, following ``links.next``; restart on an expired cursor."""
        restarts = 0
        while True:
            try:
                return self._pages(path, endpoint=endpoint, params=params)
            except CursorExpiredError:
                restarts += 1
                if restarts > self.max_chain_restarts:
                    raise
                logger.warning("Degreed cursor expired while reading %s; reading the chain again (%d/%d)",
                               endpoint, restarts, self.max_chain_restarts)

    def windowed(self, path: str, endpoint: str, start: date, end: date) -> Iterator[dict[str, Any]]:
        """Resources of a date-filtered list, window by window, each record once."""
        seen: set[str] = set()
        for window_start, window_end in date_windows(start, end, self.date_window_days):
            params = {"filter[start_date]": window_start.isoformat(), "filter[end_date]": window_end.isoformat()}
            for resource in self.chain(path, endpoint=endpoint, params=params):
                if resource.get("id") not in seen:
                    seen.add(resource.get("id"))
                    yield resource

    def _pages(self, path: str, *, endpoint: str, params: Mapping[str, Any] | None) -> list[dict[str, Any]]:
        first = {**(params or {}), "limit": self.page_limit}
        payload = self._send("GET", path, endpoint=endpoint, lane=LANE_READS, params=first)
        items: list[dict[str, Any]] = []
        seen_links: set[str] = set()
        while True:
            items.extend(resource_list(payload, endpoint))
            next_link = next_page_link(payload)
            if not next_link or next_link in seen_links:
                return items
            seen_links.add(next_link)
            try:
                payload = self._send("GET", self._same_host(next_link), endpoint=endpoint, lane=LANE_READS)
            except (BadRequestError, NotFoundError) as exc:
                # How Degreed answers an expired cursor is not documented (spec §4.1): the snapshot lives 2 minutes
                # without a `next` request. The first page was accepted, so a 400 or 404 on a follow-up page means
                # the cursor is gone, whatever its code: read the chain again.
                raise CursorExpiredError(f"the page after {len(items)} records was refused ({exc}); the cursor "
                                         "has most likely expired", api=API_NAME, endpoint=endpoint,
                                         status=exc.status, detail=exc.detail) from exc

    def _same_host(self, link: str) -> str:
        """Keep paging on the configured API host, so the bearer token never goes anywhere else."""
        parts = urlsplit(link)
        if not parts.scheme:
            return link
        base = urlsplit(self.api_base_url)
        return urlunsplit((base.scheme, base.netloc, parts.path, parts.query, ""))

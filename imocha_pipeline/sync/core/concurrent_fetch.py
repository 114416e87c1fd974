"""Many independent reads (one report per attempt, one detail and link list per test) with bounded parallelism.

The HTTP layer already retries each request; at scale a read can still be unlucky (a streak of 5xx, 429s
or dropped connections longer than its attempts). Such a read is tried once more after all the others,
instead of failing the run for one record. Many of them in one run means the API is down, not unlucky:
then the error ends the run, and fetches not started yet are cancelled rather than each retried against
an API that is down.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from imocha_pipeline.clients.errors import ApiError

K = TypeVar("K", bound=Hashable)
R = TypeVar("R")

MAX_RETRIED_LATER = 10  # unlucky reads tolerated in one run before the API counts as down
RETRY_PAUSE_SECONDS = 2.0  # before the second try of the unlucky reads


def fetch_all(fetch: Callable[[K], R], keys: list[K], *, max_workers: int = 4,
              max_retried_later: int = MAX_RETRIED_LATER,
              pause_seconds: float = RETRY_PAUSE_SECONDS) -> dict[K, R]:
    """``fetch(key)`` for every key, in key order. A fetch that raises a retryable ``ApiError`` is tried once
    more after the others; its second failure, or more than ``max_retried_later`` unlucky fetches, raises."""
    retry_later: list[K] = []

    def first_try(key: K) -> R | None:
        try:
            return fetch(key)
        except ApiError as exc:
            if not exc.retryable or len(retry_later) >= max_retried_later:
                raise
            retry_later.append(key)
            return None

    results = dict(zip(keys, _map_cancelling_on_error(first_try, keys, max_workers), strict=True))
    if retry_later:
        time.sleep(pause_seconds)
        for key in retry_later:
            results[key] = fetch(key)
    return results


def _map_cancelling_on_error(function: Callable, items: list, max_workers: int) -> list:
    pool = ThreadPoolExecutor(max_workers=max(1, max_workers))
    try:
        return list(pool.map(function, items))
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    finally:
        pool.shutdown(wait=True)

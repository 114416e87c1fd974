"""``DegreedSimSettings``: the behaviour the spec leaves open ([A]) or that tests change at run time.

Each setting is documented in the package docstring (``imocha_sandbox.degreed``); the ``DEFAULT_*`` constants
hold the defaults of the four settings that choose between today's answers and the documented ones.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

MAX_PAGE_LIMIT = 1000

# Defaults of the settings that choose between today's answers and the documented ones. They keep today's
# behaviour while the client learns the documented shapes; flipping to the documented answers means setting
# DEFAULT_READ_SHAPE = "documented", DEFAULT_RELATIONSHIPS_STYLE = "array", DEFAULT_CONFLICT_BODY = "empty"
# (and, if wanted, DEFAULT_CURSOR_EXPIRY = "bare_400" or "not_found"). Constructor and settings use these.
DEFAULT_READ_SHAPE = "documented"
DEFAULT_RELATIONSHIPS_STYLE = "array"
DEFAULT_CONFLICT_BODY = "empty"
DEFAULT_CURSOR_EXPIRY = "code"


@dataclass
class DegreedSimSettings:
    """Behaviour that the spec leaves open ([A]) or that tests change at run time."""

    rate_limit_per_minute: int = 70
    rate_window: str = "fixed"  # "fixed": window from the first request, reset = start + 60 s; or "sliding"
    token_ttl_seconds: int = 3600
    completion_duplicates: str = "409"  # "409": conflict error; "update": 200, same id, fields updated
    skill_rating_duplicates: str = "upsert"  # "upsert": same (user, skill, type) replaces; "always-new"
    completion_date_field: str = "completed-at"  # which field filter[start_date]/[end_date] apply to
    cursor_idle_seconds: float = 120.0
    default_page_limit: int = 100
    max_date_range_days: int = 7  # calendar days a date filter may cover, both ends inclusive
    # "object" (JSON:API) or "array" (a list of single-key objects, as in captured samples)
    relationships_style: str = DEFAULT_RELATIONSHIPS_STYLE
    # Seconds after its creation during which an assessment is missing from list/search results (0 = none).
    content_listing_lag_seconds: float = 0.0
    # "documented": completions and skill ratings answer with the spec's §8.3/§9.2 attributes only;
    # "echo": they echo everything that was posted (user email, external content id, percentile, ...).
    read_shape: str = DEFAULT_READ_SHAPE
    # Body of a 409 on create/update: "empty" ({}), "error_without_id" or "error_with_id" (names the record).
    conflict_body: str = DEFAULT_CONFLICT_BODY
    # Answer to a next= cursor whose snapshot expired: "code" (400 cursor-expired), "bare_400", "not_found".
    cursor_expiry: str = DEFAULT_CURSOR_EXPIRY
    # [A] Whether POST /oauth/token is charged to the client's per-minute budget.
    token_requests_count: bool = False

    CHOICES = {
        "rate_window": ("fixed", "sliding"),
        "completion_duplicates": ("409", "update"),
        "skill_rating_duplicates": ("upsert", "always-new"),
        "completion_date_field": ("completed-at", "added-at"),
        "relationships_style": ("object", "array"),
        "read_shape": ("documented", "echo"),
        "conflict_body": ("empty", "error_without_id", "error_with_id"),
        "cursor_expiry": ("code", "bare_400", "not_found"),
    }

    def validate(self) -> None:
        for name, allowed in self.CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"setting {name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.rate_limit_per_minute < 1:
            raise ValueError("setting rate_limit_per_minute must be at least 1")
        if isinstance(self.max_date_range_days, bool) or not isinstance(self.max_date_range_days, int) \
                or self.max_date_range_days < 1:
            raise ValueError(f"setting max_date_range_days must be a whole number of days, 1 or more, "
                             f"got {self.max_date_range_days!r}")
        if not isinstance(self.token_requests_count, bool):
            raise ValueError(f"setting token_requests_count must be true or false, got {self.token_requests_count!r}")
        if not 1 <= self.default_page_limit <= MAX_PAGE_LIMIT:
            raise ValueError(f"setting default_page_limit must be within 1..{MAX_PAGE_LIMIT}")
        if self.token_ttl_seconds < 1 or self.cursor_idle_seconds <= 0:
            raise ValueError("token_ttl_seconds and cursor_idle_seconds must be positive")
        lag = self.content_listing_lag_seconds
        if isinstance(lag, bool) or not isinstance(lag, int | float) or not math.isfinite(lag) or lag < 0:
            raise ValueError(f"setting content_listing_lag_seconds must be a number of seconds, 0 or more, "
                             f"got {lag!r}")

    def update(self, **changes: Any) -> None:
        """Check ``changes`` together with the other settings, then apply them in place (every part of the
        simulator holds this one object); an unknown name or an invalid value changes nothing."""
        known = {f.name for f in fields(DegreedSimSettings)}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown simulator settings: {sorted(unknown)}")
        candidate = DegreedSimSettings(**{**asdict(self), **changes})
        candidate.validate()
        for name in known:
            setattr(self, name, getattr(candidate, name))

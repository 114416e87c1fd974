"""Completions and skill ratings: their names, record keys and payload columns, and the canonical UTC text.

Record keys (the ledger's natural keys):
- completion: ``"{learner email, lower-case}|{external id}"``, one Degreed completion per learner and
  assessment; the latest ``Complete`` attempt wins.
- skill rating: ``"{learner email, lower-case}|{Degreed skill name}"``; the latest attempt wins.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd

COMPLETION = "completion"
SKILL_RATING = "skill_rating"
COMPLETION_FIELDS = ("completed_at", "percentile")
SKILL_RATING_FIELDS = ("rating", "rated_at")
# What a write needs besides the fields we own and compare.
COMPLETION_PAYLOAD = ("user_id", "user_identifier_type", "content_id", "content_id_type", "content_type",
                      "test_invitation_id")
SKILL_RATING_PAYLOAD = ("user_id", "user_identifier_type", "skill_name", "rating_type", "test_invitation_id",
                        "percent")
STATUS_COMPLETE = "Complete"


def completion_key(email: str, external_id: str) -> str:
    return f"{email.strip().lower()}|{external_id}"


def skill_rating_key(email: str, skill_name: str) -> str:
    return f"{email.strip().lower()}|{skill_name}"


def utc_text(moment: datetime | None) -> str | None:
    """The canonical UTC text used in payloads and hashes (whole seconds, ``Z``)."""
    if moment is None or pd.isna(moment):
        return None
    moment = pd.Timestamp(moment).to_pydatetime()
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {moment!r} has no time zone")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

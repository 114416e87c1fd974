"""Degreed's Completions Template: the file name and the CSV rows of a completions file.

From Degreed's Completions Template article (spec ``degreed-api.md`` source S17, §8.2, §8.4, §12, §14): columns
``UserID``, ``CourseID`` (our content's external id), ``CompletionDate`` (``YYYYMMDD``), ``ContentType``
(``Assessment``) and ``Provider`` (the provider code); CSV; file name ``{Client}_Completions_File_YYYYMMDD``
with an optional ``HHMMSS``; processed overnight; a second record for the same learner and content updates the
completion date. There is no score column: a percentile goes by API afterwards.
"""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime
from typing import Any

from imocha_pipeline.timestamps import parse_utc

COLUMNS = ("UserID", "CourseID", "CompletionDate", "ContentType", "Provider")
CONTENT_TYPE = "Assessment"
FILE_PATTERN = re.compile(r"^(?P<client>[A-Za-z0-9-]+)_Completions_File_(?P<date>\d{8})(?P<time>\d{6})?\.csv$")


def client_part(name: str) -> str:
    """The ``{Client}`` part of a file name: letters, digits and hyphens only."""
    cleaned = re.sub(r"[^A-Za-z0-9-]+", "-", name.strip()).strip("-")
    if not cleaned:
        raise ValueError(f"client name {name!r} has no letters or digits for the file name")
    return cleaned


def file_name(client: str, moment: datetime) -> str:
    """``{Client}_Completions_File_YYYYMMDDHHMMSS.csv`` (UTC), unique per second."""
    return f"{client_part(client)}_Completions_File_{moment.astimezone(UTC):%Y%m%d%H%M%S}.csv"


def completion_date(completed_at: Any) -> str:
    """``YYYYMMDD`` of the completion's UTC day."""
    moment = parse_utc(completed_at, strict=True)
    return f"{moment:%Y%m%d}"


def template_row(payload: dict[str, Any], provider: str) -> dict[str, str]:
    """One file row from a completion payload (the same values an API create would carry, minus the score)."""
    return {"UserID": str(payload["user_id"]), "CourseID": str(payload["content_id"]),
            "CompletionDate": completion_date(payload["completed_at"]), "ContentType": CONTENT_TYPE,
            "Provider": provider}


def to_csv(rows: list[dict[str, str]]) -> str:
    """The file's text: a header row, then one row per completion (RFC 4180 quoting, CRLF line ends)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()

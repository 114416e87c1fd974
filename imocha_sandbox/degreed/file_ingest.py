"""Degreed's overnight processing of Completions Template files, on a control call.

What it stands for (spec ``degreed-api.md`` S17, §8.4, §14): files named ``{Client}_Completions_File_YYYYMMDD``
(optionally ``HHMMSS``) ``.csv`` in the organisation's SFTP folder, columns ``UserID``, ``CourseID``,
``CompletionDate`` (``YYYYMMDD``), ``ContentType``, ``Provider``, are processed overnight. Each row becomes a
completion of that day (midnight UTC here [A]) without a score; a row for a learner and content that already have a
completion updates its date; a row the simulator cannot match (unknown user, unknown content, unknown provider,
bad date or content type) is rejected and listed in the ingest report. ``UserID`` is matched as an email, then
as an employee id [A] (Degreed matches on the identifier the organisation chose). Processed files move to
``processed/`` (a second ingest does not read them again); names not following the template, and hidden or
partial files (``.name.part``), are left where they are, unread.
"""

from __future__ import annotations

import csv
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from imocha_sandbox.degreed.store import DegreedStore, SimAssessment, SimUser

FILE_PATTERN = re.compile(r"^[A-Za-z0-9-]+_Completions_File_\d{8}(\d{6})?\.csv$")
COLUMNS = ("UserID", "CourseID", "CompletionDate", "ContentType", "Provider")
CONTENT_TYPES = {"article", "book", "course", "event", "video", "assessment", "podcast"}
PROCESSED = "processed"


class CompletionFileIngest:
    """Reads the drop folder and applies each file to the store (call under the store's lock)."""

    def __init__(self, store: DegreedStore):
        self.store = store
        self.reports: list[dict[str, Any]] = []

    def ingest(self, folder: Path, now: datetime) -> dict[str, Any]:
        folder = Path(folder)
        files = sorted(p for p in folder.iterdir() if p.is_file() and FILE_PATTERN.match(p.name))
        users = self._users()
        content = {a.external_id.casefold(): a for a in self.store.assessments.values()}
        pairs = {(c.user_id, c.content_id): c for c in self.store.completions.values()}
        reports = [self._one_file(path, users, content, pairs, now) for path in files]
        (folder / PROCESSED).mkdir(exist_ok=True)
        for path in files:
            path.replace(folder / PROCESSED / path.name)
        summary = {"files": reports, "created": sum(r["created"] for r in reports),
                   "updated": sum(r["updated"] for r in reports), "unchanged": sum(r["unchanged"] for r in reports),
                   "rejected": [row for r in reports for row in r["rejected"]]}
        self.reports.append(summary)
        return summary

    def _users(self) -> dict[str, SimUser]:
        found: dict[str, SimUser] = {}
        for user in self.store.users.values():
            found.setdefault(user.employee_id, user)
        for user in self.store.users.values():
            found[user.email.casefold()] = user  # an email wins over an employee id of the same text
        return found

    def _one_file(self, path: Path, users: dict[str, SimUser], content: dict[str, SimAssessment],
                  pairs: dict, now: datetime) -> dict[str, Any]:
        report: dict[str, Any] = {"file": path.name, "rows": 0, "created": 0, "updated": 0, "unchanged": 0,
                                  "rejected": []}
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                report["rejected"].append({"file": path.name, "line": 1, "reason": f"missing columns {missing}"})
                return report
            for line, row in enumerate(reader, start=2):
                report["rows"] += 1
                problem = self._apply_row(row, users, content, pairs, now, report)
                if problem:
                    report["rejected"].append({"file": path.name, "line": line, "user_id": row.get("UserID"),
                                               "course_id": row.get("CourseID"), "reason": problem})
        return report

    def _apply_row(self, row: dict[str, str], users, content, pairs, now, report) -> str | None:
        user_text = (row.get("UserID") or "").strip()
        user = users.get(user_text.casefold()) or users.get(user_text)
        if user is None:
            return f"unknown user {user_text!r}"
        kind = (row.get("ContentType") or "").strip().lower()
        if kind not in CONTENT_TYPES:
            return f"unknown content type {row.get('ContentType')!r}"
        item = content.get((row.get("CourseID") or "").strip().casefold())
        if item is None or kind != "assessment":
            return f"unknown content {row.get('CourseID')!r} ({row.get('ContentType')})"
        provider = (row.get("Provider") or "").strip()
        if provider and self.store.provider_with_code(provider) is None:
            return f"unknown provider {provider!r}"
        try:
            day = datetime.strptime((row.get("CompletionDate") or "").strip(), "%Y%m%d").replace(tzinfo=UTC)
        except ValueError:
            return f"CompletionDate {row.get('CompletionDate')!r} is not YYYYMMDD"
        existing = pairs.get((user.id, item.id))
        if existing is not None:
            if existing.completed_at == day:
                report["unchanged"] += 1
            else:  # a re-upload with another date updates the date
                existing.completed_at, existing.modified_at = day, now
                report["updated"] += 1
            return None
        pairs[(user.id, item.id)] = self.store.insert_completion(user, item, day, None,
                                                                 provider or item.provider_code, now)
        report["created"] += 1
        return None

"""The assessment extract: every iMocha test with its details and active link, Degreed's snapshot of our content,
and what could not be read, held in the quarantine with a reason."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy.engine import Engine

from imocha_pipeline.clients.degreed import DegreedClient
from imocha_pipeline.clients.errors import NotFoundError, PayloadError
from imocha_pipeline.clients.imocha import ImochaClient, TestListProblem
from imocha_pipeline.sync.assessments.entity import ASSESSMENT
from imocha_pipeline.sync.core.concurrent_fetch import fetch_all
from imocha_pipeline.sync.core.quarantine import VALIDATION, Entry, Quarantine

# Quarantine key of an entry of iMocha's test list that names no test (page and position from 1). While one is
# open the extract is incomplete, so no assessment is retired; it is resolved by the next clean read of the list.
LIST_ENTRY_KEY_PREFIX = "tests-list-"


def list_entry_key(page: int, item: int) -> str:
    """``tests-list-page-<page>-item-<item>``: the record key of an unreadable, id-less test list entry."""
    return f"{LIST_ENTRY_KEY_PREFIX}page-{int(page)}-item-{int(item)}"


def pick_active_link(links) -> object | None:
    """The test's public link: the first active one, preferring non-API links (the ones learners open)."""
    active = [link for link in links if str(getattr(link, "status", "")).lower() == "active"]
    if not active:
        return None
    public = [link for link in active if not getattr(link, "is_api_link", False)]
    return (public or active)[0]


@dataclass
class ExtractedTests:
    """The iMocha extract: ``imocha_assessments`` rows, tests whose own answers could not be read
    (``(test id, reason)``; left out, never stopping the others), and entries of the test list that name no test
    (the extract is then incomplete: no assessment is retired while one is open)."""

    rows: list[dict]
    unreadable: list[tuple[int, str]] = field(default_factory=list)
    unattributed: list[TestListProblem] = field(default_factory=list)


def extract_assessments(client: ImochaClient, extracted_at: datetime, max_workers: int = 4) -> ExtractedTests:
    """Every iMocha test with its details and active link, and what could not be read (see ``ExtractedTests``)."""
    listed: list[TestListProblem] = []
    tests = client.list_tests(listed)
    result = ExtractedTests(rows=[])
    for problem in listed:
        if problem.test_id is not None:
            result.unreadable.append((int(problem.test_id), problem.reason))
        else:
            result.unattributed.append(problem)

    def enrich(test) -> dict | tuple[int, str]:
        try:
            detail = client.get_test(test.test_id)
            link = pick_active_link(client.list_test_links(test.test_id))
        except (PayloadError, NotFoundError) as exc:
            return (int(test.test_id), str(exc))
        sections = [
            {"name": getattr(s, "name", None), "type": getattr(s, "section_type", None),
             "questions": getattr(s, "questions", None), "duration": getattr(s, "duration", None)}
            for s in (getattr(detail, "sections", None) or [])
        ]
        duration = getattr(detail, "duration_minutes", None)
        return {
            "test_id": int(test.test_id),
            "test_name": getattr(detail, "name", None) or test.name,
            "status": test.status,
            "duration_minutes": duration if duration is not None else test.duration_minutes,
            "question_count": getattr(detail, "questions", None),
            "labels": list(test.labels or []),
            "sections": sections,
            "test_link_id": getattr(link, "test_link_id", None),
            "test_link_key": getattr(link, "test_link", None),
            "test_link_url": None,
            "extracted_at": extracted_at,
        }

    by_id = {int(test.test_id): test for test in tests}
    fetched = fetch_all(lambda test_id: enrich(by_id[test_id]), list(by_id), max_workers=max_workers)
    for outcome in fetched.values():
        if isinstance(outcome, dict):
            result.rows.append(outcome)
        else:
            result.unreadable.append(outcome)
    return result


def quarantine_unreadable_tests(engine: Engine, problems: list[tuple[int, str]], mapping_prefix: str,
                                run_id: str) -> int:
    """Tests iMocha answered about with unreadable data: held in quarantine (neither created nor retired)."""
    entries = [Entry(f"{mapping_prefix}{test_id}", VALIDATION,
                     f"iMocha's answer for test {test_id} cannot be read ({reason}); the test is neither created nor "
                     "retired in Degreed until iMocha answers correctly (read again on every run)",
                     "iMocha answer", "well-formed iMocha answer", None)
               for test_id, reason in problems]
    return Quarantine(engine, ASSESSMENT, run_id).put(entries)


def quarantine_unreadable_list_entries(engine: Engine, entries: list[TestListProblem], run_id: str) -> int:
    """Hold id-less test list entries in quarantine (they hold back every retirement) and resolve the ones of
    earlier runs that are gone. Call after every complete read of the list, also when it had none."""
    current = [
        Entry(list_entry_key(entry.page, entry.item), VALIDATION,
              f"entry {entry.item} on page {entry.page} of iMocha's test list (GET /v3/tests) cannot be read and "
              f"names no test ({entry.reason}). No assessment is retired in Degreed while the list has such an "
              "entry, because it may be a test that still exists; creates and updates go on. Ask iMocha to fix the "
              "entry; this clears itself on the first run that reads the list cleanly",
              "iMocha test list entry", "well-formed iMocha answer", entry.entry or None)
        for entry in entries
    ]
    quarantine = Quarantine(engine, ASSESSMENT, run_id)
    open_keys = set(quarantine.open_entries([VALIDATION])["record_key"])
    stale = sorted(key for key in open_keys if key.startswith(LIST_ENTRY_KEY_PREFIX)
                   and key not in {entry.record_key for entry in current})
    quarantine.resolve(stale, kinds=[VALIDATION])
    return quarantine.put(current)


def snapshot_degreed_assessments(client: DegreedClient, snapshot_at: datetime) -> list[dict]:
    """What Degreed really holds: every Assessment our key can see."""
    return [
        {
            "degreed_id": item.id, "external_id": item.external_id, "title": item.title, "summary": item.summary,
            "url": item.url, "duration": item.duration, "duration_type": item.duration_type,
            "language": item.language, "content_type": "Assessment", "obsolete": bool(item.obsolete),
            "provider_code": item.provider_code, "modified_at": item.modified_at, "snapshot_at": snapshot_at,
        }
        for item in client.iter_assessments()
    ]

"""The bad-input catalogue (drill 7): malformed iMocha data of every kind across the three entities.

Each ``Kind`` says how it is injected (a test added to the simulator, a canned answer for one test or one
attempt's report) and what must happen: ``quarantine`` (with a reason containing ``reason``), ``sync``
(tolerated: the record reaches Degreed with the right values) or ``fail`` (a transport-level problem: the run
fails with a clear, typed message). Record-level kinds must never stop the good records.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

LONG = "Very long name " + "x" * 300
UNICODE_TITLE = "Ünïcödé ✓ 日本語テスト — اختبار 🚀 " + "é" * 100


@dataclass
class Kind:
    name: str
    entity: str  # assessment | completion | skill_rating | transport
    expect: str  # quarantine | sync | fail
    reason: str = ""  # what the quarantine reason (or the failure message) must contain
    key: str | None = None  # quarantine record key (filled in when injected)
    invitation: int | None = None
    report: dict | None = None  # the report as served (for the truth), None = the attempt stays out
    facts: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------------
# Assessments


def assessment_kinds(sim) -> list[Kind]:
    """Tests added to the iMocha simulator (or with a canned detail/links answer)."""
    kinds: list[Kind] = []

    def add(name: str, expect: str, reason: str, test_name: str, duration: int = 30, **canned) -> Kind:
        test_id = sim.add_test(test_name, duration, skills=["Drill skill"])
        kind = Kind(name, "assessment", expect, reason, key=f"imocha-{test_id}", facts={"test_id": test_id})
        for suffix, (status, body, content_type) in canned.items():
            path = f"/v3/tests/{test_id}" + ("/testlinks" if suffix == "links" else "")
            sim.set_canned_response("GET", path, body, status=status, content_type=content_type, times=None)
        kinds.append(kind)
        return kind

    add("empty test name", "quarantine", "title is required", "   ")
    add("very long test name", "quarantine", "title length must be between 1 and 255", LONG)
    add("unicode test name", "sync", "", UNICODE_TITLE)
    # Sent as plain text with the tags removed (sync.mapping.plain_text_title): "Python alert(1)".
    add("HTML in title", "sync", "", "<b>Python</b> <script>alert(1)</script>")
    add("negative duration", "quarantine", "duration must be at least 1", "Negative duration test", -5)
    detail = sim.tests[next(iter(sim.tests))].detail_json()
    wrong = add("wrong type in test detail", "quarantine", "'duration' is not a whole number", "Wrong type test")
    sim.set_canned_response("GET", f"/v3/tests/{wrong.facts['test_id']}",
                            json.dumps({**detail, "testId": wrong.facts["test_id"], "duration": "thirty"}),
                            times=None)
    extra = add("unexpected extra fields", "sync", "", "Extra fields test")
    real = sim.tests[extra.facts["test_id"]].detail_json()
    sim.set_canned_response("GET", f"/v3/tests/{extra.facts['test_id']}",
                            json.dumps({**real, "newField": {"nested": [1, 2]}, "another": None}), times=None)
    add("truncated test links", "quarantine", "invalid JSON", "Truncated links test",
        links=(200, '{"testLinks": [{"testLinkId": 1, "testLink": "ab', "application/json"))
    add("HTML error page for test links", "quarantine", "HTML page instead of JSON", "HTML links test",
        links=(200, "<!DOCTYPE html><html><body>502 Bad Gateway</body></html>", "text/html"))
    no_link = add("test without an active link", "quarantine", "url", "No active link test")
    for link in sim.tests[no_link.facts["test_id"]].links:
        link.status = "inactive"
    # Malformed entries in the test list itself (GET /v3/tests): the rest of the list still syncs.
    named = add("test list entry with an object as its name", "quarantine",
                "test field 'testName' is not a text", "List entry name test")
    sim.set_list_entry(named.facts["test_id"], fields={"testName": {"en": "List entry name test"}})
    idless = [add("test list entry with a garbled id", "quarantine",
                  "test field 'testId' is not a whole number: 'abc'", "List entry id test"),
              add("test list entry that is not an object", "quarantine", "test is a list, expected an object",
                  "List entry shape test")]
    sim.set_list_entry(idless[0].facts["test_id"], fields={"testId": "abc"})
    sim.set_list_entry(idless[1].facts["test_id"], ["not", "a", "test"])
    for kind in idless:  # no test to name: quarantined by the entry's place, and no retirement while it is there
        kind.facts["external_id"] = kind.key
        kind.key = list_entry_key(sim, kind.facts["test_id"])
        kind.reason += "). No assessment is retired in Degreed while the list has such an entry"
    return kinds


def list_entry_key(sim, test_id: int, page_size: int = 100) -> str:
    """The quarantine key of a test's entry in GET /v3/tests (``tests-list-page-<n>-item-<i>``, from 1)."""
    place = sorted(sim.tests).index(test_id)
    return f"tests-list-page-{place // page_size + 1}-item-{place % page_size + 1}"


# --------------------------------------------------------------------------------------------------------
# Completions and skill ratings (one attempt each, by a learner of its own)


def _report(sim, invitation: int) -> dict:
    return json.loads(json.dumps(sim.report(invitation, report_type=3)))


def attempt_kinds(sandbox) -> list[Kind]:
    """Attempts whose reports are served broken in one way each."""
    sim, degreed = sandbox.imocha, sandbox.degreed
    tests = sandbox.world.tests
    kinds: list[Kind] = []

    def attempt(name: str, entity: str, expect: str, reason: str, mutate=None, *, raw: str | None = None,
                status: int = 200, content_type: str = "application/json", truth: str = "none",
                skill_key: bool = False) -> Kind:
        index = len(kinds)
        email = f"drill.bad{index}@example.com"
        degreed.add_user(email)
        test = tests[index % len(tests)]
        invitation = sim.complete_attempt(test.test_id, email, f"Bad Input {index}", bank_scores=55.0,
                                          time_taken_seconds=120)
        report = _report(sim, invitation)
        served = report
        if mutate is not None:
            served = mutate(json.loads(json.dumps(report))) or served
        body = raw if raw is not None else json.dumps(served)
        sim.set_canned_response("GET", f"/v3/reports/{invitation}", body, status=status, content_type=content_type,
                                times=None)
        key = f"attempt:{invitation}"
        if skill_key:
            first = (served.get("skills") or [{}])[0]
            key = f"attempt:{invitation}|skill:{first.get('qbId', -1)}"
        kind = Kind(name, entity, expect, reason, key=key, invitation=invitation,
                    report=served if truth == "served" else None, facts={"email": email})
        kinds.append(kind)
        return kind

    def set_(**values):
        return lambda r: {**r, **values}

    def skill(**values):
        def mutate(r):
            r["skills"][0].update(values)
            return r
        return mutate

    attempt("invalid email", "completion", "quarantine", "learner_email must be an email address",
            set_(candidateEmail="not-an-email"))
    attempt("email missing in the report (taken from the attempt list)", "completion", "sync", "",
            set_(candidateEmail=None), truth="served")
    attempt("unicode and very long learner name", "completion", "sync", "",
            set_(candidateName="Zoë Ngọc " + "Ł" * 5000), truth="served")
    attempt("score above 100", "completion", "quarantine", "score_percentage must be at most 100",
            set_(scorePercentage=135.0))
    attempt("negative score", "completion", "quarantine", "score_percentage must be at least 0",
            set_(scorePercentage=-5.0))
    attempt("NaN score", "completion", "quarantine", "'scorePercentage' is not a number",
            raw=None, mutate=set_(scorePercentage=float("nan")))
    attempt("points above maximum", "completion", "quarantine", "candidate_points must not exceed total_points",
            set_(candidatePoints=50.0, totalTestPoints=40.0))
    attempt("attempt of an unknown test", "completion", "quarantine", "is not in Degreed yet",
            set_(testId=999_999), truth="served")
    kinds[-1].facts["kind"] = "waiting_for_assessment"
    kinds[-1].key = None  # keyed by the completion (learner|assessment), checked by reason
    attempt("timestamp without zone (read as UTC)", "completion", "sync", "",
            lambda r: {**r, "attemptedOn": r["attemptedOn"].replace("Z", "")[:19]}, truth="served")
    attempt("timestamp in local time with offset", "completion", "sync", "",
            lambda r: {**r, "attemptedOn": _shift(r["attemptedOn"])}, truth="served")
    attempt("local display time without zone", "completion", "quarantine", "'attemptedOn' is not a timestamp",
            set_(attemptedOn="29-Nov-2026 03:30 PM"))
    attempt("missing attempt time", "completion", "quarantine", "attempted_on is required",
            lambda r: {k: v for k, v in r.items() if k != "attemptedOn"})
    attempt("wrong type for the score", "completion", "quarantine", "'scorePercentage' is not a number",
            set_(scorePercentage="high"))
    attempt("unexpected extra fields", "completion", "sync", "",
            set_(surpriseField={"a": [1, {"b": None}]}, anotherOne="x"), truth="served")
    attempt("truncated JSON report", "completion", "quarantine", "invalid JSON", raw='{"testInvitationId": 1, "sc')
    attempt("HTML error page instead of the report", "completion", "quarantine", "HTML page instead of JSON",
            raw="<html><head><title>Error</title></head><body>Service Unavailable</body></html>",
            content_type="text/html")
    attempt("empty 200 body for the report", "completion", "quarantine", "empty response body", raw="")
    attempt("report is a list, not an object", "completion", "quarantine", "report is a list", raw="[1, 2, 3]")
    other = kinds[0].invitation
    attempt("duplicate attempt id (report names another attempt)", "completion", "quarantine",
            f"names attempt {other}", set_(testInvitationId=other))

    attempt("report without a skills array", "skill_rating", "quarantine", "has no skills array",
            lambda r: {k: v for k, v in r.items() if k != "skills"}, truth="served")
    kinds[-1].key = f"attempt:{kinds[-1].invitation}|skills"
    attempt("empty skill name", "skill_rating", "quarantine", "skill_name length must be between 1 and 255",
            skill(qbName=""), truth="served", skill_key=True)
    attempt("null skill name", "skill_rating", "quarantine", "skill_name", skill(qbName=None), truth="served",
            skill_key=True)
    attempt("very long skill name", "skill_rating", "quarantine", "skill_name length must be between 1 and 255",
            skill(qbName="S" * 300), truth="served", skill_key=True)
    attempt("skill points above maximum", "skill_rating", "quarantine", "percent must be at most 100",
            lambda r: skill(candidateQbScore=r["skills"][0]["qbScore"] + 5)(r), truth="served", skill_key=True)
    attempt("negative skill points", "skill_rating", "quarantine", "points must be at least 0",
            skill(candidateQbScore=-3.0), truth="served", skill_key=True)
    attempt("skill with a zero maximum", "skill_rating", "quarantine", "max_points must be above 0",
            skill(qbScore=0), truth="served", skill_key=True)
    missing_ids = attempt("skills without ids", "skill_rating", "sync", "",
                          lambda r: {**r, "skills": [{k: v for k, v in s.items() if k != "qbId"}
                                                     for s in r["skills"]]}, truth="served")
    missing_ids.facts["note"] = "skills without qbId must not collide in staging"
    return kinds


def _shift(text: str) -> str:
    from datetime import datetime, timedelta, timezone

    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    local = moment.astimezone(timezone(timedelta(hours=5, minutes=30)))
    return local.isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------------------
# Transport-level problems (the whole answer is unusable: the run fails with a clear message)

TRANSPORT_KINDS = [
    # (name, method, path, body, content type, job, message fragment)
    ("HTML error page for the test list", "GET", "/v3/tests",
     "<!DOCTYPE html><html><body><h1>503 Service Unavailable</h1></body></html>", "text/html",
     "assessment_sync_job", "HTML page instead of JSON"),
    ("empty 200 body for the test list", "GET", "/v3/tests", "", "application/json", "assessment_sync_job",
     "empty response body where JSON was expected"),
    ("truncated JSON for the test list", "GET", "/v3/tests", '{"tests": [{"testId": 3', "application/json",
     "assessment_sync_job", "invalid JSON"),
    ("test list page without a tests list", "GET", "/v3/tests", '{"count": 3}', "application/json",
     "assessment_sync_job", "tests page has no 'tests' list"),
    ("HTML error page for Retrieve Invites", "POST", "/v3/candidates/testattempts",
     "<html><body>Gateway Timeout</body></html>", "text/html", "completion_sync_job", "HTML page instead of JSON"),
]

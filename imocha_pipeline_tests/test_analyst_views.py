"""Every query of docs/analyst-queries.md, run on PostgreSQL after a real sync against the sandbox, answers what
the simulators hold: the staged attempts, Degreed's completions and ratings, the quarantine, the drift."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import sqlalchemy as sa

from imocha_pipeline import staging
from imocha_pipeline.sync.completions.skill_mapping import stage_skill_mapping
from imocha_sandbox.runtime import Sandbox, SandboxConfig
from sync_harness import definitions_for

DOC = Path(__file__).resolve().parents[1] / "docs" / "analyst-queries.md"
QUERY = re.compile(r"<!-- check: (\w+) -->\s*```sql\n(.*?)```", re.S)


def documented_queries() -> dict[str, str]:
    text = DOC.read_text(encoding="utf-8")
    found = {name: sql.strip() for name, sql in QUERY.findall(text)}
    assert len(found) == text.count("```sql"), "every ```sql block needs a <!-- check: name --> line above it"
    return found


def level(percent: float) -> int:
    return min(8, int(percent // 12.5) + 1)


def percent_scores(test, percents: list[float]) -> dict[int, float]:
    return {bank.qb_id: round(bank.max_score * p / 100, 2) for bank, p in zip(test.banks, percents, strict=False)}


class World:
    """The scenario: who did what, and the simulators to ask afterwards."""

    def __init__(self, box: Sandbox, url: str, instance, tmp_path: Path):
        self.box, self.url, self.instance = box, url, instance
        self.defs = definitions_for(box, url)
        self.tests = box.world.tests
        known = [x for x in box.world.learners if x.in_degreed]
        self.a, self.b, self.d, self.e, self.f, self.stranger = known[:6]
        self.c = next(x for x in box.world.learners if not x.in_degreed)
        self.mapped_skill = self.tests[0].banks[0].qb_name
        self.skill_map = tmp_path / "skills.csv"
        self.skill_map.write_text(f"imocha_skill,degreed_skill\n{self.mapped_skill.upper()},"
                                  f"Degreed {self.mapped_skill}\n", encoding="utf-8")
        self.attempts: dict[int, dict] = {}  # invitation id -> what we did
        self.run_ids: list[str] = []

    def degreed_name(self, skill: str) -> str:
        return f"Degreed {skill}" if skill == self.mapped_skill else skill

    def run(self, job: str, **kwargs) -> dg.ExecuteInProcessResult:
        result = self.defs.resolve_job_def(job).execute_in_process(instance=self.instance, **kwargs)
        assert result.success, job
        self.run_ids.append(result.run_id)
        return result

    def completions(self):
        today = datetime.now(UTC).date().isoformat()
        stage_skill_mapping(staging.get_engine(self.url))  # what the completion plan does at plan time
        return self.run("completion_sync_job", tags={"dagster/partition": today})

    def attempt(self, learner, test, status="Complete", percents=None, report_changes=None) -> int:
        scores = percent_scores(test, percents) if percents else None
        invitation = self.box.imocha.complete_attempt(test.test_id, learner.email, learner.name, status=status,
                                                      bank_scores=scores)
        report = self.box.imocha.report(invitation, report_type=3)
        if report_changes:
            report.update(report_changes)
            self.box.imocha.set_canned_response("GET", f"/v3/reports/{invitation}", json.dumps(report))
        self.attempts[invitation] = {"email": learner.email.lower(), "test": test, "status": status,
                                     "score": report["scorePercentage"],
                                     "skills": [s["qbName"] for s in report.get("skills") or []]}
        return invitation

    def degreed(self) -> dict:
        return self.box.degreed.state()


@pytest.fixture
def world(postgres_url, tmp_path, monkeypatch):
    monkeypatch.setenv("IMOCHA_PIPELINE_WAITING_RETRY_SECONDS", "0")
    monkeypatch.setenv("IMOCHA_PIPELINE_PROGRESS_SECONDS", "0")
    config = SandboxConfig(seed=41, tests=3, learners=9, attempts=0, degreed_rate_limit=6000)
    with Sandbox(config) as box, dg.instance_for_test() as instance:
        w = World(box, postgres_url, instance, tmp_path)
        monkeypatch.setenv("IMOCHA_PIPELINE_SKILL_MAP", str(w.skill_map))
        t0, t1, t2 = w.tests
        w.run("assessment_sync_job")
        w.first_a = w.attempt(w.a, t0, percents=[30.0, 40.0, 10.0])
        w.attempt(w.b, t1, percents=[70.0] * 3)
        w.attempt(w.c, t0, percents=[55.0] * 3)  # not in Degreed: waits for the learner
        w.attempt(w.d, t1, status="Test Left")  # staged, never sent
        w.broken = w.attempt(w.e, t2, report_changes={"scorePercentage": 135.0})  # fails validation
        w.first_f = w.attempt(w.f, t2, percents=[60.0] * 3)
        w.first_run = w.completions()
        w.a_percents = [95.0, 90.0, 20.0][: len(t0.banks)]
        w.latest_a = w.attempt(w.a, t0, percents=w.a_percents)  # a retake replaces completion and ratings
        w.latest_f = w.attempt(w.f, t2, status="Test Left")  # a retake left unfinished is not sent
        w.completions()

        state = w.degreed()
        w.deleted = next(c for c in state["completions"] if c["user_email"].lower() == w.b.email.lower())
        box.degreed.delete_completion(w.deleted["id"])
        edited_skill = w.degreed_name(t0.banks[1].qb_name)
        w.edited = next(r for r in state["skill_ratings"]
                        if r["user_email"].lower() == w.a.email.lower() and r["skill_name"] == edited_skill)
        w.edited_to = 1 if w.edited["rating"] != 1 else 2
        box.degreed.update_skill_rating(w.edited["id"], rating=w.edited_to)
        w.unknown = box.degreed.add_completion(w.stranger.email, f"imocha-{t1.test_id}",
                                               datetime.now(UTC) - timedelta(days=2))
        w.run("reconcile_job", raise_on_error=False)  # its drift check fails: an edited rating remains
        yield w


# ------------------------------------------------------------------------------------------- truth

def pairs(w: World) -> dict[tuple[str, int], list[int]]:
    """(learner, test id) -> invitation ids, oldest first."""
    out: dict[tuple[str, int], list[int]] = {}
    for invitation, a in sorted(w.attempts.items()):
        out.setdefault((a["email"], a["test"].test_id), []).append(invitation)
    return out


def degreed_completions(w: World) -> dict[tuple[str, str], dict]:
    return {(c["user_email"].lower(), c["content_external_id"]): c for c in w.degreed()["completions"]}


def expected_status(w: World) -> dict[tuple[str, int], str]:
    return {(w.a.email.lower(), w.tests[0].test_id): "synced", (w.b.email.lower(), w.tests[1].test_id): "synced",
            (w.c.email.lower(), w.tests[0].test_id): "waiting_for_learner",
            (w.d.email.lower(), w.tests[1].test_id): "not_sent",
            (w.e.email.lower(), w.tests[2].test_id): "validation",
            (w.f.email.lower(), w.tests[2].test_id): "synced"}


def ratings_in_degreed(w: World) -> dict[tuple[str, str], int]:
    """Degreed's ratings, with the one edited in Degreed at the value we sent (which the ledger shows)."""
    ratings = {(r["user_email"].lower(), r["skill_name"]): r["rating"] for r in w.degreed()["skill_ratings"]}
    ratings[(w.edited["user_email"].lower(), w.edited["skill_name"])] = w.edited["rating"]
    return ratings


def name_of_test(w: World, test_id: int) -> str:
    return next(t.name for t in w.tests if t.test_id == test_id)


# ------------------------------------------------------------------------------------------- checks

def check_sync_status_overview(w: World, rows):
    status = expected_status(w)
    names = {t.name: t.test_id for t in w.tests}
    got = {(r["learner_email"], names[r["test_name"]]): r for r in rows}
    assert {k: r["sync_status"] for k, r in got.items()} == status
    assert [(r["learner_email"], r["test_name"]) for r in rows] == sorted((r["learner_email"], r["test_name"])
                                                                          for r in rows)
    in_degreed = degreed_completions(w)
    for (email, test_id), invitations in pairs(w).items():
        row = got[(email, test_id)]
        assert row["attempts"] == len(invitations)
        assert row["latest_status"] == w.attempts[invitations[-1]]["status"]
        assert (row["sync_status"] == "synced") == ((email, f"imocha-{test_id}") in in_degreed)
    assert "learner not in Degreed yet" in got[(w.c.email.lower(), w.tests[0].test_id)]["quarantine_reason"]
    assert got[(w.e.email.lower(), w.tests[2].test_id)]["quarantine_reason"] == \
        "score_percentage must be at most 100 (got 135.0)"
    assert got[(w.a.email.lower(), w.tests[0].test_id)]["quarantine_reason"] is None


def check_not_in_degreed(w: World, rows):
    assert [(r["sync_status"], r["learner_email"]) for r in rows] == [
        ("not_sent", w.d.email.lower()), ("validation", w.e.email.lower()),
        ("waiting_for_learner", w.c.email.lower())]
    why = {r["sync_status"]: r["why"] for r in rows}
    assert why["not_sent"] is None and "135.0" in why["validation"]
    assert w.c.email.lower() in why["waiting_for_learner"].lower()
    in_degreed = degreed_completions(w)
    assert not any((r["learner_email"], f"imocha-{t.test_id}") in in_degreed
                   for r in rows for t in w.tests if t.name == r["test_name"])


def check_status_counts(w: World, rows):
    counts = {r["sync_status"]: r["pairs"] for r in rows}
    assert counts == {"synced": 3, "waiting_for_learner": 1, "not_sent": 1, "validation": 1}
    ours = {k for k in degreed_completions(w) if k[0] != w.stranger.email.lower()}
    assert counts["synced"] == len(ours)


def check_per_assessment(w: World, rows):
    in_degreed = degreed_completions(w)
    status = expected_status(w)
    for r in rows:
        assert r["test_name"] == name_of_test(w, r["test_id"])
        learners = {email for email, test_id in status if test_id == r["test_id"]}
        assert r["in_degreed"] == sum(1 for email in learners if (email, f"imocha-{r['test_id']}") in in_degreed)
        assert r["in_degreed"] + r["not_in_degreed"] == len(learners)
    assert [r["test_id"] for r in rows] == sorted(t.test_id for t in w.tests)


def check_latest_not_in_degreed(w: World, rows):
    assert [(r["learner_email"], r["latest_status"], r["latest_test_invitation_id"],
             r["degreed_test_invitation_id"]) for r in rows] == [
        (w.f.email.lower(), "Test Left", w.latest_f, w.first_f)]
    shown = degreed_completions(w)[(w.f.email.lower(), f"imocha-{w.tests[2].test_id}")]
    assert shown["percentile"] == pytest.approx(w.attempts[w.first_f]["score"], abs=0.01)


def expected_quarantine(w: World) -> set[tuple[str, str, str, str]]:
    c, t0 = w.c.email.lower(), w.tests[0]
    return ({("completion", "waiting_for_learner", c, f"{c}|imocha-{t0.test_id}"),
             ("completion", "validation", w.e.email.lower(), f"attempt:{w.broken}")}
            | {("skill_rating", "waiting_for_learner", c, f"{c}|{w.degreed_name(b.qb_name)}") for b in t0.banks})


def check_open_quarantine(w: World, rows):
    assert {(r["entity"], r["kind"], r["learner_email"], r["record_key"]) for r in rows} == expected_quarantine(w)
    ages = [float(r["age_hours"]) for r in rows]
    assert ages == sorted(ages, reverse=True) and all(0 <= a < 1 for a in ages)
    users = {u["email"].lower() for u in w.degreed()["users"] if u.get("email")}
    assert all(r["learner_email"] not in users for r in rows if r["kind"] == "waiting_for_learner")


def check_quarantine_by_kind(w: World, rows):
    assert {(r["entity"], r["kind"]): r["records"] for r in rows} == {
        ("completion", "validation"): 1, ("completion", "waiting_for_learner"): 1,
        ("skill_rating", "waiting_for_learner"): len(w.tests[0].banks)}
    assert all(0 <= r["oldest_hours"] < 1 for r in rows)


def check_learners_missing_in_degreed(w: World, rows):
    assert [r["learner_email"] for r in rows] == [w.c.email.lower()]
    assert w.c.email.lower() not in {u["email"].lower() for u in w.degreed()["users"] if u.get("email")}


def check_skill_ratings(w: World, rows):
    assert {(r["learner_email"], r["skill_name"]): r["rating"] for r in rows} == ratings_in_degreed(w)
    mine = {r["skill_name"]: r for r in rows if r["learner_email"] == w.a.email.lower()}
    for bank, percent in zip(w.tests[0].banks, w.a_percents, strict=False):
        row = mine[w.degreed_name(bank.qb_name)]
        assert row["rating"] == level(percent) and row["percent"] == pytest.approx(percent, abs=0.1)
        assert isinstance(row["rated_at"], datetime) and row["rated_at"].tzinfo is not None
    assert [(r["learner_email"], r["skill_name"]) for r in rows] == sorted((r["learner_email"], r["skill_name"])
                                                                           for r in rows)


def check_skill_profile(w: World, rows):
    by_skill: dict[str, list[int]] = {}
    for (_, skill), rating in ratings_in_degreed(w).items():
        by_skill.setdefault(skill, []).append(rating)
    assert {r["skill_name"] for r in rows} == set(by_skill)
    for r in rows:
        values = by_skill[r["skill_name"]]
        assert (r["learners"], r["lowest"], r["highest"]) == (len(values), min(values), max(values))
        assert float(r["average_rating"]) == pytest.approx(sum(values) / len(values))


def check_drift(w: World, rows):
    b_key = f"{w.b.email.lower()}|imocha-{w.tests[1].test_id}"
    a_key = f"{w.a.email.lower()}|{w.edited['skill_name']}"
    assert [(r["entity"], r["kind"], r["learner_email"], r["record_key"], r["repaired"]) for r in rows] == [
        ("completion", "missing_in_degreed", w.b.email.lower(), b_key, True),
        ("completion", "unknown_to_us", None, f"degreed:{w.unknown['id']}", False),
        ("skill_rating", "changed_in_degreed", w.a.email.lower(), a_key, False)]
    assert f"rating: ours {w.edited['rating']}, Degreed {w.edited_to}" in rows[2]["detail"]
    restored = degreed_completions(w)[(w.b.email.lower(), f"imocha-{w.tests[1].test_id}")]
    assert restored["id"] != w.deleted["id"], "the repaired completion is in Degreed again"


def check_unmapped_skills(w: World, rows):
    seen: dict[str, list[dict]] = {}
    for invitation, a in w.attempts.items():
        for skill in a["skills"]:
            seen.setdefault(skill, []).append({"invitation": invitation, **a})
    expected = {skill: (len({x["invitation"] for x in xs}), len({x["email"] for x in xs}),
                        len({x["test"].test_id for x in xs}))
                for skill, xs in seen.items() if skill.lower() != w.mapped_skill.lower()}
    assert {r["skill_name"]: (r["attempts"], r["learners"], r["tests"]) for r in rows} == expected
    assert w.mapped_skill not in {r["skill_name"] for r in rows}


def check_scores_per_assessment(w: World, rows):
    complete = [a for a in w.attempts.values() if a["status"] == "Complete"]
    for r in rows:
        scores = [a["score"] for a in complete if a["test"].test_id == r["test_id"]]
        assert r["test_name"] == name_of_test(w, r["test_id"])
        assert r["attempts"] == len(scores)
        assert r["learners"] == len({a["email"] for a in complete if a["test"].test_id == r["test_id"]})
        assert float(r["average_score"]) == pytest.approx(sum(scores) / len(scores))
        assert r["best_score"] == pytest.approx(max(scores))
    assert {r["test_id"] for r in rows} == {a["test"].test_id for a in complete}


def check_ledger_states(w: World, rows):
    counts = {(r["entity"], r["state"]): r["records"] for r in rows}
    state = w.degreed()
    ours = [c for c in state["completions"] if c["user_email"].lower() != w.stranger.email.lower()]
    assert counts[("assessment", "acknowledged")] == len(
        [a for a in state["assessments"] if a["external_id"].startswith("imocha-")]) == len(w.tests)
    assert counts[("completion", "acknowledged")] == len(ours)
    assert counts[("skill_rating", "acknowledged")] == len(state["skill_ratings"])
    assert counts[("completion", "failed")] == 1 and counts[("skill_rating", "failed")] == len(w.tests[0].banks)
    assert set(counts) == {("assessment", "acknowledged"), ("completion", "acknowledged"),
                           ("completion", "failed"), ("skill_rating", "acknowledged"), ("skill_rating", "failed")}


CHECKS = {name[len("check_"):]: fn for name, fn in globals().items() if name.startswith("check_")}


@pytest.mark.postgres
def test_every_documented_query_answers_what_the_simulators_hold(world):
    """Also: the runs logged the plan's ETA and the apply's progress."""
    queries = documented_queries()
    assert set(queries) == set(CHECKS), "each documented query has a check here, and each check a query"
    engine = staging.get_engine(world.url)
    for name, sql in queries.items():
        with engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(sa.text(sql)).mappings()]
        try:
            CHECKS[name](world, rows)
        except AssertionError as exc:
            raise AssertionError(f"query {name!r}:\n{sql}\nanswered {rows}") from exc

    # The same runs logged the plan's ETA before apply and the apply's progress (a line per record here).
    messages = [entry.user_message for entry in world.instance.all_logs(world.first_run.run_id)]
    assert any(m.startswith("completion plan: ") and "ETA at least" in m for m in messages), messages
    assert any(m.startswith("completion apply: 1/") and "remaining" in m for m in messages), messages
    assert any(m.startswith("completion apply: done: ") for m in messages), messages




def test_the_skill_mapping_is_staged_for_v_unmapped_skills(sqlite_url, tmp_path, monkeypatch):
    engine = staging.get_engine(sqlite_url)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        staging.upsert(conn, staging.imocha_skill_scores, [
            {"test_invitation_id": 1, "skill_id": n, "skill_name": name, "learner_email": "a@example.com",
             "test_id": 7, "attempted_on": now, "attempt_date": now.date(), "points": 1.0, "max_points": 2.0,
             "percent": 50.0, "extracted_at": now} for n, name in enumerate(["Python", "SQL", "Go"])])

    def unmapped() -> list[str]:
        with engine.connect() as conn:
            return [r[0] for r in conn.execute(sa.text("SELECT skill_name FROM v_unmapped_skills ORDER BY 1"))]

    monkeypatch.delenv("IMOCHA_PIPELINE_SKILL_MAP", raising=False)
    assert stage_skill_mapping(engine) == 0 and unmapped() == [], "no mapping configured: nothing is unmapped"
    csv_file = tmp_path / "skills.csv"
    csv_file.write_text("imocha_skill,degreed_skill\npython,Python 3\n PYTHON ,Python (programming)\nsql,SQL\n",
                        encoding="utf-8")
    monkeypatch.setenv("IMOCHA_PIPELINE_SKILL_MAP", str(csv_file))
    assert stage_skill_mapping(engine) == 2
    with engine.connect() as conn:
        rows = {r["imocha_skill_key"]: (r["imocha_skill"], r["degreed_skill"])
                for r in staging.read_rows(conn, staging.skill_mapping)}
    assert rows == {"python": ("PYTHON", "Python (programming)"), "sql": ("sql", "SQL")}, "the last row wins"
    assert unmapped() == ["Go"]
    csv_file.write_text("imocha_skill,degreed_skill\n", encoding="utf-8")
    assert stage_skill_mapping(engine) == 0 and unmapped() == ["Go", "Python", "SQL"], "an empty table maps nothing"
    monkeypatch.delenv("IMOCHA_PIPELINE_SKILL_MAP")
    assert stage_skill_mapping(engine) == 0 and unmapped() == []
    with pytest.raises(FileNotFoundError, match="IMOCHA_PIPELINE_SKILL_MAP"):
        stage_skill_mapping(engine, str(tmp_path / "missing.csv"))

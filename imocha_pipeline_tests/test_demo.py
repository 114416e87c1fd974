"""`make demo`: the product-only install, and `imocha-pipeline demo` telling the story of the sync in a few lines,
with Dagster's event stream, telemetry banner and beta warnings kept out of it unless `--verbose`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from imocha_sandbox.runtime import SandboxConfig
from imocha_sandbox.seed import generate_world

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
NOISE = ("DEBUG", "Telemetry", "usage statistics", "Welcome to Dagster", "BetaWarning", "PreviewWarning",
         "STEP_START", "RUN_START")


def run_demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """The real command, piped as in a CI log (not a terminal), in an empty working directory."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("IMOCHA_PIPELINE_")}
    return subprocess.run([str(BIN / "imocha-pipeline"), "demo", "--workdir", str(tmp_path / "demo"), *args],
                          env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)


def figures(line: str) -> dict[str, int]:
    """``10 assessments, 38 completions, 1 skill rating`` -> {"assessment": 10, ...}."""
    found = re.findall(r"(\d+) (assessment|completion|skill rating)s?\b", line)
    return {noun.replace(" ", "_"): int(n) for n, noun in found}


def the_line(lines: list[str], start: str) -> str:
    matching = [line for line in lines if line.strip().startswith(start)]
    assert matching, f"no line starting with {start!r} in:\n" + "\n".join(lines)
    return matching[0]


@pytest.mark.slow
def test_the_demo_tells_the_story_in_under_60_lines_without_dagsters_noise(tmp_path):
    """The default demo (what `make demo` runs: 70 requests/min, about two minutes), its output piped."""
    completed = run_demo(tmp_path)
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    output = completed.stdout + completed.stderr
    lines = output.splitlines()
    assert len(lines) < 60, output
    for noise in NOISE:
        assert noise not in output, f"{noise!r} in the demo's output:\n{output}"

    world = generate_world(seed=7, tests=SandboxConfig().tests, learners=SandboxConfig().learners,
                           attempts=SandboxConfig().attempts)
    statuses = Counter(a.status for a in world.attempts)
    in_degreed = {x.email for x in world.learners if x.in_degreed}
    # One Degreed completion per learner and assessment (a second attempt at the same test updates it).
    history_completions = len({(a.email, a.test_id) for a in world.attempts
                               if a.status == "Complete" and a.email in in_degreed})

    fetched = [line for line in lines if line.strip().startswith("fetched")]
    assert fetched[0].split() == ["fetched", str(len(world.tests)), "iMocha", "tests,", "0", "Degreed",
                                  "assessments"]
    assert fetched[1].strip().startswith(f"fetched  {len(world.attempts)} attempt(s) (")
    for status, n in statuses.items():
        assert f"{n} {status}" in fetched[1]
    planned = [line for line in lines if line.strip().startswith("planned")]
    sent = [line for line in lines if line.strip().startswith("sent")]
    assert "assessments create 10" in planned[0] and "assessments created 10" in sent[0]
    assert f"completions create {history_completions}" in planned[1]
    assert f"completions created {history_completions}" in sent[1]
    not_sent = sum(n for status, n in statuses.items() if status != "Complete")
    if not_sent:
        assert f"held back: {not_sent} completion" in output

    # The backfill's progress: a few lines at a steady pace when piped, each with the ETA at the rate budget.
    progress = [line for line in lines if line.strip().startswith("sending:")]
    assert 1 <= len(progress) <= 6, progress
    assert all("ETA at least" in line and "rate budget of 70/min" in line for line in progress)

    # Step 3: five new attempts, one by a learner not in Degreed: four sent, one waiting with its reason.
    assert "sensor tick: 1 run(s) requested" in output
    assert "completions created 4" in sent[2] and "quarantined: 1 completion" in sent[2]
    waiting = lines[lines.index(the_line(lines, "Not in Degreed, and why:")) + 1:]
    assert "quarantined (waiting_for_learner), e.g. learner not in Degreed yet" in waiting[0]

    # What the ledger says was acknowledged is what the Degreed simulator holds.
    ledger = figures(the_line(lines, "Ledger, acknowledged by Degreed:"))
    degreed = figures(the_line(lines, "Degreed (the simulator) holds:"))
    assert ledger == degreed
    assert ledger["assessment"] == len(world.tests)
    assert ledger["completion"] == history_completions + 4
    sent_ratings = sum(int(n) for line in sent for n in re.findall(r"skill ratings created (\d+)", line))
    assert ledger["skill_rating"] == sent_ratings

    log = (tmp_path / "demo" / "dagster.log").read_text()
    assert "STEP_START" not in log and "completion apply" in log  # the pipeline's INFO lines, no event stream


def test_verbose_shows_dagsters_event_stream(tmp_path):
    completed = run_demo(tmp_path, "--verbose", "--degreed-rate-limit", "6000")
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    assert "STEP_START" in completed.stderr and " - DEBUG - " in completed.stderr
    assert "completion_sync_job" in completed.stderr
    assert "Telemetry" not in completed.stderr  # the demo's instance has telemetry off, verbose or not
    assert "sent     assessments created 10" in completed.stdout
    assert not (tmp_path / "demo" / "dagster.log").exists()


def _make_dry_run(target: str, *variables: str) -> list[str]:
    """The commands `make` would run for ``target`` on a fresh clone (-B: as if nothing were installed)."""
    env = {key: value for key, value in os.environ.items() if key not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    completed = subprocess.run(["make", "--no-print-directory", "-n", "-B", target, *variables], cwd=REPO, env=env,
                               capture_output=True, text=True, timeout=60, check=True)
    return [line.strip() for line in completed.stdout.splitlines()]


def test_make_demo_installs_the_product_only_and_make_test_adds_the_extras():
    demo = _make_dry_run("demo")
    installs = [line for line in demo if " install " in line and "--upgrade pip" not in line]
    assert len(installs) == 1 and installs[0].split()[-2:] == ["-e", "."], demo
    assert not any("[" in line for line in installs)
    assert demo[-1].endswith("/imocha-pipeline demo")

    test = _make_dry_run("test")
    extras = [line for line in test if " install " in line and "[" in line]
    assert len(extras) == 1 and "'.[test,bench,ui,k8s]'" in extras[0], test
    assert test.index(installs[0]) < test.index(extras[0])
    assert _make_dry_run("setup")[-1].endswith(".installed")

    assert _make_dry_run("demo", "VERBOSE=1")[-1].endswith("demo --verbose")
    assert _make_dry_run("demo", "ARGS=--verbose")[-1].endswith("demo --verbose")


def test_the_progress_line_is_rewritten_in_place_on_a_terminal_and_paced_when_piped(monkeypatch):
    import io
    import time

    from imocha_pipeline.demo_progress import ProgressLine

    figures = iter([(0, 0), *[(done, 140) for done in range(0, 141, 10)]])

    def read() -> tuple[int, int]:
        return next(figures, (140, 140))

    terminal = io.StringIO()
    monkeypatch.setenv("COLUMNS", "200")  # the line is cut to the terminal's width: a wide one first
    with ProgressLine(read, "sending", 70, stream=terminal, tty=True, every_seconds=0.05):
        time.sleep(0.6)
    shown = terminal.getvalue()
    assert "\n" not in shown and shown.count("\r") >= 5  # one line, redrawn; cleared at the end
    assert "sending: fetching and planning" in shown
    assert "sending: 70/140 sent (50%), ETA at least 1 min 00 s at the rate budget of 70/min" in shown
    assert shown.endswith("\r\x1b[K")

    monkeypatch.setenv("COLUMNS", "60")  # a narrow terminal: no redraw wraps onto a second line
    narrow = io.StringIO()
    with ProgressLine(lambda: (70, 140), "sending", 70, stream=narrow, tty=True, every_seconds=0.05):
        time.sleep(0.2)
    drawn = [part.removesuffix("\x1b[K") for part in narrow.getvalue().split("\r") if part.strip("\x1b[K")]
    assert drawn and all(len(part) <= 59 for part in drawn)

    piped = io.StringIO()
    with ProgressLine(lambda: (70, 140), "sending", 70, stream=piped, tty=False, every_seconds=0.2):
        time.sleep(0.75)
    lines = piped.getvalue().splitlines()
    assert 2 <= len(lines) <= 4 and "\r" not in piped.getvalue()
    assert all(line.startswith("   sending: 70/140 sent (50%)") for line in lines)

    planning = io.StringIO()  # piped, nothing until the run has planned: every line carries the figures
    with ProgressLine(lambda: (0, 0), "sending", 70, stream=planning, tty=False, every_seconds=0.1):
        time.sleep(0.35)
    assert planning.getvalue() == ""


def test_not_in_degreed_lines_say_what_becomes_of_each_ledger_state(sqlite_url):
    """Rows sent in a Completions Template file are not "sent again by the next run", and an erased learner's rows
    (erased, deleted) are not waiting for anything: only retried states get "the next run sends them again"."""
    from datetime import UTC, datetime

    from imocha_pipeline import staging
    from imocha_pipeline.demo_story import waiting_lines

    engine = staging.get_engine(sqlite_url)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(staging.sync_ledger.insert(), [
            {"entity": "completion", "record_key": key, "state": state, "attempts": 1, "created_at": now,
             "updated_at": now}
            for key, state in (("a@x.com|imocha-1", "failed"), ("b@x.com|imocha-1", "sent_by_file"),
                               ("erased:00|imocha-1", "erased"), ("erased:01|imocha-1", "deleted"))])
    lines = waiting_lines(engine, limit=10)
    assert lines == ["1 completion failed in the ledger: the next run sends them again",
                     "1 completion sent_by_file in the ledger: in a Completions Template file; the reconcile confirms "
                     "them or sends them by API after the grace period"]

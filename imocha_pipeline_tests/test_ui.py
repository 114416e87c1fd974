"""The Dagster UI, checked for real: `dagster-webserver -w workspace.yaml` serves the code location after a
demo-sized sync, its GraphQL API lists every asset, check, job, sensor and schedule DESIGN.md names, and headless
Chromium (Debian's package, driven by Playwright's Python package) opens the pages a data engineer reads: the asset
graph as three flows, the partitions of imocha_completions, the latest apply materialization, the guard check.

Screenshots go to IMOCHA_PIPELINE_SCREENSHOT_DIR (default: the test's temp dir); docs/ui.md shows them and says
how to regenerate docs/ui/*.png."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import requests
import yaml

from imocha_pipeline.defs.partitions import HISTORY_START
from imocha_pipeline.staging import dispose_engine
from imocha_sandbox.runtime import Sandbox, SandboxConfig
from sync_harness import definitions_for

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Test-only switches (not product settings): where the PNGs go, and whether a missing browser fails the test.
SCREENSHOT_DIR = "IMOCHA_PIPELINE_SCREENSHOT_DIR"
CHROMIUM = os.environ.get("IMOCHA_PIPELINE_CHROMIUM", "/usr/bin/chromium")
# Flags for a headless run on a server: no GPU, no sandbox (root in CI), no calls home.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

ASSETS = {"imocha_assessments", "degreed_assessments", "desired_assessments", "assessment_sync_plan",
          "assessment_sync_apply", "imocha_completions", "imocha_skill_scores", "completion_sync_plan",
          "completion_sync_apply", "completion_catch_up", "degreed_completions", "degreed_skill_ratings", "sync_drift",
          "degreed_completions_file"}
# The asset groups: the graph reads as the three flows.
FLOWS = {
    "assessments": {"imocha_assessments", "degreed_assessments", "desired_assessments", "assessment_sync_plan",
                    "assessment_sync_apply"},
    "completions": {"imocha_completions", "imocha_skill_scores", "completion_sync_plan", "completion_sync_apply",
                    "completion_catch_up", "degreed_completions_file"},
    "reconcile": {"degreed_completions", "degreed_skill_ratings", "sync_drift"},
}
CHECKS = {"desired_assessments_valid": "desired_assessments", "assessment_plan_guard": "assessment_sync_plan",
          "completion_payloads_valid": "completion_sync_plan", "no_drift_after_repair": "sync_drift"}
JOBS = {"assessment_sync_job", "completion_sync_job", "catch_up_job", "reconcile_job", "retention_job", "forget_job"}
SENSORS = {"imocha_completions_sensor", "imocha_callbacks_sensor"}
SCHEDULES = {"assessment_sync_schedule", "catch_up_schedule", "reconcile_schedule", "retention_schedule",
             "completion_day_end_schedule"}

# What the latest materialization of completion_sync_apply (today's day) shows: its non-zero outcomes, not the
# outcomes that are 0, and the table of the records sent and held back (defs/metadata.py, RECORD_COLUMNS).
APPLY_OUTCOME_KEYS = ("completion_due", "completion_created", "skill_rating_created")
APPLY_ZERO_KEYS_HIDDEN = ("completion_updated", "completion_retired", "skill_rating_superseded")
APPLY_SENT_RECORDS_TEXT = ("record_key", "outcome", "detail", "created")

DEFINITIONS_QUERY = """
{
  repositoriesOrError {
    __typename
    ... on RepositoryConnection {
      nodes { name jobs { name } sensors { name } schedules { name } }
    }
    ... on PythonError { message }
  }
  assetNodes {
    assetKey { path }
    assetChecksOrError {
      ... on AssetChecks { checks { name blocking executionForLatestMaterialization { status } } }
    }
  }
}
"""


def browser_unavailable_reason() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright's Python package is not installed (pip install -e '.[ui]')"
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def graphql(url: str, query: str) -> dict:
    answer = requests.post(f"{url}/graphql", json={"query": query}, timeout=30)
    answer.raise_for_status()
    body = answer.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


def materialize_everything(home: Path, box: Sandbox, staging_url: str) -> int:
    """A demo-sized sync on the instance the webserver will read: the assessments, "sync everything not yet
    synced" (one backfill run over every day from IMOCHA_PIPELINE_HISTORY_START, the README's command) with an
    attempt finished today, and the reconcile. Returns the number of days the backfill read."""
    learner = next(x for x in box.world.learners if x.in_degreed)
    now = datetime.now(UTC)
    started = max(now - timedelta(minutes=20), now.replace(hour=0, minute=0, second=1, microsecond=0))
    box.imocha.complete_attempt(box.world.tests[0].test_id, learner.email, learner.name, bank_scores=75.0,
                                attempted_on=started, time_taken_seconds=5)
    first = date.fromisoformat(HISTORY_START)
    defs = definitions_for(box, staging_url)
    instance = dg.DagsterInstance.from_config(str(home))
    try:
        assert defs.resolve_job_def("assessment_sync_job").execute_in_process(instance=instance).success
        assert defs.resolve_job_def("completion_sync_job").execute_in_process(
            instance=instance, tags={"dagster/asset_partition_range_start": first.isoformat(),
                                     "dagster/asset_partition_range_end": now.date().isoformat()}).success
        assert defs.resolve_job_def("reconcile_job").execute_in_process(instance=instance).success
    finally:
        instance.dispose()
    return (now.date() - first).days + 1


def graph_area(page, margin: int = 24) -> dict:
    """The part of the page the asset graph's nodes cover, with a margin."""
    boxes = [box for box in (node.bounding_box() for node in page.locator("foreignObject").all()) if box]
    left, top = min(b["x"] for b in boxes) - margin, min(b["y"] for b in boxes) - margin
    right = max(b["x"] + b["width"] for b in boxes) + margin
    bottom = max(b["y"] + b["height"] for b in boxes) + margin
    viewport = page.viewport_size
    left, top = max(0, left), max(0, top)
    return {"x": left, "y": top, "width": min(viewport["width"], right) - left,
            "height": min(viewport["height"], bottom) - top}


@pytest.fixture(scope="module")
def webserver(tmp_path_factory):
    """dagster-webserver on a free port of 127.0.0.1, with a temp DAGSTER_HOME and the sandbox's settings."""
    tmp = tmp_path_factory.mktemp("ui")
    home = tmp / "dagster_home"
    home.mkdir()
    # The local default instance (the root dagster.yaml), without the newsletter dialog of a first visit.
    instance_config = yaml.safe_load((REPO / "dagster.yaml").read_text()) | {"nux": {"enabled": False}}
    (home / "dagster.yaml").write_text(yaml.safe_dump(instance_config))
    staging_url = f"sqlite:///{tmp / 'staging.sqlite'}"
    log = tmp / "webserver.log"
    # The demo's world (SandboxConfig's defaults: 10 tests, 30 learners, 40 attempts over 14 days), fast budget.
    with Sandbox(SandboxConfig(seed=41, degreed_rate_limit=6000)) as box:
        days_read = materialize_everything(home, box, staging_url)
        dispose_engine(staging_url)
        port = free_port()
        env = {**os.environ, **box.env(), "DAGSTER_HOME": str(home), "IMOCHA_PIPELINE_STAGING_DB_URL": staging_url}
        with log.open("w") as out:
            process = subprocess.Popen(
                [str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                if process.poll() is not None:
                    pytest.fail(f"dagster-webserver exited with {process.returncode}:\n{log.read_text()[-4000:]}")
                try:
                    repos = graphql(url, "{ repositoriesOrError { __typename } }")["repositoriesOrError"]
                    if repos["__typename"] == "RepositoryConnection":
                        break
                except (requests.RequestException, AssertionError):
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"dagster-webserver did not load the code location in 120 s:\n"
                                f"{log.read_text()[-4000:]}")
                time.sleep(1)
            yield url, tmp, days_read
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, 9)
                process.wait(timeout=10)


def test_graphql_lists_every_named_asset_check_job_sensor_and_schedule(webserver):
    url, _, _ = webserver
    data = graphql(url, DEFINITIONS_QUERY)
    repositories = data["repositoriesOrError"]
    assert repositories["__typename"] == "RepositoryConnection", repositories
    [repository] = repositories["nodes"]
    assert {job["name"] for job in repository["jobs"]} >= JOBS
    assert {sensor["name"] for sensor in repository["sensors"]} == SENSORS
    assert {schedule["name"] for schedule in repository["schedules"]} == SCHEDULES

    assets = {"/".join(node["assetKey"]["path"]): node for node in data["assetNodes"]}
    assert set(assets) == ASSETS
    checks = {check["name"]: (key, check) for key, node in assets.items()
              for check in node["assetChecksOrError"]["checks"]}
    assert {name: key for name, (key, _) in checks.items()} == CHECKS
    for name, (_, check) in checks.items():
        assert check["executionForLatestMaterialization"]["status"] == "SUCCEEDED", name
    assert all(checks[name][1]["blocking"] for name in
               ("desired_assessments_valid", "assessment_plan_guard", "completion_payloads_valid"))


def screenshot_dir(tmp: Path) -> Path:
    """IMOCHA_PIPELINE_SCREENSHOT_DIR (e.g. docs/ui to refresh the docs' pictures), else the test's temp dir."""
    configured = os.environ.get(SCREENSHOT_DIR)
    folder = (REPO / configured) if configured and not Path(configured).is_absolute() else Path(configured or tmp)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_ui_pages_a_data_engineer_reads_in_chromium(webserver):
    reason = browser_unavailable_reason()
    if reason:
        if os.environ.get("IMOCHA_PIPELINE_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{reason} (required: IMOCHA_PIPELINE_REQUIRE_BROWSER=1)")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    url, tmp, days_read = webserver
    shots = screenshot_dir(tmp)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1600})
            page.set_default_timeout(60_000)

            # First open of the global asset graph (a fresh browser: nothing remembered): the three flows.
            page.goto(f"{url}/asset-groups", wait_until="networkidle")
            for group in FLOWS:
                page.get_by_text(group, exact=True).first.wait_for()
            first_open = settled_graph_text(page)
            # Each group's node: its name, then how many of its assets are in each state.
            assert group_counts(first_open) == {group: len(assets) for group, assets in FLOWS.items()}, first_open
            assert "…" not in first_open, first_open[:2000]  # no name cut in the middle
            page.wait_for_timeout(500)
            page.screenshot(path=str(shots / "asset-graph-first-open.png"), clip=graph_area(page))

            # Every flow expanded: each asset under its full name, the latest check results.
            page.locator("[aria-label=settings]").last.click()
            page.get_by_role("menuitem", name="Expand all groups").click()
            page.keyboard.press("Escape")
            page.get_by_text("Hide navigation").click()
            page.reload(wait_until="networkidle")
            for name in sorted(ASSETS):
                page.get_by_text(name, exact=True).first.wait_for()
            page.locator("[aria-label=panel_show_right]").first.click()  # hide the group tree beside the graph
            graph = settled_graph_text(page)
            assert set(graph.split()) >= ASSETS | set(FLOWS), graph[:2000]
            assert "…" not in graph, graph[:2000]
            assert "1 / 1 Passed" in graph  # the check results of the latest materializations
            assert graph.count("100% filled") == 4, graph  # the four partitioned assets: every day synced
            page.wait_for_timeout(500)  # let the last edges settle before the picture
            page.screenshot(path=str(shots / "asset-graph.png"), clip=graph_area(page))

            # The partitions of imocha_completions: synced days at a glance.
            page.goto(f"{url}/assets/imocha_completions?view=partitions", wait_until="networkidle")
            page.set_viewport_size({"width": 1600, "height": 1000})
            page.get_by_text("Materialized (").first.wait_for()
            today = datetime.now(UTC).date().isoformat()
            page.locator(f"text='{today}' >> visible=true").last.click()  # today's day in the list
            page.get_by_text("Latest materialization").first.wait_for()
            page.wait_for_timeout(1000)
            partitions = page.inner_text("body")
            # Every day the backfill read is materialized, those without attempts too: nothing missing.
            assert all(f"{state} ({count})" in partitions for state, count in (
                ("Materialized", days_read), ("Missing", 0), ("Failed", 0))), partitions[:2000]
            page.screenshot(path=str(shots / "imocha_completions-partitions.png"))

            # The latest materialization of completion_sync_apply: what was sent.
            page.goto(f"{url}/assets/completion_sync_apply?view=events", wait_until="networkidle")
            page.get_by_text(APPLY_OUTCOME_KEYS[0], exact=True).first.wait_for()
            events = page.inner_text("body")
            assert all(key in events for key in APPLY_OUTCOME_KEYS), events[:3000]
            assert all(text in events for text in APPLY_SENT_RECORDS_TEXT), events[:3000]
            assert not any(key in events for key in APPLY_ZERO_KEYS_HIDDEN), events[:3000]
            page.screenshot(path=str(shots / "completion_sync_apply-latest.png"), full_page=True)

            # The guard's page: its verdict next to its figures.
            page.goto(f"{url}/assets/assessment_sync_plan?view=checks", wait_until="networkidle")
            page.get_by_text("This is a blocking asset check.").wait_for()
            guard = page.inner_text("body")
            assert "assessment_plan_guard" in guard and "Passed" in guard, guard[:2000]
            assert all(f"{figure}_limit" in guard for figure in ("retire_share", "shrink_share")), guard[:2000]
            page.screenshot(path=str(shots / "assessment_plan_guard.png"))

            # An asset's checks tab: the blocking validation check's latest result and its metadata.
            page.goto(f"{url}/assets/desired_assessments?view=checks", wait_until="networkidle")
            page.get_by_text("This is a blocking asset check.").wait_for()
            checks_tab = page.inner_text("body")
            assert "desired_assessments_valid" in checks_tab
            assert "Evaluation result" in checks_tab and "Passed" in checks_tab
            assert "staged_rows" in checks_tab  # the check's metadata
            page.screenshot(path=str(shots / "desired_assessments-checks.png"))
        finally:
            browser.close()

    for picture in ("asset-graph-first-open", "asset-graph", "imocha_completions-partitions",
                    "completion_sync_apply-latest", "assessment_plan_guard", "desired_assessments-checks"):
        assert (shots / f"{picture}.png").stat().st_size > 5_000, picture
    print(f"screenshots in {shots}")


def graph_text(page) -> str:
    """The text of the asset graph's nodes (group and asset names, their status lines)."""
    return "\n".join(node.inner_text() for node in page.locator("foreignObject > *").all())


def settled_graph_text(page, seconds: float = 30) -> str:
    """The graph's text once the nodes' statuses (and their partition health) have loaded."""
    deadline = time.monotonic() + seconds
    while (("fetching" in (text := graph_text(page)) or "Loading..." in text)
           and time.monotonic() < deadline):
        page.wait_for_timeout(250)
    return text


def group_counts(text: str) -> dict[str, int]:
    """The collapsed groups' names and asset counts in the graph's text (a name, then a count per asset state)."""
    counts: dict[str, int] = {}
    group = None
    for line in text.split():
        if line.isdigit() and group is not None:
            counts[group] += int(line)
        elif not line.isdigit():
            group = line
            counts.setdefault(group, 0)
    return counts

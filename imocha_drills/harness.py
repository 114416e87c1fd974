"""The drill harness: a seeded sandbox with fault gates, the real jobs, and the truth to compare Degreed with.

A drill: ``Drill(size, staging_url)`` seeds the sandbox; ``sync_all()`` runs assessment_sync_job,
completion_sync_job over the whole history range and reconcile_job (in this process, on a Dagster test
instance whose event log stays readable), or ``start_child(...)`` runs one job in a child process that the
drill may SIGKILL. ``compare()`` computes what Degreed must hold from the iMocha simulator's state and
counts lost / duplicated / wrong / extra records and the requests both APIs answered.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import multiprocessing
import os
import secrets
import signal
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import dagster as dg

from imocha_drills.gate import Gate, GateRule
from imocha_pipeline import staging
from imocha_pipeline.definitions import build_definitions
from imocha_pipeline.defs.resources import resources_from_settings
from imocha_pipeline.settings import DEGREED_REQUIRED_SCOPES
from imocha_pipeline.sync.assessments.mapping import plain_text_title
from imocha_pipeline.sync.completions.mapping import CompletionMapping
from imocha_sandbox.degreed import DEFAULT_CLIENT_ID, ApiClientSpec
from imocha_sandbox.runtime import Sandbox, SandboxConfig
from imocha_sandbox.server import ServerThread

PROVIDER = "IMOCHA"
PREFIX = "imocha-"
BANDS = tuple(12.5 * i for i in range(1, 8))
FAULT_KINDS_NOT_PROCESSED = {"error_5xx", "rate_429", "drop"}
# Settings every drill run uses: waiting records retried at once, short claim leases, short read timeouts.
DRILL_ENV = {
    "IMOCHA_PIPELINE_WAITING_RETRY_SECONDS": "0",
    "IMOCHA_PIPELINE_CLAIM_LEASE_SECONDS": "5",
    "IMOCHA_PIPELINE_HTTP_READ_TIMEOUT_SECONDS": "3",
}


class DrillSandbox(Sandbox):
    """The sandbox with a fault gate in front of each simulator and secrets unique to this drill."""

    def __init__(self, config: SandboxConfig, world=None):
        super().__init__(config, world)
        self.imocha_key = "imk-" + secrets.token_hex(12)
        self.degreed_secret = "dgs-" + secrets.token_hex(12)
        self.imocha.api_key = self.imocha_key
        self.degreed.add_client(DEFAULT_CLIENT_ID, ApiClientSpec(self.degreed_secret,
                                                                 frozenset(DEGREED_REQUIRED_SCOPES), PROVIDER))
        # Ratings posted twice show up twice: a duplicate send is visible in Degreed's state.
        self.degreed.configure(skill_rating_duplicates="always-new")
        self.degreed_gate = Gate(self.degreed.app)
        self.imocha_gate = Gate(self.imocha.app)
        self._imocha_server = ServerThread(self.imocha_gate, port=config.imocha_port)
        self._degreed_server = ServerThread(self.degreed_gate, port=config.degreed_port)

    def env(self) -> dict[str, str]:
        values = super().env()
        values["IMOCHA_API_KEY"] = self.imocha_key
        values["DEGREED_CLIENT_SECRET"] = self.degreed_secret
        return values

    def secrets(self) -> list[str]:
        """Every secret of this drill: both API credentials and every token Degreed handed out."""
        return [self.imocha_key, self.degreed_secret, *self.degreed.issued_tokens()]


def history_tags(days: int) -> dict[str, str]:
    today = datetime.now(UTC).date()
    return {"dagster/asset_partition_range_start": (today - timedelta(days=days + 1)).isoformat(),
            "dagster/asset_partition_range_end": today.isoformat()}


def today_tags() -> dict[str, str]:
    return {"dagster/partition": datetime.now(UTC).date().isoformat()}


# ---------------------------------------------------------------------------------------------------------
# Child processes (SIGKILL-able runs)


_context = None


def _fork_context():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(["imocha_drills.child"])
    return _context


@dataclass
class ChildRun:
    process: Any
    log_path: Path
    result_path: Path
    started: float = field(default_factory=time.monotonic)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.join(30)

    def wait(self, timeout: float = 120) -> dict:
        self.process.join(timeout)
        if self.process.is_alive():
            self.kill()
            raise AssertionError(f"child run did not finish in {timeout} s; log: {self.log_path}")
        if self.result_path.exists():
            return json.loads(self.result_path.read_text())
        return {"success": False, "failures": [], "exitcode": self.process.exitcode}

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


# ---------------------------------------------------------------------------------------------------------
# The drill


class Drill:
    """One seeded world, its staging database and the jobs; see the module docstring."""

    def __init__(self, size: SandboxConfig, staging_url: str, *, degreed_rate_limit: int = 100_000,
                 workdir: str | None = None, extra_env: dict[str, str] | None = None):
        self.size = size
        self.staging_url = staging_url
        self.sandbox = DrillSandbox(replace(size, degreed_rate_limit=degreed_rate_limit)).start()
        self.env = {**DRILL_ENV, **(extra_env or {})}
        self._saved_env = {name: os.environ.get(name) for name in self.env}
        os.environ.update(self.env)
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="drill-"))
        self.children: list[ChildRun] = []
        self._log_buffer = io.StringIO()
        self._log_handler = logging.StreamHandler(self._log_buffer)
        self._log_handler.setLevel(logging.DEBUG)
        self._log_handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        root = logging.getLogger()
        self._root_level = root.level
        root.addHandler(self._log_handler)
        root.setLevel(logging.DEBUG)
        self._instance_cm = dg.instance_for_test()
        self.instance = self._instance_cm.__enter__()
        self.results: list[dg.ExecuteInProcessResult] = []
        self.defs = build_definitions(resources_from_settings(self.sandbox.env(), staging_url))
        staging.get_engine(staging_url)  # the schema exists before any child starts
        self.marks = (self.sandbox.imocha.log.last_seq, self.sandbox.degreed.log.last_seq)

    def close(self) -> None:
        for child in self.children:
            if child.process.is_alive():
                child.kill()
        self._instance_cm.__exit__(None, None, None)
        self.sandbox.stop()
        root = logging.getLogger()
        root.removeHandler(self._log_handler)
        root.setLevel(self._root_level)
        staging.dispose_engine(self.staging_url)
        for name in self.env:
            self._saved_env.setdefault(name, None)
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    def __enter__(self) -> Drill:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def debug_log(self) -> str:
        """Everything logged in this process (DEBUG and up) while the drill ran."""
        return self._log_buffer.getvalue()

    # -- runs --------------------------------------------------------------------------------------------

    def run(self, job: str, tags: dict[str, str] | None = None, run_config=None, defs=None):
        result = (defs or self.defs).resolve_job_def(job).execute_in_process(
            instance=self.instance, tags=tags, run_config=run_config, raise_on_error=False)
        self.results.append(result)
        return result

    def run_completions(self, **kwargs):
        return self.run("completion_sync_job", history_tags(self.size.history_days), **kwargs)

    def sync_all(self, reconcile: bool = True) -> list:
        """What an operator runs to bring everything in step: assessments, the whole history, reconcile."""
        results = [self.run("assessment_sync_job"), self.run_completions()]
        if reconcile:
            results.append(self.run("reconcile_job"))
        return results

    def start_child(self, job: str, tags: dict[str, str] | None = None) -> ChildRun:
        index = len(self.children)
        log_path = self.workdir / f"child-{index}.log"
        result_path = self.workdir / f"child-{index}.json"
        from imocha_drills.child import run_job

        process = _fork_context().Process(
            target=run_job, args=(job, self.sandbox.env(), self.staging_url, tags or {}, self.env, str(log_path),
                                  str(result_path)), daemon=True)
        process.start()
        child = ChildRun(process, log_path, result_path)
        self.children.append(child)
        return child

    def child_completions(self) -> ChildRun:
        return self.start_child("completion_sync_job", history_tags(self.size.history_days))

    # -- the truth and the comparison ---------------------------------------------------------------------

    def truth(self, overrides: dict[int, dict | None] | None = None, held_tests: set[str] = frozenset()) -> Truth:
        return compute_truth(self.sandbox, overrides or {}, held_tests)

    def compare(self, truth: Truth | None = None) -> Comparison:
        truth = truth or self.truth()
        return compare(truth, self.sandbox, self.marks)

    def ledger(self) -> list[dict]:
        with staging.get_engine(self.staging_url).connect() as conn:
            return staging.read_rows(conn, staging.sync_ledger)

    def quarantine(self) -> list[dict]:
        with staging.get_engine(self.staging_url).connect() as conn:
            return staging.read_rows(conn, staging.sync_quarantine)




# ---------------------------------------------------------------------------------------------------------
# Truth


def _seconds(text: str | None) -> str | None:
    if not text:
        return None
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def level(points: float, maximum: float) -> int:
    """Degreed's level for a skill score, on the exact value of points / maximum (a score on a band edge)."""
    return CompletionMapping(bands=BANDS).level_for(points, maximum)


@dataclass
class Truth:
    assessments: dict[str, dict]  # external id -> {"title", "url"}
    completions: dict[tuple[str, str], dict]  # (email, external id) -> {"percentile", "completed_at"}
    ratings: dict[tuple[str, str], dict]  # (email, skill) -> {"rating"}
    waiting_learners: set[str]

    @property
    def total(self) -> int:
        return len(self.assessments) + len(self.completions) + len(self.ratings)


def launch_url(sim_test) -> str | None:
    active = [link for link in sim_test.links if link.status == "active"]
    if not active:
        return None
    chosen = ([link for link in active if not link.is_api_link] or active)[0]
    return f"https://test.imocha.io/{quote(chosen.key, safe='')}"


def compute_truth(sandbox: Sandbox, overrides: dict[int, dict | None], held_tests: set[str] = frozenset()) -> Truth:
    """What Degreed must hold, from the iMocha simulator's state (``overrides``: reports as served, or None for
    attempts that must stay out because their data is bad; ``held_tests``: external ids of tests whose data is
    bad, which stay in quarantine)."""
    imocha, degreed = sandbox.imocha, sandbox.degreed
    assessments = {}
    for test in imocha.tests.values():
        url = launch_url(test)
        title, _ = plain_text_title(test.name)
        if url and title and len(title) <= 255 and f"{PREFIX}{test.test_id}" not in held_tests:
            assessments[f"{PREFIX}{test.test_id}"] = {"title": title, "url": url}
    users = {u["email"].casefold() for u in degreed.state()["users"]}
    completions: dict[tuple[str, str], tuple] = {}
    ratings: dict[tuple[str, str], tuple] = {}
    waiting: set[str] = set()
    for invitation_id, inv in sorted(imocha.invitations.items()):
        if inv.status != "Complete":
            continue
        report = overrides.get(invitation_id, imocha.report(invitation_id, report_type=3)) \
            if invitation_id in overrides else imocha.report(invitation_id, report_type=3)
        if report is None:
            continue
        email = (report.get("candidateEmail") or inv.email).strip()
        external_id = f"{PREFIX}{report.get('testId', inv.test_id)}"
        if email.casefold() not in users:
            waiting.add(email.lower())
            continue
        when = _seconds(report["attemptedOn"])
        order = (when, invitation_id)
        key = (email.lower(), external_id)
        if external_id in assessments and (key not in completions or completions[key][0] < order):
            completions[key] = (order, {"percentile": float(report["scorePercentage"]), "completed_at": when})
        for skill in report.get("skills") or []:
            name = (skill.get("qbName") or "").strip()
            points, maximum = skill.get("candidateQbScore"), skill.get("qbScore")
            if not name or len(name) > 255 or not maximum or maximum <= 0 or points is None or points < 0 \
                    or points > maximum:
                continue  # a bad skill score stays in quarantine
            rkey = (email.lower(), name)
            if rkey not in ratings or ratings[rkey][0] < order:
                ratings[rkey] = (order, {"rating": level(points, maximum)})
    return Truth(assessments, {k: v[1] for k, v in completions.items()}, {k: v[1] for k, v in ratings.items()},
                 waiting)


# ---------------------------------------------------------------------------------------------------------
# Comparison


@dataclass
class Comparison:
    expected: int
    lost: list = field(default_factory=list)
    duplicated: list = field(default_factory=list)
    wrong: list = field(default_factory=list)
    extra: list = field(default_factory=list)
    duplicate_sends: list = field(default_factory=list)  # records Degreed accepted a create for more than once
    requests: dict[str, int] = field(default_factory=dict)
    creates_by_key: Counter = field(default_factory=Counter)

    @property
    def exact(self) -> bool:
        return not (self.lost or self.duplicated or self.wrong or self.extra or self.duplicate_sends)

    def summary(self) -> str:
        return (f"expected {self.expected}, lost {len(self.lost)} {self.lost[:5]}, duplicated "
                f"{len(self.duplicated)} {self.duplicated[:5]}, wrong {len(self.wrong)} {self.wrong[:5]}, extra "
                f"{len(self.extra)} {self.extra[:5]}, duplicate sends {len(self.duplicate_sends)} "
                f"{self.duplicate_sends[:5]}, requests {self.requests}")


def degreed_records(sandbox: Sandbox) -> tuple[dict, dict, dict]:
    state = sandbox.degreed.state()
    assessments: dict[str, list] = {}
    for a in state["assessments"]:
        if a.get("provider_code") == PROVIDER and str(a.get("external_id") or "").startswith(PREFIX) \
                and not a.get("obsolete"):
            assessments.setdefault(a["external_id"], []).append(a)
    completions: dict[tuple, list] = {}
    for c in state["completions"]:
        if c.get("provider_code") == PROVIDER:
            completions.setdefault((c["user_email"].lower(), c["content_external_id"]), []).append(c)
    ratings: dict[tuple, list] = {}
    for r in state["skill_ratings"]:
        if r.get("provider_code") == PROVIDER:
            ratings.setdefault((r["user_email"].lower(), r["skill_name"]), []).append(r)
    return assessments, completions, ratings


def create_key(entry) -> tuple[str, Any] | None:
    """The record a logged create request was for (from its body)."""
    if entry.method != "POST" or not entry.body:
        return None
    try:
        attributes = json.loads(entry.body)["data"]["attributes"]
    except (ValueError, KeyError, TypeError):
        return None
    if entry.path == "/api/v2/content/assessments":
        return ("assessment", attributes.get("external-id"))
    if entry.path == "/api/v2/completions":
        return ("completion", (str(attributes.get("user-id")).lower(), attributes.get("content-id")))
    if entry.path == "/api/v2/skill-ratings":
        return ("skill_rating", (str(attributes.get("user-id")).lower(), attributes.get("skill-name")))
    return None


def processed(entry) -> bool:
    """Did the simulator process this request (a fault may have answered or dropped it before)?"""
    return entry.fault not in FAULT_KINDS_NOT_PROCESSED


def request_counts(sandbox: Sandbox, marks: tuple[int, int]) -> dict[str, int]:
    imocha = sandbox.imocha.log.entries(marks[0])
    degreed = [e for e in sandbox.degreed.log.entries(marks[1])]
    return {
        "imocha": len(imocha),
        "degreed": len(degreed),
        "degreed_writes": len(sandbox.degreed.log.writes(marks[1])),
        "faults": sum(1 for e in imocha + degreed if e.fault),
        "total": len(imocha) + len(degreed),
    }


def compare(truth: Truth, sandbox: Sandbox, marks: tuple[int, int]) -> Comparison:
    assessments, completions, ratings = degreed_records(sandbox)
    result = Comparison(expected=truth.total)
    for kind, want, have, fields in (
        ("assessment", truth.assessments, assessments, ("title", "url")),
        ("completion", truth.completions, completions, ("percentile", "completed_at")),
        ("skill_rating", truth.ratings, ratings, ("rating",)),
    ):
        for key, values in want.items():
            found = have.get(key, [])
            if not found:
                result.lost.append((kind, key))
                continue
            if len(found) > 1:
                result.duplicated.append((kind, key, len(found)))
            record = found[0]
            for name in fields:
                mine, theirs = values[name], record.get(name)
                if name == "completed_at":
                    theirs = _seconds(theirs)
                if isinstance(mine, float):
                    same = theirs is not None and math.isclose(mine, float(theirs), abs_tol=1e-6)
                else:
                    same = mine == theirs
                if not same:
                    result.wrong.append((kind, key, name, mine, theirs))
        for key in have:
            if key not in want:
                result.extra.append((kind, key))
    creates = Counter()
    for entry in sandbox.degreed.log.entries(marks[1]):
        key = create_key(entry)
        if key is not None and processed(entry) and 200 <= entry.status < 300:
            creates[key] += 1
    result.creates_by_key = creates
    result.duplicate_sends = [key for key, count in creates.items() if count > 1]
    result.requests = request_counts(sandbox, marks)
    return result


def processed_creates(sandbox: Sandbox, since: int = 0) -> Counter:
    """Create requests the simulator processed (any answer, 409 included), per record."""
    counts = Counter()
    for entry in sandbox.degreed.log.entries(since):
        key = create_key(entry)
        if key is not None and processed(entry):
            counts[key] += 1
    return counts


def ledger_key(entity: str, key) -> tuple[str, Any]:
    """A ledger row's record key as a ``create_key`` tuple."""
    if entity == "assessment":
        return (entity, key)
    email, _, rest = key.partition("|")
    return (entity, (email, rest))


def scan_for_secrets(texts: dict[str, str], secrets_list: list[str]) -> list[tuple[str, str]]:
    """(where, which secret prefix) for every secret found in any text."""
    found = []
    for where, text in texts.items():
        for secret in secrets_list:
            if secret and secret in text:
                found.append((where, secret[:6] + "…"))
    return found


__all__ = ["Comparison", "Drill", "GateRule", "Truth", "compare", "compute_truth", "history_tags",
           "processed_creates", "scan_for_secrets", "today_tags"]

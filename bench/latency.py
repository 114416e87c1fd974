"""Benchmarks 6 and 7: end-to-end latency through a real ``dagster-daemon``, and one run's overhead.

The stack is what a deployment runs, on this machine: the sandbox (its own process) plays iMocha and
Degreed; ``dagster-daemon run -w workspace.yaml`` (which starts the code server and launches runs) with
a fresh ``DAGSTER_HOME`` holding the repository's ``dagster.yaml``; ``imocha-pipeline callbacks`` serves
the callback endpoint. The environment points every process at the sandbox and at a fresh SQLite
staging database. The schedules are moved to 1 January so that no hourly sync runs in the middle.

6. Attempts finish in the simulator one every ``spacing`` seconds (so they land at every phase of the
   sensor interval); each one's latency is from its finish to the moment Degreed created its completion
   (the simulator's ``added_at``). Once with the polling sensor (callbacks not registered), once with
   callbacks (the polling sensor's interval set to a day, so only the callback path can deliver).
7. One attempt, delivered by callback, after the stack is idle: the run's launch-to-success time, beside
   the same job run in process for one attempt (the work itself, no launch).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.report import Result, percentile, quiet_warnings
from bench.sandbox_proc import SandboxProcess
from imocha_sandbox.runtime import SandboxConfig

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TARGET_POLL_P95 = 45.0
TARGET_CALLBACK_P95 = 10.0
CALLBACK_TOKEN = "bench-callback-token-0123456789abcdef"
NEVER = "0 0 1 1 *"
TRIGGER_TAG = "imocha_pipeline/trigger"
QUIET = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


@dataclass
class Stack:
    """The daemon (and its code server and run workers) and the callback endpoint, for one phase."""

    box: SandboxProcess
    folder: Path
    staging_url: str
    poll_interval: int = 30
    processes: list[subprocess.Popen] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.home = self.folder / "dagster_home"
        self.home.mkdir(parents=True)
        shutil.copy(REPO / "dagster.yaml", self.home / "dagster.yaml")
        self.callback_port = _free_port()
        self.env = {
            **os.environ, **self.box.env,
            "DAGSTER_HOME": str(self.home),
            "IMOCHA_PIPELINE_STAGING_DB_URL": self.staging_url,
            "IMOCHA_PIPELINE_CALLBACK_TOKEN": CALLBACK_TOKEN,
            "IMOCHA_PIPELINE_POLL_INTERVAL_SECONDS": str(self.poll_interval),
            "IMOCHA_PIPELINE_ASSESSMENT_SYNC_CRON": NEVER,
            "IMOCHA_PIPELINE_RECONCILE_CRON": NEVER,
            "PYTHONWARNINGS": "ignore",
        }

    @property
    def callback_url(self) -> str:
        return f"http://127.0.0.1:{self.callback_port}/imocha/callbacks/{CALLBACK_TOKEN}"

    def start(self) -> None:
        logs = self.folder / "logs"
        logs.mkdir(exist_ok=True)
        self._spawn([str(BIN / "dagster-daemon"), "run", "-w", str(REPO / "workspace.yaml")], logs / "daemon.log")
        self._spawn([str(BIN / "imocha-pipeline"), "callbacks", "--port", str(self.callback_port)],
                    logs / "callbacks.log")

    def _spawn(self, command: list[str], log: Path) -> None:
        handle = open(log, "wb")  # noqa: SIM115 (closed with the process)
        process = subprocess.Popen(command, cwd=REPO, env=self.env, stdout=handle, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        process._bench_log = handle  # type: ignore[attr-defined]
        self.processes.append(process)

    def instance(self):
        import dagster as dg

        return dg.DagsterInstance.from_config(str(self.home))

    def wait_ready(self, sensor: str, timeout: float = 240.0) -> float:
        """Seconds until ``sensor`` has ticked once and the callback endpoint answers."""
        import requests

        started = time.monotonic()
        deadline = started + timeout
        with self.instance() as instance:
            while time.monotonic() < deadline:
                self._check_alive()
                if _sensor_ticked(instance, sensor):
                    break
                time.sleep(1)
            else:
                raise RuntimeError(f"sensor {sensor} did not tick within {timeout:.0f} s; see {self.folder}/logs")
        while time.monotonic() < deadline:
            self._check_alive()
            with contextlib.suppress(requests.RequestException):
                if requests.get(f"http://127.0.0.1:{self.callback_port}/healthz", timeout=2).ok:
                    return time.monotonic() - started
            time.sleep(0.5)
        raise RuntimeError("the callback endpoint did not come up")

    def _check_alive(self) -> None:
        for process in self.processes:
            if process.poll() is not None:
                raise RuntimeError(f"{Path(process.args[0]).name} exited with {process.returncode}; "
                                   f"see {self.folder}/logs")

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
            process._bench_log.close()  # type: ignore[attr-defined]
        self.processes.clear()

    def settled_runs(self, timeout: float = 120.0) -> list[dict[str, Any]]:
        """The runs once none is queued or in progress any more (or ``timeout`` passed)."""
        deadline = time.monotonic() + timeout
        while True:
            runs = self.runs()
            if time.monotonic() > deadline or all(r["ended"] or r["status"] in ("FAILURE", "CANCELED")
                                                  for r in runs):
                return runs
            time.sleep(1)

    def runs(self) -> list[dict[str, Any]]:
        """Every run with its trigger and timestamps (created, started, ended) in epoch seconds."""
        with self.instance() as instance:
            records = instance.get_run_records()
        return [{
            "run_id": r.dagster_run.run_id, "status": r.dagster_run.status.value,
            "trigger": r.dagster_run.tags.get(TRIGGER_TAG), "partition": r.dagster_run.tags.get("dagster/partition"),
            "created": r.create_timestamp.timestamp(), "started": r.start_time, "ended": r.end_time,
        } for r in records]


def _sensor_ticked(instance, name: str) -> bool:
    from dagster._core.scheduler.instigation import InstigatorType

    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.instigator_name == name and instance.get_ticks(state.instigator_origin_id, state.selector_id,
                                                                limit=1):
            return True
    return False


def _pairs(box: SandboxProcess, count: int, skip: int = 0) -> list[tuple[dict, dict]]:
    learners, tests = box.learners(), box.tests()
    pairs = [(learner, test) for learner in learners for test in tests]
    if skip + count > len(pairs):
        raise ValueError("not enough learner/assessment pairs in the sandbox")
    return pairs[skip: skip + count]


def finish_and_wait(stack: Stack, pairs: list[tuple[dict, dict]], spacing: float, callbacks: bool,
                    timeout: float, log=print) -> tuple[list[float], list[dict[str, Any]]]:
    """Finish one attempt every ``spacing`` s; return each one's seconds to Degreed's completion."""
    box = stack.box
    finished: dict[tuple[str, str], float] = {}
    next_at = time.monotonic()
    for index, (learner, test) in enumerate(pairs):
        time.sleep(max(0.0, next_at - time.monotonic()))
        next_at += spacing
        before = time.time()
        box.complete_attempt(test["test_id"], learner["email"], learner["name"], bank_scores=40 + index % 55,
                             callback_url=stack.callback_url if callbacks else None)
        finished[(learner["email"].lower(), f"imocha-{test['test_id']}")] = (before + time.time()) / 2
        if (index + 1) % 10 == 0:
            log(f"[latency]   {index + 1}/{len(pairs)} attempts finished")
    deadline = time.monotonic() + timeout
    acknowledged: dict[tuple[str, str], float] = {}
    while time.monotonic() < deadline:
        stack._check_alive()
        for completion in box.degreed_state()["completions"]:
            key = (completion["user_email"].lower(), completion["content_external_id"])
            if key in finished:
                acknowledged[key] = _iso(completion["added_at"])
        if len(acknowledged) == len(finished):
            break
        time.sleep(2)
    delays = [acknowledged[key] - done for key, done in finished.items() if key in acknowledged]
    return delays, [{"key": key, "finished": finished[key], "ack": acknowledged.get(key)} for key in finished]


def _phase(box: SandboxProcess, mode: str, count: int, spacing: float, skip: int, staging_url: str,
           log) -> dict[str, Any]:
    callbacks = mode == "callbacks"
    with tempfile.TemporaryDirectory(prefix=f"bench-latency-{mode}-") as folder:
        stack = Stack(box, Path(folder), staging_url, poll_interval=86_400 if callbacks else 30)
        stack.start()
        try:
            ready = stack.wait_ready("imocha_callbacks_sensor" if callbacks else "imocha_completions_sensor")
            log(f"[latency] {mode}: daemon ready after {ready:.0f} s; {count} attempts, one every {spacing:g} s ...")
            delays, detail = finish_and_wait(stack, _pairs(box, count, skip), spacing, callbacks,
                                             timeout=300 + (60 if callbacks else 120), log=log)
            runs = stack.settled_runs()
            overhead = None
            if callbacks:
                log("[latency] overhead: one attempt on an idle stack ...")
                time.sleep(15)
                before = {r["run_id"] for r in stack.runs()}
                one_delay, _ = finish_and_wait(stack, _pairs(box, 1, skip + count), 0, True, timeout=180, log=log)
                new_runs = [r for r in stack.settled_runs() if r["run_id"] not in before]
                overhead = {"delay": one_delay[0] if one_delay else None, "runs": new_runs}
        except Exception:
            stack.stop()
            kept = Path(tempfile.mkdtemp(prefix=f"bench-latency-{mode}-failed-"))
            shutil.copytree(Path(folder) / "logs", kept / "logs")  # the folder itself goes with the with-block
            log(f"[latency] {mode} failed; the daemon's and the endpoint's logs are kept in {kept}/logs")
            raise
        finally:
            stack.stop()
        return {"mode": mode, "delays": delays, "detail": detail, "runs": runs, "count": count, "ready": ready,
                "overhead": overhead}


def prepare(box: SandboxProcess, staging_url: str) -> None:
    """The assessments in Degreed and in the staging database (an assessment sync), before any clock runs."""
    import dagster as dg

    from imocha_pipeline.definitions import build_definitions
    from imocha_pipeline.defs.resources import resources_from_settings

    defs = build_definitions(resources_from_settings(box.env, staging_url))
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("assessment_sync_job").execute_in_process(
            instance=instance, raise_on_error=False, run_config=QUIET)
    if not result.success:
        raise RuntimeError("the assessment sync before the latency runs failed")


def in_process_single(box: SandboxProcess, staging_url: str, pair_index: int) -> float:
    """The same job for one new attempt run in process (no sensor, queue, launch or per-step processes),
    on the same staging database (everything else is staged already): the work itself, in seconds."""
    import dagster as dg

    from imocha_pipeline.definitions import build_definitions
    from imocha_pipeline.defs.resources import resources_from_settings

    defs = build_definitions(resources_from_settings(box.env, staging_url))
    (learner, test), = _pairs(box, 1, pair_index)
    box.complete_attempt(test["test_id"], learner["email"], learner["name"], bank_scores=70)
    time.sleep(1.1)
    with dg.DagsterInstance.ephemeral() as instance:
        started = time.perf_counter()
        result = defs.resolve_job_def("completion_sync_job").execute_in_process(
            instance=instance, run_config=QUIET, partition_key=datetime.now(UTC).date().isoformat())
        elapsed = time.perf_counter() - started
    if not result.success:
        raise RuntimeError("the in-process completion run failed")
    return elapsed


def _run_breakdown(phase: dict[str, Any]) -> str:
    """Where the time went, per attempt: finish -> the delivering run started -> Degreed created it."""
    runs = [r for r in phase["runs"] if r["started"]]
    to_start, in_run = [], []
    for item in phase["detail"]:
        ack = item["ack"]
        if ack is None:
            continue
        delivering = [r for r in runs if r["started"] <= ack and (r["ended"] is None or ack <= r["ended"] + 1)]
        if not delivering:
            continue
        chosen = max(delivering, key=lambda r: r["started"])
        to_start.append(chosen["started"] - item["finished"])
        in_run.append(ack - chosen["started"])
    statuses: dict[str, int] = {}
    for r in phase["runs"]:
        statuses[r["status"]] = statuses.get(r["status"], 0) + 1
    if not to_start:
        return f"{len(phase['runs'])} runs {statuses}"
    launches = [r["started"] - r["created"] for r in runs]
    return (f"{len(phase['runs'])} runs {statuses}; per attempt (median): finish -> the run that delivered it "
            f"started {percentile(to_start, 50):.1f} s, that run started -> Degreed {percentile(in_run, 50):.1f} s; "
            f"per run (median): requested -> started (queue, one run per day at a time, and process launch) "
            f"{percentile(launches, 50):.1f} s")


def run(count: int = 50, spacing: float = 3.0, modes: tuple[str, ...] = ("polling", "callbacks"),
        rate_limit: int = 600, log=print) -> list[Result]:
    from imocha_pipeline.staging import dispose_engine

    quiet_warnings()
    world = SandboxConfig(seed=31, tests=10, learners=max(20, (2 * count + 20) // 10 + 1), attempts=0,
                          missing_in_degreed=0, degreed_rate_limit=rate_limit)
    results: list[Result] = []
    with SandboxProcess(world) as box, tempfile.TemporaryDirectory(prefix="bench-latency-") as folder:
        # One staging database for every phase, so a phase's first poll finds the earlier phases' attempts staged.
        staging_url = f"sqlite:///{Path(folder) / 'staging.sqlite'}"
        prepare(box, staging_url)
        phases = {}
        skip = 0
        for mode in modes:
            try:
                phases[mode] = _phase(box, mode, count, spacing, skip, staging_url, log)
            except Exception as exc:
                results.append(Result.failed(f"6. latency ({mode})", exc))
            skip += count + 1
        for phase in phases.values():
            results.append(_latency_row(phase))
        if "callbacks" in phases and phases["callbacks"]["overhead"]:
            try:
                log("[latency] the same job in process for one attempt (reference) ...")
                reference = in_process_single(box, staging_url, skip + 1)
                results.append(_overhead_row(phases["callbacks"]["overhead"], reference))
            except Exception as exc:
                results.append(Result.failed("7. run overhead", exc))
        dispose_engine(staging_url)
    return results


def _latency_row(phase: dict[str, Any]) -> Result:
    mode, delays = phase["mode"], phase["delays"]
    target = TARGET_POLL_P95 if mode == "polling" else TARGET_CALLBACK_P95
    p50, p95 = percentile(delays, 50), percentile(delays, 95)
    missing = phase["count"] - len(delays)
    met = len(delays) == phase["count"] and p95 < target
    interval = ("polling sensor, 30 s interval" if mode == "polling"
                else "callbacks sensor on every daemon loop (about 5 s)")
    notes = [f"{mode}: real dagster-daemon ({interval}), repository dagster.yaml (queued runs); "
             f"{len(delays)}/{phase['count']} acknowledged, max {max(delays, default=float('nan')):.1f} s; "
             + _run_breakdown(phase)]
    if missing:
        notes.append(f"{mode}: {missing} attempts were not in Degreed when the wait ended")
    return Result(f"6. latency ({mode})", f"p50 {p50:.1f} s, p95 {p95:.1f} s ({len(delays)} attempts)",
                  f"target p95 < {target:.0f} s", f"{p95 / target:.2f} of target", met, notes,
                  data={"delays": delays, "runs": phase["runs"]})


def _overhead_row(overhead: dict[str, Any], reference: float) -> Result:
    runs = [r for r in overhead["runs"] if r["started"] and r["ended"]]
    if not runs:
        return Result.failed("7. run overhead", "no run was recorded for the single attempt")
    run = runs[0]
    launch_to_success = run["ended"] - run["created"]
    queued = run["started"] - run["created"]
    body = run["ended"] - run["started"]
    figure = f"{launch_to_success:.1f} s requested -> success (queue+launch {queued:.1f} s, run {body:.1f} s)"
    ratio = f"{launch_to_success - reference:.1f} s overhead ({launch_to_success / reference:.1f}x)"
    notes = [f"one attempt by callback on an idle stack: finish -> Degreed {overhead['delay'] or float('nan'):.1f} s; "
             f"{len(overhead['runs'])} run(s); reference = the same completion_sync_job for one new attempt with "
             "execute_in_process (no sensor, queue, process launch or per-step processes)"]
    return Result("7. run overhead", figure, f"in process {reference:.1f} s", ratio, None, notes,
                  data={"run": run, "reference": reference})

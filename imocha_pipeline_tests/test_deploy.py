"""The container image's install steps, without a Docker engine: deploy/install.sh (which the Dockerfile runs)
installs the project into a fresh virtual environment from a copy of the build context; the code location then
loads from that environment, serves as `dagster code-server start` (the image's command) and runs a sync."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imocha_sandbox.runtime import Sandbox, SandboxConfig

REPO = Path(__file__).resolve().parents[1]
# What the Dockerfile copies into the image (its build context, less .dockerignore).
BUILD_CONTEXT = ("pyproject.toml", "setup.py", "README.md", "imocha_pipeline", "imocha_sandbox", "deploy")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without this test run's venv or source tree on the path."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"}}
    return env | extra


def test_dockerfile_runs_the_install_script_and_serves_the_code_location():
    dockerfile = (REPO / "Dockerfile").read_text()
    assert dockerfile.startswith("#") and "\nFROM python:3.11-slim\n" in dockerfile
    # One RUN step: gcc in (the diff engine's compiled part), the install script, gcc out again.
    step = next(block for block in dockerfile.split("\nRUN ")[1:] if "sh deploy/install.sh /opt/dagster/app" in block)
    assert step.startswith("apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev")
    assert "apt-get purge -y --auto-remove gcc libc6-dev" in step
    copied = {word for line in dockerfile.splitlines() if line.startswith("COPY ") for word in line.split()[1:-1]}
    assert copied == set(BUILD_CONTEXT)
    ignored = (REPO / ".dockerignore").read_text().split()
    assert not set(BUILD_CONTEXT) & set(ignored)


def test_the_production_run_queue_dequeues_every_second_like_the_local_one():
    import dagster as dg
    import yaml

    deploy = yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text())["run_queue"]
    local = yaml.safe_load((REPO / "dagster.yaml").read_text())["run_queue"]
    assert deploy["dequeue_interval_seconds"] == local["dequeue_interval_seconds"] == 1
    # Dagster's queued run coordinator reads it from the run_queue block (the daemon's dequeue loop interval).
    with dg.instance_for_test(overrides={"run_queue": deploy}) as instance:
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert instance.run_coordinator.dequeue_interval_seconds == 1


def stop_process_group(process: subprocess.Popen, grace_seconds: float = 60.0) -> None:
    """SIGTERM the process and its children (the code server runs its gRPC server as a child); SIGKILL them
    if a loaded machine has not let them finish a graceful shutdown in time. Only the health check matters."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_seconds)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


@pytest.mark.slow
def test_install_script_builds_a_working_code_location_in_a_fresh_venv(tmp_path):
    context = tmp_path / "context"
    context.mkdir()
    for item in BUILD_CONTEXT:
        source = REPO / item
        if source.is_dir():
            shutil.copytree(source, context / item, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so"))
        else:
            shutil.copy(source, context / item)
    venv = tmp_path / "venv"
    # pip's cache (shared with the developer's installs) keeps this to unpacking wheels; skipping the byte
    # compilation the image does saves most of the rest.
    installed = subprocess.run(["sh", str(context / "deploy" / "install.sh"), str(context)], cwd=tmp_path,
                               env=clean_env(IMOCHA_PIPELINE_VENV=str(venv), PYTHON=sys.executable,
                                             PIP_NO_COMPILE="1"),
                               capture_output=True, text=True, timeout=900)
    assert installed.returncode == 0, installed.stdout[-3000:] + installed.stderr[-3000:]
    assert ("imocha_pipeline installed: jobs assessment_sync_job, catch_up_job, completion_sync_job, forget_job, "
            "reconcile_job, retention_job\n") in installed.stdout

    # The package comes from the venv (a regular install), with the Kubernetes extra and pinned dagster.
    probe = subprocess.run(
        [str(venv / "bin" / "python"), "-c",
         "import dagster, dagster_k8s, dagster_postgres, imocha_pipeline.definitions as d; "
         "from imocha_pipeline.sync.core import text_native; "
         "print(d.__file__); print(dagster.__version__, dagster_k8s.__version__, dagster_postgres.__version__); "
         "print('compiled-part', text_native.available())"],
        cwd=tmp_path, env=clean_env(), capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr[-3000:]
    # The install compiled the diff engine's C part (its source ships in the package; no .so was copied).
    assert probe.stdout.split()[-2:] == ["compiled-part", "True"], probe.stdout
    location_file, versions = probe.stdout.split()[0], probe.stdout.split()[1:4]
    assert location_file.startswith(str(venv)), location_file
    assert versions == ["1.13.27", "0.29.27", "0.29.27"]

    # The image's command serves the code location over gRPC (the chart's readiness probe checks it so).
    port = free_port()
    server = subprocess.Popen(
        [str(venv / "bin" / "dagster"), "code-server", "start", "-h", "127.0.0.1", "-p", str(port),
         "-m", "imocha_pipeline.definitions"],
        cwd=tmp_path, env=clean_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            health = subprocess.run([str(venv / "bin" / "dagster"), "api", "grpc-health-check", "-p", str(port)],
                                    env=clean_env(), capture_output=True, text=True, timeout=60)
            if health.returncode == 0:
                break
            assert server.poll() is None, "the code server exited"
            assert time.monotonic() < deadline, health.stdout + health.stderr
            time.sleep(1)
    finally:
        stop_process_group(server)

    # And a sync runs from the installed package (its data files, e.g. the migrations, came along). In process:
    # one Python start instead of one per step.
    run_config = tmp_path / "in_process.yaml"
    run_config.write_text("execution:\n  config:\n    in_process: {}\n")
    with Sandbox(SandboxConfig(seed=51, tests=2, learners=2, attempts=0, degreed_rate_limit=6000)) as box:
        ran = subprocess.run(
            [str(venv / "bin" / "dagster"), "job", "execute", "-m", "imocha_pipeline.definitions",
             "-j", "assessment_sync_job", "-c", str(run_config)],
            cwd=tmp_path, capture_output=True, text=True, timeout=300,
            env=clean_env(**box.env(), DAGSTER_HOME=str(tmp_path),
                          IMOCHA_PIPELINE_STAGING_DB_URL=f"sqlite:///{tmp_path / 'staging.sqlite'}"))
        assert ran.returncode == 0, ran.stderr[-3000:]
        assert len([a for a in box.degreed.state()["assessments"] if a["external_id"].startswith("imocha-")]) == 2

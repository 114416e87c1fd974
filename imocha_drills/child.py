"""A job run in a child process (forkserver, with dagster and the product preloaded), so a drill can SIGKILL
it at a chosen moment. Everything the child prints or logs (DEBUG) goes to its log file."""

from __future__ import annotations

import json
import logging
import os
import sys

import dagster as dg

from imocha_pipeline.definitions import build_definitions
from imocha_pipeline.defs.resources import resources_from_settings


def run_job(job: str, settings: dict[str, str], staging_url: str, tags: dict[str, str], env: dict[str, str],
            log_path: str, result_path: str) -> None:
    with open(log_path, "ab", buffering=0) as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    logging.basicConfig(level=logging.DEBUG, stream=sys.stderr, force=True)
    os.environ.update(env)
    defs = build_definitions(resources_from_settings(settings, staging_url))
    with dg.DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def(job).execute_in_process(instance=instance, tags=tags, raise_on_error=False)
        failures = []
        for event in result.all_events:
            if event.is_step_failure and event.step_failure_data.error:
                error = event.step_failure_data.error
                while error.cls_name == "DagsterExecutionStepExecutionError" and error.cause is not None:
                    error = error.cause
                failures.append({"step": event.step_key, "class": error.cls_name, "message": error.message})
    with open(result_path, "w") as handle:
        json.dump({"success": result.success, "failures": failures}, handle)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0 if result.success else 1)

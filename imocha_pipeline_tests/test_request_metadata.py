"""Request counts per endpoint and outcome on the asset materializations: one integer per
(API, endpoint template, outcome), equal to what the simulators logged, stored in the instance so the Dagster
UI can plot them over time."""

from __future__ import annotations

import re
from collections import Counter

import dagster as dg

from imocha_sandbox.server import FaultConfig
from sync_harness import SyncHarness

# The log holds concrete paths; the client names each call by its template. Rebuilt here from the APIs' paths.
TEMPLATES = [
    (re.compile(r"^/api/v2/users/[^/]+/(completions|skill-ratings)$"), r"/api/v2/users/{id}/\1"),
    (re.compile(r"^/api/v2/(completions|skill-ratings|content/assessments)/[^/]+$"), r"/api/v2/\1/{id}"),
    (re.compile(r"^/v3/tests/\d+/testlinks$"), "/v3/tests/{id}/testlinks"),
    (re.compile(r"^/v3/(tests|reports)/\d+$"), r"/v3/\1/{id}"),
]


def template(path: str) -> str:
    for pattern, replacement in TEMPLATES:
        if pattern.match(path):
            return pattern.sub(replacement, path)
    return path


def logged(log, since: int, prefix: str) -> Counter:
    """The simulator's request log since ``since`` as ``{"<prefix> METHOD /template STATUS": count}``."""
    return Counter(f"{prefix} {e.method} {template(e.path)} {e.status}" for e in log.entries(since))


def per_endpoint(result: dg.ExecuteInProcessResult, prefix: str) -> Counter:
    """The run's per-endpoint request keys of ``prefix``, summed over its materializations (each an int)."""
    counts: Counter = Counter()
    for event in result.get_asset_materialization_events():
        for key, value in event.step_materialization_data.materialization.metadata.items():
            if key.startswith(f"{prefix} "):
                assert isinstance(value, dg.IntMetadataValue), (key, value)
                counts[key] += value.value
    return counts


def test_request_counts_per_endpoint_and_outcome_are_plottable_metadata_equal_to_the_servers_logs(
        make_sandbox, sqlite_url, instance, monkeypatch):
    monkeypatch.setenv("IMOCHA_PIPELINE_WAITING_RETRY_SECONDS", "0")
    sandbox = make_sandbox(seed=31, tests=2, learners=5, attempts=0, degreed_rate_limit=6000)
    h = SyncHarness(sandbox, sqlite_url, instance)
    imocha_log, degreed_log = sandbox.imocha.log, sandbox.degreed.log

    marks = imocha_log.last_seq, degreed_log.last_seq
    assessments = h.assessments()
    assert per_endpoint(assessments, "imocha_requests") == logged(imocha_log, marks[0], "imocha_requests")
    assert per_endpoint(assessments, "degreed_requests") == logged(degreed_log, marks[1], "degreed_requests")
    assert per_endpoint(assessments, "degreed_requests")["degreed_requests POST /api/v2/content/assessments 201"] \
        == 2

    test = sandbox.world.tests[0]
    learners = [x for x in sandbox.world.learners if x.in_degreed][:3]
    for learner in learners:
        sandbox.imocha.complete_attempt(test.test_id, learner.email, learner.name)
    # Two refusals of a completion write: the outcome 429 gets its own key beside 201.
    sandbox.degreed.faults.set(FaultConfig(rate_429_next=2, retry_after_seconds=0,
                                           path_prefix="/api/v2/completions", methods=["POST"]))
    marks = imocha_log.last_seq, degreed_log.last_seq
    completions = h.completions()
    assert completions.success
    degreed = per_endpoint(completions, "degreed_requests")
    assert degreed == logged(degreed_log, marks[1], "degreed_requests")
    assert per_endpoint(completions, "imocha_requests") == logged(imocha_log, marks[0], "imocha_requests")
    assert degreed["degreed_requests POST /api/v2/completions 201"] == 3
    assert degreed["degreed_requests POST /api/v2/completions 429"] == 2
    assert degreed["degreed_requests POST /api/v2/skill-ratings 201"] == 3 * len(test.banks)

    # Stored in the instance as numbers, beside the totals (what the UI's plots read); no JSON blob repeats them.
    stored = instance.get_latest_materialization_event(dg.AssetKey("completion_sync_apply"))
    metadata = stored.asset_materialization.metadata
    assert metadata["degreed_requests POST /api/v2/completions 429"] == dg.MetadataValue.int(2)
    assert metadata["degreed_requests POST /api/v2/completions 201"] == dg.MetadataValue.int(3)
    assert metadata["degreed_requests_429"].value == 2
    assert "degreed_requests_by_endpoint" not in metadata and "degreed_requests_5xx" not in metadata  # zero: left out

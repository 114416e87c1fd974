"""Benchmark 5: extraction of attempts with their reports, with simulated iMocha latency.

The real extract step (``sync.completions.extract_completions`` with the ``ImochaResource`` client and its
configured parallelism) reads every finished attempt of the sandbox's history and fetches each report
once, while the iMocha simulator (in its own process) answers every API request ``latency_ms`` late
(``FaultConfig.latency_ms``; the simulator applies the latency to every API request, ``path_prefix``
narrows only the other faults). The ideal for ``P`` parallel requests is the latency times
(the Retrieve-Invites calls, one per day and in sequence, + ceil(reports / P) rounds of report fetches).
"""

from __future__ import annotations

import math
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.report import Result, ratio_text
from bench.sandbox_proc import SandboxProcess
from imocha_sandbox.runtime import SandboxConfig

TARGET_RATIO = 1.25


def run(reports: int = 1000, latency_ms: float = 100.0, parallelism: int | None = None, log=print) -> list[Result]:
    from imocha_pipeline.clients.http import RequestMetrics
    from imocha_pipeline.defs.resources import ImochaResource
    from imocha_pipeline.staging import dispose_engine, get_engine
    from imocha_pipeline.sync.completions.extract import extract_completions

    name = "5. extraction"
    world = SandboxConfig(seed=5, tests=20, learners=max(40, reports // 5), attempts=reports, history_days=14)
    log(f"[extract] starting the sandbox with {reports} finished attempts ...")
    with SandboxProcess(world) as box, tempfile.TemporaryDirectory(prefix="bench-extract-") as folder:
        env = box.env
        url = f"sqlite:///{Path(folder) / 'staging.sqlite'}"
        engine = get_engine(url)
        resource = ImochaResource(api_key=env["IMOCHA_API_KEY"], base_url=env["IMOCHA_BASE_URL"], staging_db_url=url)
        workers = parallelism or resource.max_parallel_requests
        client = resource.client(metrics=RequestMetrics())
        first = min(datetime.fromisoformat(a["attempted_on"]) for a in box.info["attempts"]).date()
        today = datetime.now(UTC).date()
        days = [first + timedelta(days=n) for n in range((today - first).days + 1)]
        box.imocha("PUT", "/faults", {"latency_ms": latency_ms, "path_prefix": "/v3/reports"})
        mark = box.last_seq()[0]
        log(f"[extract] extracting {len(days)} days with {workers} parallel report requests, "
            f"{latency_ms:.0f} ms latency ...")
        wall, cpu = time.perf_counter(), time.process_time()
        result = extract_completions(client, engine, days, max_workers=workers)
        elapsed, cpu = time.perf_counter() - wall, time.process_time() - cpu
        box.imocha("DELETE", "/faults")
        client.close()
        dispose_engine(url)
        logged = box.imocha_requests(mark)
    kinds = Counter(_kind(entry) for entry in logged)
    listing, fetched = kinds["list"], kinds["report"]
    distinct = len({entry["path"] for entry in logged if _kind(entry) == "report"})
    rounds = math.ceil(fetched / workers) if workers else fetched
    ideal = (listing + rounds) * latency_ms / 1000
    ratio = elapsed / ideal if ideal else math.nan
    notes = [f"{fetched} report requests for {distinct} attempts ({len(result.completions)} staged, "
             f"{len(result.problems)} unavailable), {listing} Retrieve-Invites calls; other requests: "
             f"{sum(v for k, v in kinds.items() if k not in ('list', 'report'))}; client CPU {cpu:.1f} s; "
             f"ideal = ({listing} + ceil({fetched}/{workers})) x {latency_ms:.0f} ms"]
    if fetched != distinct:
        notes.append(f"{fetched - distinct} reports were fetched more than once")
    return [Result(name, f"{elapsed:.1f} s for {fetched} reports ({workers} parallel, {latency_ms:.0f} ms each)",
                   f"ideal {ideal:.1f} s", ratio_text(ratio, f"target <= {TARGET_RATIO}"),
                   ratio <= TARGET_RATIO and fetched == distinct, notes,
                   data={"elapsed": elapsed, "ideal": ideal, "reports": fetched, "listing": listing,
                         "workers": workers})]


def _kind(entry: dict) -> str:
    path = entry["path"]
    if path.startswith("/v3/reports/"):
        return "report"
    if path.startswith("/v3/candidates/testattempts"):
        return "list"
    return path


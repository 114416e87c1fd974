"""``make bench`` (``python -m bench``): run the benchmarks and print one table.

    python -m bench                         # everything (about 30 minutes)
    python -m bench --quick                 # a small smoke version of everything (about 5 minutes)
    python -m bench --only diff,economy     # a subset: throughput, shared, economy, diff, extraction, latency,
                                            # history
    python -m bench --writes 1200 --rate-limit 300 --json bench.json   # other sizes and limits

Progress goes to stderr, the table to stdout. See docs/benchmarks.md for what each figure means.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable

from bench.report import Result, machine_line, quiet_warnings, render, to_json

BENCHMARKS = ("throughput", "shared", "economy", "diff", "extraction", "latency", "history")
LABELS = {"throughput": "1. write throughput", "shared": "2. shared budget", "economy": "3. economy",
          "diff": "4. diff/plan", "extraction": "5. extraction", "latency": "6-7. latency and overhead",
          "history": "8. run cost vs history"}


def _sizes(text: str) -> list[int]:
    return [int(float(part)) for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of every benchmark")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {', '.join(BENCHMARKS)}")
    parser.add_argument("--skip", default="", help="comma-separated benchmarks to leave out")
    parser.add_argument("--json", default="", help="also write the results (with raw data) to this file")
    group = parser.add_argument_group("1. write throughput")
    group.add_argument("--writes", type=int,
                       help="completions to send (default 6 x the limit: 420 at 70/min, over five windows; quick 90)")
    group.add_argument("--rate-limit", type=int,
                       help="simulator limit per minute, sliding window (default 70, Degreed's; quick 60)")
    group = parser.add_argument_group("2. shared budget")
    group.add_argument("--shared-writes", type=int, help="completions in all (default 6 x the limit; quick 90)")
    group.add_argument("--shared-rate-limit", type=int, help="limit per minute (default 70; quick 60)")
    group.add_argument("--processes", type=int, default=2, help="concurrent OS processes (default 2)")
    group = parser.add_argument_group("3. request economy")
    group.add_argument("--economy-tests", type=int, help="iMocha tests (default 250; quick 30)")
    group.add_argument("--economy-attempts", type=int, help="finished attempts in history (default 400; quick 60)")
    group.add_argument("--economy-learners", type=int, help="learners (default 200; quick 40)")
    group = parser.add_argument_group("4. diff/plan engine")
    group.add_argument("--diff-sizes", type=_sizes,
                       help="records per shape (default 10000,100000,1000000; quick 10000,100000)")
    group.add_argument("--diff-repeat", type=int, default=5,
                       help="runs per size and engine in one process, best taken (default 5)")
    group.add_argument("--diff-shapes", default="assessments,completions",
                       help="record shapes: assessments, completions or both (default both)")
    group = parser.add_argument_group("5. extraction")
    group.add_argument("--reports", type=int, help="reports to fetch (default 1000; quick 100)")
    group.add_argument("--latency-ms", type=float, default=100.0, help="simulated iMocha latency (default 100)")
    group.add_argument("--parallelism", type=int, help="parallel report requests (default: ImochaResource's)")
    group = parser.add_argument_group("6-7. end-to-end latency and run overhead")
    group.add_argument("--latency-attempts", type=int, help="attempts per mode (default 50; quick 10)")
    group.add_argument("--latency-spacing", type=float, default=3.0, help="seconds between attempts (default 3)")
    group.add_argument("--latency-modes", default="polling,callbacks", help="polling, callbacks or both")
    group.add_argument("--latency-rate-limit", type=int, default=600, help="Degreed limit per minute (default 600)")
    group = parser.add_argument_group("8. run cost vs history")
    group.add_argument("--history-attempts", type=int, help="staged attempts in history (default 1000000; quick 20000)")
    group.add_argument("--history-ledger", type=int, help="acknowledged ledger rows (default 1000000; quick 20000)")
    group.add_argument("--history-waiting", type=int, help="records waiting for their learner (default 100000; "
                                                           "quick 2000)")
    group.add_argument("--history-backends", default="sqlite,postgresql", help="sqlite, postgresql or both")
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()] or list(BENCHMARKS)
    skipped = {name.strip() for name in args.skip.split(",") if name.strip()}
    unknown = (set(chosen) | skipped) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s) {sorted(unknown)}; choose from {', '.join(BENCHMARKS)}")
    args.selected = [name for name in BENCHMARKS if name in chosen and name not in skipped]
    q = args.quick
    args.rate_limit = args.rate_limit or (60 if q else 70)
    args.writes = args.writes or (90 if q else 6 * args.rate_limit)
    args.shared_rate_limit = args.shared_rate_limit or (60 if q else 70)
    args.shared_writes = args.shared_writes or (90 if q else 6 * args.shared_rate_limit)
    args.min_windows = 1 if q else 5
    args.economy_tests = args.economy_tests or (30 if q else 250)
    args.economy_attempts = args.economy_attempts or (60 if q else 400)
    args.economy_learners = args.economy_learners or (40 if q else 200)
    args.diff_sizes = args.diff_sizes or ([10_000, 100_000] if q else [10_000, 100_000, 1_000_000])
    args.reports = args.reports or (100 if q else 1000)
    args.latency_attempts = args.latency_attempts or (10 if q else 50)
    args.history_attempts = args.history_attempts or (20_000 if q else 1_000_000)
    args.history_ledger = args.history_ledger or (20_000 if q else 1_000_000)
    args.history_waiting = args.history_waiting or (2_000 if q else 100_000)
    return args


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def runners(args: argparse.Namespace) -> dict[str, Callable[[], list[Result]]]:
    from bench import diff_engine, economy, extraction, history_cost, latency, throughput

    modes = tuple(m.strip() for m in args.latency_modes.split(",") if m.strip())
    return {
        "throughput": lambda: throughput.run_single(args.writes, args.rate_limit, log=log,
                                                    min_windows=args.min_windows),
        "shared": lambda: throughput.run_shared(args.shared_writes, args.shared_rate_limit, args.processes, log=log,
                                                min_windows=args.min_windows),
        "economy": lambda: economy.run(args.economy_tests, args.economy_learners, args.economy_attempts, log=log),
        "diff": lambda: diff_engine.run(args.diff_sizes, args.diff_repeat,
                                        tuple(s.strip() for s in args.diff_shapes.split(",") if s.strip()), log=log),
        "extraction": lambda: extraction.run(args.reports, args.latency_ms, args.parallelism, log=log),
        "latency": lambda: latency.run(args.latency_attempts, args.latency_spacing, modes, args.latency_rate_limit,
                                       log=log),
        "history": lambda: history_cost.run(args.history_attempts, args.history_ledger, args.history_waiting,
                                            backends=tuple(b.strip() for b in args.history_backends.split(",")
                                                           if b.strip()), log=log),
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_warnings()
    before = machine_line()
    log(f"benchmarks: {', '.join(args.selected)}{' (quick)' if args.quick else ''}; machine: {before}")
    started = time.monotonic()
    results: list[Result] = []
    table = runners(args)
    for name in args.selected:
        log(f"--- {name}")
        try:
            results.extend(table[name]())
        except Exception as exc:  # a failing benchmark is a row in the table, the others still run
            traceback.print_exc(file=sys.stderr)
            results.append(Result.failed(LABELS[name], exc))
    minutes = (time.monotonic() - started) / 60
    title = (f"imocha_pipeline benchmarks{' (quick)' if args.quick else ''}, {time.strftime('%Y-%m-%d %H:%M %Z')}, "
             f"{minutes:.1f} min\nmachine at start: {before}\nmachine at end:   {machine_line()}")
    print(render(results, title))
    if args.json:
        with open(args.json, "w") as handle:
            handle.write(to_json(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())

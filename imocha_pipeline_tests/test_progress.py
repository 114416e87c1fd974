"""Progress of long work, with a fake clock: a steady pace of lines, the rate, and the ETA from the budget."""

from __future__ import annotations

import time
from collections import Counter
from itertools import pairwise

import pandas as pd
import pytest

from imocha_pipeline.sync.core.apply import ApplyResult, WriteOutcome, apply_plan
from imocha_pipeline.sync.core.progress import (
    ProgressLog,
    eta_minutes,
    format_duration,
    plan_eta_line,
    progress_every_seconds,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def result_with(**counts) -> ApplyResult:
    return ApplyResult(counts=Counter(counts))


def test_format_duration():
    assert [format_duration(s) for s in (0, 44.6, 60, 725, 3600, 11220)] == [
        "0 s", "45 s", "1 min 00 s", "12 min 05 s", "1 h 00 min", "3 h 07 min"]


def test_plan_eta_line_comes_from_the_rate_budget():
    assert eta_minutes(140, 70) == 2.0 and eta_minutes(5, 0) == 0.0
    assert plan_eta_line("completion plan", 140, 70) == (
        "completion plan: 140 writes to send; ETA at least 2 min 00 s at the rate budget of 70 requests/min")
    assert plan_eta_line("completion plan", 0, 70) == "completion plan: nothing to write"
    assert "no ETA" in plan_eta_line("x", 3, 0)


def test_lines_come_at_a_steady_pace_with_rate_and_eta():
    clock, lines = FakeClock(), []
    progress = ProgressLog(lines.append, "completion apply", 700, 70, every_seconds=30, clock=clock)
    progress.start()
    assert lines == ["completion apply: 700 writes to send; ETA at least 10 min 00 s at the rate budget of "
                     "70 requests/min"]
    for done in range(1, 700):  # one record a second: 60/min, under the budget of 70
        clock.now += 1.0
        progress(done, 700, result_with(created=done))
    clock.now += 1.0
    progress(700, 700, result_with(created=700))
    progress.finish(result_with(created=698, failed=2))
    steady = lines[1:-1]
    assert len(steady) == 699 // 30  # every 30 s, never more often
    assert steady[0] == ("completion apply: 30/700 done (4%), 670 remaining, 60.0/min, ETA 11 min 10 s "
                         "(rate budget 70/min); created 30")
    assert steady[-1].startswith("completion apply: 690/700 done (99%), 10 remaining, 60.0/min, ETA 10 s")
    assert lines[-1] == "completion apply: done: 700/700 in 11 min 40 s (60.0/min); created 698, failed 2"


def test_the_eta_never_assumes_more_than_the_budget_allows():
    clock, lines = FakeClock(), []
    progress = ProgressLog(lines.append, "apply", 1000, 70, every_seconds=30, clock=clock)
    clock.now += 30.0
    progress(100, 1000)  # 200/min observed (e.g. records skipped quickly), budget 70/min
    assert "200.0/min" in lines[-1] and "ETA 12 min 51 s" in lines[-1]  # 900 at 70/min


def test_before_a_rate_is_known_the_eta_comes_from_the_budget():
    clock, lines = FakeClock(), []
    progress = ProgressLog(lines.append, "apply", 140, 70, every_seconds=0, clock=clock)
    clock.now += 1.0
    progress(1, 140)
    assert lines[-1] == "apply: 1/140 done (1%), 139 remaining, rate not known yet, ETA 1 min 59 s " \
                        "(rate budget 70/min)"


def test_every_n_records_as_well_as_every_n_seconds():
    clock, lines = FakeClock(), []
    progress = ProgressLog(lines.append, "apply", 1000, 6000, every_seconds=30, every_records=250, clock=clock)
    for done in range(1, 1000):
        clock.now += 0.01
        progress(done, 1000)
    assert [line.split(" done")[0] for line in lines] == ["apply: 250/1000", "apply: 500/1000", "apply: 750/1000"]


def test_a_stopped_run_says_so_and_an_empty_one_says_nothing():
    clock, lines = FakeClock(), []
    progress = ProgressLog(lines.append, "apply", 10, 70, clock=clock)
    progress(3, 10)
    clock.now += 5
    progress.finish(stopped=True)
    assert lines == ["apply: stopped after 3/10 in 5 s (36.0/min)"]
    empty = ProgressLog(lines.append, "apply", 0, 70, clock=clock)
    empty.finish()
    assert len(lines) == 1


def test_progress_setting(monkeypatch):
    monkeypatch.delenv("IMOCHA_PIPELINE_PROGRESS_SECONDS", raising=False)
    assert progress_every_seconds() == 30.0
    monkeypatch.setenv("IMOCHA_PIPELINE_PROGRESS_SECONDS", "0")
    assert progress_every_seconds() == 0.0
    monkeypatch.setenv("IMOCHA_PIPELINE_PROGRESS_SECONDS", "soon")
    with pytest.raises(ValueError, match="IMOCHA_PIPELINE_PROGRESS_SECONDS"):
        progress_every_seconds()


class _Writer:
    def __init__(self, fail: set[str]):
        self.fail = fail

    def create(self, row):
        from imocha_pipeline.clients.errors import ServerError

        if row["record_key"] in self.fail:
            raise ServerError("boom", api="Degreed", endpoint="POST", status=500)
        return WriteOutcome(f"id-{row['record_key']}", "create")

    def update(self, degreed_id, row, changed_fields):  # pragma: no cover - not planned here
        raise AssertionError

    def retire(self, degreed_id, row):  # pragma: no cover - not planned here
        raise AssertionError

    def find_existing(self, row):
        return None


def test_apply_plan_reports_every_record_whatever_its_outcome(sqlite_url):
    from imocha_pipeline import staging
    from imocha_pipeline.sync.core.ledger import Ledger
    from imocha_pipeline.sync.core.quarantine import Quarantine

    engine = staging.get_engine(sqlite_url)
    plan = pd.DataFrame([{"record_key": f"k{i}", "action": "create", "title": f"t{i}", "payload_hash": str(i),
                          "degreed_id": None, "changed_fields": []} for i in range(5)])
    calls = []
    apply_plan(plan, _Writer({"k1", "k3"}), Ledger(engine, "assessment", "r"), Quarantine(engine, "assessment", "r"),
               fields=("title",), progress=lambda done, total, result: calls.append(
                   (done, total, int(sum(result.counts.values())))))
    assert calls == [(1, 5, 1), (2, 5, 2), (3, 5, 3), (4, 5, 4), (5, 5, 5)]


def test_while_no_record_finishes_the_timer_keeps_lines_coming_with_a_current_eta():
    clock, lines = FakeClock(), []
    progress = ProgressLog(lines.append, "apply", 10, 6, every_seconds=2, clock=clock)
    progress.start()
    for done in range(1, 7):  # six sends at once fill the budget of 6/min
        progress(done, 10)
    for _ in range(25):  # the seventh waits for a slot: the timer's ticks log while nothing finishes
        clock.now += 2.0
        progress.tick()
    waiting = lines[1:]
    assert len(waiting) == 25 and all("6/10 done" in line and "waiting" in line for line in waiting)
    etas = [_eta_text(line) for line in waiting]
    # The 4 left go when the six slots free a minute after the sends: the ETA counts down to it.
    assert etas[:3] == ["58 s", "56 s", "54 s"] and etas[-1] == "10 s"
    assert waiting[0].endswith("; waiting 2 s since the last record")
    assert progress.tick() == pytest.approx(2.0) and len(lines) == 26  # never more often than every 2 s


def finish_records(progress: ProgressLog, clock: FakeClock, done: range, seconds_apart: float) -> None:
    """Records ``done`` finish one after another, ``seconds_apart`` each."""
    for count in done:
        clock.now += seconds_apart
        progress(count, progress.total)


def test_after_a_wait_for_the_budget_the_freed_slots_count_at_once():
    """70 sends fill the budget of 70/min in under a second; the 71st goes when the window lets it, a minute on.
    By then the other 69 slots are free too: 69 more go at once and the last 60 a window after that, so the rest
    takes a minute, not the 1 min 51 s that the pace so far (71 records in 61 s) would predict."""
    clock, lines = FakeClock(), []
    progress = ProgressLog(lines.append, "apply", 200, 70, every_seconds=0, clock=clock)
    progress.start()
    finish_records(progress, clock, range(1, 71), 0.01)
    finish_records(progress, clock, range(71, 72), 60.3)
    assert lines[-1].endswith("129 remaining, 69.8/min, ETA 1 min 00 s (rate budget 70/min)"), lines[-1]
    clock.now += 0.5  # 69 more at once, then the wait for the window again
    finish_records(progress, clock, range(72, 141), 0.0)
    assert lines[-1].endswith("60 remaining, 136.6/min, ETA 1 min 00 s (rate budget 70/min)"), lines[-1]


def test_when_the_server_sets_the_pace_the_eta_follows_the_pace():
    """At 30 records a minute the budget of 70/min never fills: the ETA is the pace's, not the window's."""
    clock, lines = FakeClock(), []
    progress = ProgressLog(lines.append, "apply", 100, 70, every_seconds=0, clock=clock)
    progress.start()
    finish_records(progress, clock, range(1, 41), 2.0)
    assert lines[-1].endswith("60 remaining, 30.0/min, ETA 2 min 00 s (rate budget 70/min)"), lines[-1]


def test_ticking_logs_from_a_timer_thread_and_stops_with_the_work():
    lines = []
    progress = ProgressLog(lines.append, "apply", 3, 70, every_seconds=0.1)
    with progress.ticking():
        progress.start()
        time.sleep(0.55)
    count = len(lines)
    assert count >= 4 and all("0/3 done" in line for line in lines[1:])
    time.sleep(0.3)
    assert len(lines) == count  # the timer stopped with the block
    with ProgressLog(lines.append, "apply", 3, 70, every_seconds=0).ticking():
        pass  # 0: a line after every record, no timer


PROGRESS_INTERVAL = 2.0


def test_a_real_apply_waiting_on_the_rate_budget_logs_at_a_steady_pace(make_sandbox, sqlite_url, instance,
                                                                       monkeypatch):
    """Against the simulator at 6 requests a minute the apply step sends what the budget allows, then waits
    about a minute for the next slot; the run's event log shows a progress line every interval all the while,
    each with an ETA that counts down to when the step really finished."""
    from sync_harness import SyncHarness

    monkeypatch.setenv("IMOCHA_PIPELINE_PROGRESS_SECONDS", str(PROGRESS_INTERVAL))
    box = make_sandbox(seed=5, tests=8, learners=2, attempts=0, degreed_rate_limit=6)
    result = SyncHarness(box, sqlite_url, instance).run("assessment_sync_job")
    assert result.success
    records = [entry for entry in instance.all_logs(result.run_id)
               if entry.step_key == "assessment_sync_apply" and entry.user_message.startswith("assessment apply:")]
    lines = [(entry.timestamp, entry.user_message) for entry in records]
    assert lines[0][1].startswith("assessment apply: 8 writes to send")
    assert lines[-1][1].startswith("assessment apply: done: 8/8")
    steady = lines[1:-1]
    # The long wait: the lines while the count done stays at what went before it (the most frequent count).
    during_wait = Counter(text.split(" done")[0] for _, text in steady).most_common(1)[0][0]
    waiting = [(at, text) for at, text in steady if "waiting" in text and text.startswith(during_wait + " done")]
    assert len(waiting) >= 10, "\n".join(text for _, text in lines)  # a wait of about a minute, a line every 2 s
    gaps = [later - earlier for (earlier, _), (later, _) in pairwise(lines[:-1])]
    assert all(PROGRESS_INTERVAL * 0.9 <= gap <= PROGRESS_INTERVAL * 2 + 1 for gap in gaps[1:]), gaps
    finished_at = lines[-1][0]
    etas = [_seconds(_eta_text(text)) for _, text in waiting]
    assert all(later <= earlier + 1 for earlier, later in pairwise(etas)), etas
    # Every line's ETA, during the wait or not, is when the step really finished (within the budget's margins).
    for at, text in steady:
        eta = _seconds(_eta_text(text))
        assert abs(eta - (finished_at - at)) <= 8, (text, finished_at - at)


def _eta_text(line: str) -> str:
    """The ETA a progress line gives: ``58 s``, ``1 min 00 s``."""
    return line.split("ETA ")[1].split(" (")[0]


def _seconds(text: str) -> float:
    """``45 s`` / ``1 min 05 s`` as seconds."""
    parts = text.replace("min", "").replace("s", "").split()
    return sum(float(value) * 60 ** power for power, value in enumerate(reversed(parts)))

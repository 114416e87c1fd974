"""The tests that build dates from the clock pass at any time of day, midnight UTC included.

Partitions are UTC days, so bugs in day arithmetic show only around midnight: two sensor tests once failed
only then (an attempt that had not finished yet at 00:07, and a pending entry whose day the poll's re-read
span had passed; pending entries now stay until their attempt is staged). This runs the clock-sensitive test
files again, SQLite only, under libfaketime at the moments where such bugs show. Offsets are always forward
(the next occurrence of each moment): libfaketime also shifts the monotonic clock, and a backward shift larger
than the machine's uptime makes every ``time.sleep`` fail with EINVAL.

CI installs faketime and sets IMOCHA_PIPELINE_REQUIRE_FAKETIME=1, so there a missing faketime fails;
elsewhere it skips with the reason.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
CLOCK_SENSITIVE = ["test_callbacks.py", "test_completions_sensor.py"]
MOMENTS = {
    "a minute before midnight": time(23, 59),
    "just after midnight": time(0, 2),
    "the poll overlap crossing midnight": time(0, 20),
}


def seconds_until_next(moment: time, now: datetime) -> int:
    """Whole seconds from ``now`` to the next time the UTC clock shows ``moment`` (always ahead, at most a day)."""
    target = datetime.combine(now.date(), moment, tzinfo=UTC)
    if target <= now:
        target += timedelta(days=1)
    return math.ceil((target - now).total_seconds())


@pytest.fixture(scope="module")
def faketime() -> str:
    found = shutil.which("faketime")
    if not found:
        reason = "faketime (Debian package faketime) is not installed"
        if os.environ.get("IMOCHA_PIPELINE_REQUIRE_FAKETIME") == "1":
            pytest.fail(f"{reason} (required: IMOCHA_PIPELINE_REQUIRE_FAKETIME=1)")
        pytest.skip(reason)
    return found


def under_faketime(faketime: str, moment: time, *args: str, timeout: float) -> subprocess.CompletedProcess:
    offset = seconds_until_next(moment, datetime.now(UTC))
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PYTEST_", "FAKETIME"))}
    return subprocess.run([faketime, "-f", f"+{offset}", sys.executable, *args], cwd=HERE.parent, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_seconds_until_next_is_always_ahead():
    now = datetime(2026, 11, 30, 0, 7, 30, tzinfo=UTC)
    assert seconds_until_next(time(0, 20), now) == 12 * 60 + 30
    assert seconds_until_next(time(0, 20), now.replace(microsecond=300_000)) == 12 * 60 + 30, "rounded up"
    assert seconds_until_next(time(23, 59), now) == (23 * 60 + 51) * 60 + 30
    assert seconds_until_next(time(0, 7, 30), now) == 24 * 3600, "the moment itself counts as passed"


def test_faketime_moves_the_clock_to_the_moment(faketime):
    result = under_faketime(faketime, time(0, 2), "-c",
                            "from datetime import UTC, datetime; print(datetime.now(UTC).isoformat())", timeout=60)
    assert result.returncode == 0, result.stderr
    shown = datetime.fromisoformat(result.stdout.strip())
    since_midnight = shown - shown.replace(hour=0, minute=0, second=0, microsecond=0)
    assert timedelta(minutes=2) <= since_midnight < timedelta(minutes=3), f"faketime did not take effect: {shown}"


@pytest.mark.parametrize("moment", list(MOMENTS.values()), ids=list(MOMENTS))
def test_clock_sensitive_tests_pass_at(faketime, moment):
    result = under_faketime(faketime, moment, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:warnings",
                            "-k", "not postgres", *(str(HERE / name) for name in CLOCK_SENSITIVE), timeout=900)
    summary = result.stdout.strip().splitlines()[-1:] or ["(no output)"]
    assert result.returncode == 0, (f"at {moment} UTC: {summary[0]}\n"
                                    + "\n".join(line for line in result.stdout.splitlines()
                                                if line.startswith(("FAILED", "ERROR")))
                                    + "\n" + result.stdout[-4000:] + result.stderr[-2000:])
    assert " passed" in summary[0], summary[0]

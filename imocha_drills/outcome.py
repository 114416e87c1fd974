"""What a drill returns (``DrillOutcome``: the comparison with the truth and what the drill saw), and the errors
a run's steps really raised (Dagster wraps them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from imocha_drills.harness import Comparison


@dataclass
class DrillOutcome:
    name: str
    comparison: Comparison
    baseline_requests: int | None = None
    notes: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    ok: bool = True

    @property
    def extra_requests(self) -> int | None:
        if self.baseline_requests is None:
            return None
        return self.comparison.requests["total"] - self.baseline_requests

    @property
    def passed(self) -> bool:
        return self.ok and self.comparison.exact


def user_error(error):
    """The error the step's own code raised (Dagster wraps it in DagsterExecutionStepExecutionError)."""
    while error is not None and error.cls_name == "DagsterExecutionStepExecutionError" and error.cause is not None:
        error = error.cause
    return error


def failure_texts(result) -> list[str]:
    texts = []
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.error:
            error = user_error(event.step_failure_data.error)
            texts.append(f"{event.step_key}: {error.cls_name}: {error.message.strip()[:600]}")
    return texts


def failure_errors(result) -> list:
    return [user_error(e.step_failure_data.error) for e in result.all_events
            if e.is_step_failure and e.step_failure_data.error]

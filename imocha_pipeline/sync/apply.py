"""The apply step: send exactly the plan's writes, one record at a time, through the ledger.

Per record: claim it in the ledger (``sending``), send, then record Degreed's answer (``acknowledged``
with the Degreed id, or ``failed`` with the error). A learner Degreed does not know yet goes to
quarantine to be retried later; it never blocks other records. Credentials that stop working end the
run at once (nothing else could succeed); a stretch of transport failures ends it too.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import pandas as pd

from imocha_pipeline.clients.errors import (
    ApiError,
    ApiTransportError,
    AuthError,
    BadRequestError,
    LearnerNotFoundError,
    RateLimitedError,
    ServerError,
)
from imocha_pipeline.sync.diff import CREATE, RETIRE, UPDATE, WRITE_ACTIONS
from imocha_pipeline.sync.ledger import Ledger
from imocha_pipeline.sync.quarantine import REJECTED, WAITING_FOR_LEARNER, Entry, Quarantine
from imocha_pipeline.sync.values import plain, same_value

logger = logging.getLogger("imocha_pipeline.apply")


class ApplyAborted(RuntimeError):
    """The apply step stopped early; the ledger holds everything done so far."""


@dataclass(frozen=True)
class WriteOutcome:
    """What one write did: the Degreed id it ended with and the action really taken (e.g. ``adopted``)."""

    degreed_id: str | None
    action: str


class EntityWriter(Protocol):
    """Entity-specific Degreed calls behind the generic apply loop."""

    def create(self, row: dict[str, Any]) -> WriteOutcome: ...

    def update(self, degreed_id: str, row: dict[str, Any], changed_fields: list[str]) -> WriteOutcome: ...

    def retire(self, degreed_id: str, row: dict[str, Any]) -> WriteOutcome: ...

    def find_existing(self, row: dict[str, Any]) -> dict[str, Any] | None:
        """Read Degreed for a record whose earlier send is unresolved.

        Returns ``{"degreed_id": ..., <field>: <current value>, ...}`` if Degreed has it, else None.
        """
        ...


@dataclass
class ApplyResult:
    counts: Counter = field(default_factory=Counter)
    errors: list[dict[str, str]] = field(default_factory=list)
    elapsed_seconds: float = 0.0

    def as_metadata(self) -> dict[str, int]:
        keys = ("created", "updated", "retired", "adopted", "failed", "waiting_for_learner", "rejected",
                "skipped_claimed", "resolved_from_degreed")
        return {key: int(self.counts.get(key, 0)) for key in keys}


PAST_TENSE = {CREATE: "created", UPDATE: "updated", RETIRE: "retired", "adopted": "adopted"}


def apply_plan(
    plan_frame: pd.DataFrame,
    writer: EntityWriter,
    ledger: Ledger,
    quarantine: Quarantine,
    *,
    fields: tuple[str, ...],
    max_consecutive_transport_failures: int = 5,
    progress: Callable[[int, int, ApplyResult], None] | None = None,
) -> ApplyResult:
    """Send the plan's creates, updates and retirements; return counts by outcome."""
    started = time.monotonic()
    result = ApplyResult()
    writes = plan_frame[plan_frame["action"].isin(WRITE_ACTIONS)]
    total = len(writes)
    consecutive_transport = 0
    for done, row in enumerate(writes.to_dict("records"), start=1):
        key = str(row["record_key"])
        payload = {name: plain(row.get(name)) for name in fields}
        payload_hash = str(row.get("payload_hash") or "")
        if not ledger.claim(key, row["action"], payload, payload_hash):
            result.counts["skipped_claimed"] += 1
            continue
        try:
            outcome = _send(writer, row, payload, ledger, key, result)
        except AuthError as exc:
            ledger.fail(key, str(exc))
            raise ApplyAborted(f"Degreed refused our credentials; stopping ({exc})") from exc
        except LearnerNotFoundError as exc:
            ledger.fail(key, str(exc))
            quarantine.put([Entry(key, WAITING_FOR_LEARNER, f"learner not in Degreed yet: {exc.identifier or exc}",
                                  column="user_id", rule="learner exists in Degreed",
                                  bad_value=exc.identifier)])
            result.counts["waiting_for_learner"] += 1
            consecutive_transport = 0
            continue
        except BadRequestError as exc:
            ledger.fail(key, str(exc))
            quarantine.put([Entry(key, REJECTED, f"Degreed rejected the write: {exc}")])
            result.counts["rejected"] += 1
            result.errors.append({"record_key": key, "error": str(exc)})
            consecutive_transport = 0
            continue
        except (ApiTransportError, ServerError, RateLimitedError) as exc:
            ledger.fail(key, str(exc))
            result.counts["failed"] += 1
            result.errors.append({"record_key": key, "error": str(exc)})
            consecutive_transport += 1
            if consecutive_transport >= max_consecutive_transport_failures:
                raise ApplyAborted(
                    f"{consecutive_transport} writes in a row could not reach Degreed; stopping "
                    f"(last: {exc})") from exc
            continue
        except ApiError as exc:
            ledger.fail(key, str(exc))
            result.counts["failed"] += 1
            result.errors.append({"record_key": key, "error": str(exc)})
            consecutive_transport = 0
            continue
        consecutive_transport = 0
        ledger.acknowledge(key, outcome.degreed_id, payload_hash, payload, action=outcome.action)
        quarantine.resolve([key])
        result.counts[PAST_TENSE.get(outcome.action, outcome.action)] += 1
        if progress is not None:
            progress(done, total, result)
    result.elapsed_seconds = time.monotonic() - started
    return result


def _send(writer: EntityWriter, row: dict[str, Any], payload: dict[str, Any], ledger: Ledger, key: str,
          result: ApplyResult) -> WriteOutcome:
    action = row["action"]
    record = payload | {"record_key": key}
    degreed_id = plain(row.get("degreed_id"))
    previous = ledger.get(key) or {}
    if action == CREATE and previous.get("attempts", 0) > 1 and not previous.get("degreed_id"):
        # An earlier send may have reached Degreed without our hearing back: look before sending again.
        existing = writer.find_existing(record)
        if existing:
            result.counts["resolved_from_degreed"] += 1
            return _converge(writer, existing, record, list(payload))
    if action == CREATE:
        return writer.create(record)
    degreed_id = degreed_id or previous.get("degreed_id")
    if not degreed_id:
        existing = writer.find_existing(record)
        if not existing:
            return writer.create(record)
        degreed_id = existing["degreed_id"]
    if action == UPDATE:
        return writer.update(degreed_id, record, list(row.get("changed_fields") or []))
    return writer.retire(degreed_id, record)


def _converge(writer: EntityWriter, existing: dict[str, Any], record: dict[str, Any],
              fields: list[str]) -> WriteOutcome:
    """Bring an existing Degreed record to the desired values, patching only what differs."""
    changed = [name for name in fields if not same_value(existing.get(name), record.get(name))]
    if not changed:
        return WriteOutcome(existing["degreed_id"], "adopted")
    outcome = writer.update(existing["degreed_id"], record, changed)
    return WriteOutcome(outcome.degreed_id, "adopted")

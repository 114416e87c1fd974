"""The apply step: send exactly the plan's writes, one record at a time, through the ledger.

Per record: claim it in the ledger (``sending``), send, then record Degreed's answer (``acknowledged``
with the Degreed id, or ``failed`` with the error). A learner Degreed does not know yet goes to
quarantine to be retried later; it never blocks other records. Credentials that stop working end the
run at once (nothing else could succeed); a stretch of transport failures ends it too.

What the reliability drills (issue 5) made explicit:
- a record whose earlier send is unresolved (a crash left it ``sending``, an answer was lost, a repair) is
  looked up in Degreed before anything is sent again, for every entity;
- a create whose answer is lost (``AmbiguousWriteError``) keeps its claim and is looked up again once it had
  time to land (one read timeout later), at the end of the loop, and sent again only if Degreed lacks it;
- claims are leases renewed by a heartbeat (``ClaimKeeper``); records another run holds are retried at the
  end, so a dead run's claims are taken over by the next run instead of blocking them;
- a write that could not reach Degreed even after the HTTP layer's retries (a burst of 5xx, dropped
  connections, 429s) gets one more try at the end of the loop, reading Degreed first for a create, so a
  short bad patch of the API does not leave records for the next run;
- losing the staging database mid-loop ends the step with ``StagingDatabaseError``, a message that says
  what state the ledger is in (never a bare driver traceback with SQL and parameters).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import pandas as pd
from sqlalchemy import exc as sa_exc

from imocha_pipeline.clients.errors import (
    AmbiguousWriteError,
    ApiError,
    ApiTransportError,
    AuthError,
    BadRequestError,
    LearnerNotFoundError,
    RateLimitedError,
    ServerError,
)
from imocha_pipeline.clients.http.policy import default_read_timeout
from imocha_pipeline.sync.core.diff import CREATE, RETIRE, UPDATE, WRITE_ACTIONS
from imocha_pipeline.sync.core.ledger import DONE, SUPERSEDED, Ledger, Source
from imocha_pipeline.sync.core.plain_values import plain, same_value
from imocha_pipeline.sync.core.quarantine import REJECTED, WAITING_FOR_LEARNER, Entry, Quarantine

logger = logging.getLogger("imocha_pipeline.apply")


MAX_UNSURE_ROUNDS = 4  # look-ups and resends of a create whose answer keeps getting lost, within one run
RETRY_LATER_PAUSE_SECONDS = 2.0  # before the end-of-loop try of writes that could not reach Degreed


class ApplyAborted(RuntimeError):
    """The apply step stopped early; the ledger holds everything done so far."""


class StagingDatabaseError(ApplyAborted):
    """The staging database (ledger, quarantine) went away in the middle of the apply step."""


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
    outcomes: dict[str, str] = field(default_factory=dict)
    """Each record's final outcome (``created``, ``failed``, ``waiting_for_learner``...), by record key."""

    def note(self, key: str, outcome: str) -> None:
        """Count an outcome of a record; the last one noted for a record is its final outcome."""
        self.counts[outcome] += 1
        self.outcomes[key] = outcome

    def as_metadata(self) -> dict[str, int]:
        keys = ("created", "updated", "retired", "adopted", "failed", "waiting_for_learner", "rejected",
                "skipped_claimed", "resolved_from_degreed", "already_delivered", "delivered_by_other_run",
                "superseded", "unsure_sends", "retried_at_end")
        return {key: int(self.counts.get(key, 0)) for key in keys}


PAST_TENSE = {CREATE: "created", UPDATE: "updated", RETIRE: "retired", "adopted": "adopted"}


class ClaimKeeper:
    """Renews this run's claims every quarter lease while the apply step runs (a background thread)."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger
        self.interval = max(0.25, ledger.stale_claim_after.total_seconds() / 4)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"claims-{ledger.entity}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.ledger.heartbeat()
            except Exception as exc:  # the database may be gone: the apply step reports that itself
                logger.warning("could not renew claims of %s: %s", self.ledger.entity, type(exc).__name__)

    def __enter__(self) -> ClaimKeeper:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def apply_plan(
    plan_frame: pd.DataFrame,
    writer: EntityWriter,
    ledger: Ledger,
    quarantine: Quarantine,
    *,
    fields: tuple[str, ...],
    max_consecutive_transport_failures: int = 5,
    progress: Callable[[int, int, ApplyResult], None] | None = None,
    resend: bool = False,
    held_wait_seconds: float | None = None,
) -> ApplyResult:
    """Send the plan's creates, updates and retirements; return counts by outcome.

    Records another live run holds are tried again at the end, until that run delivered them or its claim
    ran out (at most ``held_wait_seconds``, default one lease and a little): a claim left by a dead run is
    taken over and resolved by reading Degreed, so one re-run after a crash completes everything.
    ``resend``: the plan repairs records Degreed lost (send them even though the ledger shows them delivered).
    """
    started = time.monotonic()
    result = ApplyResult()
    writes = plan_frame[plan_frame["action"].isin(WRITE_ACTIONS)]
    total = len(writes)
    state = {"consecutive_transport": 0}
    held: list[dict[str, Any]] = []
    unsure: list[tuple[float, dict[str, Any]]] = []  # creates whose fate is unknown, with when to look again
    unsure_rounds: Counter = Counter()
    retry_later: list[dict[str, Any]] = []  # writes that could not reach Degreed on the first pass
    settle = default_read_timeout()

    def process(row: dict[str, Any], first_try: bool) -> bool:
        """Claim and send one record; False when another live run holds it."""
        key = str(row["record_key"])
        payload = {name: plain(row.get(name)) for name in fields}
        payload_hash = str(row.get("payload_hash") or "")
        source = row_source(row)
        if not ledger.claim(key, row["action"], payload, payload_hash, resend=resend, source=source):
            refusal = ledger.refusal(key, payload_hash, row["action"], source)
            if refusal == SUPERSEDED:
                logger.info("%s %s: a later iMocha attempt is already in Degreed or on its way; attempt %s is "
                            "not sent", ledger.entity, key, source.id if source else "?")
                result.note(key, "superseded")
                return True
            if refusal == DONE:
                result.note(key, "delivered_by_other_run" if not first_try else "already_delivered")
                return True
            return False
        try:
            outcome = _send(writer, row, payload, ledger, key, result)
        except AuthError as exc:
            ledger.fail(key, str(exc))
            raise ApplyAborted(f"Degreed refused our credentials; stopping ({exc})") from exc
        except AmbiguousWriteError as exc:
            if row["action"] == CREATE and unsure_rounds[key] < MAX_UNSURE_ROUNDS:
                # It may have landed, possibly a little later: keep the claim, read Degreed after a while and
                # send again only if it is not there (a few rounds: the resend may be unlucky too).
                unsure_rounds[key] += 1
                logger.info("%s %s: %s; reading Degreed before sending it again", ledger.entity, key, exc)
                unsure.append((time.monotonic() + settle, row))
                result.note(key, "unsure_sends")
                return True
            ledger.fail(key, str(exc))
            result.note(key, "failed")
            result.errors.append({"record_key": key, "error": str(exc)})
            return True
        except LearnerNotFoundError as exc:
            ledger.fail(key, str(exc))
            quarantine.put([Entry(key, WAITING_FOR_LEARNER, f"learner not in Degreed yet: {exc.identifier or exc}",
                                  column="user_id", rule="learner exists in Degreed",
                                  bad_value=exc.identifier)])
            result.note(key, "waiting_for_learner")
            state["consecutive_transport"] = 0
            return True
        except BadRequestError as exc:
            ledger.fail(key, str(exc))
            quarantine.put([Entry(key, REJECTED, f"Degreed rejected the write: {exc}")])
            result.note(key, "rejected")
            result.errors.append({"record_key": key, "error": str(exc)})
            state["consecutive_transport"] = 0
            return True
        except (ApiTransportError, ServerError, RateLimitedError) as exc:
            ledger.fail(key, str(exc))
            state["consecutive_transport"] += 1
            if state["consecutive_transport"] >= max_consecutive_transport_failures:
                result.note(key, "failed")
                raise ApplyAborted(
                    f"{state['consecutive_transport']} writes in a row could not reach Degreed; stopping "
                    f"(last: {exc})") from exc
            if first_try:
                logger.info("%s %s: %s; trying once more at the end of this run", ledger.entity, key, exc)
                retry_later.append(row)
                result.note(key, "retried_at_end")
                return True
            result.note(key, "failed")
            result.errors.append({"record_key": key, "error": str(exc)})
            return True
        except ApiError as exc:
            ledger.fail(key, str(exc))
            result.note(key, "failed")
            result.errors.append({"record_key": key, "error": str(exc)})
            state["consecutive_transport"] = 0
            return True
        state["consecutive_transport"] = 0
        ledger.acknowledge(key, outcome.degreed_id, payload_hash, payload, action=outcome.action)
        quarantine.resolve([key])
        result.note(key, PAST_TENSE.get(outcome.action, outcome.action))
        return True

    try:
        with ClaimKeeper(ledger):
            _loop(writes, process, held, unsure, retry_later, ledger, result, progress, total, held_wait_seconds)
    except sa_exc.DBAPIError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
        raise StagingDatabaseError(
            f"lost the staging database while recording {ledger.entity} writes ({type(exc).__name__}: {reason}). "
            "Everything Degreed acknowledged before is in the ledger; a record in flight stays 'sending' and the "
            "next run reads Degreed before sending it again. Re-run once the database is reachable.") from None
    except ApplyAborted as exc:
        if isinstance(exc, StagingDatabaseError):
            raise
        done = ", ".join(f"{name} {count}" for name, count in result.as_metadata().items() if count) or "nothing"
        raise ApplyAborted(f"{exc}. {ledger.entity}: {total} due writes, so far {done}; the rest stay outstanding "
                           "and the next run (a retry of this step, or the catch-up job) sends them") from exc
    result.elapsed_seconds = time.monotonic() - started
    return result


def row_source(row: dict[str, Any]) -> Source | None:
    """The iMocha attempt a plan row comes from (``source_at``/``source_id``), if it has one."""
    at = plain(row.get("source_at"))
    if at is None:
        return None
    if isinstance(at, pd.Timestamp):
        at = at.to_pydatetime()
    return Source(at, int(plain(row.get("source_id")) or 0))


def _loop(writes, process, held, unsure, retry_later, ledger, result, progress, total, held_wait_seconds) -> None:
    """Every write once; then the writes that could not reach Degreed, the unsure creates (after they settled)
    and the records another run held."""
    for done, row in enumerate(writes.to_dict("records"), start=1):
        if not process(row, first_try=True):
            held.append(row)
        if progress is not None:
            progress(done, total, result)
    if retry_later:
        logger.info("%d %s writes could not reach Degreed on the first pass; trying them once more",
                    len(retry_later), ledger.entity)
        time.sleep(RETRY_LATER_PAUSE_SECONDS)
        for row in retry_later:
            if not process(row, first_try=False):  # taken over by another run meanwhile
                held.append(row)
    index = 0
    while index < len(unsure):  # grows when a resend is unsure again
        when, row = unsure[index]
        index += 1
        time.sleep(max(0.0, when - time.monotonic()))
        process(row, first_try=False)  # our claim; attempts > 1, so Degreed is read before any resend
    wait = held_wait_seconds if held_wait_seconds is not None else ledger.stale_claim_after.total_seconds() + 5
    deadline = time.monotonic() + wait
    if held:
        logger.info("%d %s records are held by another run; waiting up to %.0f s for it to deliver them or "
                    "for its claims to run out", len(held), ledger.entity, wait)
    while held and time.monotonic() < deadline:
        time.sleep(min(1.0, max(0.1, wait / 20)))
        held[:] = [row for row in held if not process(row, first_try=False)]
    if held:
        for row in held:
            result.note(str(row["record_key"]), "skipped_claimed")
        logger.warning("%d %s records are still held by another live run; that run sends them (or the next "
                       "run, once its claims run out)", len(held), ledger.entity)


def _send(writer: EntityWriter, row: dict[str, Any], payload: dict[str, Any], ledger: Ledger, key: str,
          result: ApplyResult) -> WriteOutcome:
    action = row["action"]
    record = payload | {"record_key": key}
    degreed_id = plain(row.get("degreed_id"))
    previous = ledger.get(key) or {}
    if action == CREATE and previous.get("attempts", 0) > 1:
        # An earlier send (a crash, a lost answer, a repair of a record Degreed lost) may have reached Degreed
        # without our hearing back: look before sending again.
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

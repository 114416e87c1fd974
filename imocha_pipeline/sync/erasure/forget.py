"""The whole erasure of one learner (``imocha-pipeline forget``, ``forget_job``), or its lifting, and its report.

Order: the local erasure and the ``erased_learners`` row first, in one transaction (from then on no run stages the
learner again, and a request to delete in Degreed is on record for the reconcile to finish), then iMocha, then
Degreed. A dry run does the local part in a transaction it rolls back, so the
counts are exactly what a real run would change, and calls neither API.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine

from imocha_pipeline.sync.erasure import local, registry, remote


class _Rollback(Exception):
    pass


@dataclass
class ForgetReport:
    """What an erasure removed (or, in a dry run, would remove), per table and per system; no email in it."""

    email_hash: str
    dry_run: bool
    undo: bool = False
    local: dict[str, int] = field(default_factory=dict)
    imocha: dict[str, Any] = field(default_factory=lambda: {"requested": False})
    degreed: dict[str, Any] = field(default_factory=lambda: {"requested": False})

    @property
    def failed(self) -> bool:
        return bool(self.degreed.get("failed"))

    def as_dict(self) -> dict[str, Any]:
        return {"learner": registry.marker(self.email_hash), "dry_run": self.dry_run, "undo": self.undo,
                "local": self.local, "imocha": self.imocha, "degreed": self.degreed}

    def lines(self) -> list[str]:
        verb = "would" if self.dry_run else "did"
        head = "lift the erasure of" if self.undo else "erase"
        lines = [f"forget: {verb} {head} learner {registry.marker(self.email_hash)[:23]}…"
                 f"{' (dry run: nothing changed)' if self.dry_run else ''}"]
        lines.append("  staging tables (rows changed):")
        lines += [f"    {table:<24} {count}" for table, count in sorted(self.local.items())]
        for system, outcome in (("iMocha", self.imocha), ("Degreed", self.degreed)):
            shown = ", ".join(f"{k}={v}" for k, v in outcome.items() if k != "requested")
            lines.append(f"  {system}: {shown if outcome.get('requested') or shown else 'not asked'}")
        return lines


def forget(engine: Engine, email: str, *, in_imocha: bool = False, in_degreed: bool = False, dry_run: bool = False,
           imocha_client: Callable[[], Any] | None = None,
           degreed_client: Callable[[], Any] | None = None) -> ForgetReport:
    """Erase ``email`` here (always), in iMocha and in Degreed (when asked). The key is read first: without
    IMOCHA_PIPELINE_ERASURE_KEY nothing happens (the settings error names it)."""
    email = registry.normalise_email(email)
    email_hash = registry.email_hmac(email, registry.erasure_key())
    report = ForgetReport(email_hash, dry_run)
    try:
        with engine.begin() as conn:
            # The learner's erased_learners row is written first: it is the lock that makes two erasures of the
            # same learner (two operators, a retried forget_job) run one after the other, each reading the ledger
            # as the other left it, instead of both renaming the same rows.
            registry.record(conn, email_hash, lifted=False)
            if in_degreed:  # recorded before any delete: the reconcile finishes what this run does not
                registry.record_degreed_deletion_requested(conn, email_hash)
            report.local = local.erase(conn, email, email_hash)
            report.local["erased_learners"] = 1
            pending = remote.to_delete(conn, email_hash)
            if dry_run:
                raise _Rollback
    except _Rollback:
        pass
    if in_imocha:
        report.imocha = {"requested": True}
        if not dry_run:
            outcome = remote.request_in_imocha(imocha_client(), email)
            report.imocha.update(accepted=outcome.accepted, answer=outcome.message)
            if outcome.accepted:
                with engine.begin() as conn:
                    registry.record_masked_in_imocha(conn, email_hash)
    if in_degreed:
        report.degreed = {"requested": True, "to_delete": remote.degreed_plan(pending)}
        if not dry_run:
            outcome = remote.delete_in_degreed(engine, degreed_client(), email_hash)
            report.degreed.update(deleted=outcome.deleted, already_gone=outcome.already_gone,
                                  failed=outcome.failed, without_degreed_id=outcome.not_deletable)
            if outcome.taken_elsewhere:
                report.degreed["held_by_another_run"] = outcome.taken_elsewhere
    return report


def undo(engine: Engine, email: str, *, dry_run: bool = False) -> ForgetReport:
    """Lift the erasure of ``email`` (an operator's decision): the learner's attempts are staged and sent again as
    new records (the erased ones only if iMocha did not mask them). Not erased: a clear error."""
    email = registry.normalise_email(email)
    email_hash = registry.email_hmac(email, registry.erasure_key())
    report = ForgetReport(email_hash, dry_run, undo=True)
    try:
        with engine.begin() as conn:
            if not registry.is_erased(conn, email_hash):
                raise LookupError("this learner is not erased (or the erasure was already lifted): nothing to undo")
            masked = registry.masked_in_imocha(conn, email_hash)
            report.local = local.lift(conn, email_hash, keep_attempts=masked)
            if masked:
                report.imocha = {"requested": False, "note": "iMocha masked the erased attempts: they stay erased; "
                                                             "the learner's new attempts sync"}
            registry.record(conn, email_hash, lifted=True)
            report.local["erased_learners"] = 1
            if dry_run:
                raise _Rollback
    except _Rollback:
        pass
    return report

"""``bulk-export``: every completion the ledger has not delivered, in one Completions Template file.

Which completions: the outstanding completions that are due and would be *created* (Degreed has none of them:
``sync/core/outstanding.py``), whose payload passes the completion model (others are quarantined with the
reason, as on the API path). Records already in Degreed with other values, and all skill ratings, stay on the API
path. Each exported record is marked ``sent_by_file`` in the ledger with the file's name *before* the file is
handed over, in a conditional update, so no API run sends it meanwhile and a record another run is sending is
left out of the file. If the upload fails the marks are taken back. If the process dies after marking and before
the upload, the records wait out the grace period and then go by API (after a read of Degreed).

The file's name carries the export's second (``YYYYMMDDHHMMSS``); two exports in the same second (an operator's
command beside the asset's run) must not write one file over the other, nor take back each other's marks after a
failed upload, so each name is reserved in ``sync_state`` (``bulk_file:<hash of the name>``, a primary key: one
export gets it) and, while it is taken or a file of that name is in the directory, the next second's name is tried.

Where the file goes: the directory ``IMOCHA_PIPELINE_BULK_DIRECTORY`` always (for the admin's File Upload page, and
as the copy of what was sent), and with target ``sftp`` also the organisation's SFTP folder (``clients/sftp.py``).
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from imocha_pipeline import settings, staging
from imocha_pipeline.clients.sftp import SftpTarget, SftpUploadError, upload
from imocha_pipeline.sync.bulk.template import file_name, template_row, to_csv
from imocha_pipeline.sync.completions.entity import COMPLETIONS
from imocha_pipeline.sync.core.apply import row_source
from imocha_pipeline.sync.core.delivery import validate_payloads
from imocha_pipeline.sync.core.diff import CREATE
from imocha_pipeline.sync.core.ledger import Ledger
from imocha_pipeline.sync.core.outstanding import Scope, outstanding
from imocha_pipeline.sync.core.plain_values import plain
from imocha_pipeline.sync.core.quarantine import Quarantine

DIRECTORY, SFTP = "directory", "sftp"


@dataclass(frozen=True)
class BulkSettings:
    """Where and under which names the files go (from the settings catalogue, or given by a test or the CLI)."""

    client_name: str
    provider: str
    directory: Path
    target: str = DIRECTORY
    sftp: SftpTarget | None = None

    @classmethod
    def from_env(cls, target: str | None = None, directory: str | None = None) -> BulkSettings:
        target = target or settings.IMOCHA_PIPELINE_BULK_TARGET.value()
        client = (settings.IMOCHA_PIPELINE_BULK_CLIENT_NAME.value() or settings.DEGREED_ORGANIZATION_CODE.value()
                  or "iMocha")
        sftp = SftpTarget(host=settings.DEGREED_SFTP_HOST.value(), user=settings.DEGREED_SFTP_USER.value(),
                          key_path=settings.DEGREED_SFTP_KEY_PATH.value(), port=settings.DEGREED_SFTP_PORT.value(),
                          folder=settings.DEGREED_SFTP_FOLDER.value(),
                          known_hosts=settings.DEGREED_SFTP_KNOWN_HOSTS.value()) if target == SFTP else None
        return cls(client_name=client, provider=settings.DEGREED_PROVIDER_CODE.value(),
                   directory=Path(directory or settings.IMOCHA_PIPELINE_BULK_DIRECTORY.value()), target=target,
                   sftp=sftp)


@dataclass
class BulkExport:
    """What one export did."""

    file_name: str | None = None
    path: Path | None = None
    remote_path: str | None = None
    records: int = 0
    left_out: int = 0
    invalid: int = 0
    api_only: int = 0
    waiting: Counter = field(default_factory=Counter)
    dry_run: bool = False

    def summary(self) -> str:
        waiting = ", ".join(f"{reason} {n}" for reason, n in sorted(self.waiting.items())) or "none"
        if not self.records:
            head = ("dry run: " if self.dry_run else "") + "no completion to export"
        elif self.dry_run:
            head = f"dry run: {self.records} completions would go in {self.file_name}"
        else:
            where = f", uploaded to {self.remote_path}" if self.remote_path else ""
            head = f"{self.records} completions in {self.path}{where}; ledger: sent_by_file"
        return (f"{head}. Left out: {self.left_out} being sent by another run or already in an earlier file past "
                f"its grace period (API path), {self.invalid} invalid (quarantined), "
                f"{self.api_only} already in Degreed with other values (API path); waiting: {waiting}")

    def as_metadata(self) -> dict[str, object]:
        return {"file_name": self.file_name or "", "records": self.records, "left_out": self.left_out,
                "invalid_payloads": self.invalid, "api_path_updates": self.api_only,
                "remote_path": self.remote_path or "", "dry_run": self.dry_run,
                **{f"waiting_{reason}": int(n) for reason, n in sorted(self.waiting.items())}}


def export_completions(engine: Engine, bulk: BulkSettings, run_id: str, *, now: datetime | None = None,
                       dry_run: bool = False) -> BulkExport:
    """Write (and upload) the Completions Template file of every undelivered completion; see the module text."""
    now = now or staging.utcnow()
    found = outstanding(engine, COMPLETIONS, Scope(), now=now)
    creates = found.due[found.due["action"] == CREATE]
    frame, invalid = validate_payloads(creates, COMPLETIONS)
    report = BulkExport(invalid=len(invalid), api_only=len(found.due) - len(creates), waiting=found.waiting,
                        dry_run=dry_run)
    if frame.empty:
        Quarantine(engine, COMPLETIONS.name, run_id).put(invalid)
        return report
    records = [{"record_key": str(row["record_key"]), "payload_hash": str(row.get("payload_hash") or ""),
                "payload": {f: plain(row.get(f)) for f in COMPLETIONS.all_fields}, "source": row_source(row)}
               for row in frame.to_dict("records")]
    if dry_run:  # the name this second would take (no name is reserved)
        report.file_name, report.records = file_name(bulk.client_name, now), len(records)
        return report
    Quarantine(engine, COMPLETIONS.name, run_id).put(invalid)
    ledger = Ledger(engine, COMPLETIONS.name, run_id)
    name = report.file_name = _reserve_file_name(engine, bulk, now, run_id)
    marked = ledger.mark_sent_by_file(records, name, now)
    report.records, report.left_out = len(marked), len(records) - len(marked)
    if not marked:
        _release_file_name(engine, name)
        report.file_name = None
        return report
    rows = [template_row(r["payload"], bulk.provider) for r in records if r["record_key"] in marked]
    try:
        report.path = _write(bulk.directory, name, to_csv(rows))
        if bulk.target == SFTP:
            if bulk.sftp is None:
                raise SftpUploadError("target sftp needs the DEGREED_SFTP_* settings")
            report.remote_path = upload(bulk.sftp, report.path)
    except (OSError, SftpUploadError):
        ledger.unmark_file(name)  # Degreed never got it: the records are outstanding again
        if report.path is not None:
            report.path.unlink(missing_ok=True)  # no copy of a file that was not sent (nobody uploads it by hand)
        raise
    return report


NAME_TRIES = 120


def _reservation(name: str) -> str:
    return "bulk_file:" + hashlib.sha256(name.encode()).hexdigest()[:40]


def _reserve_file_name(engine: Engine, bulk: BulkSettings, now: datetime, run_id: str) -> str:
    """A file name no other export holds: ``now``'s, else the next free second's (see the module text)."""
    table = staging.sync_state
    for step in range(NAME_TRIES):
        name = file_name(bulk.client_name, now + timedelta(seconds=step))
        if (bulk.directory / name).exists():
            continue
        try:
            with engine.begin() as conn:
                conn.execute(table.insert().values(name=_reservation(name), value={"file_name": name, "run_id": run_id},
                                                   updated_at=staging.utcnow()))
        except sa.exc.IntegrityError:
            continue
        return name
    raise RuntimeError(f"no free Completions Template file name in the {NAME_TRIES} seconds from "
                       f"{file_name(bulk.client_name, now)}")


def _release_file_name(engine: Engine, name: str) -> None:
    """The export put nothing in the file: its name is free again."""
    with engine.begin() as conn:
        conn.execute(staging.sync_state.delete().where(staging.sync_state.c.name == _reservation(name)))


def _write(directory: Path, name: str, text: str) -> Path:
    """Write the file under a temporary name and rename it, so a reader never sees half a file."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    partial = directory / f".{name}.part"
    partial.write_text(text, encoding="utf-8", newline="")
    os.replace(partial, path)
    return path

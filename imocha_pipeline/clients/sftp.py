"""Upload a file to an SFTP folder (Degreed's organisation SFTP folder for file-based loads), through asyncssh.

The server's host key must be known (a known_hosts file): an upload never goes to a server it cannot verify.
The file lands under a hidden temporary name first and is renamed once complete, so a pickup job that scans the
folder never reads half a file.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path, PurePosixPath


class SftpUploadError(RuntimeError):
    """The file could not be uploaded (connection, login, host key or remote folder); nothing was renamed."""


@dataclass(frozen=True)
class SftpTarget:
    """Where files go: ``host``/``port``, the login ``user`` with the private key at ``key_path``, the remote
    ``folder`` ("" = the login folder) and the ``known_hosts`` file ("" = the user's ``~/.ssh/known_hosts``)."""

    host: str
    user: str
    key_path: str
    port: int = 22
    folder: str = ""
    known_hosts: str = ""
    connect_timeout: float = 30.0

    def describe(self) -> str:
        return f"sftp://{self.user}@{self.host}:{self.port}/{self.folder.strip('/')}"

    def remote_path(self, name: str) -> str:
        return str(PurePosixPath(self.folder) / name) if self.folder else name


def upload(target: SftpTarget, local: Path) -> str:
    """Upload ``local`` into the target folder under its own name; returns the remote path."""
    import asyncssh  # here, not at the top: about 14 MB that every run process would carry for the rare upload

    try:
        return asyncio.run(_upload(target, Path(local)))
    except (TimeoutError, OSError, asyncssh.Error) as exc:
        reason = getattr(exc, "reason", "") or str(exc) or type(exc).__name__
        raise SftpUploadError(f"upload of {Path(local).name} to {target.describe()} failed: {reason}") from exc


async def _upload(target: SftpTarget, local: Path) -> str:
    import asyncssh

    if not target.host or not target.user or not target.key_path:
        raise SftpUploadError("DEGREED_SFTP_HOST, DEGREED_SFTP_USER and DEGREED_SFTP_KEY_PATH are needed for an "
                              "SFTP upload")
    known_hosts = target.known_hosts or ()  # (): asyncssh's default, ~/.ssh/known_hosts; never None (no check)
    final = target.remote_path(local.name)
    partial = target.remote_path(f".{local.name}.part")
    async with asyncssh.connect(target.host, port=target.port, username=target.user,
                                client_keys=[target.key_path], known_hosts=known_hosts, agent_path=None,
                                connect_timeout=target.connect_timeout) as conn, conn.start_sftp_client() as sftp:
        await sftp.put(str(local), partial)
        await sftp.rename(partial, final)
    return final

"""A real SFTP server on loopback standing in for the organisation's Degreed SFTP folder (asyncssh's server).

One user logs in with one generated key; the SFTP session is chroot'ed to the drop folder (a client sees ``/`` as
that folder and cannot leave it); no shell, no exec, no port forwarding. The host key is generated too and
written to a known_hosts file, so the client verifies the server as it must in production. The Degreed
simulator's ``ingest_completion_files`` reads the same folder (``DegreedSimulator.file_drop_folder``).
"""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import asyncssh

DEFAULT_USER = "imocha-sftp"


class _Server(asyncssh.SSHServer):
    def __init__(self, user: str, key: asyncssh.SSHKey):
        self.user = user
        self.key = key

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        return username == self.user and key.public_data == self.key.public_data


class SftpDrop:
    """``SftpDrop(root, workdir).start()``; ``settings()`` gives the pipeline's DEGREED_SFTP_* values."""

    def __init__(self, root: Path, workdir: Path, user: str = DEFAULT_USER):
        self.root = Path(root)
        self.workdir = Path(workdir)
        self.user = user
        self.port = 0
        self.key_path = self.workdir / "sftp_client_key"
        self.known_hosts = self.workdir / "sftp_known_hosts"
        self._client_key = asyncssh.generate_private_key("ssh-ed25519")
        self._host_key = asyncssh.generate_private_key("ssh-ed25519")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncssh.SSHAcceptor | None = None
        self._thread: threading.Thread | None = None
        self.logins = 0

    def start(self) -> SftpDrop:
        self.root.mkdir(parents=True, exist_ok=True)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._client_key.write_private_key(str(self.key_path))
        os.chmod(self.key_path, 0o600)
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        def serve() -> None:
            asyncio.set_event_loop(self._loop)
            self._server = self._loop.run_until_complete(asyncssh.listen(
                "127.0.0.1", 0, server_host_keys=[self._host_key], server_factory=self._new_connection,
                sftp_factory=lambda chan: asyncssh.SFTPServer(chan, chroot=str(self.root).encode()),
                allow_scp=False, agent_forwarding=False, x11_forwarding=False,
                process_factory=None, session_factory=None))
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, name="sftp-drop", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the SFTP server did not start")
        host_public = self._host_key.export_public_key("openssh").decode().split()[:2]
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {' '.join(host_public)}\n")
        return self

    def _new_connection(self) -> _Server:
        self.logins += 1
        return _Server(self.user, self._client_key)

    def settings(self, folder: str = "") -> dict[str, str]:
        return {"DEGREED_SFTP_HOST": "127.0.0.1", "DEGREED_SFTP_PORT": str(self.port), "DEGREED_SFTP_USER": self.user,
                "DEGREED_SFTP_KEY_PATH": str(self.key_path), "DEGREED_SFTP_KNOWN_HOSTS": str(self.known_hosts),
                "DEGREED_SFTP_FOLDER": folder}

    def stop(self) -> None:
        if self._loop is None or self._server is None:
            return
        loop, server = self._loop, self._server

        async def close() -> None:
            server.close()
            await server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        loop.close()
        self._loop = self._server = None

    def __enter__(self) -> SftpDrop:
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()

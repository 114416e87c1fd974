"""A TCP proxy in front of PostgreSQL that can play a lost server: ``cut()`` drops every connection and refuses
new ones until ``restore()``. Only this drill's connections go through it, so the shared server is untouched."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass


class TcpProxy:
    def __init__(self, target_host: str = "127.0.0.1", target_port: int = 5432):
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self._down = False
        self._closed = False
        threading.Thread(target=self._accept, daemon=True, name="pg-proxy").start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self._down:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._pairs.append((client, upstream))
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                ready, _, _ = select.select([a, b], [], [], 0.5)
                if self._down:
                    break
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        raise OSError("closed")
                    (b if sock is a else a).sendall(data)
        except OSError:
            pass
        finally:
            for sock in (a, b):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def cut(self) -> None:
        """The server is gone: every open connection breaks, new ones are refused."""
        self._down = True
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            for sock in (a, b):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def restore(self) -> None:
        self._down = False

    def close(self) -> None:
        self._closed = True
        self.cut()
        self._listener.close()


@dataclass(frozen=True)
class ProxiedSchema:
    """A drill's own PostgreSQL schema, reached through a ``TcpProxy`` (see ``proxied_postgres_schema``)."""

    url: str  # the staging URL: through the proxy, search_path = the schema, application_name tagged
    proxy: TcpProxy
    admin_url: str  # straight to the server, for pg_terminate_backend of the tagged connections
    application: str


@contextlib.contextmanager
def proxied_postgres_schema(server_url: str, prefix: str) -> Iterator[ProxiedSchema]:
    """Create a fresh schema, start a proxy in front of the server, and drop both afterwards."""
    import sqlalchemy as sa

    from imocha_pipeline.staging import normalise_url

    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin_url = normalise_url(server_url)
    admin = sa.create_engine(admin_url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    proxy = TcpProxy()
    application = f"drill_{schema}"
    proxied = f"127.0.0.1:{proxy.port}"
    base = server_url.replace("127.0.0.1:5432", proxied).replace("localhost:5432", proxied)
    separator = "&" if "?" in base else "?"
    url = f"{base}{separator}options=-csearch_path%3D{schema}&application_name={application}"
    try:
        yield ProxiedSchema(url, proxy, admin_url, application)
    finally:
        proxy.close()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

"""What both simulators share: serving an ASGI app on loopback, the request log, and fault injection.

Faults and the request log sit in one ASGI middleware (``SimulatorMiddleware``) so both APIs misbehave
the same way on demand. Paths under ``/_sandbox/`` are the control surface: never faulted, never logged.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import uvicorn

CONTROL_PREFIX = "/_sandbox"


@dataclass
class FaultConfig:
    """Faults to inject into API answers. Shares are probabilities per request (0..1).

    ``*_next`` counters force the next N matching requests to fail that way, before shares apply.
    ``path_prefix``/``methods`` narrow which requests are eligible.
    """

    latency_ms: float = 0.0
    error_5xx_share: float = 0.0
    rate_429_share: float = 0.0
    drop_share: float = 0.0  # connection closed before the request is processed
    lost_ack_share: float = 0.0  # processed, then the connection is closed before the answer
    timeout_share: float = 0.0  # answer delayed by timeout_seconds (processed afterwards)
    error_5xx_next: int = 0
    rate_429_next: int = 0
    drop_next: int = 0
    lost_ack_next: int = 0
    timeout_next: int = 0
    retry_after_seconds: int = 1
    timeout_seconds: float = 30.0
    path_prefix: str = ""
    methods: list[str] = field(default_factory=list)
    seed: int = 0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FaultConfig:
        known = {name for name in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown fault settings: {sorted(unknown)}")
        return cls(**data)


@dataclass
class LoggedRequest:
    seq: int
    ts: float
    method: str
    path: str
    query: str
    status: int
    fault: str | None
    client: str | None  # API client id (Degreed) or None
    body: str | None = None  # request body for writes, for tests that check what was sent

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


WRITE_METHODS = frozenset({"POST", "PATCH", "PUT", "DELETE"})


class RequestLog:
    """Thread-safe record of every API request a simulator answered (or dropped)."""

    def __init__(self, keep_bodies: bool = True, max_entries: int = 200_000):
        self._lock = threading.Lock()
        self._entries: list[LoggedRequest] = []
        self._seq = 0
        self.keep_bodies = keep_bodies
        self.max_entries = max_entries

    def add(self, **kwargs: Any) -> LoggedRequest:
        with self._lock:
            self._seq += 1
            entry = LoggedRequest(seq=self._seq, ts=time.time(), **kwargs)
            self._entries.append(entry)
            if len(self._entries) > self.max_entries:
                del self._entries[: len(self._entries) - self.max_entries]
            return entry

    def entries(self, since: int = 0) -> list[LoggedRequest]:
        with self._lock:
            return [entry for entry in self._entries if entry.seq > since]

    def writes(self, since: int = 0) -> list[LoggedRequest]:
        """Write calls (POST, PATCH, PUT, DELETE) to the API under ``/api/``; the token endpoint is not one."""
        return [entry for entry in self.entries(since)
                if entry.method in WRITE_METHODS and entry.path.startswith("/api/")]

    @property
    def last_seq(self) -> int:
        with self._lock:
            return self._seq

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def count(self, method: str | None = None, path_prefix: str = "", since: int = 0, status: int | None = None):
        return sum(
            1
            for entry in self.entries(since)
            if (method is None or entry.method == method)
            and entry.path.startswith(path_prefix)
            and (status is None or entry.status == status)
        )


class FaultInjector:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.config = FaultConfig()
        self._rng = random.Random(0)

    def set(self, config: FaultConfig) -> None:
        with self._lock:
            self.config = config
            self._rng = random.Random(config.seed)

    def clear(self) -> None:
        self.set(FaultConfig())

    def pick(self, method: str, path: str) -> str | None:
        """Decide which fault (if any) hits this request."""
        with self._lock:
            cfg = self.config
            if cfg.path_prefix and not path.startswith(cfg.path_prefix):
                return None
            if cfg.methods and method.upper() not in {m.upper() for m in cfg.methods}:
                return None
            for kind in ("rate_429", "error_5xx", "drop", "lost_ack", "timeout"):
                counter = f"{kind}_next"
                if getattr(cfg, counter) > 0:
                    setattr(cfg, counter, getattr(cfg, counter) - 1)
                    return kind
            roll = self._rng.random()
            for kind in ("rate_429", "error_5xx", "drop", "lost_ack", "timeout"):
                share = getattr(cfg, f"{kind}_share")
                if roll < share:
                    return kind
                roll -= share
            return None


class DroppedConnection(Exception):
    """Raised after the response started so that uvicorn closes the connection mid-answer."""


class SimulatorMiddleware:
    """ASGI middleware: logs API requests and injects the configured faults.

    ``client_of(scope, body)`` lets a simulator name the API client for the log (e.g. Degreed's client id).
    ``fault_answer(kind, scope, client, config)`` lets a simulator build the answer to an injected
    ``"error_5xx"`` (503) or ``"rate_429"`` (429) itself, at the moment it is sent: it returns
    ``(body, headers)`` (headers as ``(bytes, bytes)`` pairs, ``Retry-After`` included; the content type and
    length are added here) or None for the fixed ``error_body_5xx``/``error_body_429`` answer. Degreed uses it
    to put its rate-limit headers on fault answers and to word the 429 body with the live limit.
    """

    def __init__(self, app, log: RequestLog, faults: FaultInjector, error_body_5xx: bytes,
                 error_body_429: bytes, client_of=None, fault_answer=None):
        self.app = app
        self.log = log
        self.faults = faults
        self.error_body_5xx = error_body_5xx
        self.error_body_429 = error_body_429
        self.client_of = client_of
        self.fault_answer = fault_answer

    def _fault_answer(self, kind: str, scope, client: str | None, cfg: FaultConfig,
                      body: bytes, headers: list[tuple[bytes, bytes]]) -> tuple[bytes, list[tuple[bytes, bytes]]]:
        answer = self.fault_answer(kind, scope, client, cfg) if self.fault_answer is not None else None
        return answer if answer is not None else (body, headers)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"].startswith(CONTROL_PREFIX):
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        method, path = scope["method"], scope["path"]
        query = scope.get("query_string", b"").decode("latin-1")
        client = self.client_of(scope, body) if self.client_of else None
        logged_body = body.decode("utf-8", "replace") if body and method != "GET" and self.log.keep_bodies else None
        cfg = self.faults.config
        if cfg.latency_ms:
            await asyncio.sleep(cfg.latency_ms / 1000.0)
        fault = self.faults.pick(method, path)

        def record(status: int) -> None:
            self.log.add(method=method, path=path, query=query, status=status, fault=fault,
                         client=client, body=logged_body)

        if fault == "error_5xx":
            answer, headers = self._fault_answer(fault, scope, client, cfg, self.error_body_5xx, [])
            record(503)
            await _send_simple(send, 503, answer, headers)
            return
        if fault == "rate_429":
            answer, headers = self._fault_answer(
                fault, scope, client, cfg, self.error_body_429,
                [(b"retry-after", str(cfg.retry_after_seconds).encode())])
            record(429)
            await _send_simple(send, 429, answer, headers)
            return
        if fault == "drop":
            record(0)
            await _drop(send)
            return
        if fault == "timeout":
            await asyncio.sleep(cfg.timeout_seconds)

        captured: dict[str, Any] = {"status": 0}

        async def replay_receive():
            return {"type": "http.request", "body": body, "more_body": False}

        if fault == "lost_ack":
            async def swallow(message):
                if message["type"] == "http.response.start":
                    captured["status"] = message["status"]

            await self.app(scope, replay_receive, swallow)
            record(captured["status"])
            await _drop(send)
            return

        async def tracking_send(message):
            if message["type"] == "http.response.start":
                captured["status"] = message["status"]
                # Record before the client can see the answer, so a test reading the log never races it.
                record(message["status"])
                captured["recorded"] = True
            await send(message)

        await self.app(scope, replay_receive, tracking_send)
        if not captured.get("recorded"):
            record(captured["status"])


async def read_body(receive) -> bytes:
    """The whole body of an ASGI request, however many `http.request` messages it came in."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


async def _send_simple(send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None):
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        + (headers or []),
    })
    await send({"type": "http.response.body", "body": body})


async def _drop(send):
    # Promise a body, then fail: uvicorn closes the socket and the client sees a broken connection.
    await send({
        "type": "http.response.start",
        "status": 200,
        "headers": [(b"content-type", b"application/json"), (b"content-length", b"1000")],
    })
    raise DroppedConnection("sandbox fault: connection dropped")


def json_bytes(payload: Any) -> bytes:
    return json.dumps(payload).encode()


class ServerThread:
    """Runs an ASGI app with uvicorn on 127.0.0.1 in a daemon thread (port 0 picks a free port)."""

    def __init__(self, app, port: int = 0, host: str = "127.0.0.1"):
        self.host = host
        config = uvicorn.Config(app, host=host, port=port, log_level="critical", lifespan="off",
                                access_log=False, timeout_keep_alive=30)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True, name=f"sandbox-{port}")
        self.port = port

    def start(self, timeout: float = 15.0) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError(f"sandbox server failed to start on {self.host}:{self.port}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"sandbox server did not start within {timeout}s")
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)

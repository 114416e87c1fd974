"""A fault gate in front of a simulator: stop at the n-th matching request, before or after the simulator
processed it, run an action there (expire tokens, drop the database, ...) and optionally hold the answer
until the drill has killed the client process.

"after" is the moment a crash hurts most: Degreed has committed the write, the client has not heard back,
so the ledger still says ``sending`` — the same state as a process that died between Degreed's
acknowledgement and the ledger write.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from imocha_sandbox.server import CONTROL_PREFIX, WRITE_METHODS, read_body


@dataclass
class GateRule:
    nth: int
    when: str = "after"  # "before": the simulator never sees the request; "after": processed, answer held
    methods: frozenset[str] = WRITE_METHODS
    path_prefix: str = "/api/"
    query_contains: str = ""
    hold: bool = True  # hold until release(); the answer is then dropped (the client is gone)...
    resume: bool = False  # ...unless ``resume``: after release the request goes on as if nothing happened
    action: Callable[[], None] | None = None  # run when the n-th request is reached (in a worker thread)
    reached_path: list[str] = field(default_factory=list)


class Gate:
    """ASGI wrapper around a simulator app; arm it with a ``GateRule``."""

    def __init__(self, app):
        self.app = app
        self._lock = threading.Lock()
        self._rule: GateRule | None = None
        self._seen = 0
        self.reached = threading.Event()
        self._release = threading.Event()

    def arm(self, rule: GateRule) -> None:
        with self._lock:
            self._rule = rule
            self._seen = 0
            self.reached.clear()
            self._release.clear()

    def disarm(self) -> None:
        with self._lock:
            self._rule = None
        self._release.set()

    def release(self) -> None:
        self._release.set()

    def wait(self, timeout: float) -> bool:
        return self.reached.wait(timeout)

    def _match(self, scope) -> GateRule | None:
        path = scope["path"]
        if path.startswith(CONTROL_PREFIX):
            return None
        with self._lock:
            rule = self._rule
            if rule is None or scope["method"] not in rule.methods or not path.startswith(rule.path_prefix):
                return None
            if rule.query_contains and rule.query_contains not in scope.get("query_string", b"").decode("latin-1"):
                return None
            self._seen += 1
            if self._seen != rule.nth:
                return None
            self._rule = None  # one shot
            rule.reached_path.append(f"{scope['method']} {path}")
            return rule

    async def __call__(self, scope, receive, send):
        rule = self._match(scope) if scope["type"] == "http" else None
        if rule is None:
            await self.app(scope, receive, send)
            return
        loop = asyncio.get_running_loop()

        async def reach() -> None:
            if rule.action is not None:
                await loop.run_in_executor(None, rule.action)
            self.reached.set()
            if rule.hold:
                while not self._release.is_set():
                    await asyncio.sleep(0.01)

        if rule.when == "before":
            # Take the whole request first, as a server does, so it can still be processed after the client
            # gave up on it (a read timeout whose write lands anyway).
            body = await read_body(receive)
            await reach()
            if rule.hold and not rule.resume:
                return  # never processed: the client was killed while the request was in flight

            async def replay():
                return {"type": "http.request", "body": body, "more_body": False}

            await self.app(scope, replay, send)
            return

        state = {"started": False}

        async def gated_send(message):
            if message["type"] == "http.response.start" and not state["started"]:
                state["started"] = True
                await reach()
            if rule.hold and not rule.resume:
                return  # processed, but the answer never reaches the (killed) client
            await send(message)

        await self.app(scope, receive, gated_send)

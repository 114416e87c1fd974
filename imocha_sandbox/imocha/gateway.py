"""The gateway in front of the API routes: the X-API-KEY check, the optional rate limit, canned answers."""

from __future__ import annotations

import hmac
import logging
import math
from typing import Protocol

from imocha_sandbox.imocha.canned import CannedResponse
from imocha_sandbox.imocha.errors import INVALID_KEY_BODY
from imocha_sandbox.server import CONTROL_PREFIX, json_bytes

logger = logging.getLogger(__name__)


class GatewayHost(Protocol):
    """What the gateway asks of the simulator, at each request (so a changed ``api_key`` applies at once)."""

    api_key: str

    def rate_limit_wait(self) -> float: ...

    def take_canned(self, method: str, path: str) -> CannedResponse | None: ...


class Gateway:
    """ASGI layer for API paths: the X-API-KEY check, the optional rate limit, canned answers."""

    def __init__(self, app, host: GatewayHost):
        self.app = app
        self.host = host

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"].startswith(CONTROL_PREFIX):
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1").lower(): value for name, value in scope.get("headers", [])}
        presented = headers.get("x-api-key", b"")
        if not hmac.compare_digest(presented, self.host.api_key.encode()):
            await _send(send, 401, json_bytes(INVALID_KEY_BODY))
            return
        wait = self.host.rate_limit_wait()
        if wait:
            seconds = max(1, math.ceil(wait))
            body = {"statusCode": 429, "message": f"Rate limit is exceeded. Try again in {seconds} seconds."}
            await _send(send, 429, json_bytes(body), [(b"retry-after", str(seconds).encode())])
            return
        canned = self.host.take_canned(scope["method"], scope["path"])
        if canned is not None:
            await _send(send, canned.status, canned.body.encode(), content_type=canned.content_type)
            return
        try:
            await self.app(scope, receive, send)
        except Exception:
            # Starlette already answered 500 and re-raises; stop here so the request log keeps the entry.
            logger.exception("iMocha simulator failed on %s %s", scope["method"], scope["path"])


async def _send(send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None,
                content_type: str = "application/json") -> None:
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
        + (headers or []),
    })
    await send({"type": "http.response.body", "body": body})

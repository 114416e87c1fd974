"""The HTTP endpoint iMocha calls when an attempt starts and ends (spec §8), for seconds-level sync.

``POST /imocha/callbacks/{token}`` takes iMocha's PascalCase payload and stores it in the staging
database's ``callback_inbox``; the ``imocha_callbacks_sensor`` turns final ones into runs. The handler
makes no API call, so it answers within milliseconds. ``GET /healthz`` checks the database.

iMocha does not sign callbacks, so the URL carries a secret: register
``https://<your public host>/imocha/callbacks/<IMOCHA_PIPELINE_CALLBACK_TOKEN>`` as the invitations'
``callbackUrl`` and serve it over TLS (a reverse proxy in front of this server). Answers:

- 200 ``{"stored": true, "inboxId": n, "status": ..., "willSync": bool}``: stored.
- 200 ``{"stored": false, "duplicate": true, "inboxId": n, ...}``: the same body was stored before (row ``n``);
  a replayed or retried delivery is accepted but stored once.
- 400 ``{"error": "invalid callback payload", "problems": [...]}``: not JSON, no ``TestInvitationId``,
  wrong types; nothing stored. 403: wrong token. 404: any other path, an encoded one, or one with ``.``/``..``
  or empty segments. 408: the body did not arrive within the read timeout (the connection is closed).
  413: body over the size limit (by ``Content-Length`` or as read). 415: not ``application/json``.
  429: this client address is over the rate limit (``Retry-After`` says when to try again). Nothing is stored.
- 503: the database could not store it; iMocha tries again (5 tries), and ``callbacks replay`` recovers the rest.

Slow clients: the server is asyncio (uvicorn); a slow body holds a coroutine, not a thread, and is cut off
after the read timeout. Slow *headers* are not timed by uvicorn: the reverse proxy in front must time them.
The token is compared in constant time and never logged (no access log; log lines name invitations only).

Settings: ``IMOCHA_PIPELINE_CALLBACK_TOKEN`` (required, at least 16 characters),
``IMOCHA_PIPELINE_CALLBACK_HOST`` (default 127.0.0.1), ``IMOCHA_PIPELINE_CALLBACK_PORT`` (default 8790),
``IMOCHA_PIPELINE_STAGING_DB_URL``, and the limits ``IMOCHA_PIPELINE_CALLBACK_MAX_BODY_BYTES``,
``IMOCHA_PIPELINE_CALLBACK_READ_TIMEOUT_SECONDS``, ``IMOCHA_PIPELINE_CALLBACK_RATE_PER_SECOND`` and
``IMOCHA_PIPELINE_CALLBACK_RATE_BURST``. Uvicorn's access log is off because request paths carry the token.
Run with ``python -m imocha_pipeline.callbacks_server``.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import threading

import sqlalchemy as sa
import uvicorn
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from imocha_pipeline import settings
from imocha_pipeline.callbacks_guard import CallbackGuard, RateLimiter
from imocha_pipeline.staging import describe_url, get_engine
from imocha_pipeline.sync.triggers.callbacks import CallbackPayloadError, parse_callback, store_callback_once

logger = logging.getLogger(__name__)

TOKEN_SETTING = settings.IMOCHA_PIPELINE_CALLBACK_TOKEN.name
MIN_TOKEN_LENGTH = settings.IMOCHA_PIPELINE_CALLBACK_TOKEN.parser.min_length
MAX_BODY_BYTES = settings.IMOCHA_PIPELINE_CALLBACK_MAX_BODY_BYTES.default
READ_TIMEOUT_SECONDS = settings.IMOCHA_PIPELINE_CALLBACK_READ_TIMEOUT_SECONDS.default
RATE_PER_SECOND = settings.IMOCHA_PIPELINE_CALLBACK_RATE_PER_SECOND.default
RATE_BURST = settings.IMOCHA_PIPELINE_CALLBACK_RATE_BURST.default
DEFAULT_HOST = settings.IMOCHA_PIPELINE_CALLBACK_HOST.default
DEFAULT_PORT = settings.IMOCHA_PIPELINE_CALLBACK_PORT.default
CALLBACK_ROUTE = "/imocha/callbacks/{token}"


def callback_token_from_env() -> str:
    """The URL secret; missing or too short is a clear error naming the setting (never showing the value)."""
    return settings.IMOCHA_PIPELINE_CALLBACK_TOKEN.value()


def callback_path(token: str) -> str:
    """The path to register with iMocha (prefix it with the public https origin)."""
    return CALLBACK_ROUTE.replace("{token}", token)


def create_app(*, token: str, staging_url: str, max_body_bytes: int = MAX_BODY_BYTES,
               read_timeout: float = READ_TIMEOUT_SECONDS, rate_per_second: float = RATE_PER_SECOND,
               rate_burst: int = RATE_BURST) -> CallbackGuard:
    """The endpoint as an ASGI app behind its guard (rate limit, path check); the inbox table is created on
    start if missing."""
    if not token:
        raise ValueError(f"a callback token is required ({TOKEN_SETTING})")
    expected = token.encode()
    engine = get_engine(staging_url)
    store_lock = threading.Lock()  # the duplicate check and the insert of one delivery go together

    def store(callback):  # type: ignore[no-untyped-def]
        with store_lock:
            return store_callback_once(engine, callback)

    async def receive_callback(request: Request) -> Response:
        if not hmac.compare_digest(request.path_params["token"].encode(), expected):
            return JSONResponse({"error": "forbidden"}, status_code=403)
        if not _is_json(request.headers.get("content-type", "")):
            return JSONResponse({"error": "the body must be application/json"}, status_code=415)
        too_large = JSONResponse({"error": f"the body is larger than {max_body_bytes} bytes"}, status_code=413,
                                 headers={"Connection": "close"})
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_body_bytes:
            return too_large
        try:
            async with asyncio.timeout(read_timeout):
                body = await _read_body(request, max_body_bytes)
        except TimeoutError:
            logger.warning("cut off a callback whose body did not arrive within %s s", read_timeout)
            return JSONResponse({"error": f"the body did not arrive within {read_timeout:g} s"}, status_code=408,
                                headers={"Connection": "close"})
        if body is None:
            return too_large
        try:
            callback = parse_callback(body)
        except CallbackPayloadError as exc:
            logger.warning("refused a callback: %s", exc)
            return JSONResponse({"error": "invalid callback payload", "problems": exc.problems}, status_code=400)
        try:
            inbox_id, new = await run_in_threadpool(store, callback)
        except SQLAlchemyError as exc:
            # the exception's text holds the statement's parameters (the payload); its type is enough here
            logger.error("could not store the callback of invitation %s: %s", callback.test_invitation_id,
                         type(exc).__name__)
            return JSONResponse({"error": "could not store the callback; try again"}, status_code=503)
        if not new:
            logger.info("callback for invitation %s (%s) is a duplicate of inbox row %s; not stored again",
                        callback.test_invitation_id, callback.status, inbox_id)
            return JSONResponse({"stored": False, "duplicate": True, "inboxId": inbox_id, "status": callback.status,
                                 "willSync": False})
        logger.info("stored callback %s for invitation %s (%s)", inbox_id, callback.test_invitation_id,
                    callback.status)
        return JSONResponse({"stored": True, "inboxId": inbox_id, "status": callback.status,
                             "willSync": callback.is_final})

    async def healthz(_request: Request) -> Response:
        try:
            await run_in_threadpool(_ping, engine)
        except SQLAlchemyError as exc:
            return JSONResponse({"status": "unavailable", "database": type(exc).__name__}, status_code=503)
        return JSONResponse({"status": "ok"})

    app = Starlette(routes=[
        Route(CALLBACK_ROUTE, receive_callback, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ])
    app.router.redirect_slashes = False  # a trailing slash is another path (404), not a redirect to the token
    return CallbackGuard(app, RateLimiter(rate_per_second, rate_burst))


def _is_json(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


def _ping(engine: sa.engine.Engine) -> None:
    with engine.connect() as conn:
        conn.execute(sa.text("select 1"))


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None once it exceeds ``limit`` bytes (read no further)."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def create_app_from_env() -> CallbackGuard:
    return create_app(token=callback_token_from_env(), staging_url=settings.staging_db_url(),
                      max_body_bytes=settings.IMOCHA_PIPELINE_CALLBACK_MAX_BODY_BYTES.value(),
                      read_timeout=settings.IMOCHA_PIPELINE_CALLBACK_READ_TIMEOUT_SECONDS.value(),
                      rate_per_second=settings.IMOCHA_PIPELINE_CALLBACK_RATE_PER_SECOND.value(),
                      rate_burst=settings.IMOCHA_PIPELINE_CALLBACK_RATE_BURST.value())


def serve(host: str | None = None, port: int | None = None) -> None:
    """Serve the endpoint with uvicorn until interrupted (settings from the environment)."""
    app = create_app_from_env()
    host = host or settings.IMOCHA_PIPELINE_CALLBACK_HOST.value()
    port = port or settings.IMOCHA_PIPELINE_CALLBACK_PORT.value()
    logger.info("callback endpoint on http://%s:%s%s, inbox in %s", host, port, callback_path("<token>"),
                describe_url(settings.staging_db_url()))
    uvicorn.run(app, host=host, port=port, access_log=False, proxy_headers=True, log_level="info")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve()


if __name__ == "__main__":
    main()

"""The HTTP endpoint iMocha calls when an attempt starts and ends (spec §8), for seconds-level sync.

``POST /imocha/callbacks/{token}`` takes iMocha's PascalCase payload and stores it in the staging
database's ``callback_inbox``; the ``imocha_callbacks_sensor`` turns final ones into runs. The handler
makes no API call, so it answers within milliseconds. ``GET /healthz`` checks the database.

iMocha does not sign callbacks, so the URL carries a secret: register
``https://<your public host>/imocha/callbacks/<IMOCHA_PIPELINE_CALLBACK_TOKEN>`` as the invitations'
``callbackUrl`` and serve it over TLS (a reverse proxy in front of this server). Answers:

- 200 ``{"stored": true, "inboxId": n, "status": ..., "willSync": bool}``: stored (every delivery is a row).
- 400 ``{"error": "invalid callback payload", "problems": [...]}``: not JSON, no ``TestInvitationId``,
  wrong types; nothing stored. 403: wrong token, nothing stored. 413: body over 64 KiB.
- 503: the database could not store it; iMocha tries again (5 tries), and ``callbacks replay`` recovers the rest.

Settings: ``IMOCHA_PIPELINE_CALLBACK_TOKEN`` (required, at least 16 characters),
``IMOCHA_PIPELINE_CALLBACK_HOST`` (default 127.0.0.1), ``IMOCHA_PIPELINE_CALLBACK_PORT`` (default 8790),
``IMOCHA_PIPELINE_STAGING_DB_URL``. Uvicorn's access log is off because request paths carry the token.
Run with ``python -m imocha_pipeline.callbacks_server``.
"""

from __future__ import annotations

import hmac
import logging

import sqlalchemy as sa
import uvicorn
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from imocha_pipeline import settings
from imocha_pipeline.staging import describe_url, get_engine
from imocha_pipeline.sync.triggers.callbacks import CallbackPayloadError, parse_callback, store_callback

logger = logging.getLogger(__name__)

TOKEN_SETTING = settings.IMOCHA_PIPELINE_CALLBACK_TOKEN.name
MIN_TOKEN_LENGTH = settings.IMOCHA_PIPELINE_CALLBACK_TOKEN.parser.min_length
MAX_BODY_BYTES = 64 * 1024
DEFAULT_HOST = settings.IMOCHA_PIPELINE_CALLBACK_HOST.default
DEFAULT_PORT = settings.IMOCHA_PIPELINE_CALLBACK_PORT.default
CALLBACK_ROUTE = "/imocha/callbacks/{token}"


def callback_token_from_env() -> str:
    """The URL secret; missing or too short is a clear error naming the setting (never showing the value)."""
    return settings.IMOCHA_PIPELINE_CALLBACK_TOKEN.value()


def callback_path(token: str) -> str:
    """The path to register with iMocha (prefix it with the public https origin)."""
    return CALLBACK_ROUTE.replace("{token}", token)


def create_app(*, token: str, staging_url: str) -> Starlette:
    """The endpoint as an ASGI app; the inbox table is created on start if missing."""
    if not token:
        raise ValueError(f"a callback token is required ({TOKEN_SETTING})")
    expected = token.encode()
    engine = get_engine(staging_url)

    async def receive_callback(request: Request) -> Response:
        if not hmac.compare_digest(request.path_params["token"].encode(), expected):
            return JSONResponse({"error": "forbidden"}, status_code=403)
        body = await _read_body(request, MAX_BODY_BYTES)
        if body is None:
            return JSONResponse({"error": f"the body is larger than {MAX_BODY_BYTES} bytes"}, status_code=413)
        try:
            callback = parse_callback(body)
        except CallbackPayloadError as exc:
            logger.warning("refused a callback: %s", exc)
            return JSONResponse({"error": "invalid callback payload", "problems": exc.problems}, status_code=400)
        try:
            inbox_id = await run_in_threadpool(store_callback, engine, callback)
        except SQLAlchemyError:
            logger.exception("could not store the callback of invitation %s", callback.test_invitation_id)
            return JSONResponse({"error": "could not store the callback; try again"}, status_code=503)
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

    return Starlette(routes=[
        Route(CALLBACK_ROUTE, receive_callback, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ])


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


def create_app_from_env() -> Starlette:
    return create_app(token=callback_token_from_env(), staging_url=settings.staging_db_url())


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

"""Degreed's OAuth2 client credentials: the access token, fetched lazily, renewed before it expires.

``DegreedAuth`` is what the API ``ApiSession`` asks for headers before every attempt (``headers``). Its token
requests go through their own session (the token endpoint lives on another host). Every token it is given is
registered as a secret with both sessions; the client id may appear in logs and errors, the secret never does.
"""

from __future__ import annotations

import logging
import threading
import time

import requests

from imocha_pipeline.clients.degreed.contract import API_NAME, LANE_AUTH, TOKEN_ENDPOINT
from imocha_pipeline.clients.degreed.values import optional_number
from imocha_pipeline.clients.errors import AuthError, PayloadError
from imocha_pipeline.clients.http import ApiSession

logger = logging.getLogger("imocha_pipeline.degreed")


class DegreedAuth:
    """The client-credentials token of one Degreed API client, with the ``scopes`` it asks for.

    The token is fetched on first use and renewed ``refresh_skew_seconds`` (at most half its lifetime) before it
    expires; ``forget`` drops it so the next ``headers`` fetches a fresh one (after a 401). ``api_session``'s
    redaction words the errors; ``token_session`` sends the token requests.
    """

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        api_session: ApiSession,
        token_session: ApiSession,
        scopes: tuple[str, ...],
        organization_code: str | None = None,
        refresh_skew_seconds: float = 60.0,
    ):
        self.token_url = token_url
        self.client_id = client_id
        self._client_secret = client_secret
        self.api_session = api_session
        self.token_session = token_session
        self.scopes = tuple(scopes)
        self.organization_code = organization_code
        self.refresh_skew_seconds = refresh_skew_seconds
        self._token: str | None = None
        self._token_deadline = 0.0
        self._token_lock = threading.Lock()
        self._keep_secret(client_secret)

    def __repr__(self) -> str:
        return f"DegreedAuth(client_id={self.client_id!r}, token_url={self.token_url!r})"

    def headers(self) -> dict[str, str]:
        """Called before every attempt: a current token, fetched or renewed when needed."""
        with self._token_lock:
            if self._token is None or time.monotonic() >= self._token_deadline:
                self._fetch_token()
            headers = {"Authorization": f"Bearer {self._token}"}
        if self.organization_code:
            headers["X-Degreed-Organization-Code"] = self.organization_code
        return headers

    def forget(self) -> None:
        """Drop the token: the next ``headers`` fetches a fresh one."""
        with self._token_lock:
            self._token = None

    def check_scope(self, scope: str) -> bool:
        """Whether the API key is granted ``scope``: asks for a token with only that scope (403 = no)."""
        response = self._request_token((scope,))
        if response.status_code == 200:
            payload = self.token_session.decode_json(response, TOKEN_ENDPOINT)
            self._keep_secret(payload.get("access_token"), payload.get("refresh_token"))
            return True
        if response.status_code == 403:
            return False
        raise self._token_error(response, (scope,))

    # -- internals -------------------------------------------------------------------------------------

    def _keep_secret(self, *secrets: str | None) -> None:
        for secret in secrets:
            self.api_session.add_secret(secret)
            self.token_session.add_secret(secret)

    def _request_token(self, scopes: tuple[str, ...]) -> requests.Response:
        form = {"grant_type": "client_credentials", "client_id": self.client_id,
                "client_secret": self._client_secret, "scope": ",".join(scopes)}
        return self.token_session.request("POST", self.token_url, endpoint=TOKEN_ENDPOINT, data=form,
                                          lane=LANE_AUTH, idempotent=True)

    def _token_error(self, response: requests.Response, scopes: tuple[str, ...]) -> AuthError:
        """A safe, specific error for a refused token request: names the client id, never the secret."""
        try:
            body = response.json()
        except ValueError:
            body = {}
        code = str(body.get("error") or "unknown_error") if isinstance(body, dict) else "unknown_error"
        description = body.get("error_description") if isinstance(body, dict) else None
        reasons = {
            "invalid_client": "unknown client id or wrong client secret (or the key was revoked)",
            "invalid_scope": f"the API key is not granted all of the scopes {', '.join(scopes)}",
            "unsupported_grant_type": "the token endpoint refused the client-credentials grant",
        }
        message = (f"Degreed refused a token for client {self.client_id!r} at {self.token_url}: "
                   f"{reasons.get(code, code)}")
        if description:
            message += f" ({self.api_session.redact(str(description))})"
        return AuthError(message, api=API_NAME, endpoint=TOKEN_ENDPOINT, status=response.status_code,
                         detail=code)

    def _fetch_token(self) -> None:
        response = self._request_token(self.scopes)
        if response.status_code != 200:
            raise self._token_error(response, self.scopes)
        payload = self.token_session.decode_json(response, TOKEN_ENDPOINT)
        token = payload.get("access_token") if isinstance(payload, dict) else None
        if not token:
            raise PayloadError("token answer has no access_token", api=API_NAME, endpoint=TOKEN_ENDPOINT,
                               status=response.status_code)
        self._keep_secret(token, payload.get("refresh_token"))
        lifetime = float(optional_number(payload.get("expires_in")) or 3600)
        skew = min(self.refresh_skew_seconds, lifetime / 2)
        self._token = token
        self._token_deadline = time.monotonic() + lifetime - skew
        logger.info("Degreed token obtained for client %s (valid %.0f s)", self.client_id, lifetime)

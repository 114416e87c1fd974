"""API keys, OAuth2 client-credentials tokens and scopes: who may call, and what a token lets it do.

A provider key (``ApiClientSpec.provider_code`` set) sees only its provider's records and may not send
``X-Degreed-Organization-Code``; an organization key (``provider_code=None``) sees everything. GET needs
``<family>:read`` (or ``:write``, except for the read-only families); anything else needs ``<family>:write``.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from imocha_pipeline.settings import DEGREED_REQUIRED_SCOPES
from imocha_sandbox.degreed.paths import TOKEN_PATH
from imocha_sandbox.degreed.problems import ApiProblem
from imocha_sandbox.degreed.settings import DegreedSimSettings
from imocha_sandbox.server import RequestLog

DEFAULT_CLIENT_ID = "imocha-sandbox"
DEFAULT_CLIENT_SECRET = "sandbox-secret-do-not-use-in-production"
ORG_CODE_HEADER = "x-degreed-organization-code"
# The resources a scope family guards: GET needs ``<family>:read`` (or ``:write``), anything else ``:write``.
READ_ONLY_FAMILIES = {"providers"}


@dataclass(frozen=True)
class ApiClientSpec:
    """One Degreed API key: its secret, the scopes it may be granted, and its provider (None = org key)."""

    secret: str = field(repr=False)
    scopes: frozenset[str] = frozenset(DEGREED_REQUIRED_SCOPES)
    provider_code: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "scopes", frozenset(self.scopes))


def default_clients(provider_code: str = "IMOCHA") -> dict[str, ApiClientSpec]:
    """The sandbox's one API key: a provider key for iMocha holding every scope the pipeline needs."""
    return {DEFAULT_CLIENT_ID: ApiClientSpec(DEFAULT_CLIENT_SECRET, frozenset(DEGREED_REQUIRED_SCOPES),
                                             provider_code)}


@dataclass
class AccessToken:
    client_id: str
    scopes: frozenset[str]
    expires_at: float
    revoked: bool = False


class OAuthServer:
    """The API keys (``clients``, ``revoked``) and every token issued to them. Callers hold the store's lock."""

    def __init__(self, clients: dict[str, ApiClientSpec], settings: DegreedSimSettings,
                 clock: Callable[[], float]):
        self.clients: dict[str, ApiClientSpec] = dict(clients)
        self.revoked: set[str] = set()
        self.tokens: dict[str, AccessToken] = {}
        self.issued: list[str] = []
        self.settings = settings
        self._clock = clock

    def add_client(self, client_id: str, spec: ApiClientSpec) -> None:
        self.clients[client_id] = spec
        self.revoked.discard(client_id)

    def revoke_client(self, client_id: str) -> None:
        if client_id not in self.clients:
            raise KeyError(f"unknown client {client_id}")
        self.revoked.add(client_id)
        for token in self.tokens.values():
            if token.client_id == client_id:
                token.revoked = True

    def expire_tokens(self) -> int:
        now = self._clock()
        live = [t for t in self.tokens.values() if t.expires_at > now and not t.revoked]
        for token in live:
            token.expires_at = now
        return len(live)

    def live_token(self, authorization: str, now: float) -> AccessToken | None:
        """The token an ``Authorization: Bearer …`` header carries, if it is known, unexpired and unrevoked."""
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return None
        token = self.tokens.get(value.strip())
        if token is None or token.revoked or token.expires_at <= now or token.client_id in self.revoked:
            return None
        return token

    def owner_of(self, token: str) -> str | None:
        """The client id a token was issued to, whatever its state (for the request log)."""
        record = self.tokens.get(token)
        return record.client_id if record else None

    def issue_token(self, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """Answer a client-credentials token request: status and OAuth2 JSON body."""
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type",
                         "error_description": "Only grant_type=client_credentials is supported."}
        client_id = form.get("client_id", "")
        spec = self.clients.get(client_id)
        if spec is None or client_id in self.revoked or not secrets.compare_digest(
                spec.secret.encode(), form.get("client_secret", "").encode()):
            return 401, {"error": "invalid_client", "error_description": "Unknown client or wrong secret."}
        wanted = parse_scopes(form.get("scope", ""))
        if not wanted:
            return 400, {"error": "invalid_request", "error_description": "The scope parameter is required."}
        missing = sorted(wanted - spec.scopes)
        if missing:
            return 403, {"error": "invalid_scope",
                         "error_description": f"The API key is not granted: {', '.join(missing)}"}
        access, refresh = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        ttl = self.settings.token_ttl_seconds
        self.tokens[access] = AccessToken(client_id, frozenset(wanted), self._clock() + ttl)
        self.issued.extend([access, refresh])
        return 200, {"access_token": access, "token_type": "bearer", "expires_in": ttl,
                     "refresh_token": refresh}


def parse_scopes(raw: str) -> set[str]:
    """Comma- or space-delimited; the old underscore form (``users_read``) maps to ``users:read``."""
    scopes = set()
    for item in re.split(r"[\s,]+", raw.strip()):
        if not item:
            continue
        if ":" not in item and re.search(r"_(read|write|all)$", item):
            head, _, tail = item.rpartition("_")
            item = f"{head}:{tail}"
        scopes.add(item)
    return scopes


def check_scope(granted: frozenset[str], family: str, method: str) -> None:
    needed = f"{family}:write" if method != "GET" else f"{family}:read"
    accepted = {needed}
    if method == "GET" and family not in READ_ONLY_FAMILIES:
        accepted.add(f"{family}:write")
    if not granted & accepted:
        raise ApiProblem(403, f"The access token does not have the scope {needed}.", source=needed)


def check_org_code(headers: Mapping[str, str], client: ApiClientSpec) -> None:
    if ORG_CODE_HEADER not in headers:
        return
    if client.provider_code is not None:
        raise ApiProblem(403, "X-Degreed-Organization-Code can only be used with an organization API key.",
                         source="X-Degreed-Organization-Code")


class SecretRedactingRequestLog(RequestLog):
    """The shared request log, minus the client secret of token requests (form bodies are logged)."""

    def add(self, **kwargs: Any):
        if kwargs.get("path") == TOKEN_PATH and kwargs.get("body"):
            kwargs["body"] = re.sub(r"(client_secret=)[^&]*", r"\1***", kwargs["body"])
        return super().add(**kwargs)

"""``imocha-pipeline doctor``: check the set-up the integration needs before the first sync.

One line per check, each failure with a fix hint; the exit status is non-zero if anything failed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from imocha_pipeline import settings
from imocha_pipeline.clients.errors import ApiError, ApiTransportError, AuthError
from imocha_pipeline.clients.http import ApiSession

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"


@dataclass(frozen=True)
class Check:
    status: str
    name: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status:4}  {self.name}: {self.detail}"
        if self.status == FAIL and self.fix:
            text += f"\n      fix: {self.fix}"
        return text


def _reachability_fix(setting: str) -> str:
    return f"check {setting} (and the network/proxy between this host and it)"


def check_degreed(cfg: settings.DegreedSettings, provider_code: str, make_client: Callable) -> list[Check]:
    """Credentials, then each scope on its own (a token request for a missing scope answers 403), then the
    provider, read with a token holding only the granted scopes."""
    checks: list[Check] = []
    client = make_client(cfg, settings.DEGREED_REQUIRED_SCOPES)
    granted: list[str] = []
    for index, scope in enumerate(settings.DEGREED_REQUIRED_SCOPES):
        try:
            ok = client.check_scope(scope)
        except ApiTransportError as exc:
            checks.append(Check(FAIL, "Degreed token", f"cannot reach {cfg.token_url}: {exc}",
                                _reachability_fix("DEGREED_TOKEN_URL")))
            return [*checks, Check(SKIP, "Degreed scopes and provider", "not checked: no token")]
        except ApiError as exc:
            checks.append(Check(FAIL, "Degreed token", f"client {cfg.client_id} was refused: {exc}",
                                "check DEGREED_CLIENT_ID and DEGREED_CLIENT_SECRET (a rotated or revoked "
                                "secret must be replaced in the environment)"))
            return [*checks, Check(SKIP, "Degreed scopes and provider", "not checked: no token")]
        if index == 0:
            checks.append(Check(PASS, "Degreed token", f"client {cfg.client_id} is accepted by {cfg.token_url}"))
        if ok:
            granted.append(scope)
            checks.append(Check(PASS, f"scope {scope}", "granted"))
        else:
            checks.append(Check(FAIL, f"scope {scope}", "the API key does not have this scope",
                                f"ask a Degreed Technical Admin to add {scope} to the API key of client "
                                f"{cfg.client_id} (Settings > API keys)"))
    if "providers:read" not in granted:
        return [*checks, Check(SKIP, "iMocha provider", "not checked: providers:read is not granted")]
    try:
        providers = make_client(cfg, tuple(granted)).list_providers()
    except ApiTransportError as exc:
        return [*checks, Check(FAIL, "iMocha provider", f"cannot reach {cfg.api_base_url}: {exc}",
                               _reachability_fix("DEGREED_API_BASE_URL"))]
    except ApiError as exc:
        return [*checks, Check(FAIL, "iMocha provider", f"providers could not be listed: {exc}",
                               "check DEGREED_API_BASE_URL matches the token URL's region")]
    wanted = provider_code.lower()
    match = [p for p in providers if wanted in {str(getattr(p, "code", "") or "").lower(),
                                                 str(getattr(p, "id", "") or "").lower(),
                                                 str(getattr(p, "name", "") or "").lower()}]
    if match:
        checks.append(Check(PASS, "iMocha provider", f"visible as {getattr(match[0], 'name', provider_code)!r}"))
    else:
        names = ", ".join(sorted(str(getattr(p, "name", p)) for p in providers)) or "none"
        checks.append(Check(FAIL, "iMocha provider", f"no provider {provider_code!r} visible (seen: {names})",
                            "ask Degreed to set up the iMocha provider for your organization, or set "
                            "DEGREED_PROVIDER_CODE to its code"))
    return checks


def check_imocha(cfg: settings.ImochaSettings, make_client: Callable) -> list[Check]:
    client = make_client(cfg)
    try:
        client.ping()
    except ApiTransportError as exc:
        return [Check(FAIL, "iMocha API", f"cannot reach {cfg.base_url}: {exc}", _reachability_fix("IMOCHA_BASE_URL"))]
    except AuthError as exc:
        return [Check(FAIL, "iMocha API", f"the key was refused: {exc}",
                      "check IMOCHA_API_KEY (iMocha > Settings > Integrations > API key)")]
    except ApiError as exc:
        return [Check(FAIL, "iMocha API", f"unexpected answer: {exc}", "check IMOCHA_BASE_URL")]
    return [Check(PASS, "iMocha API", f"the key answers at {cfg.base_url}")]


def run_doctor(make_degreed_client: Callable, make_imocha_client: Callable) -> list[Check]:
    """All checks, in the order a person would fix them."""
    checks: list[Check] = []
    try:
        degreed_cfg = settings.DegreedSettings.from_env()
    except settings.MissingSettingError as exc:
        checks.append(Check(FAIL, "Degreed settings", str(exc), f"export {exc.setting}=..."))
        degreed_cfg = None
    except settings.InvalidSettingError as exc:
        checks.append(Check(FAIL, "Degreed settings", str(exc), "correct the setting named above"))
        degreed_cfg = None
    try:
        imocha_cfg = settings.ImochaSettings.from_env()
    except settings.MissingSettingError as exc:
        checks.append(Check(FAIL, "iMocha settings", str(exc), f"export {exc.setting}=..."))
        imocha_cfg = None
    provider_code = settings.optional("DEGREED_PROVIDER_CODE", "IMOCHA")
    if degreed_cfg is not None:
        checks += check_degreed(degreed_cfg, provider_code, make_degreed_client)
    if imocha_cfg is not None:
        checks += check_imocha(imocha_cfg, make_imocha_client)
    return checks


def doctor_clients(max_attempts: int = 2, timeout: float = 10.0) -> tuple[Callable, Callable]:
    """Client factories that fail fast (few retries, short timeouts): doctor answers in seconds."""
    from imocha_pipeline.clients.degreed import DegreedClient
    from imocha_pipeline.clients.imocha import ImochaClient

    def degreed(cfg: settings.DegreedSettings, scopes: tuple[str, ...]):
        def session(base_url: str, name: str) -> ApiSession:
            return ApiSession(base_url, api_name=name, max_attempts=max_attempts, connect_timeout=timeout,
                              read_timeout=timeout, secrets=[cfg.client_secret])

        return DegreedClient(cfg.api_base_url, cfg.token_url, cfg.client_id, cfg.client_secret, scopes=scopes,
                             organization_code=cfg.organization_code or None,
                             session=session(cfg.api_base_url, "Degreed"),
                             token_session=session(cfg.token_url, "Degreed token"))

    def imocha(cfg: settings.ImochaSettings):
        return ImochaClient(cfg.base_url, cfg.api_key,
                            session=ApiSession(cfg.base_url, api_name="iMocha", max_attempts=max_attempts,
                                               connect_timeout=timeout, read_timeout=timeout,
                                               secrets=[cfg.api_key]))

    return degreed, imocha

"""``imocha-pipeline doctor``: check the set-up the integration needs before the first sync.

One line per check, each failure with a fix hint; the exit status is non-zero if anything failed.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from imocha_pipeline import settings
from imocha_pipeline.clients.errors import ApiError, ApiTransportError, AuthError

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


SPEC = "specs/degreed-api.md §2.3 (Degreed's token reference, source S2)"

# What each scope the pipeline asks for is used for (the endpoint tables of specs/degreed-api.md §7-§12).
SCOPE_USES = {
    "content:read": "read the assessments already in Degreed's catalogue (find by external id, reconcile)",
    "content:write": "create, update and retire the iMocha assessments in Degreed's catalogue",
    "providers:read": "check that the iMocha provider is set up (this doctor)",
    "completions:read": "read completions back for the nightly reconcile",
    "completions:write": "send and update completions; delete them when a learner is erased",
    "users:read": "look learners up by email before sending their records",
    "skill_ratings:read": "read skill ratings back for the nightly reconcile",
    "skill_ratings:write": "send and update skill ratings; delete them when a learner is erased",
}
# Spellings met elsewhere for a documented scope: the project's seed wrote "skill_rating:write".
OTHER_SPELLINGS = {"skill_ratings:write": ("skill_rating:write",), "skill_ratings:read": ("skill_rating:read",)}


def documented_scope(name: str) -> str:
    """The documented name of a scope given in any spelling we know (``skill_rating:write`` ->
    ``skill_ratings:write``); an unknown name comes back as it is."""
    for documented, others in OTHER_SPELLINGS.items():
        if name == documented or name in others:
            return documented
    return name


def scope_table() -> list[str]:
    """Which Degreed scope is needed for what, as lines of a Markdown table (``doctor --scopes``)."""
    lines = ["| Scope | Needed to |", "|---|---|"]
    for scope in settings.DEGREED_REQUIRED_SCOPES:
        others = OTHER_SPELLINGS.get(scope, ())
        note = f" (also written {', '.join(others)}; Degreed documents {scope}, {SPEC})" if others else ""
        lines.append(f"| `{scope}` | {SCOPE_USES.get(scope, '')}{note} |")
    return lines


def explain_scope(name: str) -> str:
    documented = documented_scope(name)
    if documented not in SCOPE_USES:
        return f"{name}: not a scope this pipeline asks for ({', '.join(settings.DEGREED_REQUIRED_SCOPES)})"
    spelled = "" if documented == name else (f" ({name} is another spelling of it; Degreed documents "
                                             f"{documented}, {SPEC}, and the pipeline asks for that one)")
    return f"{documented}: needed to {SCOPE_USES[documented]}{spelled}"


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
        fix = (f"ask a Degreed Technical Admin to add {scope} to the API key of client {cfg.client_id} "
               "(Settings > API keys)")
        if ok:
            granted.append(scope)
            checks.append(Check(PASS, f"scope {scope}", f"granted (to {SCOPE_USES.get(scope, 'sync')})"))
            continue
        other = next((name for name in OTHER_SPELLINGS.get(scope, ()) if _granted(client, name)), None)
        if other:
            checks.append(Check(FAIL, f"scope {scope}",
                                f"the API key has {other}, another spelling of {scope}; Degreed documents "
                                f"{scope} ({SPEC}) and the pipeline's token asks for it, so it would be refused "
                                f"(needed to {SCOPE_USES.get(scope, 'sync')})", fix))
        else:
            checks.append(Check(FAIL, f"scope {scope}", "the API key does not have this scope "
                                f"(needed to {SCOPE_USES.get(scope, 'sync')})", fix))
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


def _granted(client, scope: str) -> bool:
    try:
        return bool(client.check_scope(scope))
    except ApiError:  # transport errors included: the first check already reported them
        return False


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


def check_staging_database(staging_url: str | None = "") -> tuple[Check, str | None]:
    """Open the staging database, where the shared rate budgets live (``""``: the one the pipeline uses,
    IMOCHA_PIPELINE_STAGING_DB_URL or the default file). Returns the check and where the doctor's own API
    calls keep their budget: that database, or None (this process only) when it cannot be opened."""
    from imocha_pipeline.staging import describe_url, get_engine
    from imocha_pipeline.staging.versions import SchemaOutOfDate

    url = staging_url if staging_url is not None else ""
    try:
        url = url or settings.staging_db_url()
    except settings.InvalidSettingError as exc:
        return Check(FAIL, "Staging database", str(exc),
                     "correct IMOCHA_PIPELINE_STAGING_DB_URL (the checks below kept their own rate budget)"), None
    where = describe_url(url)
    try:
        get_engine(url)
    except SchemaOutOfDate as exc:
        return Check(FAIL, "Staging database", f"{where}: {exc}",
                     "run `imocha-pipeline db upgrade` (the checks below kept their own rate budget)"), None
    except Exception as exc:  # any failure to open it is the finding
        first_line = (str(exc).splitlines() or [""])[0]
        return Check(FAIL, "Staging database", f"cannot open {where}: {type(exc).__name__}: {first_line}",
                     "check IMOCHA_PIPELINE_STAGING_DB_URL (the checks below kept their own rate budget)"), None
    return Check(PASS, "Staging database", f"{where} opens; it holds the shared rate budgets"), url


def check_diff_engine() -> Check:
    """Whether the diff engine's compiled part runs (text on every core) or plans run in Python on one core.
    Either way the plans are the same, so this never fails."""
    from imocha_pipeline.sync.core import text_native

    name = "Diff engine"
    if text_native.available():
        cores = text_native.threads(text_native.PARALLEL_FROM)
        return Check(PASS, name, f"compiled part built: a large plan hashes and compares text on {cores} "
                                 f"core{'s' if cores != 1 else ''}")
    if text_native.built():
        return Check(SKIP, name, "compiled part switched off (IMOCHA_PIPELINE_DIFF_NATIVE=0): plans run in Python "
                                 "on one core")
    return Check(SKIP, name, "compiled part not built (no C compiler at install time): plans run in Python on one "
                             "core; install gcc and reinstall the package to use every core")


def run_doctor(make_degreed_client: Callable, make_imocha_client: Callable,
               staging_url: str | None = "") -> list[Check]:
    """All checks, in the order a person would fix them. The clients are made with the staging database
    holding the shared rate budgets (``staging_url=``): the doctor's calls count like any other."""
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
    except settings.InvalidSettingError as exc:
        checks.append(Check(FAIL, "iMocha settings", str(exc), "correct the setting named above"))
        imocha_cfg = None
    staging_check, budget_url = check_staging_database(staging_url)
    checks.append(staging_check)
    provider_code = settings.DEGREED_PROVIDER_CODE.value()
    if degreed_cfg is not None:
        checks += check_degreed(degreed_cfg, provider_code,
                                functools.partial(make_degreed_client, staging_url=budget_url))
    if imocha_cfg is not None:
        checks += check_imocha(imocha_cfg, functools.partial(make_imocha_client, staging_url=budget_url))
    checks.append(check_diff_engine())
    return checks


def doctor_clients(max_attempts: int = 2, timeout: float = 10.0) -> tuple[Callable, Callable]:
    """Client factories that fail fast (few retries, short timeouts): doctor answers in seconds. Their calls
    draw from the shared budgets in the staging database at the factories' ``staging_url`` (``""``: the
    pipeline's; None: this process only), so a doctor run next to a sync never pushes a client id over its
    limit."""
    from imocha_pipeline.clients.http import RetryPolicy, Timeouts
    from imocha_pipeline.connections import shared_degreed_client, shared_imocha_client

    options = {"retry": RetryPolicy(max_attempts=max_attempts), "timeouts": Timeouts(connect=timeout, read=timeout)}

    def degreed(cfg: settings.DegreedSettings, scopes: tuple[str, ...], staging_url: str | None = ""):
        return shared_degreed_client(cfg, staging_url, scopes=scopes, session_options=options,
                                     api_names=("Degreed", "Degreed token"))

    def imocha(cfg: settings.ImochaSettings, staging_url: str | None = ""):
        return shared_imocha_client(cfg.base_url, cfg.api_key, staging_url, session_options=options)

    return degreed, imocha

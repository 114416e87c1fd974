"""DEGREED_REGION fills the token and API URLs (explicit URLs win); DEGREED_ORGANIZATION_CODE reaches Degreed as
X-Degreed-Organization-Code."""

from __future__ import annotations

import pytest

from imocha_pipeline import settings
from imocha_pipeline.clients.errors import AuthError
from imocha_pipeline.defs.resources import DegreedResource
from imocha_sandbox.degreed import ApiClientSpec
from imocha_sandbox.runtime import Sandbox, SandboxConfig

# specs/degreed-api.md §1, copied by hand (the CA betatest API host is an assumption there, marked [A]).
SPEC_TABLE = {
    "us": ("https://degreed.com/oauth/token", "https://api.degreed.com"),
    "us-betatest": ("https://betatest.degreed.com/oauth/token", "https://api.betatest.degreed.com"),
    "eu": ("https://eu.degreed.com/oauth/token", "https://api.eu.degreed.com"),
    "eu-betatest": ("https://eu.betatest.degreed.com/oauth/token", "https://api.eu.betatest.degreed.com"),
    "ca": ("https://ca.degreed.com/oauth/token", "https://api.ca.degreed.com"),
    "ca-betatest": ("https://ca.betatest.degreed.com/oauth/token", "https://api.ca.betatest.degreed.com"),
}
DEGREED_ENV = ("DEGREED_REGION", "DEGREED_API_BASE_URL", "DEGREED_TOKEN_URL", "DEGREED_ORGANIZATION_CODE")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in DEGREED_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DEGREED_CLIENT_ID", "client-1")
    monkeypatch.setenv("DEGREED_CLIENT_SECRET", "secret-do-not-show")


@pytest.mark.parametrize("region", sorted(SPEC_TABLE))
def test_each_region_fills_both_urls(monkeypatch, region):
    monkeypatch.setenv("DEGREED_REGION", region)
    cfg = settings.DegreedSettings.from_env()
    assert (cfg.token_url, cfg.api_base_url) == SPEC_TABLE[region]
    assert cfg.region == region
    resolved = DegreedResource(client_id="c", client_secret="s").resolved()
    assert (resolved.token_url, resolved.api_base_url) == SPEC_TABLE[region]


def test_without_a_region_the_us_production_hosts_are_used():
    cfg = settings.DegreedSettings.from_env()
    assert (cfg.region, cfg.token_url, cfg.api_base_url) == ("us", *SPEC_TABLE["us"])
    assert (cfg.token_url, cfg.api_base_url) == (settings.DEGREED_DEFAULT_TOKEN_URL,
                                                 settings.DEGREED_DEFAULT_API_BASE_URL)


def test_region_names_are_forgiving_about_case_and_underscores(monkeypatch):
    monkeypatch.setenv("DEGREED_REGION", " EU_Betatest ")
    assert settings.DegreedSettings.from_env().api_base_url == "https://api.eu.betatest.degreed.com"


def test_explicit_urls_win_over_the_region(monkeypatch):
    monkeypatch.setenv("DEGREED_REGION", "eu")
    monkeypatch.setenv("DEGREED_TOKEN_URL", "https://acme.eu.degreed.app/oauth/token")
    cfg = settings.DegreedSettings.from_env()
    assert cfg.token_url == "https://acme.eu.degreed.app/oauth/token"
    assert cfg.api_base_url == "https://api.eu.degreed.com", "the URL not given still comes from the region"
    monkeypatch.setenv("DEGREED_API_BASE_URL", "http://127.0.0.1:8702")
    assert settings.DegreedSettings.from_env().api_base_url == "http://127.0.0.1:8702"
    # The resource's own fields win over both the environment and its region.
    resource = DegreedResource(client_id="c", client_secret="s", region="ca", api_base_url="https://api.x.test")
    resolved = resource.resolved()
    assert (resolved.region, resolved.api_base_url, resolved.token_url) == (
        "ca", "https://api.x.test", "https://acme.eu.degreed.app/oauth/token")
    resource = DegreedResource(client_id="c", client_secret="s", region="ca-betatest")
    monkeypatch.delenv("DEGREED_API_BASE_URL")
    monkeypatch.delenv("DEGREED_TOKEN_URL")
    assert resource.resolved().api_base_url == "https://api.ca.betatest.degreed.com"


def test_an_unknown_region_is_a_clear_error_listing_the_valid_ones(monkeypatch):
    monkeypatch.setenv("DEGREED_REGION", "apac")
    with pytest.raises(settings.InvalidSettingError) as error:
        settings.DegreedSettings.from_env()
    message = str(error.value)
    assert error.value.setting == "DEGREED_REGION" and "'apac'" in message
    assert "us, us-betatest, eu, eu-betatest, ca, ca-betatest" in message
    with pytest.raises(ValueError, match="DEGREED_REGION must be one of"):
        DegreedResource(client_id="c", client_secret="s", region="au").resolved()


def test_organization_code_setting_and_repr(monkeypatch):
    monkeypatch.setenv("DEGREED_ORGANIZATION_CODE", "TENANT-7")
    cfg = settings.DegreedSettings.from_env()
    assert cfg.organization_code == "TENANT-7"
    assert "TENANT-7" in repr(cfg) and "secret-do-not-show" not in repr(cfg)
    assert DegreedResource(client_id="c", client_secret="s").resolved().organization_code == "TENANT-7"
    assert DegreedResource(client_id="c", client_secret="s", organization_code="OTHER").resolved() \
        .organization_code == "OTHER"


def test_the_organization_code_reaches_degreed_as_the_header(monkeypatch, sqlite_url):
    with Sandbox(SandboxConfig(seed=5, tests=1, learners=1, attempts=0, degreed_rate_limit=6000)) as box:
        box.degreed.add_client("org-key", ApiClientSpec("org-secret-123", frozenset(settings.DEGREED_REQUIRED_SCOPES),
                                                        None))
        env = box.env()
        monkeypatch.setenv("DEGREED_ORGANIZATION_CODE", "TENANT-7")
        common = {"api_base_url": env["DEGREED_API_BASE_URL"], "token_url": env["DEGREED_TOKEN_URL"],
                  "staging_db_url": sqlite_url, "rate_limit_per_minute": 6000}
        organization_key = DegreedResource(client_id="org-key", client_secret="org-secret-123", **common)
        assert {p.code for p in organization_key.client().list_providers()} >= {"IMOCHA"}
        # Degreed refuses the header from a provider key: proof that the client sent it.
        provider_key = DegreedResource(client_id=env["DEGREED_CLIENT_ID"],
                                       client_secret=env["DEGREED_CLIENT_SECRET"], **common)
        with pytest.raises(AuthError, match="organization API key"):
            provider_key.client().list_providers()
        monkeypatch.delenv("DEGREED_ORGANIZATION_CODE")
        assert provider_key.client().list_providers(), "without the setting no header is sent"

"""The settings catalogue: every environment setting is a typed ``Setting``, read only through it, with its rules,
its default and its documentation; the README's settings tables are generated from it."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from datetime import date
from pathlib import Path

import dagster as dg
import pytest

from imocha_pipeline import settings
from imocha_pipeline.defs.resources import (
    DegreedResource,
    ImochaResource,
    SyncSettingsResource,
    resources_from_env,
    resources_from_settings,
)
from imocha_pipeline.settings import CATALOGUE, GROUPS, InvalidSettingError, MissingSettingError, Setting
from imocha_pipeline.settings.parsers import Text
from imocha_pipeline.settings.readme import TABLES, end_marker, start_marker, update_readme

REPO = Path(__file__).resolve().parents[1]
PRODUCT = REPO / "imocha_pipeline"
SETTINGS_PACKAGE = PRODUCT / "settings"

REQUIRED = [s for s in CATALOGUE if s.required]
OPTIONAL = [s for s in CATALOGUE if not s.required]
BAD_VALUES = [pytest.param(s, bad, id=f"{s.name}={bad}") for s in CATALOGUE for bad in s.parser.bad_examples()]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    """No setting of the catalogue is set (each test sets what it needs)."""
    for setting in CATALOGUE:
        monkeypatch.delenv(setting.name, raising=False)


# -- the catalogue -------------------------------------------------------------------------------------------------


def test_every_setting_is_named_like_its_variable_and_documented():
    names = [s.name for s in CATALOGUE]
    assert len(names) == len(set(names)) > 50
    for setting in CATALOGUE:
        assert getattr(settings, setting.name) is setting, "reachable as imocha_pipeline.settings.<its name>"
        assert setting.group in GROUPS
        assert setting.doc and "\n" not in setting.doc, f"{setting.name}: one line of documentation"
        assert not (setting.required and setting.default is not None), setting.name
    assert {s.group for s in CATALOGUE} == set(GROUPS), "every README group has settings"


def test_the_contract_names_and_defaults_of_design_section_3_stay():
    assert settings.IMOCHA_BASE_URL.value() == "https://apiv3.imocha.io"
    assert settings.DEGREED_RATE_LIMIT_PER_MINUTE.value() == 70
    assert settings.degreed_endpoints() == ("us", "https://api.degreed.com", "https://degreed.com/oauth/token")
    for setting in (settings.IMOCHA_API_KEY, settings.DEGREED_CLIENT_ID, settings.DEGREED_CLIENT_SECRET):
        assert setting.required
    assert settings.IMOCHA_PIPELINE_STAGING_DB_URL.value().endswith("/imocha_pipeline_staging.sqlite")


@pytest.mark.parametrize("setting", CATALOGUE, ids=lambda s: s.name)
def test_every_setting_that_can_be_wrong_lists_values_it_refuses(setting: Setting):
    if type(setting.parser) is Text and not setting.parser.min_length:
        assert setting.parser.bad_examples() == (), "free text: nothing to refuse"
    else:
        assert setting.parser.bad_examples(), f"{setting.name} has rules but no bad example to test them with"


@pytest.mark.parametrize(("setting", "bad"), BAD_VALUES)
def test_a_bad_value_is_refused_naming_the_setting_and_the_value(monkeypatch, setting: Setting, bad: str):
    monkeypatch.setenv(setting.name, bad)
    with pytest.raises(InvalidSettingError) as error:
        setting.value()
    message = str(error.value)
    assert error.value.setting == setting.name and f"setting {setting.name} must be" in message
    if setting.secret:
        assert bad not in message and error.value.value is None, "a secret's value is never repeated"
    else:
        assert repr(bad) in message and error.value.value == bad
    with pytest.raises(InvalidSettingError, match=setting.name):
        setting.parse(bad)


@pytest.mark.parametrize("setting", REQUIRED, ids=lambda s: s.name)
def test_a_missing_required_setting_names_itself(monkeypatch, setting: Setting):
    with pytest.raises(MissingSettingError, match=setting.name) as error:
        setting.value()
    assert error.value.setting == setting.name
    monkeypatch.setenv(setting.name, "   ")
    with pytest.raises(MissingSettingError, match=setting.name):
        setting.value()


@pytest.mark.parametrize("setting", OPTIONAL, ids=lambda s: s.name)
def test_defaults_round_trip(monkeypatch, setting: Setting):
    default = setting.default_value()
    assert setting.value() == default, "unset: the default"
    monkeypatch.setenv(setting.name, "  ")
    assert setting.value() == default, "empty: the default"
    if default not in ("", None):
        text = setting.format(default)
        assert setting.parse(text) == default
        monkeypatch.setenv(setting.name, f" {text} ")
        assert setting.value() == default, "the default written out reads back as itself"


def test_the_examples_of_the_brief_are_refused(monkeypatch):
    cases = [(settings.IMOCHA_PIPELINE_MAX_RETIRE_SHARE, "-0.1"), (settings.IMOCHA_PIPELINE_MAX_INVALID_SHARE, "1.01"),
             (settings.DEGREED_RATE_LIMIT_PER_MINUTE, "0"), (settings.IMOCHA_PIPELINE_PROGRESS_SECONDS, "-1"),
             (settings.IMOCHA_PIPELINE_WAITING_RETRY_SECONDS, "-5"), (settings.DEGREED_REGION, "apac"),
             (settings.IMOCHA_PIPELINE_RECONCILE_CRON, "30 25 * * *"), (settings.IMOCHA_PIPELINE_HISTORY_START,
                                                                        "2024-02-30"),
             (settings.IMOCHA_PIPELINE_DRY_RUN, "sometimes"), (settings.IMOCHA_PIPELINE_POLL_WINDOW_HOURS, "inf")]
    for setting, bad in cases:
        monkeypatch.setenv(setting.name, bad)
        with pytest.raises(InvalidSettingError, match=f"{setting.name} must be .*{re.escape(repr(bad))}"):
            setting.value()


def test_values_are_parsed_to_their_types(monkeypatch, tmp_path):
    expected = {
        "IMOCHA_PIPELINE_MAX_RETIRE_SHARE": ("1", 1.0), "IMOCHA_PIPELINE_MAX_INVALID_SHARE": ("0", 0.0),
        "IMOCHA_PIPELINE_DRY_RUN": ("On", True), "DEGREED_TOKEN_REQUESTS_COUNT": ("NO", False),
        "DEGREED_REGION": (" EU_Betatest ", "eu-betatest"), "IMOCHA_PIPELINE_HISTORY_START": ("2025-03-01",
                                                                                               date(2025, 3, 1)),
        "IMOCHA_PIPELINE_SEND_STATUSES": ("Complete, Test Left,", ("Complete", "Test Left")),
        "IMOCHA_PIPELINE_CATCH_UP_CRON": ("*/10 0-6,22 * jan-mar MON-fri", "*/10 0-6,22 * jan-mar MON-fri"),
        "IMOCHA_PIPELINE_RECONCILE_CRON": ("@daily", "@daily"),
        "IMOCHA_RATE_LIMIT_PER_MINUTE": ("0", 0), "IMOCHA_PIPELINE_POLL_OVERLAP_MINUTES": ("2.5", 2.5),
    }
    for name, (raw, value) in expected.items():
        monkeypatch.setenv(name, raw)
        assert settings.BY_NAME[name].value() == value, name
    mapping = tmp_path / "skills.csv"
    mapping.write_text("imocha_skill,degreed_skill\n")
    monkeypatch.setenv("IMOCHA_PIPELINE_SKILL_MAP", str(mapping))
    assert settings.IMOCHA_PIPELINE_SKILL_MAP.value() == str(mapping)


def test_a_setting_is_read_when_asked(monkeypatch):
    assert settings.IMOCHA_PIPELINE_CLAIM_LEASE_SECONDS.value() == 120
    monkeypatch.setenv("IMOCHA_PIPELINE_CLAIM_LEASE_SECONDS", "5")
    assert settings.IMOCHA_PIPELINE_CLAIM_LEASE_SECONDS.value() == 5
    monkeypatch.setenv("DAGSTER_HOME", "/srv/dagster")
    assert settings.staging_db_url() == "sqlite:////srv/dagster/imocha_pipeline_staging.sqlite"
    assert settings.DEGREED_RATE_LIMIT_PER_MINUTE.from_values({"DEGREED_RATE_LIMIT_PER_MINUTE": "6000"}) == 6000
    assert settings.DEGREED_RATE_LIMIT_PER_MINUTE.from_values({}) == 70, "not in the mapping: the environment"


# -- only the settings package reads the environment ---------------------------------------------------------------


def _environment_reads(path: Path, root: Path = REPO) -> list[str]:
    """Every read of the process environment in ``path``: ``os.environ`` other than as an assignment's target,
    ``os.getenv``, ``from os import environ/getenv``."""
    tree = ast.parse(path.read_text())
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os" and \
                {a.name for a in node.names} & {"environ", "getenv", "environb", "getenvb"}:
            found.append((node.lineno, f"{path.relative_to(root)}:{node.lineno} from os import ..."))
        if isinstance(node, ast.Attribute) and node.attr in {"environ", "getenv", "environb", "getenvb"} \
                and isinstance(node.value, ast.Name) and node.value.id == "os":
            parent = parents.get(node)
            written = isinstance(parent, ast.Subscript) and parent.value is node and \
                isinstance(parent.ctx, ast.Store | ast.Del)
            if not written:
                found.append((node.lineno, f"{path.relative_to(root)}:{node.lineno} os.{node.attr}"))
    return [text for _, text in sorted(found)]


def test_only_the_settings_package_reads_the_environment():
    outside = [read for path in sorted(PRODUCT.rglob("*.py")) if SETTINGS_PACKAGE not in path.parents
               for read in _environment_reads(path)]
    assert outside == [], "read settings through imocha_pipeline.settings"
    inside = [read for path in sorted(SETTINGS_PACKAGE.rglob("*.py")) for read in _environment_reads(path)]
    assert len(inside) == 1 and "setting.py" in inside[0], inside


def test_the_finder_sees_reads_and_ignores_writes(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import os\nfrom os import getenv\nos.environ['A'] = '1'\nx = os.environ.get('B')\n"
                      "y = os.getenv('C')\ndel os.environ['A']\nz = 'D' in os.environ\n")
    reads = [read.split(" ", 1)[1] for read in _environment_reads(sample, tmp_path)]
    assert reads == ["from os import ...", "os.environ", "os.getenv", "os.environ"]


def test_the_settings_package_imports_nothing_else_of_the_pipeline():
    for path in SETTINGS_PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            modules = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
            for module in modules:
                assert not module.startswith("imocha_") or module.startswith("imocha_pipeline.settings"), \
                    f"{path.name} imports {module}"
                assert not module.startswith("dagster"), f"{path.name} imports {module}"


# -- the README ----------------------------------------------------------------------------------------------------


def test_the_readme_tables_are_generated_from_the_catalogue():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    for marker in TABLES:
        assert text.count(start_marker(marker)) == 1 and text.count(end_marker(marker)) == 1, marker
    assert text == update_readme(text), "run: python -m imocha_pipeline.settings --write"
    for setting in CATALOGUE:
        assert f"| `{setting.name}` | {setting.shown.replace('|', chr(92) + '|')} |" in text, setting.name


def test_the_command_prints_and_checks_the_tables(tmp_path):
    printed = subprocess.run([sys.executable, "-m", "imocha_pipeline.settings"], capture_output=True, text=True,
                             check=True, cwd=REPO).stdout
    assert start_marker("settings") in printed and "`IMOCHA_PIPELINE_DRY_RUN`" in printed
    stale = tmp_path / "README.md"
    stale.write_text(f"# x\n\n{start_marker('settings')}\nSTALE-TABLE\n{end_marker('settings')}\n\n"
                     f"{start_marker('settings:sensors')}\n{end_marker('settings:sensors')}\n")
    check = [sys.executable, "-m", "imocha_pipeline.settings", "--check", str(stale)]
    assert subprocess.run(check, capture_output=True, cwd=REPO).returncode == 1
    subprocess.run([sys.executable, "-m", "imocha_pipeline.settings", "--write", str(stale)], check=True,
                   capture_output=True, cwd=REPO)
    assert subprocess.run(check, capture_output=True, cwd=REPO).returncode == 0
    assert "STALE-TABLE" not in stale.read_text() and "`IMOCHA_PIPELINE_POLL_WINDOW_HOURS`" in stale.read_text()


# -- resources get plain values ------------------------------------------------------------------------------------


def test_resources_have_the_settings_defaults_and_follow_the_settings_when_not_given(monkeypatch):
    sync = SyncSettingsResource()
    assert (sync.max_retire_share, sync.max_extract_shrink_share, sync.max_invalid_share, sync.dry_run) == \
        (0.2, 0.2, 0.5, False)
    assert DegreedResource(client_id="c", client_secret="s").rate_limit_per_minute == 70
    monkeypatch.setenv("IMOCHA_PIPELINE_MAX_INVALID_SHARE", "0.95")
    monkeypatch.setenv("IMOCHA_PIPELINE_DRY_RUN", "yes")
    monkeypatch.setenv("DEGREED_RATE_LIMIT_PER_MINUTE", "30")
    assert sync.invalid_share_limit() == 0.95 and sync.is_dry_run() is True, "not given: the setting, read now"
    assert DegreedResource(client_id="c", client_secret="s").resolved().rate_limit_per_minute == 30
    given = SyncSettingsResource(max_invalid_share=0.4, dry_run=False)
    assert given.invalid_share_limit() == 0.4 and given.is_dry_run() is False, "given: the resource's value"
    with pytest.raises(InvalidSettingError, match="IMOCHA_PIPELINE_MAX_RETIRE_SHARE"):
        SyncSettingsResource(max_retire_share=1.5).retire_share_limit()
    with pytest.raises(InvalidSettingError, match="DEGREED_RATE_LIMIT_PER_MINUTE"):
        DegreedResource(client_id="c", client_secret="s", rate_limit_per_minute=0).resolved()


def test_resources_from_env_fill_the_values_and_keep_the_secrets_as_env_vars(monkeypatch):
    monkeypatch.setenv("IMOCHA_PIPELINE_DRY_RUN", "1")
    monkeypatch.setenv("DEGREED_RATE_LIMIT_PER_MINUTE", "42")
    monkeypatch.setenv("DEGREED_REGION", "EU")
    monkeypatch.setenv("IMOCHA_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("IMOCHA_PIPELINE_STAGING_DB_URL", "postgresql://u:pw@db/x")
    resources = resources_from_env()
    degreed, imocha, sync = resources["degreed"], resources["imocha"], resources["sync_settings"]
    assert (degreed.rate_limit_per_minute, degreed.region, imocha.base_url, sync.dry_run) == \
        (42, "eu", "http://127.0.0.1:9", True)
    assert isinstance(degreed.client_secret, dg.EnvVar) and isinstance(imocha.api_key, dg.EnvVar)
    assert resources["staging_db"].url == "", "the staging URL (it may carry a password) is read when used"
    monkeypatch.setenv("DEGREED_RATE_LIMIT_PER_MINUTE", "0")
    with pytest.raises(InvalidSettingError, match="DEGREED_RATE_LIMIT_PER_MINUTE"):
        resources_from_env()


def test_resources_from_settings_take_the_mapping_then_the_settings(monkeypatch):
    values = {"IMOCHA_API_KEY": "k", "IMOCHA_BASE_URL": "http://127.0.0.1:1", "DEGREED_CLIENT_ID": "c",
              "DEGREED_CLIENT_SECRET": "s", "DEGREED_API_BASE_URL": "http://127.0.0.1:2",
              "DEGREED_TOKEN_URL": "http://127.0.0.1:2/oauth/token", "DEGREED_RATE_LIMIT_PER_MINUTE": "6000"}
    resources = resources_from_settings(values, "sqlite://")
    degreed = resources["degreed"]
    assert degreed.rate_limit_per_minute == 6000 and "rate_limit_per_minute" in degreed.model_fields_set
    monkeypatch.setenv("DEGREED_ORGANIZATION_CODE", "TENANT-7")
    assert degreed.resolved().organization_code == "TENANT-7", "not in the mapping: the setting, when used"
    with pytest.raises(MissingSettingError, match="DEGREED_CLIENT_ID"):
        resources_from_settings({k: v for k, v in values.items() if k != "DEGREED_CLIENT_ID"}, "sqlite://")
    explicit = SyncSettingsResource(dry_run=True)
    assert resources_from_settings(values, "sqlite://", explicit)["sync_settings"] is explicit


def test_a_run_sees_a_setting_changed_after_the_definitions_were_built(monkeypatch):
    @dg.asset
    def limits(sync_settings: SyncSettingsResource, imocha: ImochaResource) -> dict:
        return {"invalid": sync_settings.invalid_share_limit(), "dry_run": sync_settings.is_dry_run(),
                "retire": sync_settings.retire_share_limit(), "base_url": imocha.resolved_base_url()}

    def run(sync: SyncSettingsResource) -> dict:
        defs = dg.Definitions(assets=[limits], resources={
            "sync_settings": sync, "imocha": ImochaResource(api_key="k", base_url="http://127.0.0.1:3")})
        job = defs.resolve_implicit_global_asset_job_def()
        monkeypatch.setenv("IMOCHA_PIPELINE_MAX_INVALID_SHARE", "0.95")
        monkeypatch.setenv("IMOCHA_PIPELINE_DRY_RUN", "1")
        monkeypatch.setenv("IMOCHA_PIPELINE_MAX_RETIRE_SHARE", "0.3")
        try:
            return job.execute_in_process().output_for_node("limits")
        finally:
            for name in ("IMOCHA_PIPELINE_MAX_INVALID_SHARE", "IMOCHA_PIPELINE_DRY_RUN",
                         "IMOCHA_PIPELINE_MAX_RETIRE_SHARE"):
                monkeypatch.delenv(name)

    assert run(SyncSettingsResource()) == {"invalid": 0.95, "dry_run": True, "retire": 0.3,
                                           "base_url": "http://127.0.0.1:3"}
    # A value given explicitly wins in the run; one equal to the default is not kept by Dagster, so the setting
    # decides (the documented limit of "not given").
    assert run(SyncSettingsResource(max_invalid_share=0.6, max_retire_share=0.2)) == {
        "invalid": 0.6, "dry_run": True, "retire": 0.3, "base_url": "http://127.0.0.1:3"}

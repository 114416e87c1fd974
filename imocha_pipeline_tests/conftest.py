"""Shared fixtures: staging databases (SQLite and the local PostgreSQL server) and the sandbox."""

from __future__ import annotations

import os
import uuid

import pytest
import sqlalchemy as sa

from imocha_pipeline.staging import dispose_engine, normalise_url

PG_URL = os.environ.get("IMOCHA_PIPELINE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def _postgres_unavailable_reason() -> str | None:
    try:
        engine = sa.create_engine(normalise_url(PG_URL), connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
        return None
    except Exception as exc:
        return f"PostgreSQL not reachable at {PG_URL}: {type(exc).__name__}: {str(exc).splitlines()[0]}"


@pytest.fixture(scope="session")
def postgres_server_url() -> str:
    """The PostgreSQL server for tests. CI sets IMOCHA_PIPELINE_REQUIRE_POSTGRES=1: missing means failure."""
    reason = _postgres_unavailable_reason()
    if reason:
        if os.environ.get("IMOCHA_PIPELINE_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{reason} (required: IMOCHA_PIPELINE_REQUIRE_POSTGRES=1)")
        pytest.skip(reason)
    return PG_URL


@pytest.fixture
def postgres_url(postgres_server_url: str):
    """A fresh schema on the PostgreSQL server, selected through search_path, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(normalise_url(postgres_server_url))
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in postgres_server_url else "?"
    url = f"{postgres_server_url}{separator}options=-csearch_path%3D{schema}"
    yield url
    dispose_engine(url)
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@pytest.fixture
def sqlite_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'staging.sqlite'}"
    yield url
    dispose_engine(url)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def staging_url(request):
    """The staging database URL, once on SQLite and once on PostgreSQL."""
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_url")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def instance():
    """A temporary persistent Dagster instance (sensor contexts need one; runs are recorded in it)."""
    import dagster as dg

    with dg.instance_for_test() as inst:
        yield inst


@pytest.fixture(autouse=True)
def _no_leaked_dagster_instance():
    """Each test starts without a "current" Dagster instance left behind by an earlier test.

    An instance entered as a context manager registers its definitions-state storage in a context variable;
    one that a test left open (or disposed without exiting) would otherwise be resolved, dead, by the next
    test that loads definitions ("Attempted to resolve undefined DagsterInstance weakref").
    """
    from dagster._core.storage.defs_state.base import set_defs_state_storage  # no public reset exists

    with set_defs_state_storage(None):
        yield


@pytest.fixture
def make_sandbox():
    """A factory of started sandboxes (``make_sandbox(seed=..., tests=...)`` takes SandboxConfig's fields),
    each stopped when the test ends."""
    from imocha_sandbox.runtime import Sandbox, SandboxConfig

    started: list[Sandbox] = []

    def make(**config) -> Sandbox:
        box = Sandbox(SandboxConfig(**config)).start()
        started.append(box)
        return box

    yield make
    for box in reversed(started):
        box.stop()


def compiled_text_part_missing() -> str | None:
    """Why the diff engine's compiled part (``_textmatch``) cannot run here, or None. CI sets
    IMOCHA_PIPELINE_REQUIRE_NATIVE=1: then its absence fails the tests that need it instead of skipping them."""
    from imocha_pipeline.sync.core import text_native

    if text_native._textmatch is not None:
        return None
    reason = "the compiled part imocha_pipeline.sync.core._textmatch is not built (no C compiler at install time?)"
    if os.environ.get("IMOCHA_PIPELINE_REQUIRE_NATIVE") == "1":
        pytest.fail(f"{reason} (required: IMOCHA_PIPELINE_REQUIRE_NATIVE=1)")
    return reason


@pytest.fixture(params=["compiled", "python"])
def text_path(request, monkeypatch):
    """Run a diff test on both of the engine's paths for text: the compiled one (every core) and Python's."""
    if request.param == "compiled":
        reason = compiled_text_part_missing()
        if reason:
            pytest.skip(reason)
        monkeypatch.setenv("IMOCHA_PIPELINE_DIFF_NATIVE", "1")
    else:
        monkeypatch.setenv("IMOCHA_PIPELINE_DIFF_NATIVE", "0")
    return request.param

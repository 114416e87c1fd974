"""One prepared engine per staging database URL per process (first use migrates an empty database)."""

from __future__ import annotations

import threading

from sqlalchemy.engine import Engine

from imocha_pipeline.staging import versions
from imocha_pipeline.staging.engine import create_engine

_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def get_engine(url: str) -> Engine:
    """One engine per URL per process, with a schema at the latest revision.

    An empty database is migrated to the latest revision here (zero set-up for development, the demo and
    tests); a database at the latest revision is used as it is; any other raises
    ``versions.SchemaOutOfDate`` naming ``imocha-pipeline db upgrade``.
    """
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = create_engine(url)
            try:
                versions.prepare(engine, url)
            except BaseException:
                engine.dispose()
                raise
            _engines[url] = engine
        return engine


def dispose_engine(url: str) -> None:
    with _engines_lock:
        engine = _engines.pop(url, None)
    if engine is not None:
        engine.dispose()

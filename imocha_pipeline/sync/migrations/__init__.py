"""Alembic migrations of the staging database (driven by ``imocha_pipeline.sync.schema``)."""

"""Alembic migrations of the staging database (driven by ``imocha_pipeline.staging.versions``)."""

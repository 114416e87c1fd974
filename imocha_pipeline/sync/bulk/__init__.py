"""Bulk backfill through Degreed's Completions Template: export, upload, confirm (``template``, ``export``,
``confirm``)."""

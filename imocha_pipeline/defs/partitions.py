"""Partitions shared by the completion assets, job and sensors."""

import os

import dagster as dg

# The history start is a deployment setting read when the code location loads (not a secret).
HISTORY_START = os.environ.get("IMOCHA_PIPELINE_HISTORY_START", "").strip() or "2024-01-01"

completion_partitions = dg.DailyPartitionsDefinition(
    start_date=HISTORY_START,
    timezone="UTC",
    end_offset=1,  # today's partition exists, so a completion syncs the day it happens
)
"""One partition per UTC day in which iMocha reported attempts as finished (Retrieve Invites' window)."""

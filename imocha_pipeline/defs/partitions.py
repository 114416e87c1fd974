"""Partitions shared by the completion assets, job and sensors."""

import dagster as dg

from imocha_pipeline.settings import IMOCHA_PIPELINE_HISTORY_START

# The history start is a deployment setting read when the code location loads (not a secret).
HISTORY_START = IMOCHA_PIPELINE_HISTORY_START.value().isoformat()

completion_partitions = dg.DailyPartitionsDefinition(
    start_date=HISTORY_START,
    timezone="UTC",
    end_offset=1,  # today's partition exists, so a completion syncs the day it happens
)
"""One partition per UTC day in which iMocha reported attempts as finished (Retrieve Invites' window)."""

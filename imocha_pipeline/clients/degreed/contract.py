"""The fixed facts of Degreed's REST API v2 this client relies on (``specs/degreed-api.md``)."""

API_NAME = "degreed"
"""How the client names Degreed in errors, logs and request metrics."""
V2 = "/api/v2"
MAX_PAGE_LIMIT = 1000
"""Degreed's largest page (``limit``)."""
TOKEN_ENDPOINT = "POST /oauth/token"

# Rate-budget lanes (see ``clients/http/shared_budget.py``): completions go before content, content before reads.
LANE_READS = "reads"
LANE_CONTENT = "content"
LANE_COMPLETIONS = "completions"
LANE_AUTH = "auth"

"""Fixed facts the settings build on: the vendors' default hosts, Degreed's regions and the scopes we need."""

from __future__ import annotations

IMOCHA_DEFAULT_BASE_URL = "https://apiv3.imocha.io"
DEGREED_DEFAULT_API_BASE_URL = "https://api.degreed.com"
DEGREED_DEFAULT_TOKEN_URL = "https://degreed.com/oauth/token"
DEGREED_DEFAULT_RATE_LIMIT_PER_MINUTE = 70
DEGREED_DEFAULT_REGION = "us"

# DEGREED_REGION -> (OAuth token URL, API base URL): the data centres and environments of the Degreed spec's
# table (specs/degreed-api.md §1). Explicit DEGREED_TOKEN_URL / DEGREED_API_BASE_URL win over the region.
DEGREED_REGIONS: dict[str, tuple[str, str]] = {
    "us": ("https://degreed.com/oauth/token", "https://api.degreed.com"),
    "us-betatest": ("https://betatest.degreed.com/oauth/token", "https://api.betatest.degreed.com"),
    "eu": ("https://eu.degreed.com/oauth/token", "https://api.eu.degreed.com"),
    "eu-betatest": ("https://eu.betatest.degreed.com/oauth/token", "https://api.eu.betatest.degreed.com"),
    "ca": ("https://ca.degreed.com/oauth/token", "https://api.ca.degreed.com"),
    # Assumption ([A] in the spec): no source lists the CA betatest API host; it follows the other regions'
    # pattern. Set DEGREED_API_BASE_URL if Degreed gives you another one.
    "ca-betatest": ("https://ca.betatest.degreed.com/oauth/token", "https://api.ca.betatest.degreed.com"),
}

# The scopes the integration asks for (DESIGN.md; the seed's "skill-ratings write" is spelled
# skill_ratings:write in Degreed's scope list).
DEGREED_REQUIRED_SCOPES = (
    "content:read",
    "content:write",
    "providers:read",
    "completions:read",
    "completions:write",
    "users:read",
    "skill_ratings:read",
    "skill_ratings:write",
)

# The placeholders each template may use (the mapping fills them; sync/assessments/mapping.py).
LAUNCH_URL_FIELDS = ("test_id", "test_link", "test_link_id", "test_name")
SSO_URL_FIELDS = ("launch_url", "test_id", "test_name")
SUMMARY_FIELDS = ("skills", "questions", "duration", "test_name", "sections")

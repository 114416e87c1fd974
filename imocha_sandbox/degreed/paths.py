"""The two roots of the simulated API: the versioned REST API and the OAuth2 token endpoint."""

API_PREFIX = "/api/v2"
TOKEN_PATH = "/oauth/token"

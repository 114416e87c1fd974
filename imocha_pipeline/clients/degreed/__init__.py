"""The production client for Degreed's REST API v2, and the typed records it returns.

- ``client``: ``DegreedClient``, the endpoints;
- ``auth``: ``DegreedAuth``, the OAuth2 client-credentials token;
- ``paging``: ``ListReader`` (page chains with cursor restart) and ``date_windows``;
- ``records``: ``DegreedAssessment``, ``DegreedCompletion``, ``DegreedSkillRating``, ``DegreedUser``,
  ``DegreedProvider``;
- ``values``: tolerant reading of Degreed's values (timestamps, text, numbers, relationships);
- ``envelopes``: JSON:API bodies; ``errors``: error answers as typed errors; ``contract``: the API's fixed facts.
"""

from imocha_pipeline.clients.degreed.auth import DegreedAuth
from imocha_pipeline.clients.degreed.client import DegreedClient
from imocha_pipeline.clients.degreed.contract import API_NAME
from imocha_pipeline.clients.degreed.records import (
    DegreedAssessment,
    DegreedCompletion,
    DegreedProvider,
    DegreedSkillRating,
    DegreedUser,
)

__all__ = [
    "API_NAME", "DegreedAssessment", "DegreedAuth", "DegreedClient", "DegreedCompletion", "DegreedProvider",
    "DegreedSkillRating", "DegreedUser",
]

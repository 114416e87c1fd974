"""The one HTTP layer both API clients use.

- ``session``: ``ApiSession``, one API's session, sending each request with retries;
- ``policy``: ``RetryPolicy`` and ``Timeouts``, how patient a session is;
- ``budget``: the ``RateBudget`` protocol, ``Unlimited``, ``LocalRateBudget``, and the server's rate-limit headers;
- ``shared_budget``: ``SharedRateBudget``, one budget shared through a ``BudgetStore``;
- ``metrics``: ``RequestMetrics``; ``redaction``: ``Redactor``; ``json_body``: ``decode_json``.
"""

from imocha_pipeline.clients.http.budget import LocalRateBudget, RateBudget, Unlimited
from imocha_pipeline.clients.http.metrics import RequestMetrics
from imocha_pipeline.clients.http.policy import RetryPolicy, Timeouts
from imocha_pipeline.clients.http.session import ApiSession

__all__ = ["ApiSession", "LocalRateBudget", "RateBudget", "RequestMetrics", "RetryPolicy", "Timeouts", "Unlimited"]

"""A local simulator of Degreed's REST API v2, built from ``/work/shared/specs/degreed-api.md``.

It serves what the pipeline talks to: OAuth2 client-credentials tokens with scopes, assessment content,
completions, skill ratings (the spec's proposed §9.4 contract), users and providers, with JSON:API
envelopes, cursor paging, the 70-a-minute rate limit with its headers, organization vs provider keys,
and the ``X-Degreed-Organization-Code`` rules. Wherever the spec marks behaviour as an assumption
(``[A]``) the simulator makes it a setting (``DegreedSimSettings``) so the client can be tested against
every variant.

``content_listing_lag_seconds`` (default 0; a constructor argument, ``configure`` or ``PUT /_sandbox/settings``)
reproduces the lag real APIs show between a write and the item appearing in list and search results: an
assessment created less than that many seconds ago (by the simulator's clock, through ``POST
/api/v2/content/assessments`` or ``add_assessment``) is left out of every listing of
``GET /api/v2/content/assessments`` (the paged list and the ``filter[external_id]`` lookup) and of
``GET /api/v2/content``, while ``GET .../{id}`` finds it at once and a create with the same external id
still answers 409 (naming it when ``conflict_body="error_with_id"``). It makes the "409 on create, yet the
lookup finds nothing" path reachable in tests. Negative values are refused.

Every setting below is a ``DegreedSimSettings`` field: a constructor argument, ``configure(...)`` and
``PUT /_sandbox/settings``; ``GET /_sandbox/settings`` reads them. The ``DEFAULT_*`` constants hold the
defaults of the first four (today's answers; see the note at the constants for flipping them).

``read_shape`` — "echo" (default) | "documented". What a completion or skill rating answer carries. "echo"
echoes what was posted: ``user-id`` (the email), ``user-identifier-type``, ``content-id`` (the external
id), ``content-id-type``, ``content-type``, ``percentile``, ``provider-code`` and the rest. "documented" is
spec §8.3 (captured real answers): a completion (list items of ``GET /api/v2/completions`` and
``GET /api/v2/users/{id}/completions``, ``GET /api/v2/completions/{id}``, the POST/PATCH answer) has ONLY
``employee-id``, ``completed-at``, ``added-at``, ``points-earned`` (a decimal string, "0.0643720"),
``is-verified``, ``rating``, ``access-method``; learner, content and provider come only as Degreed ids in
``relationships`` (``user``/``users``, ``content``/``content``, ``provider``/``providers``), and the two
list answers add ``included``: one content summary per referenced content item (``type: "content"``,
``id``, attributes ``content-type``, ``url``, ``title``, ``provider``, ``content-duration``,
``content-duration-type``, ``is-internal``). A skill rating (§9.2) has ``employee-id``, ``skill-name``,
``rating``, ``rating-type``, ``certifiable-skill-guid``, ``rated-at`` and the user as a relationship.
Timestamps in that shape are .NET style: no zone, 0-7 fraction digits without trailing zeros
("2021-11-11T20:56:41.093"; ``format_dotnet_timestamp``). Content answers are the same in both shapes
(§7.6 documents ``external-id`` on content), and ``state()`` always holds the whole truth (``user_email``,
``content_external_id``, ``percentile`` ...), whatever the API shows.

``relationships_style`` — "object" (default; JSON:API) | "array" (``[{"content": {"data": ...}},
{"provider": ...}, {"user": ...}]``, as captured in §3/§8.3). Applies to content, completions and skill
ratings in both read shapes.

``conflict_body`` — "error_with_id" (default) | "error_without_id" | "empty". The body of every 409: content
created or PATCHed onto an external id or url already in use, and a duplicate completion under
``completion_duplicates="409"``. "empty" is ``{}`` (edX's only public fixture, §8.4); "error_without_id" is a
JSON:API error (code "conflict", status 409, title "Conflict") whose detail and source do not name the
existing record; "error_with_id" names its Degreed id in ``detail`` and ``source``.

``cursor_expiry`` — "code" (default) | "bare_400" | "not_found". The answer to a ``next=`` cursor whose
snapshot expired (idle longer than ``cursor_idle_seconds``, or expired with ``expire_cursors`` /
``schedule_cursor_expiry``), or that was never issued: "code" is a 400 with code "cursor-expired", "bare_400"
a generic 400 bad-request ("Invalid request.", nothing about cursors), "not_found" a 404 not-found error.

``token_requests_count`` — False (default) | True. [A] Degreed does not say whether the token endpoint counts
against the per-client limit. When True, ``POST /oauth/token`` naming a known client id is charged to that
client (and refused with 429 over budget) and its answers carry the rate-limit headers; when False it is
free and answers without them.

Rate limit (not variants): every ``/api/v2`` answer carries ``X-Rate-Limit-Limit``,
``X-Rate-Limit-Remaining`` and ``X-Rate-Limit-Reset`` — errors, 401s, unknown paths, and the 429 and 503
answers injected through ``/_sandbox/faults`` too (``SimulatorMiddleware``'s ``fault_answer`` hook), and every
429 adds ``Retry-After`` and says "Maximum N requests allowed per 1m." with the limit in force at that moment.
``rate_window`` "fixed" opens a window at a client's first request and resets it 60 s later (so up to twice
the limit can fall in one rolling minute); "sliding" accepts a request only while fewer than the limit were
accepted in the 60 s before it, so no rolling minute ever holds more. ``max_requests_in_any_minute(client)``
(HTTP: ``GET /_sandbox/rate-limit/max-in-any-minute/{client_id}``) reports the most requests accepted from a
client in any rolling 60 s, for tests and benchmarks.

Content urls (not a variant): a create or PATCH whose ``url`` equals another content item's url answers 409,
like a duplicate external id. The url is compared as an exact string against every content item of the
organisation — every provider's, obsolete ones included (a retired item is still a resource: it can be
read by id and revived, and completions point at it) — [A] where Degreed draws the line is not documented.
``add_assessment``/``update_assessment`` (control methods) bypass both checks on purpose.

Date filters (not a variant): ``filter[start_date]``/``filter[end_date]`` are calendar days, both included,
at most ``max_date_range_days`` (7) of them: 2024-05-01..2024-05-07 is allowed, 2024-05-01..2024-05-08 (8
days) is a 400. ``GET /api/v2/completions`` without filters reads the last 7 days up to today [A];
``GET /api/v2/users/{id}/completions``, ``GET /api/v2/users/{id}/skill-ratings`` and
``GET /api/v2/skill-ratings`` without filters list everything (paged with ``limit``/``next``).

State lives in memory behind one lock: request handlers run on uvicorn's event loop while tests call the
control methods from their own threads. Every control method also has an HTTP twin under ``/_sandbox/``.

Modules, each with one job (``DegreedSimulator`` in ``simulator`` composes them):

- ``settings``: ``DegreedSimSettings`` (the settings above) and the ``DEFAULT_*`` constants;
- ``store``: the records (``SimUser`` … ``SimSkillRating``), their tables, the one lock, the look-ups;
- ``ids``: seeded record ids, and the separate stream for cursors, snapshots and error ids;
- ``auth``: API keys (``ApiClientSpec``, ``default_clients``), OAuth2 tokens, scopes, the org-code rule;
- ``rate_limit``: fixed and sliding windows, the rate-limit headers, the 429, the rolling-minute counter;
- ``paging``: cursor snapshots and their expiry, ``limit``, the date-window filters;
- ``serialise``: JSON:API resources in each read shape and relationships style, error bodies;
- ``api_request``: one authorised request (``ApiRequest``) and the checks made of its headers and body;
- ``content_api``, ``completions_api``, ``skill_ratings_api``, ``directory_api``: the endpoint handlers;
- ``routes``: the route table, the request pipeline, the token endpoint, the middleware hooks;
- ``control``: the Python control methods and their ``/_sandbox/`` HTTP twins;
- ``timestamps``, ``problems``, ``paths``: Degreed's timestamp formats, ``ApiProblem``, the API's two roots.

The names below are the package's public surface: ``from imocha_sandbox.degreed import DegreedSimulator``.
"""

from imocha_sandbox.degreed.auth import DEFAULT_CLIENT_ID, DEFAULT_CLIENT_SECRET, ApiClientSpec, default_clients
from imocha_sandbox.degreed.settings import (
    DEFAULT_CONFLICT_BODY,
    DEFAULT_CURSOR_EXPIRY,
    DEFAULT_READ_SHAPE,
    DEFAULT_RELATIONSHIPS_STYLE,
    DegreedSimSettings,
)
from imocha_sandbox.degreed.simulator import DegreedSimulator
from imocha_sandbox.degreed.timestamps import format_degreed_timestamp, format_dotnet_timestamp

__all__ = [
    "DEFAULT_CLIENT_ID",
    "DEFAULT_CLIENT_SECRET",
    "DEFAULT_CONFLICT_BODY",
    "DEFAULT_CURSOR_EXPIRY",
    "DEFAULT_READ_SHAPE",
    "DEFAULT_RELATIONSHIPS_STYLE",
    "ApiClientSpec",
    "DegreedSimSettings",
    "DegreedSimulator",
    "default_clients",
    "format_degreed_timestamp",
    "format_dotnet_timestamp",
]

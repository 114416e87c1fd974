"""A local simulator of the iMocha Assessment API v3 (see ``specs/imocha-api.md``).

``ImochaSimulator(world, api_key)`` (``from imocha_sandbox.imocha import ImochaSimulator``) serves, under
``/v3``, what the pipeline and its tests need: tests and their details, test links, invitations (invite,
re-invite, reattempt, cancel), Retrieve Invites (``POST /v3/candidates/testattempts``), candidate reports,
callback notifications with retries, and Process Callbacks. State lives in memory, is built from a seeded
``World`` and is guarded by one lock: uvicorn calls the handlers on its event loop while tests call the
control methods directly from their own threads. Ids come from counters, so a seed always gives the same ids.

Documented facts are reproduced verbatim (error bodies, envelopes, the all-lowercase
``invitationtype`` key, PascalCase callbacks, ``sectionID`` in report sections). Where the spec is
silent (``INF``), the behaviour is an assumption, and the uncertain ones are settings
(``configure(**settings)`` or ``PUT /_sandbox/settings``):

- ``attempt_window_field``: Retrieve Invites filters on the completion time (``"completed"``,
  default) or the start time (``"started"``) of an attempt; the range is ``[start, end)``.
- ``test_status_labels``: the ``testStatus`` spelling per final status; default
  ``Complete -> "Completed"`` (the doc sample), ``"Test Left"``, ``"Terminated"``.
- ``report_status_labels``: report ``status``; default ``Complete``, ``TestLeft`` (both seen),
  ``Terminated`` (assumed).
- ``unfinished_report``: the answer for the report of an invitation that has not finished
  (Pending, In Progress, Cancelled, Expired). ``"not_found"`` (default): 404
  ``{"statusCode":404,"message":"Report is not available ..."}``; ``"in_progress"``: 200 with the
  invitation's status (``"Pending"``/``"In Progress"``/...), zero scores and empty sections/skills.
- ``report_ready_delay_seconds`` (default 0; also a constructor argument): for this many seconds after a
  finished attempt's completion time (``completed_at`` against ``clock()``), ``GET /v3/reports/{id}``
  answers the same 404 as an unfinished report (``Report is not available for test invitation id: N.``,
  whatever ``unfinished_report`` says), as real iMocha does while the report is being prepared; Retrieve
  Invites already lists the attempt as completed. The delay applies only to what the API serves
  (``report(..., as_served=True)``, which only the route passes): a direct ``report(id)`` call from
  Python (harness code computing the truth) always returns the real report. Negative values are refused.
- ``empty_attempts_404``: Retrieve Invites answers 404 instead of an empty list when nothing matches
  (clients in the wild treat 404 as "no attempts").
- ``max_page_size`` (default 100): larger ``pageSize`` values are clamped, not rejected.
- ``callbacks_process_limit`` (default 100): ids beyond it are ignored (not rejected).

Other assumptions, not settings: 404 and 5xx bodies use the gateway shape ``{"statusCode", "message"}``;
a missing key gets the same documented 401 body as a wrong key; the reattempt success code is 200 and
its in-progress error is a 400 in the cancel shape; Terminated behaves like Complete for re-invite and
reattempt; a re-invite or reattempt of a Pending/Cancelled/Expired invitation also replaces its
callback and redirect URLs when given; invites through an inactive link fail with a 400 ``errors``
body; callback retries count any non-2xx answer or connection error as a failure.

Also settable: ``callback_status_labels`` (the callback ``Status``; default ``In Progress``,
``Complete``, ``Test Left``, ``Terminated``). The 5xx of fault injection is a 503 with
``{"statusCode":503,...}``; an unexpected handler failure is a 500 with ``{"statusCode":500,...}``.

Control surface (under ``/_sandbox``, never logged, never faulted, no key), each mirrored by a method:

- ``POST /tests`` ``{name, duration, skills | banks, status, labels, link}`` → ``{testId, testLinkId}``
  (``add_test``); ``PATCH /tests/{id}`` ``{name, duration, status, labels}`` (``update_test``);
  ``DELETE /tests/{id}`` (``remove_test``; its invitations and reports stay).
- ``POST /tests/{id}/testlinks`` ``{name, invitationType, isApiLink}`` (``add_test_link``);
  ``POST /tests/{id}/testlinks/{linkId}/deactivate`` (``deactivate_test_link``).
- ``POST /attempts`` ``{testId, email, name, status, bankScores, attemptedOn, callbackUrl,
  timeTakenSeconds}`` → ``{testInvitationId}`` (``complete_attempt``).
- ``GET /invitations/{id}`` (``invitation``); ``POST /invitations/{id}/start|finish|leave|terminate|expire``
  ``{at, bankScores, timeTakenSeconds}`` (``start_attempt``, ``finish_attempt``, ``leave_attempt``,
  ``terminate_attempt``, ``expire_invitation``); a transition from the wrong state is a 409.
- ``GET /requests?since=N`` / ``DELETE /requests`` (``.log``); ``GET|PUT|DELETE /faults`` (``.faults``,
  a JSON of ``FaultConfig`` fields); ``GET|DELETE /callbacks`` (``callback_deliveries``: every try);
  ``GET|PUT /settings`` (``configure``); ``PUT|DELETE /responses`` ``{method, path, status, body,
  contentType, times}`` (``set_canned_response``: raw answers for malformed-payload tests).
- ``PUT /tests/{id}/listentry`` ``{entry}`` or ``{fields}`` / ``DELETE`` (``set_list_entry``,
  ``clear_list_entries``): serve one test's entry in ``GET /v3/tests`` malformed (the rest of the page,
  the order and ``count`` stay as they are). Without it the list is served as the state says.

Modules, one job each (``simulator`` composes them; no module imports the package itself):

- ``simulator``: ``ImochaSimulator``, the facade: builds the parts from a ``World``, mirrors every control method.
- ``store``: tests, links, invitations, the id counters and the lock. ``records``: those records and the
  invitation statuses. ``formats``: request values in (keys, timestamps, ints) and iMocha formats out.
- ``catalogue``: tests and links (API reads, control edits). ``list_entries``: malformed ``GET /v3/tests`` entries.
- ``attempts``: the invitation state machine (invite, re-invite, reattempt, cancel, start/finish/leave/terminate/
  expire). ``retrieve_invites``: Retrieve Invites. ``reports``: report building and the report-ready delay.
- ``callbacks``: the callback payload, notifying, Process Callbacks. ``callback_delivery``: the delivery worker
  (queue, retries, record of every try).
- ``settings``: the settings, their defaults and validation. ``rate_limit``: the token bucket.
- ``errors``: ``SimulatorError`` and the error bodies. ``http_io``: reading queries/bodies, error answers.
- ``gateway``: key check, rate limit and canned answers in front of the API. ``canned``: the canned answers.
- ``routes``: the ``/v3`` handlers. ``control``: the ``/_sandbox`` handlers.
"""

from imocha_sandbox.imocha.errors import (
    BAD_DATES_BODY,
    CANCEL_WRONG_STATE_BODY,
    FAULT_RATE_LIMIT_BODY,
    FOREIGN_IDS_MESSAGE,
    INTERNAL_ERROR_BODY,
    INVALID_KEY_BODY,
    SERVER_ERROR_BODY,
    SimulatorError,
)
from imocha_sandbox.imocha.list_entries import DROP
from imocha_sandbox.imocha.records import Invitation, SimLink, SimTest
from imocha_sandbox.imocha.simulator import ImochaSimulator

__all__ = [
    "BAD_DATES_BODY",
    "CANCEL_WRONG_STATE_BODY",
    "DROP",
    "FAULT_RATE_LIMIT_BODY",
    "FOREIGN_IDS_MESSAGE",
    "INTERNAL_ERROR_BODY",
    "INVALID_KEY_BODY",
    "SERVER_ERROR_BODY",
    "ImochaSimulator",
    "Invitation",
    "SimLink",
    "SimTest",
    "SimulatorError",
]

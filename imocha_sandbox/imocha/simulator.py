"""``ImochaSimulator``: the facade that builds the simulator's parts from a ``World`` and serves them as one app.

Every method mirrors a ``/_sandbox`` endpoint or an API call and delegates to the part doing that job
(``catalogue``, ``attempts``, ``reports``, ``retrieve_invites``, ``callbacks``, ``settings``, ``canned``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any

from starlette.applications import Starlette

from imocha_sandbox.imocha.attempts import Attempts
from imocha_sandbox.imocha.callback_delivery import CallbackDispatcher
from imocha_sandbox.imocha.callbacks import Callbacks
from imocha_sandbox.imocha.canned import CannedResponse, CannedResponses
from imocha_sandbox.imocha.catalogue import Catalogue
from imocha_sandbox.imocha.control import ControlRoutes
from imocha_sandbox.imocha.errors import FAULT_RATE_LIMIT_BODY, SERVER_ERROR_BODY
from imocha_sandbox.imocha.gateway import Gateway
from imocha_sandbox.imocha.gdpr import Gdpr
from imocha_sandbox.imocha.http_io import EXCEPTION_HANDLERS
from imocha_sandbox.imocha.list_entries import UNSET, ListEntryOverrides
from imocha_sandbox.imocha.records import Invitation, SimTest
from imocha_sandbox.imocha.reports import Reports
from imocha_sandbox.imocha.retrieve_invites import RetrieveInvites
from imocha_sandbox.imocha.routes import ApiRoutes
from imocha_sandbox.imocha.settings import SETTING_NAMES, SimulatorSettings
from imocha_sandbox.imocha.store import ImochaStore
from imocha_sandbox.seed import STATUS_COMPLETE, World
from imocha_sandbox.server import FaultInjector, RequestLog, SimulatorMiddleware, json_bytes


class _Setting:
    """A facade attribute read from and written to the simulator's settings (``sim.max_page_size = 5``)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, sim: ImochaSimulator | None, owner: type | None = None) -> Any:
        return self if sim is None else getattr(sim._settings, self.name)

    def __set__(self, sim: ImochaSimulator, value: Any) -> None:
        setattr(sim._settings, self.name, value)


class ImochaSimulator:
    """In-memory iMocha v3 API built from a ``World``; serve ``.app`` with ``ServerThread``.

    ``.log`` is the request log and ``.faults`` the fault injector of the shared middleware.
    Python control methods mirror the ``/_sandbox`` endpoints and raise ``SimulatorError``.
    """

    SETTINGS = SETTING_NAMES

    rate_limit_per_second = _Setting()
    attempt_window_field = _Setting()
    max_page_size = _Setting()
    test_status_labels = _Setting()
    report_status_labels = _Setting()
    callback_status_labels = _Setting()
    callback_display_offset = _Setting()
    unfinished_report = _Setting()
    empty_attempts_404 = _Setting()
    callbacks_process_limit = _Setting()
    report_ready_delay_seconds = _Setting()

    def __init__(
        self,
        world: World,
        api_key: str,
        *,
        rate_limit_per_second: float | None = None,
        attempt_window_field: str = "completed",
        report_ready_delay_seconds: float = 0,
        callback_max_tries: int = 5,
        callback_retry_delay: float = 0.2,
        clock: Callable[[], datetime] | None = None,
    ):
        self.world = world
        self.api_key = api_key
        self.clock = clock or (lambda: datetime.now(UTC))
        self._store = ImochaStore(world)
        self._settings = SimulatorSettings(self._store.lock, rate_limit_per_second=rate_limit_per_second,
                                           attempt_window_field=attempt_window_field,
                                           report_ready_delay_seconds=report_ready_delay_seconds)
        self._canned = CannedResponses()
        self._list_entries = ListEntryOverrides(self._store)
        self.callbacks = CallbackDispatcher(callback_max_tries, callback_retry_delay)
        self.log = RequestLog()
        self.faults = FaultInjector()
        self._catalogue = Catalogue(self._store, self._settings, self._list_entries)
        self._notifications = Callbacks(self._store, self._settings, self.callbacks, self._now)
        self._attempts = Attempts(self._store, self._notifications, self._now)
        self._reports = Reports(self._store, self._settings, self._now)
        self._retrieve_invites = RetrieveInvites(self._store, self._settings)
        self.gdpr = Gdpr(self._store)
        self.app = self._build_app()

    def _now(self) -> datetime:
        return self.clock()

    def _build_app(self) -> SimulatorMiddleware:
        api = ApiRoutes(catalogue=self._catalogue, attempts=self._attempts, retrieve_invites=self._retrieve_invites,
                        reports=self._reports, callbacks=self._notifications, gdpr=self.gdpr)
        control = ControlRoutes(catalogue=self._catalogue, list_entries=self._list_entries, attempts=self._attempts,
                                settings=self._settings, dispatcher=self.callbacks, canned=self._canned,
                                log=self.log, faults=self.faults)
        starlette = Starlette(routes=api.routes() + control.routes(), exception_handlers=EXCEPTION_HANDLERS)
        return SimulatorMiddleware(
            Gateway(starlette, self),
            self.log,
            self.faults,
            error_body_5xx=json_bytes(SERVER_ERROR_BODY),
            error_body_429=json_bytes(FAULT_RATE_LIMIT_BODY),
        )

    # ----- state -----------------------------------------------------------------------------

    @property
    def tests(self) -> dict[int, SimTest]:
        """The tests by id (the live state: change it under ``_lock``)."""
        return self._store.tests

    @property
    def invitations(self) -> dict[int, Invitation]:
        """The invitations by id (the live state: change it under ``_lock``)."""
        return self._store.invitations

    @property
    def _lock(self):
        """The one lock guarding the state."""
        return self._store.lock

    # ----- settings --------------------------------------------------------------------------

    def configure(self, **settings: Any) -> dict[str, Any]:
        """Change settings (names in ``SETTINGS``); returns them all."""
        return self._settings.configure(**settings)

    def settings(self) -> dict[str, Any]:
        return self._settings.as_dict()

    def rate_limit_wait(self) -> float:
        return self._settings.rate_limit_wait()

    # ----- API: tests and links (spec §5-6) ---------------------------------------------------

    def list_tests_page(self, page_no: int, page_size: int, labels_filter: str | None = None) -> dict:
        return self._catalogue.list_tests_page(page_no, page_size, labels_filter)

    def test_detail(self, test_id: int) -> dict:
        return self._catalogue.test_detail(test_id)

    def test_links(self, test_id: int) -> dict:
        return self._catalogue.test_links(test_id)

    def test_link(self, test_id: int, link_id: int) -> dict:
        return self._catalogue.test_link(test_id, link_id)

    # ----- API: invitations (spec §7), Retrieve Invites (§9), reports (§10), callbacks (§8) ---

    def invite(self, test_id: int, body: dict[str, Any], link_id: int | None = None) -> dict:
        return self._attempts.invite(test_id, body, link_id)

    def reattempt(self, invitation_id: int, body: dict[str, Any]) -> dict:
        return self._attempts.reattempt(invitation_id, body)

    def cancel(self, invitation_id: int) -> dict:
        return self._attempts.cancel(invitation_id)

    def test_attempts(self, state: str | None, body: Any) -> dict:
        return self._retrieve_invites.test_attempts(state, body)

    def report(self, invitation_id: int, report_type: int = 1, *, as_served: bool = False) -> dict:
        """The report of an invitation; see ``Reports.report`` (``as_served`` applies the ready delay)."""
        return self._reports.report(invitation_id, report_type, as_served=as_served)

    def process_callbacks(self, body: Any) -> dict:
        return self._notifications.process_callbacks(body)

    def callback_payload(self, inv: Invitation) -> dict[str, Any]:
        """The §8.2 PascalCase payload for the invitation's current state."""
        return self._notifications.payload(inv)

    def callback_deliveries(self) -> list[dict[str, Any]]:
        """Every delivery try so far (oldest first), with the payload and the receiver's answer."""
        return self.callbacks.deliveries()

    def clear_callback_deliveries(self) -> None:
        self.callbacks.clear()

    def wait_for_callbacks(self, timeout: float = 10.0) -> bool:
        """Block until the callback queue is drained (delivered or given up); False on timeout."""
        return self.callbacks.wait_idle(timeout)

    # ----- control: tests and links -----------------------------------------------------------

    def add_test(self, name: str, duration: int = 30, *, skills: Iterable[str] | None = None,
                 banks: Iterable[dict[str, Any]] | None = None, status: str = "Published",
                 labels: Iterable[str] | None = None, link: bool = True) -> int:
        """Add a test; see ``Catalogue.add_test``."""
        return self._catalogue.add_test(name, duration, skills=skills, banks=banks, status=status, labels=labels,
                                        link=link)

    def update_test(self, test_id: int, *, name: str | None = None, duration: int | None = None,
                    status: str | None = None, labels: Iterable[str] | None = None) -> dict:
        return self._catalogue.update_test(test_id, name=name, duration=duration, status=status, labels=labels)

    def remove_test(self, test_id: int) -> None:
        """The test disappears from the API; its invitations and reports stay."""
        self._catalogue.remove_test(test_id)

    def set_list_entry(self, test_id: int, entry: Any = UNSET, *, fields: dict[str, Any] | None = None) -> None:
        """Serve test ``test_id``'s entry in ``GET /v3/tests`` malformed; see ``ListEntryOverrides.set``."""
        self._list_entries.set(test_id, entry, fields=fields)

    def clear_list_entries(self, test_id: int | None = None) -> None:
        """Serve the list as the state says again (for one test, or for all)."""
        self._list_entries.clear(test_id)

    def add_test_link(self, test_id: int, name: str = "Campaign link", *, invitation_type: str = "open",
                      is_api_link: bool = False) -> int:
        return self._catalogue.add_test_link(test_id, name, invitation_type=invitation_type, is_api_link=is_api_link)

    def deactivate_test_link(self, test_id: int, link_id: int) -> dict:
        return self._catalogue.deactivate_test_link(test_id, link_id)

    # ----- control: attempts ------------------------------------------------------------------

    def invitation(self, invitation_id: int) -> dict:
        return self._attempts.invitation(invitation_id)

    def complete_attempt(self, test_id: int, email: str, name: str, status: str = STATUS_COMPLETE,
                         bank_scores: float | dict[int, float] | None = None,
                         attempted_on: datetime | None = None, callback_url: str | None = None,
                         time_taken_seconds: int | None = None) -> int:
        """Invite, start and finish an attempt in one call; returns its id (see ``Attempts.complete_attempt``)."""
        return self._attempts.complete_attempt(test_id, email, name, status, bank_scores, attempted_on,
                                               callback_url, time_taken_seconds)

    def start_attempt(self, invitation_id: int, at: datetime | None = None) -> dict:
        """Pending → In Progress; sends the In Progress callback."""
        return self._attempts.start_attempt(invitation_id, at)

    def finish_attempt(self, invitation_id: int, status: str = STATUS_COMPLETE,
                       bank_scores: float | dict[int, float] | None = None, at: datetime | None = None,
                       time_taken_seconds: int | None = None) -> dict:
        """In Progress → Complete / Test Left / Terminated; sends the final callback."""
        return self._attempts.finish_attempt(invitation_id, status, bank_scores, at, time_taken_seconds)

    def leave_attempt(self, invitation_id: int, **kwargs: Any) -> dict:
        return self._attempts.leave_attempt(invitation_id, **kwargs)

    def terminate_attempt(self, invitation_id: int, **kwargs: Any) -> dict:
        return self._attempts.terminate_attempt(invitation_id, **kwargs)

    def expire_invitation(self, invitation_id: int, at: datetime | None = None) -> dict:
        """Pending → Expired (its access window ended)."""
        return self._attempts.expire_invitation(invitation_id, at)

    # ----- control: canned answers ------------------------------------------------------------

    def set_canned_response(self, method: str, path: str, body: str | bytes = "", *, status: int = 200,
                            content_type: str = "application/json", times: int | None = 1) -> None:
        """Answer the next ``times`` API requests ``method path`` with this raw body (after the key check)."""
        self._canned.add(method, path, body, status=status, content_type=content_type, times=times)

    def clear_canned_responses(self) -> None:
        self._canned.clear()

    def take_canned(self, method: str, path: str) -> CannedResponse | None:
        return self._canned.take(method, path)

    def close(self) -> None:
        """Stop the callback worker (the HTTP server is stopped by its ``ServerThread``)."""
        self.callbacks.close()

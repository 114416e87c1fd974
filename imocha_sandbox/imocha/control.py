"""The control surface under ``/_sandbox`` (never logged, never faulted, no key); see the package docstring.

Each endpoint mirrors a method of ``ImochaSimulator``; the handlers call the same parts those methods do.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from imocha_pipeline.timestamps import parse_utc
from imocha_sandbox.imocha.attempts import Attempts
from imocha_sandbox.imocha.callback_delivery import CallbackDispatcher
from imocha_sandbox.imocha.canned import CannedResponses
from imocha_sandbox.imocha.catalogue import Catalogue
from imocha_sandbox.imocha.errors import not_found, validation_error
from imocha_sandbox.imocha.formats import as_int, lower_keys
from imocha_sandbox.imocha.http_io import json_object, query_int, query_params
from imocha_sandbox.imocha.list_entries import ListEntryOverrides
from imocha_sandbox.imocha.settings import SimulatorSettings
from imocha_sandbox.seed import STATUS_COMPLETE, STATUS_TERMINATED, STATUS_TEST_LEFT
from imocha_sandbox.server import CONTROL_PREFIX, FaultConfig, FaultInjector, RequestLog


class ControlRoutes:
    """``routes()`` lists the ``/_sandbox`` endpoints."""

    def __init__(self, *, catalogue: Catalogue, list_entries: ListEntryOverrides, attempts: Attempts,
                 settings: SimulatorSettings, dispatcher: CallbackDispatcher, canned: CannedResponses,
                 log: RequestLog, faults: FaultInjector):
        self._catalogue = catalogue
        self._list_entries = list_entries
        self._attempts = attempts
        self._settings = settings
        self._dispatcher = dispatcher
        self._canned = canned
        self._log = log
        self._faults = faults

    def routes(self) -> list[Route]:
        p = CONTROL_PREFIX
        return [
            Route(f"{p}/tests", self._add_test, methods=["POST"]),
            Route(f"{p}/tests/{{test_id:int}}", self._test, methods=["PATCH", "DELETE"]),
            Route(f"{p}/tests/{{test_id:int}}/testlinks", self._add_link, methods=["POST"]),
            Route(f"{p}/tests/{{test_id:int}}/listentry", self._list_entry, methods=["PUT", "DELETE"]),
            Route(f"{p}/tests/{{test_id:int}}/testlinks/{{link_id:int}}/deactivate", self._deactivate_link,
                  methods=["POST"]),
            Route(f"{p}/attempts", self._complete_attempt, methods=["POST"]),
            Route(f"{p}/invitations/{{invitation_id:int}}", self._invitation, methods=["GET"]),
            Route(f"{p}/invitations/{{invitation_id:int}}/{{action}}", self._transition, methods=["POST"]),
            Route(f"{p}/requests", self._requests, methods=["GET", "DELETE"]),
            Route(f"{p}/faults", self._faults_endpoint, methods=["GET", "PUT", "DELETE"]),
            Route(f"{p}/callbacks", self._callbacks, methods=["GET", "DELETE"]),
            Route(f"{p}/settings", self._settings_endpoint, methods=["GET", "PUT"]),
            Route(f"{p}/responses", self._responses, methods=["PUT", "DELETE"]),
        ]

    # ----- tests and links --------------------------------------------------------------------

    async def _add_test(self, request: Request) -> Response:
        f = lower_keys(await json_object(request))
        if not f.get("name"):
            raise validation_error("'name' must not be empty.")
        test_id = self._catalogue.add_test(
            str(f["name"]), int(f.get("duration", 30)), skills=f.get("skills"), banks=f.get("banks"),
            status=f.get("status", "Published"), labels=f.get("labels"), link=bool(f.get("link", True)))
        links = self._catalogue.test_links(test_id)["testLinks"]
        return JSONResponse({"testId": test_id, "testLinkId": links[0]["testLinkId"] if links else None},
                            status_code=201)

    async def _test(self, request: Request) -> Response:
        test_id = request.path_params["test_id"]
        if request.method == "DELETE":
            self._catalogue.remove_test(test_id)
            return Response(status_code=204)
        f = lower_keys(await json_object(request))
        return JSONResponse(self._catalogue.update_test(test_id, name=f.get("name"), duration=f.get("duration"),
                                                        status=f.get("status"), labels=f.get("labels")))

    async def _list_entry(self, request: Request) -> Response:
        test_id = request.path_params["test_id"]
        if request.method == "DELETE":
            self._list_entries.clear(test_id)
            return Response(status_code=204)
        f = lower_keys(await json_object(request))
        if "entry" in f:
            self._list_entries.set(test_id, f["entry"])
        else:
            fields = f.get("fields")
            if not isinstance(fields, dict):
                raise validation_error("'entry' or 'fields' (an object) is required.")
            self._list_entries.set(test_id, fields=fields)
        return Response(status_code=204)

    async def _add_link(self, request: Request) -> Response:
        f = lower_keys(await json_object(request, allow_empty=True))
        test_id = request.path_params["test_id"]
        link_id = self._catalogue.add_test_link(test_id, f.get("name", "Campaign link"),
                                                invitation_type=f.get("invitationtype", "open"),
                                                is_api_link=bool(f.get("isapilink", False)))
        return JSONResponse(self._catalogue.test_link(test_id, link_id), status_code=201)

    async def _deactivate_link(self, request: Request) -> Response:
        params = request.path_params
        return JSONResponse(self._catalogue.deactivate_test_link(params["test_id"], params["link_id"]))

    # ----- attempts ---------------------------------------------------------------------------

    async def _complete_attempt(self, request: Request) -> Response:
        f = lower_keys(await json_object(request))
        if as_int(f.get("testid")) is None:
            raise validation_error("'testId' must be a number.")
        invitation_id = self._attempts.complete_attempt(
            as_int(f["testid"]), str(f.get("email", "")), str(f.get("name", "")),
            status=f.get("status", STATUS_COMPLETE), bank_scores=f.get("bankscores"),
            attempted_on=parse_utc(f.get("attemptedon")), callback_url=f.get("callbackurl"),
            time_taken_seconds=f.get("timetakenseconds"))
        return JSONResponse({"testInvitationId": invitation_id}, status_code=201)

    async def _invitation(self, request: Request) -> Response:
        return JSONResponse(self._attempts.invitation(request.path_params["invitation_id"]))

    async def _transition(self, request: Request) -> Response:
        invitation_id = request.path_params["invitation_id"]
        f = lower_keys(await json_object(request, allow_empty=True))
        action = request.path_params["action"]
        if action in ("start", "expire"):
            method = self._attempts.start_attempt if action == "start" else self._attempts.expire_invitation
            return JSONResponse(method(invitation_id, at=f.get("at")))
        finals = {"finish": STATUS_COMPLETE, "leave": STATUS_TEST_LEFT, "terminate": STATUS_TERMINATED}
        if action not in finals:
            raise not_found(f"unknown transition {action!r}")
        return JSONResponse(self._attempts.finish_attempt(
            invitation_id, finals[action], bank_scores=f.get("bankscores"), at=f.get("at"),
            time_taken_seconds=f.get("timetakenseconds")))

    # ----- request log, faults, callbacks, settings, canned responses -------------------------

    async def _requests(self, request: Request) -> Response:
        if request.method == "DELETE":
            self._log.clear()
            return Response(status_code=204)
        since = query_int(query_params(request), "since", 0)
        return JSONResponse({"requests": [entry.to_dict() for entry in self._log.entries(since)],
                             "lastSeq": self._log.last_seq})

    async def _faults_endpoint(self, request: Request) -> Response:
        if request.method == "DELETE":
            self._faults.clear()
        elif request.method == "PUT":
            try:
                self._faults.set(FaultConfig.from_dict(await json_object(request)))
            except (TypeError, ValueError) as exc:
                raise validation_error(str(exc)) from exc
        return JSONResponse(vars(self._faults.config))

    async def _callbacks(self, request: Request) -> Response:
        if request.method == "DELETE":
            self._dispatcher.clear()
            return Response(status_code=204)
        return JSONResponse({"deliveries": self._dispatcher.deliveries()})

    async def _settings_endpoint(self, request: Request) -> Response:
        if request.method == "PUT":
            return JSONResponse(self._settings.configure(**await json_object(request)))
        return JSONResponse(self._settings.as_dict())

    async def _responses(self, request: Request) -> Response:
        if request.method == "DELETE":
            self._canned.clear()
            return Response(status_code=204)
        f = lower_keys(await json_object(request))
        self._canned.add(str(f.get("method", "GET")), str(f["path"]), str(f.get("body", "")),
                         status=int(f.get("status", 200)),
                         content_type=str(f.get("contenttype", "application/json")),
                         times=f.get("times", 1))
        return Response(status_code=204)

"""The API routes under ``/v3``: thin handlers turning HTTP requests into calls of the simulator's parts."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from imocha_sandbox.imocha.attempts import Attempts
from imocha_sandbox.imocha.callbacks import Callbacks
from imocha_sandbox.imocha.catalogue import Catalogue
from imocha_sandbox.imocha.gdpr import Gdpr
from imocha_sandbox.imocha.http_io import json_any, json_object, query_int, query_params
from imocha_sandbox.imocha.reports import Reports
from imocha_sandbox.imocha.retrieve_invites import RetrieveInvites


class ApiRoutes:
    """``routes()`` lists the iMocha v3 endpoints the simulator serves."""

    def __init__(self, *, catalogue: Catalogue, attempts: Attempts, retrieve_invites: RetrieveInvites,
                 reports: Reports, callbacks: Callbacks, gdpr: Gdpr):
        self._catalogue = catalogue
        self._attempts = attempts
        self._retrieve_invites = retrieve_invites
        self._reports = reports
        self._callbacks = callbacks
        self._gdpr = gdpr

    def routes(self) -> list[Route]:
        return [
            Route("/v3/tests", self._list_tests, methods=["GET"]),
            Route("/v3/tests/{test_id:int}", self._test, methods=["GET"]),
            Route("/v3/tests/{test_id:int}/testlinks", self._links, methods=["GET"]),
            Route("/v3/tests/{test_id:int}/testlinks/{link_id:int}", self._link, methods=["GET"]),
            Route("/v3/tests/{test_id:int}/invite", self._invite, methods=["POST"]),
            Route("/v3/tests/{test_id:int}/testlinks/{link_id:int}/invite", self._invite, methods=["POST"]),
            Route("/v3/invitations/{invitation_id:int}/reattempt", self._reattempt, methods=["POST"]),
            Route("/v3/invitations/{invitation_id:int}/cancel", self._cancel, methods=["POST"]),
            Route("/v3/candidates/testattempts", self._test_attempts, methods=["POST"]),
            Route("/v3/reports/{invitation_id:int}", self._report, methods=["GET"]),
            Route("/v3/callbacks/process", self._process_callbacks, methods=["POST"]),
            Route("/v3/gdpr/requests", self._gdpr_request, methods=["POST"]),
        ]

    async def _list_tests(self, request: Request) -> Response:
        query = query_params(request)
        page_no = query_int(query, "pageno", 1)
        page_size = query_int(query, "pagesize", 100)
        return JSONResponse(self._catalogue.list_tests_page(page_no, page_size, query.get("labelsfilter")))

    async def _test(self, request: Request) -> Response:
        return JSONResponse(self._catalogue.test_detail(request.path_params["test_id"]))

    async def _links(self, request: Request) -> Response:
        return JSONResponse(self._catalogue.test_links(request.path_params["test_id"]))

    async def _link(self, request: Request) -> Response:
        params = request.path_params
        return JSONResponse(self._catalogue.test_link(params["test_id"], params["link_id"]))

    async def _invite(self, request: Request) -> Response:
        body = await json_object(request)
        params = request.path_params
        return JSONResponse(self._attempts.invite(params["test_id"], body, params.get("link_id")), status_code=201)

    async def _reattempt(self, request: Request) -> Response:
        body = await json_object(request, allow_empty=True)
        return JSONResponse(self._attempts.reattempt(request.path_params["invitation_id"], body))

    async def _cancel(self, request: Request) -> Response:
        return JSONResponse(self._attempts.cancel(request.path_params["invitation_id"]))

    async def _test_attempts(self, request: Request) -> Response:
        body = await json_any(request)
        return JSONResponse(self._retrieve_invites.test_attempts(query_params(request).get("state"), body))

    async def _report(self, request: Request) -> Response:
        report_type = query_int(query_params(request), "reporttype", 1)
        return JSONResponse(self._reports.report(request.path_params["invitation_id"], report_type,
                                                 as_served=True))

    async def _process_callbacks(self, request: Request) -> Response:
        return JSONResponse(self._callbacks.process_callbacks(await json_any(request)))

    async def _gdpr_request(self, request: Request) -> Response:
        return JSONResponse(self._gdpr.request(await json_any(request)))

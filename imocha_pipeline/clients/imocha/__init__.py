"""The iMocha Assessment API v3 client and its typed records (see ``specs/imocha-api.md``).

- ``client``: ``ImochaClient``, the endpoints;
- ``records``: ``ImochaTest``, ``ImochaAttempt``, ``ImochaReport``, ``TestListProblem``, ...;
- ``parsing``: answers read into records; ``fields``: tolerant reading of one JSON object;
- ``values``: numbers, timestamps, attempt statuses; ``errors``: ``ImochaPayloadError`` and status errors;
- ``contract``: the API's fixed facts (endpoint templates, batch size).
"""

from imocha_pipeline.clients.imocha.client import ImochaClient
from imocha_pipeline.clients.imocha.contract import API_NAME
from imocha_pipeline.clients.imocha.errors import ImochaPayloadError
from imocha_pipeline.clients.imocha.records import (
    GdprRequestResult,
    ImochaAttempt,
    ImochaReport,
    ImochaReportSection,
    ImochaReportSkill,
    ImochaTest,
    ImochaTestDetail,
    ImochaTestLink,
    ImochaTestSection,
    ProcessCallbacksResult,
    TestListProblem,
)

__all__ = [
    "API_NAME", "GdprRequestResult", "ImochaAttempt", "ImochaClient", "ImochaPayloadError", "ImochaReport",
    "ImochaReportSection", "ImochaReportSkill", "ImochaTest", "ImochaTestDetail", "ImochaTestLink", "ImochaTestSection",
    "ProcessCallbacksResult", "TestListProblem",
]

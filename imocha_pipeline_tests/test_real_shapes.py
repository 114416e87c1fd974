"""The client, the writers and the reconcile on Degreed answers exactly as real clients captured them
(``fixtures/degreed/``, sources in its SOURCES.md), served over real HTTP by a loopback server that answers only
those files: nothing our simulator echoes can help."""

from __future__ import annotations

import json
import threading
from datetime import UTC, date, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd
import pytest

from imocha_pipeline import staging
from imocha_pipeline.clients.degreed import DegreedClient, DegreedCompletion, DegreedUser
from imocha_pipeline.clients.errors import ConflictError, LearnerNotFoundError
from imocha_pipeline.sync.completions.writers import CompletionWriter
from imocha_pipeline.sync.core.identities import DegreedDirectory
from imocha_pipeline.sync.reconcile import CHANGED, find_drift, snapshot_completions

FIXTURES = Path(__file__).with_name("fixtures") / "degreed"


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text())


class FixtureServer:
    """Answers ``(method, path)`` with a status and a fixture's JSON; everything else 404. Records requests."""

    def __init__(self, routes: dict[tuple[str, str], tuple[int, dict]]):
        self.routes = {**routes, ("POST", "/oauth/token"): (200, {"access_token": "tok", "token_type": "bearer",
                                                                   "expires_in": 3600})}
        self.requests: list[tuple[str, str, bytes]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = urlsplit(self.path).path
                server.requests.append((self.command, self.path, body))
                status, payload = server.routes.get((self.command, path), (404, {"errors": [{"status": 404}]}))
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = _answer

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def client(self) -> DegreedClient:
        return DegreedClient(self.url, f"{self.url}/oauth/token", "client", "secret")

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers: list[FixtureServer] = []

    def start(routes):
        servers.append(FixtureServer(routes))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def test_a_captured_completion_names_learner_and_content_only_by_degreed_ids():
    item = fixture("completions_page_tap_degreed.json")["data"][0]
    completion = DegreedCompletion.from_resource(item)
    assert (completion.id, completion.degreed_user_id, completion.degreed_content_id) == (
        "z49gvlE9", "Z0oN4Y", "z0AeVb6")
    assert completion.completed_at == datetime(2021, 11, 11, tzinfo=UTC)
    assert completion.added_at == datetime(2021, 11, 11, 20, 56, 41, 93000, tzinfo=UTC)
    assert completion.percentile is None, "the read answer has no percentile"
    assert completion.employee_id == "E87958"
    assert completion.provider_code is None, "the provider relationship's id is the string 'None'"
    user = DegreedUser.from_resource(fixture("user_tap_degreed.json")["data"])
    assert (user.id, user.email, user.employee_id) == ("b1GdOL", "DParton@atb.com", "E00001")


def test_error_bodies_of_real_clients_map_to_typed_errors(serve):
    server = serve({("POST", "/api/v2/completions"): (400, fixture("error_400_invalid_user_edx.json")),
                    ("POST", "/api/v2/content/assessments"): (409, fixture("error_409_edx.json"))})
    client = server.client()
    with pytest.raises(LearnerNotFoundError) as missing:
        client.create_completion("test-learner@example.com", "imocha-7", datetime(2024, 5, 2, tzinfo=UTC))
    assert missing.value.identifier == "test-learner@example.com"
    with pytest.raises(ConflictError) as conflict:
        client.create_assessment({"external-id": "imocha-7", "title": "T", "url": "https://x.example/t"})
    assert conflict.value.existing_id is None, "the body {} names nothing"


@pytest.fixture
def engine(sqlite_url):
    engine = staging.get_engine(sqlite_url)
    now = datetime.now(UTC)
    with engine.begin() as conn:  # what the pipeline knows: our content's snapshot row, one cached learner
        staging.upsert(conn, staging.degreed_assessments, [{"degreed_id": "z0AeVb6", "external_id": "imocha-7",
                                                             "obsolete": False, "snapshot_at": now}])
        staging.upsert(conn, staging.degreed_users, [{"degreed_id": "Z0oN4Y", "email": "ana@example.com",
                                                       "employee_id": "E87958", "fetched_at": now}])
    return engine


RECORD = {"record_key": "ana@example.com|imocha-7", "user_id": "ana@example.com", "user_identifier_type": "Email",
          "content_id": "imocha-7", "content_id_type": "ExternalId", "content_type": "Assessment",
          "completed_at": "2024-05-02T14:30:00Z", "percentile": 87.0}


def test_a_409_with_an_empty_body_is_resolved_by_the_learners_completions(serve, engine):
    page = fixture("completions_page_tap_degreed.json")
    server = serve({("POST", "/api/v2/completions"): (409, fixture("error_409_edx.json")),
                    ("GET", "/api/v2/users/Z0oN4Y/completions"): (200, page),
                    ("PATCH", "/api/v2/completions/z49gvlE9"): (200, fixture("completion_created_spec.json"))})
    client = server.client()
    outcome = CompletionWriter(client, DegreedDirectory(engine, client)).create(dict(RECORD))
    assert (outcome.degreed_id, outcome.action) == ("z49gvlE9", "adopted")
    methods = [(method, path.split("?")[0]) for method, path, _ in server.requests if path != "/oauth/token"]
    assert methods == [("POST", "/api/v2/completions"), ("GET", "/api/v2/users/Z0oN4Y/completions"),
                       ("PATCH", "/api/v2/completions/z49gvlE9")]
    patch = json.loads(server.requests[-1][2])["data"]["attributes"]
    assert patch == {"completed-at": "2024-05-02T14:30:00", "percentile": 87.0}
    assert "filter" not in server.requests[-2][1], "one learner's list is read without a date filter"


def test_the_reconcile_sees_completed_at_but_never_the_percentile_degreed_does_not_return(serve, engine):
    server = serve({("GET", "/api/v2/completions"): (200, fixture("completions_page_tap_degreed.json"))})
    client = server.client()
    snapshot_at = datetime.now(UTC)
    rows = snapshot_completions(client, date(2021, 11, 5), date(2021, 11, 11), snapshot_at,
                                DegreedDirectory(engine, client))
    assert [(r["degreed_id"], r["user_id"], r["content_id"], r["percentile"], r["degreed_user_id"],
             r["degreed_content_id"]) for r in rows] == [
        ("z49gvlE9", "ana@example.com", "imocha-7", None, "Z0oN4Y", "z0AeVb6")]
    windows = [path for method, path, _ in server.requests if path.startswith("/api/v2/completions")]
    assert windows == ["/api/v2/completions?filter%5Bstart_date%5D=2021-11-05&filter%5Bend_date%5D=2021-11-11"
                       "&limit=1000"], "one window of 7 calendar days, both ends included"
    snapshot = pd.DataFrame(rows)
    ours = {"record_key": RECORD["record_key"], "degreed_id": "z49gvlE9",
            "payload": {**RECORD, "completed_at": "2021-11-11T00:00:00Z", "percentile": 87.0}}
    compare = {"completed_at": "completed_at", "percentile": "percentile"}
    assert find_drift("completion", pd.DataFrame([ours]), snapshot, compare) == [], \
        "a percentile Degreed does not return is not drift"
    moved = {**ours, "payload": {**ours["payload"], "completed_at": "2021-11-09T00:00:00Z"}}
    (drift,) = find_drift("completion", pd.DataFrame([moved]), snapshot, compare)
    assert drift.kind == CHANGED and "completed_at" in drift.detail and "percentile" not in drift.detail

"""Hostile requests against the real callback endpoint (uvicorn on loopback, configured as ``serve`` does),
over raw sockets: each gets its documented answer, nothing of it reaches the inbox, a good callback still
goes through afterwards, and the token appears in no log line (ours, uvicorn's, or the server's output)."""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import time
from collections import Counter

import pytest
import sqlalchemy as sa
import uvicorn

from imocha_pipeline import staging
from imocha_pipeline.callbacks_guard import RateLimiter, is_plain_path
from imocha_pipeline.callbacks_server import MAX_BODY_BYTES, callback_path, create_app

TOKEN = "hostile-test-token-0123456789abcdef"
PATH = callback_path(TOKEN)
GOOD = {"TestInvitationId": 4242, "Status": "Complete", "AttemptedOnUtc": "2026-12-01T10:00:00",
        "CandidateEmailId": "good@example.com", "TotalScore": 10, "CandidateScore": 7}
JSON = "application/json"


class Endpoint:
    """uvicorn in a thread with ``serve``'s options (no access log, proxy headers, INFO logs to stderr)."""

    def __init__(self, app):
        config = uvicorn.Config(app, host="127.0.0.1", port=0, access_log=False, proxy_headers=True,
                                log_level="debug", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> Endpoint:
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the endpoint did not start"
            time.sleep(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def start(staging_url, caplog):
    caplog.set_level(logging.DEBUG)
    started: list[Endpoint] = []

    def _start(**limits) -> Endpoint:
        endpoint = Endpoint(create_app(token=TOKEN, staging_url=staging_url, **limits)).start()
        started.append(endpoint)
        return endpoint

    yield _start
    for endpoint in started:
        endpoint.stop()


def request_bytes(method: str, path: str, body: bytes = b"", content_type: str | None = JSON,
                  extra: str = "") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    if content_type is not None:
        head += f"Content-Type: {content_type}\r\n"
    if "Transfer-Encoding" not in extra and "Content-Length" not in extra:
        head += f"Content-Length: {len(body)}\r\n"
    return (head + extra + "\r\n").encode("latin-1") + body


def exchange(port: int, data: bytes, source: str = "127.0.0.1") -> tuple[int, dict, bytes]:
    """Send ``data`` on a fresh connection from ``source``; (status, headers, body) of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=15, source_address=(source, 0)) as sock:
        sock.sendall(data)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def inbox_rows(url: str) -> list[dict]:
    with staging.get_engine(url).connect() as conn:
        return staging.read_rows(conn, staging.callback_inbox)


def good_goes_through(endpoint: Endpoint, url: str, source: str = "127.0.0.1") -> None:
    before = len(inbox_rows(url))
    status, _, body = exchange(endpoint.port, request_bytes("POST", PATH, json.dumps(GOOD).encode()), source)
    assert status == 200 and json.loads(body)["stored"] is True, body
    assert len(inbox_rows(url)) == before + 1


def assert_token_never_logged(caplog, capfd) -> None:
    out, err = capfd.readouterr()
    assert TOKEN not in caplog.text and TOKEN not in out and TOKEN not in err
    assert TOKEN[:16] not in caplog.text + out + err


ENCODED_TOKEN = "%" + format(ord(TOKEN[0]), "02X") + TOKEN[1:]

HOSTILE = {
    # name: (raw request, expected status, expected text in the answer's body)
    "declared_oversized_body": (
        request_bytes("POST", PATH, extra="Content-Length: 1073741824\r\n"), 413,
        f"larger than {MAX_BODY_BYTES} bytes"),
    "chunked_oversized_body": (
        request_bytes("POST", PATH, extra="Transfer-Encoding: chunked\r\n")
        + b"".join(b"%x\r\n%s\r\n" % (8192, b"x" * 8192) for _ in range(9)) + b"0\r\n\r\n", 413,
        f"larger than {MAX_BODY_BYTES} bytes"),
    "wrong_content_type": (
        request_bytes("POST", PATH, json.dumps(GOOD).encode(), content_type="text/plain"), 415, "application/json"),
    "form_content_type": (
        request_bytes("POST", PATH, b"TestInvitationId=1&Status=Complete",
                      content_type="application/x-www-form-urlencoded"), 415, "application/json"),
    "no_content_type": (request_bytes("POST", PATH, json.dumps(GOOD).encode(), content_type=None), 415,
                        "application/json"),
    "wrong_token": (request_bytes("POST", callback_path("x" * len(TOKEN)), json.dumps(GOOD).encode()), 403,
                    "forbidden"),
    "dot_dot_segment": (request_bytes("POST", f"/imocha/callbacks/../callbacks/{TOKEN}", json.dumps(GOOD).encode()),
                        404, "not found"),
    "dot_dot_after_token": (request_bytes("POST", f"{PATH}/../{TOKEN}", json.dumps(GOOD).encode()), 404,
                            "not found"),
    "percent_encoded_token": (request_bytes("POST", f"/imocha/callbacks/{ENCODED_TOKEN}",
                                            json.dumps(GOOD).encode()), 404, "not found"),
    "encoded_slash": (request_bytes("POST", f"{PATH}%2F..", json.dumps(GOOD).encode()), 404, "not found"),
    "double_slash": (request_bytes("POST", f"/imocha//callbacks/{TOKEN}", json.dumps(GOOD).encode()), 404,
                     "not found"),
    "trailing_slash": (request_bytes("POST", f"{PATH}/", json.dumps(GOOD).encode()), 404, "Not Found"),
    "token_in_query_string": (request_bytes("POST", f"/imocha/callbacks?token={TOKEN}", json.dumps(GOOD).encode()),
                              404, "Not Found"),
    "other_path": (request_bytes("POST", "/admin", json.dumps(GOOD).encode()), 404, "Not Found"),
    "get_on_the_callback_path": (request_bytes("GET", PATH, content_type=None), 405, "Method Not Allowed"),
    "not_json": (request_bytes("POST", PATH, b"{not json"), 400, "invalid callback payload"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_request_gets_its_answer_and_stores_nothing(start, staging_url, caplog, capfd, name):
    data, status, text = HOSTILE[name]
    endpoint = start()
    answer_status, _headers, body = exchange(endpoint.port, data)
    assert (answer_status, text in body.decode()) == (status, True), body
    assert inbox_rows(staging_url) == []
    good_goes_through(endpoint, staging_url)
    assert_token_never_logged(caplog, capfd)


def test_slow_body_is_cut_off_with_408_while_others_are_served(start, staging_url, caplog, capfd):
    endpoint = start(read_timeout=1.0)
    body = json.dumps(GOOD).encode()
    with socket.create_connection(("127.0.0.1", endpoint.port), timeout=15) as slow:
        slow.sendall(request_bytes("POST", PATH, extra=f"Content-Length: {len(body) + 50}\r\n") + body[:10])
        good_goes_through(endpoint, staging_url, source="127.0.0.2")  # the server is not tied up meanwhile
        response = http.client.HTTPResponse(slow)
        response.begin()
        assert response.status == 408 and b"did not arrive within 1 s" in response.read()
        assert slow.recv(1) == b"", "the slow client's connection is closed"
    assert [row["test_invitation_id"] for row in inbox_rows(staging_url)] == [GOOD["TestInvitationId"]]
    assert "cut off a callback" in caplog.text
    assert_token_never_logged(caplog, capfd)


def test_a_replayed_callback_is_accepted_but_stored_once(start, staging_url, caplog, capfd):
    endpoint = start()
    data = request_bytes("POST", PATH, json.dumps(GOOD).encode())
    first = exchange(endpoint.port, data)
    again = exchange(endpoint.port, data)
    assert first[0] == again[0] == 200
    first_body, again_body = json.loads(first[2]), json.loads(again[2])
    assert first_body["stored"] is True and first_body["willSync"] is True
    assert again_body == {"stored": False, "duplicate": True, "inboxId": first_body["inboxId"],
                          "status": "Complete", "willSync": False}
    assert len(inbox_rows(staging_url)) == 1
    # a different delivery of the same invitation (another status, or a changed field) is a new row
    changed = exchange(endpoint.port, request_bytes("POST", PATH, json.dumps({**GOOD, "CandidateScore": 8}).encode()))
    assert changed[0] == 200 and json.loads(changed[2])["stored"] is True
    assert len(inbox_rows(staging_url)) == 2
    assert_token_never_logged(caplog, capfd)


def test_a_flood_from_one_source_is_mostly_429_and_another_source_is_still_served(start, staging_url, caplog,
                                                                                    capfd):
    endpoint = start(rate_per_second=5.0, rate_burst=10)
    wrong = json.dumps(GOOD).encode()
    statuses: Counter[int] = Counter()
    retry_after: set[str] = set()
    lock = threading.Lock()
    flooding = threading.Event()

    def flood(requests_: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", endpoint.port, timeout=15)
        for _ in range(requests_):
            conn.request("POST", callback_path("y" * len(TOKEN)), body=wrong, headers={"Content-Type": JSON})
            response = conn.getresponse()
            response.read()
            with lock:
                statuses[response.status] += 1
                if response.status == 429:
                    retry_after.add(response.getheader("Retry-After") or "")
                    flooding.set()
        conn.close()

    threads = [threading.Thread(target=flood, args=(250,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    assert flooding.wait(30)
    good_goes_through(endpoint, staging_url, source="127.0.0.2")  # during the flood
    status, _, body = exchange(endpoint.port, request_bytes("GET", "/healthz", content_type=None), "127.0.0.2")
    assert status == 200 and json.loads(body) == {"status": "ok"}
    for thread in threads:
        thread.join(120)

    assert sum(statuses.values()) == 1000 and set(statuses) <= {403, 429}
    assert statuses[429] >= 900, statuses
    assert retry_after and all(value.isdigit() and int(value) >= 1 for value in retry_after)
    assert [row["test_invitation_id"] for row in inbox_rows(staging_url)] == [GOOD["TestInvitationId"]]
    assert_token_never_logged(caplog, capfd)


def test_the_token_is_not_logged_when_the_database_fails(start, staging_url, caplog, capfd):
    endpoint = start()
    with staging.get_engine(staging_url).begin() as conn:
        conn.execute(sa.text(f"DROP TABLE {staging.callback_inbox.name}"))
    status, _, body = exchange(endpoint.port, request_bytes("POST", PATH, json.dumps(GOOD).encode()))
    assert status == 503 and b"try again" in body
    assert "could not store the callback of invitation 4242" in caplog.text
    assert "good@example.com" not in caplog.text, "the payload stays out of the log too"
    assert_token_never_logged(caplog, capfd)


def test_rate_limiter_refills_at_its_rate():
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.take("a") == pytest.approx(0.5)
    assert limiter.take("b") == 0.0, "another address has its own bucket"
    now[0] = 0.5
    assert limiter.take("a") == 0.0 and limiter.take("a") > 0


@pytest.mark.parametrize(("raw", "plain"), [
    (b"/imocha/callbacks/abc", True), (b"/healthz", True), (b"/a/../b", False), (b"/a/./b", False),
    (b"/a//b", False), (b"/a/%2e%2e/b", False), (b"/a/b/..", False), (b"/a\\..\\b", False),
])
def test_plain_paths(raw, plain):
    assert is_plain_path({"raw_path": raw, "path": raw.decode()}) is plain

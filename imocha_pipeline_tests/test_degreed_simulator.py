"""The Degreed API v2 simulator, exercised over real HTTP on loopback.

Each test starts its own simulator (``sim_server``) so settings and state never leak between tests.
Tests that are not about the rate limit raise it out of the way. The fixture pins the answer-shape settings
to today's answers (``TODAY``), so these tests keep describing them whatever the module defaults become;
the tests of the documented shapes ask for them explicitly.
"""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests

from imocha_pipeline.settings import DEGREED_REQUIRED_SCOPES
from imocha_pipeline.timestamps import parse_utc
from imocha_sandbox.degreed import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    DEFAULT_CONFLICT_BODY,
    DEFAULT_CURSOR_EXPIRY,
    DEFAULT_READ_SHAPE,
    DEFAULT_RELATIONSHIPS_STYLE,
    ApiClientSpec,
    DegreedSimSettings,
    DegreedSimulator,
    format_degreed_timestamp,
)
from imocha_sandbox.seed import generate_world
from imocha_sandbox.server import ServerThread

ALL_SCOPES = frozenset(DEGREED_REQUIRED_SCOPES) | {"users:write"}
ORG_ID, ORG_SECRET = "org-admin", "org-secret-1234"
READER_ID, READER_SECRET = "content-reader", "reader-secret-1234"
JSON = {"Content-Type": "application/json"}
# The answers the older tests describe; the module defaults may flip to the documented ones.
TODAY = {"read_shape": "echo", "relationships_style": "object", "conflict_body": "error_with_id",
         "cursor_expiry": "code"}


class FakeClock:
    """A settable clock for the simulator (epoch seconds), so minute-long windows take no time."""

    def __init__(self) -> None:
        self.now = time.time()
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


@pytest.fixture(scope="module")
def world():
    return generate_world(seed=11, tests=5, learners=30, attempts=10)


def _clients() -> dict[str, ApiClientSpec]:
    return {
        DEFAULT_CLIENT_ID: ApiClientSpec(DEFAULT_CLIENT_SECRET, frozenset(DEGREED_REQUIRED_SCOPES), "IMOCHA"),
        ORG_ID: ApiClientSpec(ORG_SECRET, ALL_SCOPES, None),
        READER_ID: ApiClientSpec(READER_SECRET, frozenset({"content:read", "providers:read"}), "IMOCHA"),
    }


@pytest.fixture
def sim_server(world):
    """Factory: ``sim_server(**settings)`` -> (simulator, base url); every server stops after the test."""
    servers: list[ServerThread] = []

    def start(**settings):
        settings.setdefault("rate_limit_per_minute", 100_000)
        for name, value in TODAY.items():
            settings.setdefault(name, value)
        sim = DegreedSimulator(world, clients=_clients(), **settings)
        server = ServerThread(sim.app).start()
        servers.append(server)
        return sim, server.url

    yield start
    for server in servers:
        server.stop()


def get_token(base: str, client_id: str = DEFAULT_CLIENT_ID, secret: str = DEFAULT_CLIENT_SECRET,
              scopes=DEGREED_REQUIRED_SCOPES) -> str:
    response = requests.post(f"{base}/oauth/token", data={
        "grant_type": "client_credentials", "client_id": client_id, "client_secret": secret,
        "scope": ",".join(scopes)})
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def api(base: str, token: str) -> requests.Session:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {token}"
    return session


def body(type_: str | None, **attributes) -> dict:
    data: dict = {"attributes": {name.replace("_", "-"): value for name, value in attributes.items()}}
    if type_:
        data["type"] = type_
    return {"data": data}


def error_of(response: requests.Response) -> dict:
    errors = response.json()["errors"]
    assert len(errors) == 1 and set(errors[0]) == {"id", "code", "status", "title", "detail", "source"}
    assert errors[0]["status"] == response.status_code
    return errors[0]


def learner_in_degreed(world, index: int = 0):
    return [learner for learner in world.learners if learner.in_degreed][index]


def create_assessment(session, base, external_id="imocha-300000", **extra):
    """POST an assessment; its url contains the external id, so two creates never share a url by accident."""
    attrs = {"external_id": external_id, "title": "Python Fundamentals",
             "url": f"https://imocha.example/t/{external_id}", **extra}
    return session.post(f"{base}/api/v2/content/assessments", json=body("content/assessments", **attrs))


# ---------------------------------------------------------------------------------------------------------
# OAuth and scopes
# ---------------------------------------------------------------------------------------------------------


def test_token_endpoint_success_and_each_error(sim_server):
    _sim, base = sim_server(token_ttl_seconds=1800, rate_limit_per_minute=2)
    url = f"{base}/oauth/token"
    form = {"grant_type": "client_credentials", "client_id": DEFAULT_CLIENT_ID,
            "client_secret": DEFAULT_CLIENT_SECRET, "scope": "content:read,completions:write"}

    ok = requests.post(url, data=form)
    assert ok.status_code == 200
    payload = ok.json()
    assert set(payload) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert payload["token_type"] == "bearer" and payload["expires_in"] == 1800
    assert requests.post(url, data={**form, "scope": "content:read completions:write"}).status_code == 200

    assert requests.post(url, data={**form, "client_secret": "wrong"}).json() == {
        "error": "invalid_client", "error_description": "Unknown client or wrong secret."}
    assert requests.post(url, data={**form, "client_secret": "wrong"}).status_code == 401
    assert requests.post(url, data={**form, "client_id": "nobody"}).status_code == 401
    wrong_grant = requests.post(url, data={**form, "grant_type": "password"})
    assert (wrong_grant.status_code, wrong_grant.json()["error"]) == (400, "unsupported_grant_type")
    over_asked = requests.post(url, data={**form, "scope": "content:read,users:write"})
    assert (over_asked.status_code, over_asked.json()["error"]) == (403, "invalid_scope")
    assert "users:write" in over_asked.json()["error_description"]
    # Over ten token calls against a limit of two a minute: the token endpoint is not rate limited.
    assert all(requests.post(url, data=form).status_code == 200 for _ in range(2))


def test_expired_unknown_and_missing_tokens_get_401(sim_server):
    sim, base = sim_server(token_ttl_seconds=1)
    token = get_token(base)
    session = api(base, token)
    assert session.get(f"{base}/api/v2/providers").status_code == 200
    time.sleep(1.1)
    expired = session.get(f"{base}/api/v2/providers")
    assert expired.status_code == 401 and error_of(expired)["code"] == "unauthorized"
    assert expired.headers["X-Rate-Limit-Limit"] == "1m"  # even a 401 carries the rate headers
    assert api(base, "not-a-token").get(f"{base}/api/v2/providers").status_code == 401
    assert requests.get(f"{base}/api/v2/providers").status_code == 401

    sim.configure(token_ttl_seconds=3600)
    fresh = api(base, get_token(base))
    assert fresh.get(f"{base}/api/v2/providers").status_code == 200
    assert requests.post(f"{base}/_sandbox/tokens/expire").json() == {"expired": 1}
    assert fresh.get(f"{base}/api/v2/providers").status_code == 401


@pytest.mark.parametrize(
    ("scopes", "method", "path", "allowed"),
    [
        (["content:read"], "GET", "/api/v2/content/assessments", True),
        (["content:write"], "GET", "/api/v2/content/assessments", True),  # write scope also allows GET
        (["content:read"], "POST", "/api/v2/content/assessments", False),
        (["content:read"], "GET", "/api/v2/completions", False),
        (["completions:read"], "GET", "/api/v2/completions", True),
        (["completions:read"], "POST", "/api/v2/completions", False),
        (["skill_ratings:read"], "GET", "/api/v2/skill-ratings", True),
        (["skill_ratings:read"], "POST", "/api/v2/skill-ratings", False),
        (["content:read"], "GET", "/api/v2/users", False),
        (["users:read"], "GET", "/api/v2/users", True),
        (["providers:read"], "GET", "/api/v2/providers", True),
        (["content:read"], "GET", "/api/v2/providers", False),
    ],
)
def test_each_resource_checks_its_scope(sim_server, scopes, method, path, allowed):
    _sim, base = sim_server()
    session = api(base, get_token(base, scopes=scopes))
    response = session.request(method, f"{base}{path}", json=body(None) if method == "POST" else None)
    if allowed:
        assert response.status_code in (200, 201, 400)  # 400: the empty POST body got past the scope check
    else:
        assert response.status_code == 403
        assert error_of(response)["code"] == "forbidden"


def test_organization_code_header_only_with_an_organization_key(sim_server):
    _sim, base = sim_server()
    header = {"X-Degreed-Organization-Code": "TENANT-1"}
    org = api(base, get_token(base, ORG_ID, ORG_SECRET, ALL_SCOPES))
    provider = api(base, get_token(base))
    assert org.get(f"{base}/api/v2/users", headers=header).status_code == 200
    refused = provider.get(f"{base}/api/v2/users", headers=header)
    assert refused.status_code == 403
    assert "organization API key" in error_of(refused)["detail"]
    assert provider.get(f"{base}/api/v2/users").status_code == 200


# ---------------------------------------------------------------------------------------------------------
# Content
# ---------------------------------------------------------------------------------------------------------


def test_assessment_create_read_patch_delete(sim_server):
    _sim, base = sim_server()
    session = api(base, get_token(base))
    created = create_assessment(session, base, summary="40 questions", duration=45, duration_type="minutes",
                                language="en", provider_code="ACMELEARN")
    assert created.status_code == 201
    resource = created.json()["data"]
    attrs = resource["attributes"]
    assert resource["type"] == "content/assessments"
    assert resource["links"]["self"] == f"{base}/api/v2/content/assessments/{resource['id']}"
    assert attrs["provider-code"] == "IMOCHA"  # forced to the key's provider
    assert attrs["duration-type"] == "Minutes" and attrs["obsolete"] is False
    assert attrs["degreed-url"].endswith(resource["id"])
    assert "+" not in attrs["created-at"] and not attrs["created-at"].endswith("Z")  # Degreed's no-zone format
    assessment_id = resource["id"]

    one = session.get(f"{base}/api/v2/content/assessments/{assessment_id}")
    assert one.status_code == 200 and one.json()["data"]["attributes"]["title"] == "Python Fundamentals"
    found = session.get(f"{base}/api/v2/content/assessments", params={"filter[external_id]": "imocha-300000"})
    assert [item["id"] for item in found.json()["data"]] == [assessment_id]
    assert session.get(f"{base}/api/v2/content/assessments",
                       params={"filter[external_id]": "imocha-3000"}).json()["data"] == []

    patched = session.patch(f"{base}/api/v2/content/assessments/{assessment_id}",
                            json={"data": {"type": "content/assessments", "id": assessment_id,
                                           "attributes": {"obsolete": True, "title": "Renamed"}}})
    assert patched.status_code == 200
    assert patched.json()["data"]["attributes"]["summary"] == "40 questions"  # untouched by a partial PATCH
    listed = session.get(f"{base}/api/v2/content/assessments").json()["data"]
    assert [(item["attributes"]["title"], item["attributes"]["obsolete"]) for item in listed] == [("Renamed", True)]
    assert session.get(f"{base}/api/v2/content").json()["data"] == []  # generic list hides obsolete items

    assert session.patch(f"{base}/api/v2/content/assessments/{assessment_id}",
                         json=body(None, obsolete=False)).status_code == 200
    generic = session.get(f"{base}/api/v2/content").json()["data"]
    assert [(g["attributes"]["content-type"], g["attributes"]["is-obsolete"]) for g in generic] == [
        ("Assessment", False)]

    deleted = session.delete(f"{base}/api/v2/content/assessments/{assessment_id}")
    assert deleted.status_code == 204 and deleted.content == b""
    gone = session.get(f"{base}/api/v2/content/assessments/{assessment_id}")
    assert gone.status_code == 404 and error_of(gone)["code"] == "not-found"


def test_assessment_validation_and_duplicate_external_id(sim_server):
    sim, base = sim_server()
    session = api(base, get_token(base))
    first = create_assessment(session, base).json()["data"]["id"]
    duplicate = create_assessment(session, base)
    assert duplicate.status_code == 409
    assert error_of(duplicate)["code"] == "conflict" and first in error_of(duplicate)["detail"]
    missing = session.post(f"{base}/api/v2/content/assessments", json=body(None, external_id="x", title="T"))
    assert missing.status_code == 400 and error_of(missing)["source"] == "url"
    bad_type = session.post(f"{base}/api/v2/content/assessments",
                            json=body("content/assessments", external_id="x", title="T", url="u",
                                      duration_type="Fortnights"))
    assert bad_type.status_code == 400
    bad_patch = session.patch(f"{base}/api/v2/content/assessments/{first}", json=body(None, obsolete="yes"))
    assert bad_patch.status_code == 400
    assert sim.state()["assessments"][-1]["obsolete"] is False  # a rejected PATCH changes nothing
    # Someone else's content with the same external id but another provider is no conflict.
    sim.add_assessment("imocha-300017", provider_code="ACMELEARN")
    assert create_assessment(session, base, "imocha-300017").status_code == 201
    # ... but the same provider's content is, even when created outside this client.
    sim.add_assessment("imocha-300034")
    assert create_assessment(session, base, "imocha-300034").status_code == 409


def _listed_ids(session, base, **params) -> list[str]:
    response = session.get(f"{base}/api/v2/content/assessments", params=params)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["data"]]


def test_new_assessment_is_missing_from_listings_during_the_listing_lag(sim_server):
    clock = FakeClock()
    sim, base = sim_server(content_listing_lag_seconds=30, clock=clock)
    session = api(base, get_token(base))
    org = api(base, get_token(base, ORG_ID, ORG_SECRET, ALL_SCOPES))
    seeded = _listed_ids(org, base)
    assert len(seeded) == 2  # the other provider's old content is listed as usual
    created = create_assessment(session, base)
    assert created.status_code == 201
    posted = created.json()["data"]["id"]
    by_hand = sim.add_assessment("imocha-300017")["id"]  # as if someone else created it
    # The creation time is recorded with the simulator's clock.
    assert [sim.assessments[i].created_at.timestamp() for i in (posted, by_hand)] == pytest.approx([clock()] * 2)

    clock.advance(29)
    # Every listing leaves both out: the paged list, the external-id lookup, the generic content list.
    assert _listed_ids(session, base) == []
    assert _listed_ids(session, base, **{"filter[external_id]": "imocha-300000"}) == []
    assert _listed_ids(session, base, **{"filter[external_id]": "imocha-300017"}) == []
    assert session.get(f"{base}/api/v2/content").json()["data"] == []
    assert _listed_ids(org, base) == seeded
    # ... while a read by id finds them at once ...
    for record_id in (posted, by_hand):
        one = session.get(f"{base}/api/v2/content/assessments/{record_id}")
        assert one.status_code == 200 and one.json()["data"]["id"] == record_id
    # ... and a create with the same external id is the 409 naming the existing id.
    for external_id, existing in (("imocha-300000", posted), ("imocha-300017", by_hand)):
        duplicate = create_assessment(session, base, external_id)
        assert duplicate.status_code == 409 and existing in error_of(duplicate)["detail"]
    later = create_assessment(session, base, "imocha-300034").json()["data"]["id"]

    clock.advance(2)  # the first two are past the lag; the later one is not
    assert _listed_ids(session, base) == [posted, by_hand]
    assert _listed_ids(session, base, **{"filter[external_id]": "imocha-300000"}) == [posted]
    assert _listed_ids(session, base, **{"filter[external_id]": "imocha-300034"}) == []
    assert [item["id"] for item in session.get(f"{base}/api/v2/content").json()["data"]] == [posted, by_hand]
    assert len(sim.assessments) == 5  # no 409 created anything

    clock.advance(30)
    assert _listed_ids(session, base) == [posted, by_hand, later]
    assert _listed_ids(session, base, **{"filter[external_id]": "imocha-300034"}) == [later]


def test_content_listing_lag_defaults_to_zero_and_is_settable_over_http(sim_server):
    clock = FakeClock()
    sim, base = sim_server(clock=clock)
    control = f"{base}/_sandbox/settings"
    assert requests.get(control).json()["content_listing_lag_seconds"] == 0
    session = api(base, get_token(base))
    first = create_assessment(session, base).json()["data"]["id"]
    assert _listed_ids(session, base, **{"filter[external_id]": "imocha-300000"}) == [first]  # no lag
    changed = requests.put(control, json={"content_listing_lag_seconds": 10})
    assert changed.status_code == 200 and changed.json()["content_listing_lag_seconds"] == 10
    assert sim.settings.content_listing_lag_seconds == 10
    assert _listed_ids(session, base) == []  # created less than 10 s ago by the simulator's clock
    clock.advance(11)
    assert _listed_ids(session, base) == [first]
    assert requests.put(control, json={"content_listing_lag_seconds": 0}).status_code == 200
    second = create_assessment(session, base, "imocha-300017").json()["data"]["id"]
    assert _listed_ids(session, base) == [first, second]


def test_content_listing_lag_refuses_negative_or_non_numeric_values(sim_server, world):
    sim, base = sim_server()
    control = f"{base}/_sandbox/settings"
    for bad in (-1, -0.01, "5", True, None):
        refused = requests.put(control, json={"content_listing_lag_seconds": bad})
        assert refused.status_code == 400, bad
        assert "content_listing_lag_seconds" in refused.json()["error"]
    assert requests.get(control).json()["content_listing_lag_seconds"] == 0  # nothing changed
    with pytest.raises(ValueError, match="content_listing_lag_seconds must be a number of seconds, 0 or more"):
        sim.configure(content_listing_lag_seconds=-2)
    with pytest.raises(ValueError, match="content_listing_lag_seconds"):
        DegreedSimulator(world, content_listing_lag_seconds=-1)
    assert sim.settings.content_listing_lag_seconds == 0


def test_provider_key_sees_only_its_provider_and_org_key_sees_all(sim_server):
    sim, base = sim_server()
    provider = api(base, get_token(base))
    org = api(base, get_token(base, ORG_ID, ORG_SECRET, ALL_SCOPES))
    create_assessment(provider, base)
    foreign = [a for a in sim.state()["assessments"] if a["provider_code"] == "ACMELEARN"]
    assert len(foreign) == 2
    mine = provider.get(f"{base}/api/v2/content/assessments").json()["data"]
    everything = org.get(f"{base}/api/v2/content/assessments").json()["data"]
    assert [item["attributes"]["external-id"] for item in mine] == ["imocha-300000"]
    assert len(everything) == 3
    assert provider.get(f"{base}/api/v2/content/assessments/{foreign[0]['id']}").status_code == 404


def test_both_json_content_types_and_missing_type_are_accepted(sim_server):
    _sim, base = sim_server()
    session = api(base, get_token(base))
    vnd = session.post(f"{base}/api/v2/content/assessments", data=b'{"data": {"attributes": {'
                       b'"external-id": "a", "title": "T", "url": "https://u"}}}',
                       headers={"Content-Type": "application/vnd.api+json"})
    assert vnd.status_code == 201
    assert session.post(f"{base}/api/v2/content/assessments", data="external-id=b",
                        headers={"Content-Type": "application/x-www-form-urlencoded"}).status_code == 406
    wrong = session.post(f"{base}/api/v2/content/assessments",
                         json=body("users", external_id="c", title="T", url="https://u"))
    assert wrong.status_code == 400 and error_of(wrong)["source"] == "type"
    assert session.post(f"{base}/api/v2/content/assessments", data=b"{not json",
                        headers=JSON).status_code == 400


# ---------------------------------------------------------------------------------------------------------
# Completions
# ---------------------------------------------------------------------------------------------------------


def completion_body(user_id, content_id="imocha-300000", completed_at="2024-05-02T14:30:00", **extra):
    attrs = {"user_id": user_id, "user_identifier_type": "Email", "content_id": content_id,
             "content_id_type": "ExternalId", "content_type": "Assessment", "completed_at": completed_at, **extra}
    return body("completions", **attrs)


def test_completion_create_read_patch_delete(sim_server, world):
    _sim, base = sim_server()
    session = api(base, get_token(base))
    create_assessment(session, base)
    learner = learner_in_degreed(world)
    created = session.post(f"{base}/api/v2/completions",
                           json=completion_body(learner.email, percentile=87.5,
                                                completed_at="2024-05-02T14:30:00.1234567"))
    assert created.status_code == 201
    resource = created.json()["data"]
    attrs = resource["attributes"]
    assert attrs["user-id"] == learner.email and attrs["employee-id"] == learner.employee_id
    assert attrs["content-id"] == "imocha-300000" and attrs["percentile"] == 87.5
    assert attrs["completed-at"] == "2024-05-02T14:30:00.1234560"
    assert attrs["provider-code"] == "IMOCHA" and attrs["added-at"]
    assert set(resource["relationships"]) == {"content", "provider", "user"}

    # Identifier types are case-insensitive; EmployeeId and Degreed ids resolve the same way.
    other = learner_in_degreed(world, 1)
    by_employee = session.post(f"{base}/api/v2/completions", json=body(
        None, user_id=other.employee_id, user_identifier_type="employeeid", content_id=resource[
            "relationships"]["content"]["data"]["id"], content_id_type="id", content_type="assessment",
        completed_at="2024-05-03T09:00:00Z"))
    assert by_employee.status_code == 201
    assert by_employee.json()["data"]["attributes"]["user-id"] == other.email

    completion_id = resource["id"]
    patched = session.patch(f"{base}/api/v2/completions/{completion_id}",
                            json={"data": {"type": "completions", "id": completion_id,
                                           "attributes": {"percentile": 91}}})
    assert patched.status_code == 200
    assert patched.json()["data"]["attributes"]["percentile"] == 91
    assert patched.json()["data"]["attributes"]["completed-at"] == "2024-05-02T14:30:00.1234560"
    assert session.patch(f"{base}/api/v2/completions/{completion_id}",
                         json=body(None, percentile=101)).status_code == 400
    assert session.get(f"{base}/api/v2/completions/{completion_id}").json()["data"]["attributes"][
        "percentile"] == 91
    assert session.delete(f"{base}/api/v2/completions/{completion_id}").status_code == 204
    assert session.get(f"{base}/api/v2/completions/{completion_id}").status_code == 404


def test_completion_unknown_user_and_content_are_400(sim_server, world):
    sim, base = sim_server()
    session = api(base, get_token(base))
    create_assessment(session, base)
    missing = next(learner for learner in world.learners if not learner.in_degreed)
    unknown_user = session.post(f"{base}/api/v2/completions", json=completion_body(missing.email))
    error = error_of(unknown_user)
    assert unknown_user.status_code == 400 and error["code"] == "bad-request"
    assert error["detail"] == f"Invalid user identifier: {missing.email}" and error["source"] == missing.email
    unknown_content = session.post(f"{base}/api/v2/completions",
                                   json=completion_body(learner_in_degreed(world).email, "imocha-999"))
    assert unknown_content.status_code == 400
    assert "not found" in error_of(unknown_content)["detail"].lower()
    no_date = session.post(f"{base}/api/v2/completions",
                           json=completion_body(learner_in_degreed(world).email, completed_at=""))
    assert no_date.status_code == 400 and error_of(no_date)["source"] == "completed-at"
    assert sim.state()["completions"] == []


def test_duplicate_completion_conflict_or_update_per_setting(sim_server, world):
    sim, base = sim_server()
    session = api(base, get_token(base))
    create_assessment(session, base)
    email = learner_in_degreed(world).email
    first = session.post(f"{base}/api/v2/completions", json=completion_body(email, percentile=50)).json()["data"]
    conflict = session.post(f"{base}/api/v2/completions", json=completion_body(email, percentile=60))
    assert conflict.status_code == 409
    assert first["id"] in error_of(conflict)["detail"] and error_of(conflict)["code"] == "conflict"

    assert requests.put(f"{base}/_sandbox/settings", json={"completion_duplicates": "update"}).status_code == 200
    updated = session.post(f"{base}/api/v2/completions",
                           json=completion_body(email, completed_at="2024-06-01T08:00:00", percentile=70))
    assert updated.status_code == 200
    assert updated.json()["data"]["id"] == first["id"]
    assert updated.json()["data"]["attributes"]["completed-at"] == "2024-06-01T08:00:00"
    assert updated.json()["data"]["attributes"]["percentile"] == 70
    assert len(sim.state()["completions"]) == 1


def test_completion_list_date_filters_and_seven_day_limit(sim_server, world):
    sim, base = sim_server()
    session = api(base, get_token(base))
    create_assessment(session, base)
    users = [learner.email for learner in world.learners if learner.in_degreed][:5]
    for day, email in zip([1, 3, 5, 8, 12], users, strict=True):
        sim.add_completion(email, "imocha-300000", datetime(2024, 5, day, 23, 59, 59, tzinfo=UTC))

    def listed(start, end):
        response = session.get(f"{base}/api/v2/completions",
                               params={"filter[start_date]": start, "filter[end_date]": end})
        assert response.status_code == 200, response.text
        return sorted(item["attributes"]["completed-at"][:10] for item in response.json()["data"])

    assert listed("2024-05-01", "2024-05-07") == ["2024-05-01", "2024-05-03", "2024-05-05"]
    assert listed("2024-05-02", "2024-05-08") == ["2024-05-03", "2024-05-05", "2024-05-08"]
    assert listed("2024-05-06", "2024-05-12") == ["2024-05-08", "2024-05-12"]  # both ends inclusive
    too_long = session.get(f"{base}/api/v2/completions",
                           params={"filter[start_date]": "2024-05-01", "filter[end_date]": "2024-05-08"})
    assert too_long.status_code == 400 and "7 days" in error_of(too_long)["detail"]
    bad_format = session.get(f"{base}/api/v2/completions", params={"filter[start_date]": "05/01/2024"})
    assert bad_format.status_code == 400
    # The filter can apply to added-at instead: everything was added "today".
    sim.configure(completion_date_field="added-at")
    today = datetime.now(UTC).date()
    assert len(listed((today - timedelta(days=1)).isoformat(), today.isoformat())) == 5
    assert listed("2024-05-01", "2024-05-07") == []


# ---------------------------------------------------------------------------------------------------------
# Skill ratings, users, providers
# ---------------------------------------------------------------------------------------------------------


def rating_body(email, skill="Python", rating=5, rating_type="Evaluation"):
    return body("skill-ratings", user_id=email, user_identifier_type="Email", skill_name=skill, rating=rating,
                rating_type=rating_type, rated_at="2024-05-02T14:30:00")


@pytest.mark.parametrize("bad", [0, 9, 5.5, "5", True, None])
def test_skill_rating_must_be_a_whole_number_from_1_to_8(sim_server, world, bad):
    _sim, base = sim_server()
    session = api(base, get_token(base))
    response = session.post(f"{base}/api/v2/skill-ratings", json=rating_body(learner_in_degreed(world).email,
                                                                             rating=bad))
    assert response.status_code == 400 and error_of(response)["source"] == "rating"


def test_skill_ratings_upsert_list_patch_delete(sim_server, world):
    sim, base = sim_server()
    session = api(base, get_token(base))
    learner = learner_in_degreed(world)
    created = session.post(f"{base}/api/v2/skill-ratings", json=rating_body(learner.email, rating=3))
    assert created.status_code == 201
    attrs = created.json()["data"]["attributes"]
    assert (attrs["employee-id"], attrs["user-id"], attrs["skill-name"], attrs["rating"], attrs["rating-type"],
            attrs["rated-at"], attrs["certifiable-skill-guid"]) == (
        learner.employee_id, learner.email, "Python", 3, "Evaluation", "2024-05-02T14:30:00", None)
    rating_id = created.json()["data"]["id"]

    replaced = session.post(f"{base}/api/v2/skill-ratings", json=rating_body(learner.email, "python", rating=7))
    assert replaced.status_code == 200 and replaced.json()["data"]["id"] == rating_id
    assert replaced.json()["data"]["attributes"]["rating"] == 7
    other_type = session.post(f"{base}/api/v2/skill-ratings",
                              json=rating_body(learner.email, rating=4, rating_type="Self"))
    assert other_type.status_code == 201 and other_type.json()["data"]["id"] != rating_id
    unknown = session.post(f"{base}/api/v2/skill-ratings", json=rating_body("nobody@example.com"))
    assert unknown.status_code == 400 and error_of(unknown)["detail"] == "Invalid user identifier: nobody@example.com"

    sim.configure(skill_rating_duplicates="always-new")
    again = session.post(f"{base}/api/v2/skill-ratings", json=rating_body(learner.email, rating=8))
    assert again.status_code == 201 and again.json()["data"]["id"] not in {rating_id}

    user_id = created.json()["data"]["relationships"]["user"]["data"]["id"]
    per_user = session.get(f"{base}/api/v2/users/{user_id}/skill-ratings").json()["data"]
    assert len(per_user) == 3 == len(session.get(f"{base}/api/v2/skill-ratings").json()["data"])
    in_range = session.get(f"{base}/api/v2/skill-ratings",
                           params={"filter[start_date]": "2024-05-01", "filter[end_date]": "2024-05-03"})
    assert len(in_range.json()["data"]) == 3
    out_of_range = session.get(f"{base}/api/v2/skill-ratings",
                               params={"filter[start_date]": "2024-06-01", "filter[end_date]": "2024-06-03"})
    assert out_of_range.json()["data"] == []

    patched = session.patch(f"{base}/api/v2/skill-ratings/{rating_id}", json=body(None, rating=2))
    assert patched.status_code == 200 and patched.json()["data"]["attributes"]["rating"] == 2
    assert session.patch(f"{base}/api/v2/skill-ratings/{rating_id}", json=body(None, rating=12)).status_code == 400
    assert session.delete(f"{base}/api/v2/skill-ratings/{rating_id}").status_code == 204
    assert session.get(f"{base}/api/v2/skill-ratings/{rating_id}").status_code == 404


def test_user_lookup_by_id_email_and_employee_id(sim_server, world):
    _sim, base = sim_server()
    session = api(base, get_token(base))
    added = requests.post(f"{base}/_sandbox/users", json={
        "email": "zoë.o'brien+degreed@example.com", "employee_id": "E77777", "first_name": "Zoë",
        "last_name": "O'Brien"}).json()
    by_email = session.get(f"{base}/api/v2/users/zo%C3%AB.o%27brien%2Bdegreed%40example.com",
                           params={"identifier": "email"})
    assert by_email.status_code == 200 and by_email.json()["data"]["id"] == added["id"]
    assert by_email.json()["data"]["attributes"]["organization-email"] == "zoë.o'brien+degreed@example.com"
    by_employee = session.get(f"{base}/api/v2/users/E77777", params={"identifier": "employee-id"})
    assert by_employee.json()["data"]["id"] == added["id"]
    by_id = session.get(f"{base}/api/v2/users/{added['id']}")
    assert by_id.json()["data"]["attributes"]["full-name"] == "Zoë O'Brien"

    missing = next(learner for learner in world.learners if not learner.in_degreed)
    unknown = session.get(f"{base}/api/v2/users/{missing.email}", params={"identifier": "email"})
    assert unknown.status_code == 400
    assert error_of(unknown)["detail"] == f"Invalid user identifier: {missing.email}"
    assert session.get(f"{base}/api/v2/users/nope00").status_code == 404
    listed = session.get(f"{base}/api/v2/users", params={"limit": 1000}).json()["data"]
    assert len(listed) == sum(learner.in_degreed for learner in world.learners) + 1


def test_providers_list_and_get(sim_server):
    _sim, base = sim_server()
    session = api(base, get_token(base))
    providers = session.get(f"{base}/api/v2/providers").json()["data"]
    codes = {p["attributes"]["code"]: p for p in providers}
    assert set(codes) == {"IMOCHA", "ACMELEARN"}
    assert codes["IMOCHA"]["attributes"]["name"] == "iMocha"
    one = session.get(f"{base}/api/v2/providers/{codes['IMOCHA']['id']}")
    assert one.json()["data"]["attributes"] == codes["IMOCHA"]["attributes"]
    assert session.get(f"{base}/api/v2/providers/none").status_code == 404


def test_relationships_can_be_served_as_an_array(sim_server, world):
    _sim, base = sim_server(relationships_style="array")
    session = api(base, get_token(base))
    create_assessment(session, base)
    created = session.post(f"{base}/api/v2/completions", json=completion_body(learner_in_degreed(world).email))
    relationships = created.json()["data"]["relationships"]
    assert isinstance(relationships, list)
    assert [next(iter(item)) for item in relationships] == ["content", "provider", "user"]


# ---------------------------------------------------------------------------------------------------------
# Paging
# ---------------------------------------------------------------------------------------------------------


def test_cursor_paging_over_more_than_1000_records(sim_server):
    sim, base = sim_server()
    for index in range(2345):
        sim.add_assessment(f"imocha-{index}")
    session = api(base, get_token(base))
    first = session.get(f"{base}/api/v2/content/assessments", params={"limit": 1000})
    assert first.status_code == 200 and len(first.json()["data"]) == 1000
    next_link = first.json()["links"]["next"]
    assert next_link.startswith(f"{base}/api/v2/content/assessments?limit=1000&next=")
    sim.add_assessment("added-after-the-snapshot")
    ids = [item["id"] for item in first.json()["data"]]
    pages = 1
    while next_link:
        page = session.get(next_link).json()
        ids += [item["id"] for item in page["data"]]
        next_link = page["links"].get("next")
        pages += 1
    assert pages == 3 and len(ids) == len(set(ids)) == 2345  # the later record is not in this snapshot

    default = session.get(f"{base}/api/v2/content/assessments").json()
    assert len(default["data"]) == 100 and "limit=100&" in default["links"]["next"]
    for bad in ("1001", "0", "ten"):
        response = session.get(f"{base}/api/v2/content/assessments", params={"limit": bad})
        assert response.status_code == 400 and error_of(response)["source"] == "limit"


def test_cursor_expires_after_idle_time(sim_server):
    sim, base = sim_server(cursor_idle_seconds=1)
    for index in range(5):
        sim.add_assessment(f"imocha-{index}")
    session = api(base, get_token(base))
    first = session.get(f"{base}/api/v2/content/assessments", params={"limit": 2}).json()
    second = session.get(first["links"]["next"])
    assert second.status_code == 200  # used within the idle time
    time.sleep(1.2)
    expired = session.get(second.json()["links"]["next"])
    assert expired.status_code == 400 and error_of(expired)["code"] == "cursor-expired"
    # A fresh chain works again, and a scheduled expiry hits exactly the chosen cursor request.
    sim.configure(cursor_idle_seconds=120)
    restart = session.get(f"{base}/api/v2/content/assessments", params={"limit": 2}).json()
    requests.post(f"{base}/_sandbox/cursors/schedule-expiry", json={"skip": 1, "count": 1})
    page2 = session.get(restart["links"]["next"])
    assert page2.status_code == 200
    assert error_of(session.get(page2.json()["links"]["next"]))["code"] == "cursor-expired"


# ---------------------------------------------------------------------------------------------------------
# Rate limit
# ---------------------------------------------------------------------------------------------------------


def test_71st_call_in_a_minute_is_429_and_every_answer_has_rate_headers(sim_server):
    sim, base = sim_server(rate_limit_per_minute=70)
    session = api(base, get_token(base))
    remaining = []
    for index in range(70):
        # Mix successes and errors: every answer carries the headers and counts against the budget.
        path = "/api/v2/providers" if index % 2 else "/api/v2/completions/unknown"
        response = session.get(f"{base}{path}")
        assert response.headers["X-Rate-Limit-Limit"] == "1m"
        remaining.append(int(response.headers["X-Rate-Limit-Remaining"]))
        reset = datetime.fromisoformat(response.headers["X-Rate-Limit-Reset"].replace("0Z", "+00:00"))
        assert 0 < (reset - datetime.now(UTC)).total_seconds() <= 60
    assert remaining == list(range(69, -1, -1))
    limited = session.get(f"{base}/api/v2/providers")
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.headers["X-Rate-Limit-Remaining"] == "0"
    error = error_of(limited)
    assert (error["code"], error["title"], error["detail"]) == (
        "quota-exceeded", "API calls quota exceeded.", "Maximum 70 requests allowed per 1m.")
    # The token endpoint is outside the limit; another client has its own budget.
    other = api(base, get_token(base, ORG_ID, ORG_SECRET, ALL_SCOPES))
    assert other.get(f"{base}/api/v2/providers").status_code == 200
    assert [e.client for e in sim.log.entries() if e.status == 429] == [DEFAULT_CLIENT_ID]


def test_unknown_endpoints_and_methods_answer_json_api_errors_with_rate_headers(sim_server):
    _sim, base = sim_server()
    session = api(base, get_token(base))
    for method, path, status in (("GET", "/api/v2/nothing-here", 404), ("PUT", "/api/v2/completions", 405)):
        response = session.request(method, f"{base}{path}")
        assert response.status_code == status and error_of(response)["status"] == status
        assert int(response.headers["X-Rate-Limit-Remaining"]) < 100_000
    assert requests.get(f"{base}/api/v2/nothing-here").status_code == 401  # authentication still comes first


def test_fixed_window_resets_a_minute_after_its_first_request(sim_server):
    clock = FakeClock()
    _sim, base = sim_server(rate_limit_per_minute=3, clock=clock)
    session = api(base, get_token(base))
    assert [session.get(f"{base}/api/v2/providers").status_code for _ in range(3)] == [200] * 3
    clock.advance(45)
    rejected = session.get(f"{base}/api/v2/providers")
    assert rejected.status_code == 429 and rejected.headers["Retry-After"] == "15"
    clock.advance(15)
    assert [session.get(f"{base}/api/v2/providers").status_code for _ in range(4)] == [200, 200, 200, 429]


def test_sliding_window_and_rejected_calls_do_not_use_budget(sim_server):
    clock = FakeClock()
    _sim, base = sim_server(rate_limit_per_minute=4, rate_window="sliding", clock=clock)
    session = api(base, get_token(base))
    statuses = []
    for step in (0, 0, 30, 0, 1, 0, 0):  # calls at t = 0, 0, 30, 30, 31, 31, 31
        clock.advance(step)
        statuses.append(session.get(f"{base}/api/v2/providers"))
    assert [r.status_code for r in statuses] == [200, 200, 200, 200, 429, 429, 429]
    assert statuses[4].headers["Retry-After"] == "29"  # the two t=0 calls leave the window at t=60
    clock.advance(29)  # t=60: two slots free; the three rejected calls used none
    assert [session.get(f"{base}/api/v2/providers").status_code for _ in range(3)] == [200, 200, 429]


# ---------------------------------------------------------------------------------------------------------
# Control surface, log, determinism
# ---------------------------------------------------------------------------------------------------------


def test_control_surface_over_http(sim_server, world):
    sim, base = sim_server()
    control = f"{base}/_sandbox"
    session = api(base, get_token(base))
    create_assessment(session, base)
    email = learner_in_degreed(world).email
    completion = session.post(f"{base}/api/v2/completions", json=completion_body(email)).json()["data"]

    assert requests.patch(f"{control}/completions/{completion['id']}", json={"percentile": 33}).status_code == 200
    assert session.get(f"{base}/api/v2/completions/{completion['id']}").json()["data"]["attributes"][
        "percentile"] == 33
    assert requests.delete(f"{control}/completions/{completion['id']}").status_code == 200
    assert requests.delete(f"{control}/completions/{completion['id']}").status_code == 404

    foreign = requests.post(f"{control}/assessments", json={"external_id": "imocha-300051", "title": "By hand"})
    assert foreign.status_code == 200
    assert create_assessment(session, base, "imocha-300051").status_code == 409

    state = requests.get(f"{control}/state").json()
    assert {"users", "assessments", "completions", "skill_ratings", "providers"} <= set(state)
    assert [a["external_id"] for a in state["assessments"] if a["provider_code"] == "IMOCHA"] == [
        "imocha-300000", "imocha-300051"]
    assert state["completions"] == []

    assert requests.delete(f"{control}/users/{email}").status_code == 200
    assert session.post(f"{base}/api/v2/completions", json=completion_body(email)).status_code == 400
    assert requests.post(f"{control}/users", json={"email": email}).status_code == 200
    assert session.post(f"{base}/api/v2/completions", json=completion_body(email)).status_code == 201

    assert requests.put(f"{control}/settings", json={"rate_window": "hourly"}).status_code == 400
    assert requests.put(f"{control}/settings", json={"nonsense": 1}).status_code == 400
    assert requests.put(f"{control}/settings", json={"cursor_idle_seconds": 5}).json()["cursor_idle_seconds"] == 5

    assert requests.put(f"{control}/faults", json={"error_5xx_next": 1}).status_code == 200
    failed = session.get(f"{base}/api/v2/providers")
    assert failed.status_code == 503 and error_of(failed)["code"] == "server-error"
    assert session.get(f"{base}/api/v2/providers").status_code == 200
    assert requests.put(f"{control}/faults", json={"error_5xx_share": 1.0}).status_code == 200
    assert requests.delete(f"{control}/faults").status_code == 200
    assert session.get(f"{base}/api/v2/providers").status_code == 200
    assert requests.put(f"{control}/faults", json={"bogus": 1}).status_code == 400

    since = sim.log.last_seq
    session.get(f"{base}/api/v2/users")
    logged = requests.get(f"{control}/requests", params={"since": since}).json()
    assert [(e["method"], e["path"], e["status"], e["client"]) for e in logged] == [
        ("GET", "/api/v2/users", 200, DEFAULT_CLIENT_ID)]
    assert requests.delete(f"{control}/requests").status_code == 200
    assert requests.get(f"{control}/requests").json() == []

    assert requests.post(f"{control}/clients/{DEFAULT_CLIENT_ID}/revoke").status_code == 200
    assert session.get(f"{base}/api/v2/providers").status_code == 401  # its tokens died
    denied = requests.post(f"{base}/oauth/token", data={
        "grant_type": "client_credentials", "client_id": DEFAULT_CLIENT_ID, "client_secret": DEFAULT_CLIENT_SECRET,
        "scope": "content:read"})
    assert denied.status_code == 401  # and its secret stopped working
    assert requests.put(f"{control}/clients/{DEFAULT_CLIENT_ID}", json={
        "secret": "rotated-secret", "scopes": ["content:read"], "provider_code": "IMOCHA"}).status_code == 200
    assert get_token(base, DEFAULT_CLIENT_ID, "rotated-secret", ["content:read"])


def test_request_log_names_the_client_and_hides_the_secret(sim_server):
    sim, base = sim_server()
    session = api(base, get_token(base))
    session.get(f"{base}/api/v2/providers")
    entries = sim.log.entries()
    assert [(e.path, e.client) for e in entries] == [
        ("/oauth/token", DEFAULT_CLIENT_ID), ("/api/v2/providers", DEFAULT_CLIENT_ID)]
    assert DEFAULT_CLIENT_SECRET not in (entries[0].body or "") and "client_secret=***" in entries[0].body


def test_same_world_gives_the_same_ids(world):
    one, two = DegreedSimulator(world), DegreedSimulator(world)
    assert [u["id"] for u in one.state()["users"]] == [u["id"] for u in two.state()["users"]]
    assert one.add_assessment("imocha-1")["id"] == two.add_assessment("imocha-1")["id"]
    assert all(len(u["id"]) == 6 for u in one.state()["users"])


def test_timestamp_helpers_round_trip():
    moment = datetime(2021, 10, 19, 10, 1, 40, 246712, tzinfo=UTC)
    assert format_degreed_timestamp(moment) == "2021-10-19T10:01:40.2467120"
    assert parse_utc("2021-10-19T10:01:40.2467123", strict=True) == moment
    assert parse_utc("2021-10-19T12:01:40+02:00", strict=True) == moment.replace(microsecond=0)
    with pytest.raises(ValueError):
        parse_utc("yesterday", strict=True)


# ---------------------------------------------------------------------------------------------------------
# Answer-shape settings: defaults and validation
# ---------------------------------------------------------------------------------------------------------

NEW_CHOICES = {
    "read_shape": ("documented", "echo"),
    "relationships_style": ("object", "array"),
    "conflict_body": ("empty", "error_without_id", "error_with_id"),
    "cursor_expiry": ("code", "bare_400", "not_found"),
}


def test_shape_settings_default_to_the_module_constants_and_refuse_unknown_values(sim_server, world):
    defaults = {"read_shape": DEFAULT_READ_SHAPE, "relationships_style": DEFAULT_RELATIONSHIPS_STYLE,
                "conflict_body": DEFAULT_CONFLICT_BODY, "cursor_expiry": DEFAULT_CURSOR_EXPIRY,
                "token_requests_count": False}
    plain = DegreedSimulator(world)
    for name, value in defaults.items():
        assert getattr(DegreedSimSettings(), name) == value == getattr(plain.settings, name), name
    assert DegreedSimSettings.CHOICES.items() >= NEW_CHOICES.items()

    _sim, base = sim_server()
    control = f"{base}/_sandbox/settings"
    for name, choices in NEW_CHOICES.items():
        for choice in choices:
            changed = requests.put(control, json={name: choice})
            assert changed.status_code == 200 and changed.json()[name] == choice
        refused = requests.put(control, json={name: "something-else"})
        assert refused.status_code == 400 and name in refused.json()["error"]
        assert requests.get(control).json()[name] == choices[-1]  # the refused value changed nothing
        with pytest.raises(ValueError, match=name):
            DegreedSimulator(world, **{name: "something-else"})
    assert requests.put(control, json={"token_requests_count": True}).json()["token_requests_count"] is True
    assert requests.put(control, json={"token_requests_count": "yes"}).status_code == 400
    for bad in (0, -1, 2.5, True):
        assert requests.put(control, json={"max_date_range_days": bad}).status_code == 400, bad


# ---------------------------------------------------------------------------------------------------------
# read_shape="documented": completions (spec §8.3) and skill ratings (spec §9.2)
# ---------------------------------------------------------------------------------------------------------

POINTS = re.compile(r"^\d+\.\d{7}$")
DOTNET = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{0,6}[1-9])?$")  # no zone, no trailing zeros


def relationships_of(resource: dict, style: str) -> dict:
    """The relationships of an answer as a dict, after checking they come in the requested style."""
    raw = resource["relationships"]
    if style == "array":
        assert isinstance(raw, list) and all(isinstance(item, dict) and len(item) == 1 for item in raw)
        return {name: value for item in raw for name, value in item.items()}
    assert isinstance(raw, dict)
    return raw


def provider_id(sim, code: str = "IMOCHA") -> str:
    return next(p["id"] for p in sim.state()["providers"] if p["code"] == code)


def check_documented_completion(resource: dict, sim, style: str, *, content_id: str, user_id: str,
                                employee_id: str) -> dict:
    assert set(resource) == {"type", "id", "attributes", "links", "relationships"}
    assert resource["type"] == "completions"
    attrs = resource["attributes"]
    assert list(attrs) == ["employee-id", "completed-at", "added-at", "points-earned", "is-verified", "rating",
                           "access-method"]
    assert attrs["employee-id"] == employee_id
    assert isinstance(attrs["points-earned"], str) and POINTS.match(attrs["points-earned"])
    assert attrs["is-verified"] is True and attrs["rating"] == 0 and type(attrs["rating"]) is int
    assert DOTNET.match(attrs["completed-at"]) and DOTNET.match(attrs["added-at"])
    relationships = relationships_of(resource, style)
    if style == "array":
        assert [next(iter(item)) for item in resource["relationships"]] == ["content", "provider", "user"]
    assert relationships == {"content": {"data": {"id": content_id, "type": "content"}},
                             "provider": {"data": {"id": provider_id(sim), "type": "providers"}},
                             "user": {"data": {"id": user_id, "type": "users"}}}
    return attrs


@pytest.mark.parametrize("style", ["object", "array"])
def test_documented_completion_answers_carry_only_the_spec_attributes(sim_server, world, style):
    clock = FakeClock()
    clock.now = datetime(2024, 5, 10, 9, 15, 30, 93000, tzinfo=UTC).timestamp()
    sim, base = sim_server(read_shape="documented", relationships_style=style, clock=clock)
    session = api(base, get_token(base))
    content = create_assessment(session, base, duration=45, duration_type="Minutes").json()["data"]
    learner = learner_in_degreed(world)
    user_id = next(u["id"] for u in sim.state()["users"] if u["email"] == learner.email)
    expected = {"sim": sim, "style": style, "content_id": content["id"], "user_id": user_id,
                "employee_id": learner.employee_id}

    created = session.post(f"{base}/api/v2/completions", json=completion_body(
        learner.email, percentile=87.5, completed_at="2024-05-02T14:30:00.1234567"))
    assert created.status_code == 201
    resource = created.json()["data"]
    attrs = check_documented_completion(resource, **expected)
    assert attrs["completed-at"] == "2024-05-02T14:30:00.123456"  # .NET style: trailing zeros dropped
    assert attrs["added-at"] == "2024-05-10T09:15:30.093"  # the spec's own example form
    assert set(created.json()) == {"data"}  # a single answer has no ``included``
    for leaked in (learner.email, "imocha-300000", "87.5", "percentile", "user-identifier-type", "IMOCHA"):
        assert leaked not in created.text, leaked  # no email, external id, percentile or provider code

    one = session.get(f"{base}/api/v2/completions/{resource['id']}")
    assert one.json() == created.json()
    patched = session.patch(f"{base}/api/v2/completions/{resource['id']}",
                            json=body("completions", percentile=91, completed_at="2024-05-03T08:00:00"))
    assert patched.status_code == 200
    assert check_documented_completion(patched.json()["data"], **expected)["completed-at"] == "2024-05-03T08:00:00"
    assert "91" not in json.dumps(patched.json()["data"]["attributes"])

    # The truth behind the answer is all there for tests and drills.
    stored = sim.state()["completions"][0]
    assert (stored["user_email"], stored["content_external_id"], stored["percentile"]) == (
        learner.email, "imocha-300000", 91)

    summary = {"type": "content", "id": content["id"], "attributes": {
        "content-type": "Assessment", "url": "https://imocha.example/t/imocha-300000",
        "title": "Python Fundamentals", "provider": "iMocha", "content-duration": 45,
        "content-duration-type": "Minutes", "is-internal": False}}
    user_list = session.get(f"{base}/api/v2/users/{user_id}/completions")
    org_list = session.get(f"{base}/api/v2/completions",
                           params={"filter[start_date]": "2024-05-01", "filter[end_date]": "2024-05-07"})
    for listed in (user_list, org_list):
        assert listed.status_code == 200
        payload = listed.json()
        assert set(payload) == {"links", "data", "included"}
        assert [item["id"] for item in payload["data"]] == [resource["id"]]
        check_documented_completion(payload["data"][0], **expected)
        assert payload["included"] == [summary]


def test_documented_lists_include_each_page_s_content_once(sim_server, world):
    sim, base = sim_server(read_shape="documented", relationships_style="array")
    session = api(base, get_token(base))
    first = create_assessment(session, base, "imocha-300000").json()["data"]["id"]
    second = create_assessment(session, base, "imocha-300017").json()["data"]["id"]
    emails = [learner.email for learner in world.learners if learner.in_degreed][:3]
    # Completed in this order: A by learner 0, A by learner 1, B by learner 2.
    for day, (email, content) in enumerate(zip(emails, ["imocha-300000", "imocha-300000", "imocha-300017"],
                                               strict=True), start=1):
        sim.add_completion(email, content, datetime(2024, 5, day, 12, tzinfo=UTC))
    window = {"filter[start_date]": "2024-05-01", "filter[end_date]": "2024-05-07"}

    whole = session.get(f"{base}/api/v2/completions", params=window).json()
    assert len(whole["data"]) == 3
    assert [item["id"] for item in whole["included"]] == [first, second]  # one summary per content item

    page1 = session.get(f"{base}/api/v2/completions", params={**window, "limit": 2}).json()
    assert [item["id"] for item in page1["included"]] == [first]  # only what this page refers to
    sim.update_assessment(second, title="Renamed after the snapshot")
    page2 = session.get(page1["links"]["next"]).json()
    assert len(page2["data"]) == 1 and "next" not in page2["links"]
    assert [(item["id"], item["attributes"]["title"]) for item in page2["included"]] == [
        (second, "Python Fundamentals")]  # frozen with the snapshot, like the items


def test_echo_shape_keeps_today_s_answers_and_the_shape_switches_live(sim_server, world):
    _sim, base = sim_server(read_shape="echo")
    session = api(base, get_token(base))
    create_assessment(session, base)
    learner = learner_in_degreed(world)
    created = session.post(f"{base}/api/v2/completions", json=completion_body(learner.email, percentile=87.5))
    completion_id = created.json()["data"]["id"]
    echo = session.get(f"{base}/api/v2/completions/{completion_id}").json()["data"]["attributes"]
    assert (echo["user-id"], echo["content-id"], echo["percentile"], echo["provider-code"]) == (
        learner.email, "imocha-300000", 87.5, "IMOCHA")
    assert echo["completed-at"] == "2024-05-02T14:30:00"
    window = {"filter[start_date]": "2024-05-01", "filter[end_date]": "2024-05-07"}
    assert "included" not in session.get(f"{base}/api/v2/completions", params=window).json()

    assert requests.put(f"{base}/_sandbox/settings", json={"read_shape": "documented"}).status_code == 200
    documented = session.get(f"{base}/api/v2/completions/{completion_id}").json()["data"]["attributes"]
    assert set(documented) == {"employee-id", "completed-at", "added-at", "points-earned", "is-verified",
                               "rating", "access-method"}
    assert "included" in session.get(f"{base}/api/v2/completions", params=window).json()


@pytest.mark.parametrize("shape", ["documented", "echo"])
@pytest.mark.parametrize("style", ["object", "array"])
def test_skill_rating_answers_in_each_shape_and_relationship_style(sim_server, world, shape, style):
    sim, base = sim_server(read_shape=shape, relationships_style=style)
    session = api(base, get_token(base))
    learner = learner_in_degreed(world)
    user_id = next(u["id"] for u in sim.state()["users"] if u["email"] == learner.email)
    created = session.post(f"{base}/api/v2/skill-ratings", json=rating_body(learner.email, rating=6))
    assert created.status_code == 201
    rating_id = created.json()["data"]["id"]
    answers = [created.json()["data"], session.get(f"{base}/api/v2/skill-ratings/{rating_id}").json()["data"],
               *session.get(f"{base}/api/v2/users/{user_id}/skill-ratings").json()["data"],
               *session.get(f"{base}/api/v2/skill-ratings").json()["data"]]
    assert len(answers) == 4
    for resource in answers:
        assert resource["id"] == rating_id and resource["type"] == "skill-ratings"
        assert relationships_of(resource, style) == {"user": {"data": {"id": user_id, "type": "users"}}}
        attrs = resource["attributes"]
        assert (attrs["employee-id"], attrs["skill-name"], attrs["rating"], attrs["rating-type"],
                attrs["certifiable-skill-guid"], attrs["rated-at"]) == (
            learner.employee_id, "Python", 6, "Evaluation", None, "2024-05-02T14:30:00")
        if shape == "documented":
            assert list(attrs) == ["employee-id", "skill-name", "rating", "rating-type", "certifiable-skill-guid",
                                   "rated-at"]
            assert learner.email not in json.dumps(resource)
        else:
            assert (attrs["user-id"], attrs["provider-code"]) == (learner.email, "IMOCHA")


@pytest.mark.parametrize("shape", ["documented", "echo"])
def test_completion_relationships_as_an_array_in_both_shapes(sim_server, world, shape):
    sim, base = sim_server(read_shape=shape, relationships_style="array")
    session = api(base, get_token(base))
    content_id = create_assessment(session, base).json()["data"]["id"]
    learner = learner_in_degreed(world)
    created = session.post(f"{base}/api/v2/completions", json=completion_body(learner.email)).json()["data"]
    user_id = next(u["id"] for u in sim.state()["users"] if u["email"] == learner.email)
    assert created["relationships"] == [
        {"content": {"data": {"id": content_id, "type": "content"}}},
        {"provider": {"data": {"id": provider_id(sim), "type": "providers"}}},
        {"user": {"data": {"id": user_id, "type": "users"}}}]


# ---------------------------------------------------------------------------------------------------------
# conflict_body: every 409
# ---------------------------------------------------------------------------------------------------------


def check_conflict(response: requests.Response, style: str, existing_id: str) -> None:
    assert response.status_code == 409
    assert response.headers["X-Rate-Limit-Limit"] == "1m"
    if style == "empty":
        assert response.json() == {}
        return
    error = error_of(response)
    assert (error["code"], error["title"]) == ("conflict", "Conflict")
    if style == "error_with_id":
        assert existing_id in error["detail"] and error["source"] == existing_id
    else:
        assert existing_id not in error["detail"] and existing_id not in str(error["source"])
        assert "already exists" in error["detail"]


@pytest.mark.parametrize("style", ["empty", "error_without_id", "error_with_id"])
def test_each_conflict_answers_with_the_configured_body(sim_server, world, style):
    sim, base = sim_server(conflict_body=style)
    session = api(base, get_token(base))
    first = create_assessment(session, base).json()["data"]["id"]
    check_conflict(create_assessment(session, base), style, first)  # same external id
    same_url = create_assessment(session, base, "imocha-300017", url="https://imocha.example/t/imocha-300000")
    check_conflict(same_url, style, first)
    second = create_assessment(session, base, "imocha-300017").json()["data"]["id"]
    onto_url = session.patch(f"{base}/api/v2/content/assessments/{second}",
                             json=body(None, url="https://imocha.example/t/imocha-300000"))
    check_conflict(onto_url, style, first)
    onto_external_id = session.patch(f"{base}/api/v2/content/assessments/{second}",
                                     json=body(None, external_id="imocha-300000"))
    check_conflict(onto_external_id, style, first)

    email = learner_in_degreed(world).email
    completion = session.post(f"{base}/api/v2/completions", json=completion_body(email)).json()["data"]["id"]
    check_conflict(session.post(f"{base}/api/v2/completions", json=completion_body(email)), style, completion)
    assert len(sim.state()["assessments"]) == 4 and len(sim.state()["completions"]) == 1
    assert sim.assessments[second].url == "https://imocha.example/t/imocha-300017"  # refused PATCHes changed nothing
    assert sim.assessments[second].external_id == "imocha-300017"


# ---------------------------------------------------------------------------------------------------------
# Duplicate content urls
# ---------------------------------------------------------------------------------------------------------


def test_content_url_must_be_unique_in_the_organisation(sim_server):
    sim, base = sim_server()
    session = api(base, get_token(base))
    url = "https://test.imocha.io/abc123"
    first = create_assessment(session, base, url=url).json()["data"]["id"]

    duplicate = create_assessment(session, base, "imocha-300017", url=url)
    assert duplicate.status_code == 409 and first in error_of(duplicate)["detail"]
    assert error_of(duplicate)["detail"].startswith(f"Content with url {url} already exists")
    # Another provider's content, invisible to this key, still holds its url.
    foreign = next(a for a in sim.state()["assessments"] if a["provider_code"] == "ACMELEARN")
    assert session.get(f"{base}/api/v2/content/assessments/{foreign['id']}").status_code == 404
    assert create_assessment(session, base, "imocha-300034", url=foreign["url"]).status_code == 409
    # Retired content keeps its url.
    assert session.patch(f"{base}/api/v2/content/assessments/{first}",
                         json=body(None, obsolete=True)).status_code == 200
    assert create_assessment(session, base, "imocha-300051", url=url).status_code == 409
    # The same url with other case or a trailing slash is another url.
    assert create_assessment(session, base, "imocha-300068", url=url + "/").status_code == 201
    # PATCH: onto another item's url is a conflict; keeping its own url is not.
    second = create_assessment(session, base, "imocha-300085").json()["data"]["id"]
    assert session.patch(f"{base}/api/v2/content/assessments/{second}", json=body(None, url=url)).status_code == 409
    assert session.patch(f"{base}/api/v2/content/assessments/{first}",
                         json=body(None, url=url, title="Same url")).status_code == 200
    moved = session.patch(f"{base}/api/v2/content/assessments/{second}",
                          json=body(None, url="https://test.imocha.io/new-link"))
    assert moved.status_code == 200 and moved.json()["data"]["attributes"]["url"] == "https://test.imocha.io/new-link"
    # Once freed, the old url can be used again.
    assert create_assessment(session, base, "imocha-300102",
                             url="https://imocha.example/t/imocha-300085").status_code == 201
    # The control surface bypasses the check on purpose (content made by someone else).
    assert sim.add_assessment("imocha-300119", url=url)["url"] == url
    assert len([a for a in sim.state()["assessments"] if a["url"] == url]) == 2


# ---------------------------------------------------------------------------------------------------------
# cursor_expiry
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("style", "status", "code"), [
    ("code", 400, "cursor-expired"), ("bare_400", 400, "bad-request"), ("not_found", 404, "not-found")])
def test_expired_cursor_answers_as_configured(sim_server, style, status, code):
    clock = FakeClock()
    sim, base = sim_server(cursor_expiry=style, cursor_idle_seconds=120, clock=clock)
    for index in range(5):
        sim.add_assessment(f"imocha-{index}")
    session = api(base, get_token(base))

    def first_next() -> str:
        return session.get(f"{base}/api/v2/content/assessments", params={"limit": 2}).json()["links"]["next"]

    def check(response: requests.Response) -> None:
        assert response.status_code == status
        error = error_of(response)
        assert error["code"] == code
        assert response.headers["X-Rate-Limit-Limit"] == "1m"
        if style == "code":
            assert "cursor" in error["detail"] and error["source"] == "next"
        else:
            assert "cursor" not in response.text.lower() and error["source"] is None
            assert error["detail"] == ("Invalid request." if style == "bare_400"
                                       else "The requested resource was not found.")

    link = first_next()
    clock.advance(121)  # idle longer than the snapshot lives
    check(session.get(link))
    link = first_next()
    sim.expire_cursors()
    check(session.get(link))
    link = first_next()
    sim.schedule_cursor_expiry(count=1)
    check(session.get(link))
    check(session.get(f"{base}/api/v2/content/assessments?limit=2&next=neverIssued"))
    assert session.get(first_next()).status_code == 200  # a fresh chain pages on


# ---------------------------------------------------------------------------------------------------------
# Rate-limit headers on every answer, injected faults included
# ---------------------------------------------------------------------------------------------------------


def reset_header(response: requests.Response) -> float:
    value = response.headers["X-Rate-Limit-Reset"]
    assert value.endswith("Z")
    return datetime.fromisoformat(value[:-2] + "+00:00").timestamp()  # 7 fraction digits, the last one 0


def test_rate_headers_on_normal_answers_and_on_injected_429_and_503(sim_server):
    clock = FakeClock()
    clock.now = 1_700_000_000.25
    sim, base = sim_server(rate_limit_per_minute=50, clock=clock)
    session = api(base, get_token(base))
    control = f"{base}/_sandbox/faults"

    ok = session.get(f"{base}/api/v2/providers")
    assert ok.status_code == 200
    assert (ok.headers["X-Rate-Limit-Limit"], ok.headers["X-Rate-Limit-Remaining"]) == ("1m", "49")
    assert reset_header(ok) == pytest.approx(clock.now + 60)
    assert "Retry-After" not in ok.headers
    clock.advance(10)
    session.get(f"{base}/api/v2/providers")

    requests.put(control, json={"error_5xx_next": 1})
    failed = session.get(f"{base}/api/v2/providers")
    assert failed.status_code == 503 and error_of(failed)["code"] == "server-error"
    assert failed.headers["X-Rate-Limit-Limit"] == "1m"
    assert failed.headers["X-Rate-Limit-Remaining"] == "48"  # the budget as it stands: the 503 cost nothing
    assert reset_header(failed) == pytest.approx(clock.now - 10 + 60)  # the window opened 10 s ago
    assert session.get(f"{base}/api/v2/providers").headers["X-Rate-Limit-Remaining"] == "47"

    requests.put(control, json={"rate_429_next": 1, "retry_after_seconds": 7})
    limited = session.get(f"{base}/api/v2/providers")
    assert limited.status_code == 429
    assert (limited.headers["Retry-After"], limited.headers["X-Rate-Limit-Remaining"]) == ("7", "0")
    assert limited.headers["X-Rate-Limit-Limit"] == "1m"
    assert reset_header(limited) == pytest.approx(clock.now + 7)
    error = error_of(limited)
    assert (error["code"], error["title"], error["detail"]) == (
        "quota-exceeded", "API calls quota exceeded.", "Maximum 50 requests allowed per 1m.")
    assert [(e.status, e.fault) for e in sim.log.entries()[-2:]] == [(200, None), (429, "rate_429")]

    # A fault answer to a request with no valid token shows a full budget; a 401 does too.
    requests.put(control, json={"error_5xx_next": 1})
    anonymous = requests.get(f"{base}/api/v2/providers")
    assert anonymous.status_code == 503 and anonymous.headers["X-Rate-Limit-Remaining"] == "50"
    unauthorised = requests.get(f"{base}/api/v2/providers")
    assert unauthorised.status_code == 401 and unauthorised.headers["X-Rate-Limit-Remaining"] == "50"
    # Errors of every kind carry them.
    for path in ("/api/v2/completions/none", "/api/v2/nothing"):
        assert session.get(f"{base}{path}").headers["X-Rate-Limit-Limit"] == "1m"


def test_429_bodies_follow_the_live_limit(sim_server):
    clock = FakeClock()
    sim, base = sim_server(rate_limit_per_minute=5, clock=clock)
    session = api(base, get_token(base))
    assert requests.put(f"{base}/_sandbox/settings", json={"rate_limit_per_minute": 3}).status_code == 200
    statuses = [session.get(f"{base}/api/v2/providers") for _ in range(4)]
    assert [r.status_code for r in statuses] == [200, 200, 200, 429]
    assert error_of(statuses[-1])["detail"] == "Maximum 3 requests allowed per 1m."
    requests.put(f"{base}/_sandbox/faults", json={"rate_429_next": 1})
    assert error_of(session.get(f"{base}/api/v2/providers"))["detail"] == "Maximum 3 requests allowed per 1m."

    sim.configure(rate_limit_per_minute=7)
    requests.put(f"{base}/_sandbox/faults", json={"rate_429_next": 1})
    injected = session.get(f"{base}/api/v2/providers")
    assert injected.status_code == 429 and injected.headers["Retry-After"] == "1"
    assert error_of(injected)["detail"] == "Maximum 7 requests allowed per 1m."
    assert session.get(f"{base}/api/v2/providers").headers["X-Rate-Limit-Remaining"] == "3"  # 4 of 7 used


# ---------------------------------------------------------------------------------------------------------
# Date windows: 7 calendar days inclusive; per-user lists without dates
# ---------------------------------------------------------------------------------------------------------


def test_date_filter_allows_seven_calendar_days_and_refuses_eight(sim_server, world):
    clock = FakeClock()
    clock.now = datetime(2024, 5, 10, 12, tzinfo=UTC).timestamp()
    sim, base = sim_server(clock=clock)
    session = api(base, get_token(base))
    sim.add_assessment("imocha-300000")
    emails = [learner.email for learner in world.learners if learner.in_degreed]
    for day, email in zip([1, 3, 4, 7, 8, 10], emails, strict=False):
        sim.add_completion(email, "imocha-300000", datetime(2024, 5, day, 23, 59, 59, tzinfo=UTC))
    for day in (1, 7, 8):
        sim.add_skill_rating(emails[0], f"Skill {day}", 4, rated_at=datetime(2024, 5, day, 23, tzinfo=UTC))

    def days_of(path, **params):
        response = session.get(f"{base}{path}", params={f"filter[{k}]": v for k, v in params.items()})
        assert response.status_code == 200, response.text
        field = "completed-at" if "completions" in path else "rated-at"
        return sorted(int(item["attributes"][field][8:10]) for item in response.json()["data"])

    assert days_of("/api/v2/completions", start_date="2024-05-01", end_date="2024-05-07") == [1, 3, 4, 7]
    assert days_of("/api/v2/skill-ratings", start_date="2024-05-01", end_date="2024-05-07") == [1, 7]
    assert days_of("/api/v2/completions", start_date="2024-05-02") == [3, 4, 7, 8]  # start .. start+6
    assert days_of("/api/v2/completions", end_date="2024-05-08") == [3, 4, 7, 8]  # end-6 .. end
    assert days_of("/api/v2/completions") == [4, 7, 8, 10]  # no filter: the 7 days up to today (May 10)
    for path in ("/api/v2/completions", "/api/v2/skill-ratings"):
        eight = session.get(f"{base}{path}", params={"filter[start_date]": "2024-05-01",
                                                     "filter[end_date]": "2024-05-08"})
        error = error_of(eight)
        assert eight.status_code == 400 and error["code"] == "bad-request"
        assert error["detail"] == ("The date range cannot exceed 7 days: filter[start_date] 2024-05-01 to "
                                   "filter[end_date] 2024-05-08 covers 8 days (both dates are included).")
    sim.configure(max_date_range_days=3)
    assert days_of("/api/v2/completions", start_date="2024-05-01", end_date="2024-05-03") == [1, 3]
    assert session.get(f"{base}/api/v2/completions", params={"filter[start_date]": "2024-05-01",
                                                             "filter[end_date]": "2024-05-04"}).status_code == 400
    assert days_of("/api/v2/completions") == [8, 10]  # May 8 .. May 10


def test_per_user_lists_need_no_date_filter_and_page_with_limit_and_next(sim_server, world):
    sim, base = sim_server()
    session = api(base, get_token(base))
    sim.add_assessment("imocha-300000")
    sim.add_assessment("imocha-300017")
    sim.add_assessment("imocha-300034")
    learner, other = learner_in_degreed(world), learner_in_degreed(world, 1)
    user_id = next(u["id"] for u in sim.state()["users"] if u["email"] == learner.email)
    moments = [datetime(2022, 1, 5, tzinfo=UTC), datetime(2023, 7, 1, tzinfo=UTC), datetime(2024, 5, 2, tzinfo=UTC)]
    mine = [sim.add_completion(learner.email, content, moment)["id"]
            for content, moment in zip(["imocha-300000", "imocha-300017", "imocha-300034"], moments, strict=True)]
    sim.add_completion(other.email, "imocha-300000", moments[2])
    ratings = [sim.add_skill_rating(learner.email, skill, 5, rated_at=moment)["id"]
               for skill, moment in zip(["Python", "SQL", "Go"], moments, strict=True)]
    sim.add_skill_rating(other.email, "Python", 3, rated_at=moments[2])

    for path, expected in ((f"/api/v2/users/{user_id}/completions", mine),
                           (f"/api/v2/users/{user_id}/skill-ratings", ratings)):
        whole = session.get(f"{base}{path}")
        assert whole.status_code == 200 and [item["id"] for item in whole.json()["data"]] == expected
        page = session.get(f"{base}{path}", params={"limit": 2}).json()
        assert [item["id"] for item in page["data"]] == expected[:2]
        assert page["links"]["next"].startswith(f"{base}{path}?limit=2&next=")
        rest = session.get(page["links"]["next"]).json()
        assert [item["id"] for item in rest["data"]] == expected[2:] and "next" not in rest["links"]
        # A date filter still narrows the list, with the same limit.
        narrowed = session.get(f"{base}{path}", params={"filter[start_date]": "2023-07-01",
                                                        "filter[end_date]": "2023-07-07"})
        assert [item["id"] for item in narrowed.json()["data"]] == expected[1:2]
        assert session.get(f"{base}{path}", params={"filter[start_date]": "2023-07-01",
                                                    "filter[end_date]": "2023-07-08"}).status_code == 400


# ---------------------------------------------------------------------------------------------------------
# Rolling-minute counter and the token endpoint
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("window", "most"), [("fixed", 5), ("sliding", 3)])
def test_max_requests_in_any_rolling_minute(sim_server, window, most):
    clock = FakeClock()
    sim, base = sim_server(rate_limit_per_minute=3, rate_window=window, clock=clock)
    session = api(base, get_token(base))
    statuses = []
    for step, calls in ((0, 1), (58, 2), (2, 3)):  # 1 call at t=0, 2 at t=58, 3 at t=60
        clock.advance(step)
        statuses += [session.get(f"{base}/api/v2/providers").status_code for _ in range(calls)]
    if window == "fixed":  # the window opened at t=0 resets at t=60: 5 accepted within [58, 118)
        assert statuses == [200, 200, 200, 200, 200, 200]
    else:  # only the t=0 call has left the rolling minute at t=60
        assert statuses == [200, 200, 200, 200, 429, 429]
    assert sim.max_requests_in_any_minute(DEFAULT_CLIENT_ID) == most
    over_http = requests.get(f"{base}/_sandbox/rate-limit/max-in-any-minute/{DEFAULT_CLIENT_ID}").json()
    assert over_http == {"client_id": DEFAULT_CLIENT_ID, "max_requests_in_any_minute": most}
    assert sim.max_requests_in_any_minute(DEFAULT_CLIENT_ID, since=clock.now) == (3 if window == "fixed" else 1)
    assert sim.max_requests_in_any_minute(ORG_ID) == 0
    sim.reset_rate_limits()
    assert sim.max_requests_in_any_minute(DEFAULT_CLIENT_ID) == most  # history outlives a budget reset
    # Requests exactly 60 s apart never share a minute.
    clock.advance(120)
    org = api(base, get_token(base, ORG_ID, ORG_SECRET, ALL_SCOPES))
    for _ in range(3):
        assert org.get(f"{base}/api/v2/providers").status_code == 200
        clock.advance(60)
    assert sim.max_requests_in_any_minute(ORG_ID) == 1


def test_token_requests_count_against_the_limit_only_when_configured(sim_server):
    clock = FakeClock()
    sim, base = sim_server(rate_limit_per_minute=3, rate_window="sliding", clock=clock)
    form = {"grant_type": "client_credentials", "client_id": DEFAULT_CLIENT_ID,
            "client_secret": DEFAULT_CLIENT_SECRET, "scope": "providers:read"}
    free = requests.post(f"{base}/oauth/token", data=form)
    assert free.status_code == 200 and "X-Rate-Limit-Remaining" not in free.headers
    session = api(base, free.json()["access_token"])
    assert [session.get(f"{base}/api/v2/providers").status_code for _ in range(3)] == [200, 200, 200]
    assert sim.max_requests_in_any_minute(DEFAULT_CLIENT_ID) == 3  # the token call was not counted

    clock.advance(60)
    assert requests.put(f"{base}/_sandbox/settings", json={"token_requests_count": True}).status_code == 200
    counted = requests.post(f"{base}/oauth/token", data=form)
    assert counted.status_code == 200 and counted.headers["X-Rate-Limit-Remaining"] == "2"
    wrong_secret = requests.post(f"{base}/oauth/token", data={**form, "client_secret": "wrong"})
    assert wrong_secret.status_code == 401 and wrong_secret.headers["X-Rate-Limit-Remaining"] == "1"
    assert session.get(f"{base}/api/v2/providers").status_code == 200
    refused = requests.post(f"{base}/oauth/token", data=form)
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "60"
    assert error_of(refused)["detail"] == "Maximum 3 requests allowed per 1m."
    assert session.get(f"{base}/api/v2/providers").status_code == 429
    assert sim.max_requests_in_any_minute(DEFAULT_CLIENT_ID) == 3
    # An unknown client id is charged to nobody.
    assert requests.post(f"{base}/oauth/token", data={**form, "client_id": "nobody"}).status_code == 401
    # Faults on the token path carry the headers only while token requests count.
    requests.put(f"{base}/_sandbox/faults", json={"error_5xx_next": 1, "path_prefix": "/oauth"})
    faulted = requests.post(f"{base}/oauth/token", data=form)
    assert faulted.status_code == 503 and faulted.headers["X-Rate-Limit-Remaining"] == "0"
    sim.configure(token_requests_count=False)
    requests.put(f"{base}/_sandbox/faults", json={"rate_429_next": 1, "path_prefix": "/oauth"})
    faulted = requests.post(f"{base}/oauth/token", data=form)
    assert faulted.status_code == 429 and faulted.headers["Retry-After"] == "1"
    assert "X-Rate-Limit-Remaining" not in faulted.headers

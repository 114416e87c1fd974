"""The Degreed API v2 simulator, exercised over real HTTP on loopback.

Each test starts its own simulator (``sim_server``) so settings and state never leak between tests.
Tests that are not about the rate limit raise it out of the way.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
import requests

from imocha_pipeline.sandbox.degreed_sim import (
    DEFAULT_CLIENT_ID,
    DEFAULT_CLIENT_SECRET,
    ApiClientSpec,
    DegreedSimulator,
    format_degreed_timestamp,
    parse_timestamp,
)
from imocha_pipeline.sandbox.seed import generate_world
from imocha_pipeline.sandbox.server import ServerThread
from imocha_pipeline.settings import DEGREED_REQUIRED_SCOPES

ALL_SCOPES = frozenset(DEGREED_REQUIRED_SCOPES) | {"users:write"}
ORG_ID, ORG_SECRET = "org-admin", "org-secret-1234"
READER_ID, READER_SECRET = "content-reader", "reader-secret-1234"
JSON = {"Content-Type": "application/json"}


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
    attrs = {"external_id": external_id, "title": "Python Fundamentals", "url": "https://imocha.example/t/1",
             **extra}
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

    assert listed("2024-05-01", "2024-05-08") == ["2024-05-01", "2024-05-03", "2024-05-05", "2024-05-08"]
    assert listed("2024-05-06", "2024-05-12") == ["2024-05-08", "2024-05-12"]  # both ends inclusive
    too_long = session.get(f"{base}/api/v2/completions",
                           params={"filter[start_date]": "2024-05-01", "filter[end_date]": "2024-05-09"})
    assert too_long.status_code == 400 and "7 days" in error_of(too_long)["detail"]
    bad_format = session.get(f"{base}/api/v2/completions", params={"filter[start_date]": "05/01/2024"})
    assert bad_format.status_code == 400
    # The filter can apply to added-at instead: everything was added "today".
    sim.configure(completion_date_field="added-at")
    today = datetime.now(UTC).date()
    assert len(listed((today - timedelta(days=1)).isoformat(), today.isoformat())) == 5
    assert listed("2024-05-01", "2024-05-08") == []


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
    assert parse_timestamp("2021-10-19T10:01:40.2467123") == moment
    assert parse_timestamp("2021-10-19T12:01:40+02:00") == moment.replace(microsecond=0)
    with pytest.raises(ValueError):
        parse_timestamp("yesterday")

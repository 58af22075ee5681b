"""/v1/Services over raw HTTP: shapes, defaults, validation, paging and account scoping."""

from __future__ import annotations

import re

import httpx

from tests.helpers import ACCOUNT_SID, ON_EVERY_BACKEND, Backend

DATE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")

pytestmark = ON_EVERY_BACKEND


async def test_create_service_has_twilio_defaults_and_links(http: httpx.AsyncClient) -> None:
    r = await http.post("/v1/Services", data={"FriendlyName": "hello"})
    assert r.status_code == 201
    s = r.json()
    assert re.match(r"^IS[0-9a-f]{32}$", s["sid"])
    assert s["account_sid"] == ACCOUNT_SID
    assert s["friendly_name"] == "hello"
    assert s["unique_name"] is None and s["webhook_url"] is None
    assert s["acl_enabled"] is False and s["webhooks_from_rest_enabled"] is False
    assert s["reachability_webhooks_enabled"] is False and s["reachability_debouncing_enabled"] is False
    assert s["reachability_debouncing_window"] == 5000
    assert DATE.match(s["date_created"]) and DATE.match(s["date_updated"])
    assert s["url"] == f"{http.base_url}/v1/Services/{s['sid']}"
    assert set(s["links"]) == {"documents", "lists", "maps", "streams"}
    assert s["links"]["documents"] == s["url"] + "/Documents"


async def test_update_service_changes_only_given_fields(http: httpx.AsyncClient, service: str) -> None:
    r = await http.post(
        f"/v1/Services/{service}",
        data={"AclEnabled": "true", "WebhookUrl": "https://example.com/hook", "ReachabilityDebouncingWindow": "3000"},
    )
    assert r.status_code == 200
    s = r.json()
    assert s["acl_enabled"] is True and s["webhook_url"] == "https://example.com/hook"
    assert s["reachability_debouncing_window"] == 3000 and s["friendly_name"] == "test"
    assert (await http.get(f"/v1/Services/{service}")).json()["acl_enabled"] is True


async def test_invalid_service_parameters_are_rejected_with_twilio_codes(http: httpx.AsyncClient, service: str) -> None:
    cases = [
        ({"WebhookUrl": "ftp://x"}, 54051),
        ({"FriendlyName": "x" * 256}, 54053),
        ({"AclEnabled": "maybe"}, 20001),
        ({"ReachabilityDebouncingWindow": "10"}, 54052),
    ]
    for body, code in cases:
        r = await http.post(f"/v1/Services/{service}", data=body)
        assert r.status_code == 400, body
        assert r.json()["code"] == code
        assert set(r.json()) == {"code", "message", "more_info", "status"}
    assert (await http.get(f"/v1/Services/{service}")).json()["webhook_url"] is None


async def test_delete_service_removes_it_and_its_documents(http: httpx.AsyncClient, service: str) -> None:
    d = await http.post(f"/v1/Services/{service}/Documents", data={"UniqueName": "doc"})
    assert d.status_code == 201
    assert (await http.delete(f"/v1/Services/{service}")).status_code == 204
    assert (await http.get(f"/v1/Services/{service}")).status_code == 404
    r = await http.get(f"/v1/Services/{service}/Documents/doc")
    assert r.status_code == 404 and r.json()["code"] == 20404
    r = await http.post(f"/v1/Services/{service}/Documents", data={"UniqueName": "late"})
    assert r.status_code == 404


async def test_list_services_pages_with_absolute_urls(http: httpx.AsyncClient) -> None:
    created = {(await http.post("/v1/Services", data={"FriendlyName": f"p{i}"})).json()["sid"] for i in range(5)}
    seen: list[str] = []
    url: str | None = "/v1/Services?PageSize=2"
    pages = 0
    while url:
        r = await http.get(url)
        assert r.status_code == 200
        body = r.json()
        assert body["meta"]["key"] == "services" and body["meta"]["page_size"] == 2
        assert body["meta"]["first_page_url"].startswith(str(http.base_url))
        seen += [s["sid"] for s in body["services"]]
        url = body["meta"]["next_page_url"]
        pages += 1
    assert pages >= 3
    assert created <= set(seen) and len(seen) == len(set(seen))


async def test_wrong_credentials_get_401_20003(server) -> None:
    async with httpx.AsyncClient(base_url=server.base_url) as c:
        for auth in [None, (ACCOUNT_SID, "wrong"), ("SK" + "0" * 32, "nope"), ("bob", "x")]:
            r = await c.get("/v1/Services", auth=auth)
            assert r.status_code == 401
            assert r.json()["code"] == 20003 and r.json()["status"] == 401


async def test_unknown_route_and_wrong_method_get_twilio_json(http: httpx.AsyncClient, service: str) -> None:
    r = await http.get("/v1/Nothing/here")
    assert r.status_code == 404 and r.json()["code"] == 20404
    assert r.headers["content-type"].startswith("application/json")
    r = await http.put(f"/v1/Services/{service}")
    assert r.status_code == 405 and r.json()["status"] == 405


async def test_a_405_names_every_method_the_path_allows(http: httpx.AsyncClient, service: str) -> None:
    """RFC 9110 15.5.6: a 405 carries Allow, listing the methods of every route on the path (one route
    per method in the table), and the body stays Twilio's JSON."""
    r = await http.put(f"/v1/Services/{service}")
    assert r.status_code == 405 and r.json()["code"] == 20004
    assert r.headers["allow"] == "DELETE, GET, HEAD, POST"
    r = await http.delete("/v1/Services")
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD, POST"
    r = await http.post(f"/v1/Services/{service}/Documents/ET00000000000000000000000000000000/Permissions")
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
    r = await http.get(f"/v1/Services/{service}/Streams/TO00000000000000000000000000000000/Messages")
    assert r.status_code == 405 and r.headers["allow"] == "POST" and r.json()["code"] == 20004


async def test_api_key_credentials_work_and_scope_to_their_account(backend: Backend, http: httpx.AsyncClient) -> None:
    import asyncio
    import sys

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "from app.cli import main; main()", "keys", "create", "--name", "ci",
        env={**__import__("os").environ, "REDIS_URL": backend.redis_url, **backend.env,
             "TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": "test-auth-token-0123456789abcdef"},
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert proc.returncode == 0
    lines = dict(line.split(":", 1) for line in out.decode().splitlines() if line.startswith(("sid", "secret")))
    sid, secret = lines["sid"].strip(), lines["secret"].strip()
    assert sid.startswith("SK") and len(sid) == 34
    async with httpx.AsyncClient(base_url=backend.server.base_url, auth=(sid, secret)) as c:
        r = await c.post("/v1/Services", data={"FriendlyName": "via key"})
        assert r.status_code == 201 and r.json()["account_sid"] == ACCOUNT_SID
        assert (await c.get("/v1/Services", auth=(sid, "bad"))).status_code == 401


async def test_urls_follow_the_host_and_a_trusted_proxys_scheme(http: httpx.AsyncClient, service: str) -> None:
    """Each answer's url names the address the client used (Host), and https behind a TLS-terminating
    proxy on loopback that says so (uvicorn's default FORWARDED_ALLOW_IPS)."""
    plain = (await http.get(f"/v1/Services/{service}")).json()["url"]
    assert plain == f"{str(http.base_url).rstrip('/')}/v1/Services/{service}"
    named = await http.get(f"/v1/Services/{service}", headers={"Host": "sync.example:8443"})
    assert named.json()["url"] == f"http://sync.example:8443/v1/Services/{service}"
    proxied = await http.get(f"/v1/Services/{service}", headers={"X-Forwarded-Proto": "https", "Host": "sync.example"})
    assert proxied.json()["url"] == f"https://sync.example/v1/Services/{service}"

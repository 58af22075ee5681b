"""Document, List and Map permissions over raw HTTP; every test runs for the three object kinds."""

from __future__ import annotations

from urllib.parse import quote

import httpx
import pytest

from tests.helpers import ON_EVERY_BACKEND
from tests.sync_items import PLURAL

pytestmark = [ON_EVERY_BACKEND, pytest.mark.parametrize("kind", ["document", "list", "map"])]
ALL = {"Read": "true", "Write": "true", "Manage": "true"}


async def _object(http: httpx.AsyncClient, service: str, kind: str, name: str = "obj") -> str:
    r = await http.post(f"/v1/Services/{service}/{PLURAL[kind]}", data={"UniqueName": name})
    assert r.status_code == 201, r.text
    return str(r.json()["sid"])


async def test_update_then_fetch_returns_the_permission(http: httpx.AsyncClient, service: str, kind: str) -> None:
    sid = await _object(http, service, kind)
    url = f"/v1/Services/{service}/{PLURAL[kind]}/{sid}/Permissions/alice"
    r = await http.post(url, data={"Read": "true", "Write": "false", "Manage": "False"})
    assert r.status_code == 200
    expected = {
        "account_sid": r.json()["account_sid"],
        "service_sid": service,
        f"{kind}_sid": sid,
        "identity": "alice",
        "read": True,
        "write": False,
        "manage": False,
        "url": f"{http.base_url}{url}",
    }
    assert r.json() == expected and expected["account_sid"].startswith("AC")
    assert (await http.get(url)).json() == expected
    again = await http.post(url, data={"Read": "false", "Write": "true", "Manage": "true"})
    assert (again.json()["read"], again.json()["write"], again.json()["manage"]) == (False, True, True)


async def test_object_is_addressed_by_unique_name_and_answers_with_its_sid(
    http: httpx.AsyncClient, service: str, kind: str
) -> None:
    sid = await _object(http, service, kind, "shared")
    r = await http.post(f"/v1/Services/{service}/{PLURAL[kind]}/shared/Permissions/bob", data=ALL)
    assert r.status_code == 200 and r.json()[f"{kind}_sid"] == sid
    assert r.json()["url"] == f"{http.base_url}/v1/Services/{service}/{PLURAL[kind]}/{sid}/Permissions/bob"
    assert (await http.get(f"/v1/Services/{service}/{PLURAL[kind]}/{sid}/Permissions/bob")).status_code == 200


@pytest.mark.parametrize("missing", ["Read", "Write", "Manage"])
async def test_update_requires_read_write_and_manage(
    http: httpx.AsyncClient, service: str, kind: str, missing: str
) -> None:
    sid = await _object(http, service, kind)
    url = f"/v1/Services/{service}/{PLURAL[kind]}/{sid}/Permissions/carol"
    r = await http.post(url, data={k: v for k, v in ALL.items() if k != missing})
    assert r.status_code == 400 and r.json()["code"] == 20001 and missing in r.json()["message"]
    assert (await http.get(url)).status_code == 404


@pytest.mark.parametrize("identity", ["user@example.com", "with space", "ünï", "a+b"])
async def test_identity_with_special_characters_round_trips(
    http: httpx.AsyncClient, service: str, kind: str, identity: str
) -> None:
    sid = await _object(http, service, kind)
    url = f"/v1/Services/{service}/{PLURAL[kind]}/{sid}/Permissions/{quote(identity, safe='')}"
    r = await http.post(url, data=ALL)
    assert r.status_code == 200 and r.json()["identity"] == identity and r.json()["url"] == f"{http.base_url}{url}"
    assert (await http.get(url)).json()["identity"] == identity


async def test_identity_longer_than_256_characters_is_400_54351(
    http: httpx.AsyncClient, service: str, kind: str
) -> None:
    sid = await _object(http, service, kind)
    r = await http.post(f"/v1/Services/{service}/{PLURAL[kind]}/{sid}/Permissions/{'i' * 257}", data=ALL)
    assert r.status_code == 400 and r.json()["code"] == 54351
    ok = await http.post(f"/v1/Services/{service}/{PLURAL[kind]}/{sid}/Permissions/{'i' * 256}", data=ALL)
    assert ok.status_code == 200


async def test_never_set_identity_is_404_54354(http: httpx.AsyncClient, service: str, kind: str) -> None:
    sid = await _object(http, service, kind)
    url = f"/v1/Services/{service}/{PLURAL[kind]}/{sid}/Permissions/nobody"
    for r in (await http.get(url), await http.delete(url)):
        assert r.status_code == 404 and r.json()["code"] == 54354


async def test_permission_of_a_missing_object_is_404_20404(http: httpx.AsyncClient, service: str, kind: str) -> None:
    r = await http.post(f"/v1/Services/{service}/{PLURAL[kind]}/nosuch/Permissions/dave", data=ALL)
    assert r.status_code == 404 and r.json()["code"] == 20404


async def test_delete_removes_the_permission(http: httpx.AsyncClient, service: str, kind: str) -> None:
    sid = await _object(http, service, kind)
    url = f"/v1/Services/{service}/{PLURAL[kind]}/{sid}/Permissions/erin"
    await http.post(url, data=ALL)
    assert (await http.delete(url)).status_code == 204
    assert (await http.get(url)).json()["code"] == 54354


async def test_permissions_are_read_in_pages_by_identity(http: httpx.AsyncClient, service: str, kind: str) -> None:
    sid = await _object(http, service, kind)
    base = f"/v1/Services/{service}/{PLURAL[kind]}/{sid}/Permissions"
    identities = ["zoe", "amy", "Bob", "kim", "lee"]
    for who in identities:
        await http.post(f"{base}/{who}", data=ALL)
    url: str | None = f"{base}?PageSize=2"
    pages: list[list[str]] = []
    while url:
        body = (await http.get(url)).json()
        assert body["meta"]["key"] == "permissions"
        pages.append([p["identity"] for p in body["permissions"]])
        url = body["meta"]["next_page_url"]
    assert pages == [["Bob", "amy"], ["kim", "lee"], ["zoe"]]


async def test_deleting_the_object_removes_its_permissions(http: httpx.AsyncClient, service: str, kind: str) -> None:
    await _object(http, service, kind, "doomed")
    base = f"/v1/Services/{service}/{PLURAL[kind]}/doomed"
    await http.post(f"{base}/Permissions/frank", data=ALL)
    assert (await http.delete(base)).status_code == 204
    assert (await http.get(f"{base}/Permissions/frank")).json()["code"] == 20404
    await _object(http, service, kind, "doomed")
    assert (await http.get(f"{base}/Permissions")).json()["permissions"] == []
    assert (await http.get(f"{base}/Permissions/frank")).json()["code"] == 54354

"""Small hostile inputs (issue 9, item 6): Data nested 1,000 deep, a lone surrogate in Data, a List
item index of thousands of digits, a PageToken nested deep, and twilsock frames nested deep. Each is
Twilio's 400 with its code, over REST and over the SDK tunnel, never a 500; REST keeps the
keep-alive connection (the same client's next request succeeds)."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import httpx
import pytest

from realtime import twilsock
from realtime.client import SyncClient
from tests.helpers import ON_EVERY_BACKEND, Endpoint
from tests.sdk import token

pytestmark = ON_EVERY_BACKEND

DEEP = "[" * 1000 + "]" * 1000
DEEP_DATA = '{"a":' + DEEP + "}"  # a 2 KB body
SURROGATE_DATA = '{"a":"\\ud800"}'  # a lone surrogate escape: valid JSON, not encodable text
HUGE_INDEX = "1" * 5000  # int() refuses more than 4,300 digits
DEEP_TOKEN = base64.urlsafe_b64encode(b"[" * 1000 + b"]" * 1000).decode()


@pytest.fixture
async def client(server: Endpoint, api_key: Any, service: str) -> Any:
    async with await SyncClient.connect(server.ws_url, token(api_key.sid, api_key.secret, service, "alice")) as c:
        yield c


async def refused(http: httpx.AsyncClient, answer: httpx.Response) -> tuple[int, int]:
    """(status, code) of ``answer``, after checking that the connection still serves a request."""
    assert (await http.get("/v1/Services")).status_code == 200
    return answer.status_code, answer.json()["code"]


@pytest.mark.parametrize("raw", [DEEP_DATA, SURROGATE_DATA])
async def test_hostile_data_over_rest_is_400_54008(http: httpx.AsyncClient, service: str, raw: str) -> None:
    base = f"/v1/Services/{service}"
    assert await refused(http, await http.post(f"{base}/Documents", data={"Data": raw})) == (400, 54008)
    assert (await http.post(f"{base}/Lists", data={"UniqueName": "l"})).status_code == 201
    assert await refused(http, await http.post(f"{base}/Lists/l/Items", data={"Data": raw})) == (400, 54008)
    assert (await http.post(f"{base}/Maps", data={"UniqueName": "m"})).status_code == 201
    answer = await http.post(f"{base}/Maps/m/Items", data={"Key": "k", "Data": raw})
    assert await refused(http, answer) == (400, 54008)
    assert (await http.post(f"{base}/Streams", data={"UniqueName": "s"})).status_code == 201
    assert await refused(http, await http.post(f"{base}/Streams/s/Messages", data={"Data": raw})) == (400, 54008)


async def test_huge_list_index_and_deep_page_token_over_rest(http: httpx.AsyncClient, service: str) -> None:
    base = f"/v1/Services/{service}/Lists"
    assert (await http.post(base, data={"UniqueName": "l"})).status_code == 201
    assert (await http.post(f"{base}/l/Items", data={"Data": "{}"})).status_code == 201
    assert await refused(http, await http.get(f"{base}/l/Items/{HUGE_INDEX}")) == (400, 54458)
    answer = await http.post(f"{base}/l/Items/{HUGE_INDEX}", data={"Data": "{}"})
    assert await refused(http, answer) == (400, 54458)
    assert await refused(http, await http.delete(f"{base}/l/Items/{HUGE_INDEX}")) == (400, 54458)
    assert await refused(http, await http.get(f"{base}/l/Items", params={"From": HUGE_INDEX})) == (400, 54458)
    assert await refused(http, await http.get(f"{base}/l/Items", params={"PageToken": DEEP_TOKEN})) == (400, 54453)
    assert (await http.get(f"{base}/l/Items/{'0' * 5000}")).json()["index"] == 0  # leading zeros still name it


async def test_huge_numbers_in_other_parameters_are_their_400s(http: httpx.AsyncClient, service: str) -> None:
    base = f"/v1/Services/{service}"
    answer = await http.post(f"{base}/Documents", data={"Ttl": HUGE_INDEX})
    assert await refused(http, answer) == (400, 54011)
    answer = await http.post(base, data={"ReachabilityDebouncingWindow": HUGE_INDEX})
    assert await refused(http, answer) == (400, 54052)
    assert await refused(http, await http.get(f"{base}/Documents", params={"PageSize": HUGE_INDEX})) == (400, 54454)
    assert await refused(http, await http.get(f"{base}/Documents", params={"Page": HUGE_INDEX})) == (400, 20001)


async def test_huge_page_size_over_the_sdk_tunnel_is_400_54454(client: SyncClient) -> None:
    lst = await client.open("list", "sized")
    status, answer = await client.request("GET", lst["links"]["items"], params={"PageSize": HUGE_INDEX})
    assert (status, answer["code"]) == (400, 54454)


async def test_hostile_data_over_the_sdk_tunnel_is_400_54008(client: SyncClient) -> None:
    for raw in (DEEP_DATA, SURROGATE_DATA):
        body = ('{"unique_name":"d","data":' + raw + "}").encode()
        status, answer = await client.request("POST", "/v3/Documents", body)
        assert (status, answer["code"]) == (400, 54008)
        lst = await client.open("list", "l")
        status, answer = await client.request("POST", lst["links"]["items"], ('{"data":' + raw + "}").encode())
        assert (status, answer["code"]) == (400, 54008)
    status, answer = await client.request("POST", "/v3/Documents", ("[" * 100_000).encode())  # not even JSON
    assert status < 500
    assert (await client.request("GET", "/v3/Documents/d"))[0] == 404  # nothing was created


async def test_huge_list_index_and_deep_page_token_over_the_sdk_tunnel(client: SyncClient) -> None:
    lst = await client.open("list", "l")
    items = lst["links"]["items"]
    assert (await client.request("POST", items, {"data": {}}))[0] == 201
    for method in ("GET", "POST", "DELETE"):
        status, answer = await client.request(method, f"{items}/{HUGE_INDEX}", {"data": {}})
        assert (status, answer["code"]) == (400, 54458)
    status, answer = await client.request("GET", items, params={"From": HUGE_INDEX})
    assert (status, answer["code"]) == (400, 54458)
    status, answer = await client.request("GET", items, params={"PageToken": DEEP_TOKEN})
    assert (status, answer["code"]) == (400, 54453)


async def test_deeply_nested_twilsock_header_closes_with_406(client: SyncClient) -> None:
    head = b'{"method":"message","id":"TM1","x":' + DEEP.encode() + b"}"
    await client.ws.send(twilsock.MAGIC + str(len(head)).encode() + b"\r\n" + head + b"\r\n")
    closed = await asyncio.wait_for(client.control.get(), 10)
    assert closed["method"] == "close" and closed["status"]["code"] == 406

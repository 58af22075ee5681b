"""Account scoping: one account can never see or touch another's data."""

from __future__ import annotations

import httpx

from storage import accounts
from tests.helpers import ACCOUNT_SID, AUTH_TOKEN, ON_EVERY_BACKEND

pytestmark = ON_EVERY_BACKEND


async def test_another_account_cannot_read_list_or_change_data(server, store, http, service) -> None:
    other, token = "AC" + "f" * 32, "other-token"
    await accounts.ensure_account(store, other, token)
    await http.post(f"/v1/Services/{service}/Documents", data={"UniqueName": "mine", "Data": '{"x": 1}'})
    async with httpx.AsyncClient(base_url=server.base_url, auth=(other, token)) as c:
        assert (await c.get(f"/v1/Services/{service}")).status_code == 404
        assert (await c.get(f"/v1/Services/{service}/Documents/mine")).status_code == 404
        assert (await c.post(f"/v1/Services/{service}/Documents/mine", data={"Data": "{}"})).status_code == 404
        assert (await c.delete(f"/v1/Services/{service}")).status_code == 404
        listed = (await c.get("/v1/Services")).json()["services"]
        assert service not in {s["sid"] for s in listed}
    r = await http.get(f"/v1/Services/{service}/Documents/mine")
    assert r.status_code == 200 and r.json()["data"] == {"x": 1}
    assert (ACCOUNT_SID, AUTH_TOKEN) != (other, token)

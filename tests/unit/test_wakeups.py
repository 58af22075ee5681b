"""realtime/webhooks/wakeups.py: which shard channels a process holding some buckets subscribes."""

from __future__ import annotations

from realtime.webhooks.wakeups import wanted_channels
from storage import keys

SIDS = [f"IS{i:032x}" for i in range(64)]


def test_the_buckets_own_channels_and_their_services_only() -> None:
    held = {0, 5}
    wanted = wanted_channels(held, SIDS)
    mine = [s for s in SIDS if keys.bucket(s) in held]
    assert mine and len(mine) < len(SIDS)
    assert wanted == {keys.webhook_joined_channel(0), keys.webhook_joined_channel(5)} | {
        keys.webhook_wake_channel(s) for s in mine
    }


def test_no_bucket_no_channel() -> None:
    assert wanted_channels(set(), SIDS) == set()


def test_a_service_channel_shares_its_service_slot_and_a_bucket_channel_its_bucket_slot() -> None:
    sid = SIDS[0]
    assert keys.wake_channel_service(keys.webhook_wake_channel(sid)) == sid
    assert keys.webhook_wake_channel(sid).startswith(keys.service_prefix(sid))
    assert keys.webhook_joined_channel(3).startswith("sync:{w3}:")

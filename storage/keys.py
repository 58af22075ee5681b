"""Every Redis key and channel name the project uses, in one place.

Layout (``{…}`` is the Redis Cluster hash tag, so each group lives in one slot):

Account slot ``{AC…}`` — small, rarely written:
    sync:{AC}:acct              hash   auth_token, date_created
    sync:{AC}:keys              hash   SK… -> msgpack {secret, friendly_name, date_created}
    sync:{AC}:svc:{IS}          hash   the Service record (fields as in the REST resource)
    sync:{AC}:services          zset   service SIDs by creation sequence (paging)
    sync:{AC}:seq               string creation sequence counter
    sync:{AC}:purge             list   Services deleted but not yet purged (resumable)

Service slot ``{IS…}`` — everything inside one Service, so that every write script
(object + unique-name index + listing index + expiry schedule + event log) touches one slot:
    sync:{IS}:o:{SID}           hash   one Document/List/Map/Stream (see storage/scripts/lib.lua)
    sync:{IS}:n:{type}          hash   unique_name -> SID, per object type
    sync:{IS}:ix:{type}         zset   SIDs of that type by creation sequence (paging)
    sync:{IS}:seq               string creation sequence counter
    sync:{IS}:it:{SID}          hash   items of a List (field = index) or Map (field = key) -> msgpack
    sync:{IS}:io:{SID}          zset   item order: score = index (lists) or 0 + member = key (maps, by lex)
    sync:{IS}:pm:{SID}          hash   identity -> permission bits "rwm"
    sync:{IS}:ev:{SID}          stream the object's change events, entry id 0-(event id + 1)
    sync:{IS}:exp               zset   expiry schedule: member "SID" or "SID\\x00itemkey", score = ms
    sync:{IS}:gone              string tombstone of a deleted Service: late writes fail

Global (one slot each, tiny):
    sync:accounts               set    account SIDs
    sync:keyidx                 hash   SK… -> AC… (find the account of an API key)
    sync:default-account        string the account created on first start
    sync:due                    zset   IS… -> earliest pending expiry (ms); the sweeper's work list

Why one tag per Service and not per object: a unique name, the listing index and the object must
change in one atomic step, and they span objects. Tagging by Service keeps every write a single
script on a single slot; a Cluster spreads Services (tenants) across shards. One Service is
bounded by one shard (tens of thousands of writes/s), far above Twilio's per-object limits.
"""

from __future__ import annotations

PREFIX = "sync:"


def account(ac: str) -> str:
    return f"sync:{{{ac}}}:acct"


def account_keys(ac: str) -> str:
    return f"sync:{{{ac}}}:keys"


def service(ac: str, is_: str) -> str:
    return f"sync:{{{ac}}}:svc:{is_}"


def services_index(ac: str) -> str:
    return f"sync:{{{ac}}}:services"


def account_seq(ac: str) -> str:
    return f"sync:{{{ac}}}:seq"


def account_purge(ac: str) -> str:
    return f"sync:{{{ac}}}:purge"


def seq(is_: str) -> str:
    return f"sync:{{{is_}}}:seq"


def service_prefix(is_: str) -> str:
    """Prefix of every key inside one Service; Lua scripts build their keys from it."""
    return f"sync:{{{is_}}}:"


def obj(is_: str, sid: str) -> str:
    return f"sync:{{{is_}}}:o:{sid}"


def names(is_: str, kind: str) -> str:
    return f"sync:{{{is_}}}:n:{kind}"


def index(is_: str, kind: str) -> str:
    return f"sync:{{{is_}}}:ix:{kind}"


def items(is_: str, sid: str) -> str:
    return f"sync:{{{is_}}}:it:{sid}"


def item_order(is_: str, sid: str) -> str:
    return f"sync:{{{is_}}}:io:{sid}"


def permissions(is_: str, sid: str) -> str:
    return f"sync:{{{is_}}}:pm:{sid}"


def events(is_: str, sid: str) -> str:
    return f"sync:{{{is_}}}:ev:{sid}"


def expiry(is_: str) -> str:
    return f"sync:{{{is_}}}:exp"


def tombstone(is_: str) -> str:
    return f"sync:{{{is_}}}:gone"


def wake_channel(is_: str) -> str:
    """Pub/sub channel a write script publishes to; realtime only uses it as a wake-up."""
    return f"sync:{{{is_}}}:wake"


ACCOUNTS = "sync:accounts"
KEY_INDEX = "sync:keyidx"
DEFAULT_ACCOUNT = "sync:default-account"
DUE = "sync:due"

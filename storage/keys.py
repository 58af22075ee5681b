"""Every Redis key and channel name the project uses, in one place.

Layout (``{…}`` is the Redis Cluster hash tag, so each group lives in one slot):

Account slot ``{AC…}`` — small, rarely written:
    sync:{AC}:acct              hash   auth_token, date_created
    sync:{AC}:keys              hash   SK… -> msgpack {secret, friendly_name, date_created}
    sync:{AC}:svc:{IS}          hash   the Service record (fields as in the REST resource)
    sync:{AC}:services          zset   service SIDs by creation sequence (paging)
    sync:{AC}:seq               string creation sequence counter
    sync:{AC}:purge             list   Services deleted but not yet purged (resumable)
    sync:{AC}:ik:{key}          hash   Idempotency-Key record of an account-level write (storage/idempotency.py)

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
    sync:{IS}:hv:{SID}          hash   revision records of a Document or of a List/Map's items (storage/history.py)
    sync:{IS}:hr:{SID}          zset   retained revisions of a Document
    sync:{IS}:hr:{SID}:{key}    zset   retained revisions of one List/Map item (key = index or map key)
    sync:{IS}:hk:{SID}          zset   item keys of a List/Map that have history, scored like io:
    sync:{IS}:exp               zset   expiry schedule: member "SID" or "SID\\x00itemkey", score = ms
    sync:{IS}:gone              string tombstone of a deleted Service: late writes fail
    sync:{IS}:fence             never written: every write script declares it (``fence``)
    sync:{IS}:wh                hash   webhook config copy: url, rest, ac, re, db, dw, v, fs (failing since)
    sync:{IS}:whq               stream webhooks to deliver (consumer group "wh"), XADDed by emit() in lib.lua
    sync:{IS}:whdl              stream dead letters: deliveries that exhausted their retries
    sync:{IS}:whl               string delivery lease: the one worker delivering this Service now
    sync:{IS}:whw               channel shard channel (7+): queue_webhook() SPUBLISHes the IS… of each
                                       queued webhook, heard by the process holding its bucket only
    sync:{IS}:rc:{identity}     set    connected endpoint ids of one identity (storage/reachability.py)
    sync:{IS}:ri                set    identities that have such a set (so a Service delete finds them)
    sync:{IS}:rd                zset   identity -> when its debounced endpoint_disconnected is due (ms)
    sync:{IS}:rde               hash   identity -> its last endpoint id (for that deferred webhook)
    sync:{IS}:ik:{AC}:{key}     hash   Idempotency-Key record of a write in this Service, by the account that
                                       sent it; the write script records it (storage/idempotency.py)
    sync:{IS}:iks:{id}:{identity} hash the same for a write of the SDK, by its Twilio-Request-Id (realtime/retries.py)

Global (one slot each, tiny):
    sync:accounts               set    account SIDs
    sync:keyidx                 hash   SK… -> AC… (find the account of an API key)
    sync:default-account        string the account created on first start
    sync:store-id               string random id of this data store, made once (realtime offline storage ids)
    sync:webhooks:wake          channel emit() publishes the IS… of each queued webhook (a wake-up only;
                                       servers without sharded pub/sub, < 7; else ``whw`` below)

Work lists, in BUCKETS buckets ``{w<b>}`` (b = crc32 of the Service SID mod BUCKETS), each bucket in
its own slot, so that no one slot takes every process's every tick; a process works only the
buckets it holds a lease for (storage/buckets.py):
    sync:{w<b>}:due             zset   IS… -> earliest pending expiry (ms); the sweeper's work list
    sync:{w<b>}:webhooks        set    IS… that have (had) a webhook URL: the delivery worker's work list
    sync:{w<b>}:failed          set    IS… with dead letters (`sync-server webhooks failed`)
    sync:{w<b>}:reach           zset   IS… -> earliest debounced endpoint_disconnected (ms)
    sync:{w<b>}:lease:{role}    string the process working this bucket now for ``role`` (sweep, webhooks)
    sync:{w<b>}:whnew           channel shard channel (7+): a Service joined ``webhooks`` (its holder
                                       SSUBSCRIBEs that Service's ``whw``)
    sync:procs:{role}           zset   process id -> until when it is alive (ms): each one's fair share
Before buckets they were single keys (LEGACY_*: sync:due, sync:webhooks, sync:webhooks:failed,
sync:reach:due); a process moves what it finds there into the buckets at start.
    sync:invalidate             channel cached credentials / Services every process forgets (invalidation.py)

Webhooks (storage/webhooks.py explains the design): emit() in scripts/lib.lua reads the Service's
config copy ``wh`` and XADDs to ``whq`` in the same script, so the queue shares the Service's slot;
the global sets only say which Services to look at, never hold webhooks.

Why one tag per Service and not per object: a unique name, the listing index and the object must
change in one atomic step, and they span objects. Tagging by Service keeps every write a single
script on a single slot; a Cluster spreads Services (tenants) across shards. One Service is
bounded by one shard (tens of thousands of writes/s), far above Twilio's per-object limits.
"""

from __future__ import annotations

import zlib

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


def account_idempotency(ac: str, key: str) -> str:
    return f"sync:{{{ac}}}:ik:{key}"


def idempotency(is_: str, ac: str, key: str) -> str:
    """In the Service's slot, so that the write script records the key in its own atomic step."""
    return f"sync:{{{is_}}}:ik:{ac}:{key}"


def sdk_idempotency(is_: str, identity: str, request_id: str) -> str:
    return f"sync:{{{is_}}}:iks:{request_id}:{identity}"


def seq(is_: str) -> str:
    return f"sync:{{{is_}}}:seq"


def fence(is_: str) -> str:
    """A key of the Service's slot that never exists, declared by every write script (KEYS[2]).

    A write script reaches most of its keys through the Service prefix, undeclared. While its slot
    moves to another master key by key (MIGRATE), such a script could run on either side with part
    of the Service already moved. A Cluster checks only declared keys, and refuses a script whose
    declared keys are not all there while the slot moves (TRYAGAIN, or ASK then TRYAGAIN): a key that
    is never there makes that every time, so no write script runs until the slot has moved, and
    none is affected otherwise (existence is checked only for a moving slot)."""
    return f"sync:{{{is_}}}:fence"


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


def history(is_: str, sid: str, item_key: str | None = None) -> str:
    """The retained revisions of a Document (``item_key`` None) or of one List/Map item."""
    base = f"sync:{{{is_}}}:hr:{sid}"
    return base if item_key is None else f"{base}:{item_key}"


def history_records(is_: str, sid: str) -> str:
    return f"sync:{{{is_}}}:hv:{sid}"


def history_field(item_key: str | None, revision: int | str) -> str:
    """The field of one revision record in ``history_records``."""
    return str(revision) if item_key is None else f"{item_key}\x00{revision}"


def history_keys(is_: str, sid: str) -> str:
    return f"sync:{{{is_}}}:hk:{sid}"


def expiry(is_: str) -> str:
    return f"sync:{{{is_}}}:exp"


def tombstone(is_: str) -> str:
    return f"sync:{{{is_}}}:gone"


def wake_channel(is_: str) -> str:
    """Pub/sub channel a write script publishes to; realtime only uses it as a wake-up. Payloads:
    ``"<SID> <event id>"`` (an event was logged for that object; ``"<SID> <event id> <packed event>"``
    when the event is small, scripts/lib.lua ``emit``), ``"<SID> acl <identity>"`` (that
    identity's Permission on that object lost ``read`` or was deleted) and ``"* acl <0|1>"`` (the
    Service's ``acl_enabled`` was written, with its new value)."""
    return f"sync:{{{is_}}}:wake"


def wake_channel_service(channel: str) -> str:
    """The Service SID of a ``wake_channel`` name."""
    return channel.partition("{")[2].partition("}")[0]


def webhook_config(is_: str) -> str:
    return f"sync:{{{is_}}}:wh"


def webhook_queue(is_: str) -> str:
    return f"sync:{{{is_}}}:whq"


def webhook_dead(is_: str) -> str:
    return f"sync:{{{is_}}}:whdl"


def webhook_lease(is_: str) -> str:
    return f"sync:{{{is_}}}:whl"


def webhook_wake_channel(is_: str) -> str:
    """Shard channel (Redis/Valkey 7+) in the Service's slot: a webhook was queued; payload the SID.
    Also spelled out in scripts/lib.lua (scripts cannot import)."""
    return f"sync:{{{is_}}}:whw"


def endpoints(is_: str, identity: str) -> str:
    return f"sync:{{{is_}}}:rc:{identity}"


def reach_identities(is_: str) -> str:
    return f"sync:{{{is_}}}:ri"


def reach_pending(is_: str) -> str:
    return f"sync:{{{is_}}}:rd"


def reach_endpoint(is_: str) -> str:
    return f"sync:{{{is_}}}:rde"


ACCOUNTS = "sync:accounts"
KEY_INDEX = "sync:keyidx"
DEFAULT_ACCOUNT = "sync:default-account"
STORE_ID = "sync:store-id"
LEGACY_DUE = "sync:due"
LEGACY_WEBHOOK_SERVICES = "sync:webhooks"
LEGACY_WEBHOOK_FAILED = "sync:webhooks:failed"
LEGACY_REACH_DUE = "sync:reach:due"
BUCKETS = 16


def bucket(is_: str) -> int:
    """The work-list bucket of a Service: stable across processes and versions (crc32, not hash())."""
    return zlib.crc32(is_.encode()) % BUCKETS


def due(b: int) -> str:
    return f"sync:{{w{b}}}:due"


def webhook_services(b: int) -> str:
    return f"sync:{{w{b}}}:webhooks"


def webhook_failed(b: int) -> str:
    return f"sync:{{w{b}}}:failed"


def reach_due(b: int) -> str:
    return f"sync:{{w{b}}}:reach"


def bucket_lease(b: int, role: str) -> str:
    return f"sync:{{w{b}}}:lease:{role}"


def webhook_joined_channel(b: int) -> str:
    """Shard channel in the bucket's slot: payload the SID of a Service that joined ``webhook_services(b)``."""
    return f"sync:{{w{b}}}:whnew"


def processes(role: str) -> str:
    return f"sync:procs:{role}"


WEBHOOK_WAKE = "sync:webhooks:wake"  # also spelled out in scripts/lib.lua (scripts cannot import)
SHARD_PROBE = "sync:probe"  # shard channel SPUBLISHed once at connect: is sharded pub/sub there (7+)?
INVALIDATE = "sync:invalidate"  # channel: "<kind> <ids…>" a process's caches forget (storage/invalidation.py)

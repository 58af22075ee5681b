-- Shared prelude, prepended to every write script (the registry is storage/lua.py).
--
-- Calling convention for every write script (Store.run):
--   KEYS[1]  the object hash "sync:{IS}:o:SID" (routes the call to the Service's slot)
--   KEYS[2]  "sync:{IS}:fence", never written: while the slot moves, the Cluster refuses the script
--            before it runs (keys.fence), so no write sees the Service half moved
--   ARGV[1]  every argument, by name: ONE msgpack map, unpacked here into the table A.
--            Common context, filled in by Store.run:
--              A.prefix    the Service key prefix "sync:{IS}:"; every other key is prefix .. suffix, same slot
--              A.now       milliseconds since the epoch (the caller's clock)
--              A.actor     actor identity ("system" for REST)
--              A.origin    "rest" | "sdk" | "system"
--              A.endpoint  endpoint id ("" for none)
--              A.log_cap   event log cap (entries kept per object)
--              A.pub       "SPUBLISH" (Redis/Valkey 7+: the wake channel is a shard channel of the
--                          Service's slot) or "PUBLISH" (older servers); Store.sharded decides
--              A.hist_keep revisions kept per Document / item (0: history off; see history() below)
--              A.hist_age_ms  a revision superseded longer ago than this is dropped (0: no limit)
--            then the script's own arguments, listed in each script's header (A.kind, A.sid, A.ttl…).
--   A str argument arrives as a string ("" stays "": the scripts give it meanings such as "keep the
--   TTL"), an int as a number, a list as an array; an argument not passed (or None) is nil. Adding
--   an argument renumbers nothing: name it in the script's header and pass it from Python by name.
-- Scripts answer {"OK", …} or {"E", reason, what, detail?}; they check before they write,
-- so an error answer means nothing was changed.
--
-- Object hash fields: sid, t (document|list|map|stream), un (unique name or ""), c, u (ms),
-- x (expiry ms or ""), b (created_by), e (last event id), d (document data JSON), ni (next list index).
-- Item value (msgpack): d (data JSON), r (event id of last write = revision), c, u, x (ms or absent), b.

local A = cmsgpack.unpack(ARGV[1])
local P = A.prefix
local NOW = tonumber(A.now)
local ACTOR = A.actor
local ORIGIN = A.origin
local ENDPOINT = A.endpoint
local LOG_CAP = tonumber(A.log_cap)
local PUB = A.pub or 'PUBLISH'

local function hex(n)
  return string.format('%x', n)
end

-- an integer as Redis writes it (HINCRBY's digits; a Lua number argument would go as %.14g)
local function decimal(n)
  return string.format('%d', n)
end

local function err(reason, what, detail)
  return {'E', reason, what, detail or ''}
end

-- ttl argument: "" = leave as is (returns keep), "0" = never expires, N = now + N seconds
local function expiry_from(ttl, keep)
  if ttl == '' then return keep end
  local n = tonumber(ttl)
  if n == 0 then return '' end
  return tostring(NOW + n * 1000)
end

local function is_live(x)
  return x == nil or x == '' or tonumber(x) > NOW
end

local function schedule(member, x)
  if x == nil or x == '' then
    redis.call('ZREM', P .. 'exp', member)
  else
    redis.call('ZADD', P .. 'exp', x, member)
  end
end

-- Load a live object: returns the hash as a table, or nil if absent or expired.
local function load_object(sid)
  local flat = redis.call('HGETALL', P .. 'o:' .. sid)
  if #flat == 0 then return nil end
  local o = {}
  for i = 1, #flat, 2 do o[flat[i]] = flat[i + 1] end
  if not is_live(o.x) then return nil end
  return o
end

-- Queue one packed event for the Service's webhook, if it has a URL and the origin is wanted
-- (REST changes only with webhooks_from_rest_enabled). The entry keeps the URL of this moment, so a
-- later URL change applies to later events only. Off costs one HMGET. See storage/webhooks.py.
local function queue_webhook(packed)
  local wh = redis.call('HMGET', P .. 'wh', 'url', 'rest', 'ac')
  if not wh[1] or (ORIGIN == 'rest' and wh[2] ~= '1') then return end
  redis.call('XADD', P .. 'whq', '*', 'e', packed, 'u', wh[1], 'a', wh[3])
  -- the wake-up: on 7+ a shard channel of the Service's slot (keys.py webhook_wake_channel), heard
  -- on its shard by the one process holding its bucket; older servers: one global plain channel
  if PUB == 'SPUBLISH' then
    redis.call('SPUBLISH', P .. 'whw', string.sub(P, 7, -3))
  else
    redis.call('PUBLISH', 'sync:webhooks:wake', string.sub(P, 7, -3))
  end
end

-- Event types that never become webhooks: TTL-only changes and streams (Twilio sends none).
local NO_WEBHOOK = {list_updated = true, map_updated = true, stream_updated = true, stream_created = true,
                    stream_removed = true, stream_message_published = true}

-- An event packed in at most this many bytes is carried by its wake-up (keys.wake_channel), so a
-- process whose readers of the object are up to date delivers it without reading the log; larger
-- ones (up to 16 KB of data) are read from the log, so a wake-up never costs every process
-- watching the Service more than this.
local WAKE_INLINE_MAX = 2048

-- Append one change event to the object's log (and the webhook queue), in this same atomic step,
-- and wake readers. ev: table of event fields; id and common fields are filled in here.
-- quiet: queue no webhook (object_rebase.lua's restatements: nobody changed anything).
local function emit(sid, eid, ev, quiet)
  ev.id = eid
  ev.sid = sid
  ev.ms = NOW
  ev.b = ACTOR
  ev.o = ORIGIN
  if ENDPOINT ~= '' then ev.ep = ENDPOINT end
  local key = P .. 'ev:' .. sid
  local packed = cmsgpack.pack(ev)
  redis.call('XADD', key, 'MAXLEN', '~', LOG_CAP, '0-' .. (eid + 1), 'e', packed)
  if #packed <= WAKE_INLINE_MAX then  -- the event rides along: a reader next in line needs no XRANGE
    redis.call(PUB, P .. 'wake', sid .. ' ' .. eid .. ' ' .. packed)
  else
    redis.call(PUB, P .. 'wake', sid .. ' ' .. eid)
  end
  if not quiet and not NO_WEBHOOK[ev.t] then queue_webhook(packed) end
end

local function next_event_id(sid)
  return redis.call('HINCRBY', P .. 'o:' .. sid, 'e', 1)
end

-- Event ids counted on from the object's hash as read in this same step (o.e), for a script that
-- writes the last one back ('e', decimal(id)) in an HSET of the object it makes anyway:
-- next_event_id's HINCRBY would be one call more.
local function event_ids(o)
  local e = tonumber(o.e)
  return function()
    e = e + 1
    return e
  end
end

local function service_gone()
  return redis.call('EXISTS', P .. 'gone') == 1
end

-- Revision history (storage/history.py). Per Document or List/Map object, a hash "hv:SID" of
-- revision records, field = revision (Documents) or item key .. "\0" .. revision (items), value =
-- msgpack {r revision, d data JSON, u ms, b actor, c created ms, del 1 for an item's removal}; and
-- per Document ("hr:SID") or item ("hr:SID:key") a zset of its retained revisions (member and score
-- the revision), small enough to stay a listpack: a few hundred bytes for an item with one revision
-- (a stream per item would cost 4 KB, its node being preallocated). It keeps the newest
-- A.hist_keep revisions and drops a revision once its successor is older than A.hist_age_ms (0: no
-- age limit); the newest always stays. For Lists and Maps "hk:SID" (zset, scored like "io:") names
-- the items that have history, and the collection hash's hf/ht (event id, ms) is the oldest point a
-- read AsOf can reach: raised when a trim drops the state before it, or by a write made while
-- history is off (hist_keep 0: nothing else is written). `old` is the revision being replaced,
-- recorded first if missing (data written before history was on), so every state since the floor
-- can be told.
local HIST_KEEP = tonumber(A.hist_keep or 0)
local HIST_AGE = tonumber(A.hist_age_ms or 0)

local function history(sid, ikey, score, rec, old)
  local okey = P .. 'o:' .. sid
  if HIST_KEEP <= 0 then
    if ikey then redis.call('HSET', okey, 'hf', rec.r, 'ht', NOW) end
    return
  end
  local records, index, field = P .. 'hv:' .. sid, P .. 'hr:' .. sid, ''
  if ikey then
    index, field = index .. ':' .. ikey, ikey .. '\0'
    redis.call('ZADD', P .. 'hk:' .. sid, score, ikey)
    if redis.call('HEXISTS', okey, 'hf') == 0 then redis.call('HSET', okey, 'hf', rec.r - 1, 'ht', NOW) end
  end
  local function put(x)
    redis.call('HSET', records, field .. x.r, cmsgpack.pack(x))
    redis.call('ZADD', index, x.r, x.r)
  end
  if old then
    local last = redis.call('ZRANGE', index, -1, -1)
    if #last == 0 or tonumber(last[1]) ~= old.r then put(old) end
  end
  put(rec)
  local n = redis.call('ZCARD', index)
  if n <= HIST_KEEP and HIST_AGE <= 0 then return end
  local cut = nil
  while n > 1 and (n > HIST_KEEP or HIST_AGE > 0) do
    local two = redis.call('ZRANGE', index, 0, 1)
    local nxt = nil
    if n <= HIST_KEEP then
      nxt = cmsgpack.unpack(redis.call('HGET', records, field .. two[2]))
      if nxt.u >= NOW - HIST_AGE then break end
    end
    redis.call('HDEL', records, field .. two[1])
    redis.call('ZREM', index, two[1])
    cut, n = nxt or two[2], n - 1
  end
  if not cut or not ikey then return end
  if type(cut) ~= 'table' then cut = cmsgpack.unpack(redis.call('HGET', records, field .. cut)) end
  if cut.r > tonumber(redis.call('HGET', okey, 'hf') or -1) then
    redis.call('HSET', okey, 'hf', cut.r, 'ht', cut.u)
  end
end

-- Remove an object's history (object_delete).
local function drop_history(sid)
  local members = redis.call('ZRANGE', P .. 'hk:' .. sid, 0, -1)
  for _, k in ipairs(members) do redis.call('UNLINK', P .. 'hr:' .. sid .. ':' .. k) end
  redis.call('UNLINK', P .. 'hv:' .. sid, P .. 'hr:' .. sid, P .. 'hk:' .. sid)
end

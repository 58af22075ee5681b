-- Shared prelude, prepended to every write script (the registry is storage/lua.py).
--
-- Calling convention for every write script (Store.run):
--   KEYS[1]  the object hash "sync:{IS}:o:SID" (routes the call to the Service's slot)
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
  redis.call('PUBLISH', 'sync:webhooks:wake', string.sub(P, 7, -3))
end

-- Event types that never become webhooks: TTL-only changes and streams (Twilio sends none).
local NO_WEBHOOK = {list_updated = true, map_updated = true, stream_updated = true, stream_created = true,
                    stream_removed = true, stream_message_published = true}

-- Append one change event to the object's log (and the webhook queue), in this same atomic step,
-- and wake readers. ev: table of event fields; id and common fields are filled in here.
local function emit(sid, eid, ev)
  ev.id = eid
  ev.sid = sid
  ev.ms = NOW
  ev.b = ACTOR
  ev.o = ORIGIN
  if ENDPOINT ~= '' then ev.ep = ENDPOINT end
  local key = P .. 'ev:' .. sid
  local packed = cmsgpack.pack(ev)
  redis.call('XADD', key, 'MAXLEN', '~', LOG_CAP, '0-' .. (eid + 1), 'e', packed)
  redis.call(PUB, P .. 'wake', sid .. ' ' .. eid)
  if not NO_WEBHOOK[ev.t] then queue_webhook(packed) end
end

local function next_event_id(sid)
  return redis.call('HINCRBY', P .. 'o:' .. sid, 'e', 1)
end

local function service_gone()
  return redis.call('EXISTS', P .. 'gone') == 1
end

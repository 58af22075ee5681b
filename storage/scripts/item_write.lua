-- Add, create, update or upsert one List or Map item, bumping the collection's event id.
-- A.kind            collection type (list|map)
-- A.sid             collection sid
-- A.mode            append|create|update|upsert
-- A.key             item key ("" for append; list index or map key)
-- A.data            data JSON, or "" (keep)
-- A.item_ttl        item ttl (expiry_from in lib.lua: "" keep, "0" never, N seconds)
-- A.collection_ttl  collection ttl (same)
-- A.if_match        If-Match item revision, or "" for none ("-1": only if absent)
-- Answers {"OK", 1 if added else 0, item key, packed item, revision, item expiry or "", collection expiry or ""}.
local kind, sid, mode, ikey, data, ittl, cttl, if_match =
  A.kind, A.sid, A.mode, A.key, A.data, A.item_ttl, A.collection_ttl, A.if_match
if service_gone() then return err('notfound', 'service') end
local o = load_object(sid)
if not o or o.t ~= kind then return err('notfound', kind, sid) end
local items = P .. 'it:' .. sid
local old, stale = nil, nil
if mode == 'append' then
  ikey = o.ni or '0'  -- the next index, taken (HINCRBY) only once every check has passed
else
  local raw = redis.call('HGET', items, ikey)
  if raw then
    old = cmsgpack.unpack(raw)
    if old.x and old.x <= NOW then old, stale = nil, old end
  end
end
if mode == 'create' and old then return err('exists', kind .. '_item', ikey) end
if mode == 'update' and not old then return err('notfound', kind .. '_item', ikey) end
if if_match ~= '' then
  if old then
    if if_match ~= hex(old.r) then return err('mismatch', kind .. '_item', ikey, hex(old.r)) end
  elseif if_match ~= '-1' then
    -- "-1" is what the SDK sends to mean "only if absent"; any other revision needs an item
    return err('notfound', kind .. '_item', ikey)
  end
end
if (mode == 'append' or not old) and data == '' then return err('nodata', kind .. '_item', ikey) end
local next_id = event_ids(o)  -- the last one, and the next list index, go into the HSET below
if stale then
  -- an expired item the sweeper has not reached yet: record its removal (as the sweeper would,
  -- by "system") before the write that replaces it, so no reader misses that it went away
  local actor, origin, endpoint = ACTOR, ORIGIN, ENDPOINT
  ACTOR, ORIGIN, ENDPOINT = 'system', 'system', ''
  local rid = next_id()
  emit(sid, rid, {t = kind .. '_item_removed', ot = kind, un = o.un, rev = hex(stale.r), crev = hex(rid),
                  k = ikey, pd = stale.d})
  history(sid, ikey, kind == 'list' and tonumber(ikey) or 0, {r = rid, u = NOW, b = ACTOR, c = stale.c, del = 1},
          {r = stale.r, d = stale.d, u = stale.u, b = stale.b, c = stale.c})
  ACTOR, ORIGIN, ENDPOINT = actor, origin, endpoint
end
local eid = next_id()
local item = {r = eid, u = NOW}
if old then
  item.d, item.c, item.b, item.x = old.d, old.c, old.b, old.x
else
  item.c, item.b = NOW, ACTOR
end
if data ~= '' then item.d = data end
local x = expiry_from(ittl, item.x and tostring(item.x) or '')
if x == '' then item.x = nil else item.x = tonumber(x) end
redis.call('HSET', items, ikey, cmsgpack.pack(item))
if kind == 'list' then
  redis.call('ZADD', P .. 'io:' .. sid, tonumber(ikey), ikey)
else
  redis.call('ZADD', P .. 'io:' .. sid, 0, ikey)
end
schedule(sid .. '\0' .. ikey, x)
local cx = expiry_from(cttl, o.x)
local fields = {'u', NOW, 'x', cx, 'e', decimal(eid)}
if mode == 'append' then fields[7], fields[8] = 'ni', decimal(tonumber(ikey) + 1) end
redis.call('HSET', KEYS[1], unpack(fields))
schedule(sid, cx)
local added = old == nil
local ev = {ot = kind, un = o.un, rev = hex(eid), crev = hex(eid), d = item.d, k = ikey}
if added then ev.t = kind .. '_item_added' else ev.t = kind .. '_item_updated' end
if old then ev.pd = old.d end
if item.x then ev.x = item.x end
emit(sid, eid, ev)
history(sid, ikey, kind == 'list' and tonumber(ikey) or 0, {r = eid, d = item.d, u = NOW, b = ACTOR, c = item.c},
        old and {r = old.r, d = old.d, u = old.u, b = old.b, c = old.c})
return {'OK', added and 1 or 0, ikey, cmsgpack.pack(item), hex(eid), x, cx}

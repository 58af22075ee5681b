-- Remove one List or Map item, recording its removal event.
-- A.kind      collection type (list|map)
-- A.sid       collection sid
-- A.key       item key (list index or map key)
-- A.if_match  If-Match item revision, or "" for none
-- A.sweeping  "1" when called by the expiry sweeper (only delete if really expired), else ""
local kind, sid, ikey, if_match, sweeping = A.kind, A.sid, A.key, A.if_match, A.sweeping == '1'
local member = sid .. '\0' .. ikey
if not sweeping and service_gone() then return err('notfound', 'service') end
local o = load_object(sid)
if not o or o.t ~= kind then
  if sweeping then redis.call('ZREM', P .. 'exp', member) end
  return err('notfound', kind, sid)
end
local items = P .. 'it:' .. sid
local raw = redis.call('HGET', items, ikey)
if not raw then
  if sweeping then redis.call('ZREM', P .. 'exp', member) end
  return err('notfound', kind .. '_item', ikey)
end
local old = cmsgpack.unpack(raw)
local expired = old.x ~= nil and old.x <= NOW
if sweeping and not expired then return err('live', kind .. '_item', ikey) end
if not sweeping and expired then return err('notfound', kind .. '_item', ikey) end
if if_match ~= '' and if_match ~= hex(old.r) then
  return err('mismatch', kind .. '_item', ikey, hex(old.r))
end
local eid = next_event_id(sid)
redis.call('HDEL', items, ikey)
redis.call('ZREM', P .. 'io:' .. sid, ikey)
redis.call('ZREM', P .. 'exp', member)
redis.call('HSET', KEYS[1], 'u', NOW)
emit(sid, eid, {t = kind .. '_item_removed', ot = kind, un = o.un, rev = hex(old.r), crev = hex(eid),
                k = ikey, pd = old.d})
history(sid, ikey, kind == 'list' and tonumber(ikey) or 0, {r = eid, u = NOW, b = ACTOR, c = old.c, del = 1},
        {r = old.r, d = old.d, u = old.u, b = old.b, c = old.c})
return {'OK', hex(eid)}

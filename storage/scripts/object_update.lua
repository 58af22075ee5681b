-- Update a Document's data and/or TTL, or the TTL of a List, Map or Stream.
-- A.kind      object type
-- A.sid       object sid
-- A.data      data JSON, or "" (keep)
-- A.ttl       ttl (expiry_from in lib.lua: "" keep, "0" never expires, N seconds)
-- A.if_match  If-Match revision, or "" for none
-- Answers {"OK", the object hash (HGETALL), expiry or ""}.
local kind, sid, data, ttl, if_match = A.kind, A.sid, A.data, A.ttl, A.if_match
if service_gone() then return err('notfound', 'service') end
local o = load_object(sid)
if not o or o.t ~= kind then return err('notfound', kind, sid) end
if if_match ~= '' and if_match ~= hex(tonumber(o.e)) then
  return err('mismatch', kind, sid, hex(tonumber(o.e)))
end
local x = expiry_from(ttl, o.x)
local eid = event_ids(o)()
local key = KEYS[1]
local fields = {'u', NOW, 'x', x, 'e', decimal(eid)}
if data ~= '' then fields[7], fields[8] = 'd', data end
redis.call('HSET', key, unpack(fields))
schedule(sid, x)
local ev = {t = kind .. '_updated', ot = kind, un = o.un, rev = hex(eid)}
if kind == 'document' then
  if data ~= '' then ev.d = data else ev.d = o.d end
end
if x ~= '' then ev.x = tonumber(x) end
emit(sid, eid, ev)
if kind == 'document' then
  history(sid, nil, 0, {r = eid, d = ev.d, u = NOW, b = ACTOR, c = tonumber(o.c)},
          {r = tonumber(o.e), d = o.d, u = tonumber(o.u), b = o.b, c = tonumber(o.c)})
end
return {'OK', redis.call('HGETALL', key), x}

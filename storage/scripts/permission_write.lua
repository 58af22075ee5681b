-- Set or clear one identity's permissions on an object (no event: permissions are not data).
-- When the identity may no longer read (deleted, or no "r"), PUBLISH "<SID> acl <identity>" on the
-- Service's wake channel: the realtime hub re-checks the live subscriptions to that object (realtime/hub.py).
-- A.sid       object sid
-- A.identity  whose permissions
-- A.bits      "rwm" subset, or "-" to delete
-- A.kind      object type
-- Answers {"OK", object type}.
local sid, identity, bits, kind = A.sid, A.identity, A.bits, A.kind
if service_gone() then return err('notfound', 'service') end
local o = load_object(sid)
if not o or o.t ~= kind then return err('notfound', kind, sid) end
local key = P .. 'pm:' .. sid
if bits == '-' then
  if redis.call('HDEL', key, identity) == 0 then return err('notfound', 'permission', identity) end
else
  redis.call('HSET', key, identity, bits)
end
if not string.find(bits, 'r', 1, true) then
  redis.call(PUB, P .. 'wake', sid .. ' acl ' .. identity)
end
return {'OK', o.t}

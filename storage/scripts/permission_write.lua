-- Set or clear one identity's permissions on an object (no event: permissions are not data).
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
return {'OK', o.t}

-- Set or clear one identity's permissions on an object (no event: permissions are not data).
-- ARGV[7] object sid, [8] identity, [9] bits ("rwm" subset) or "-" to delete, [10] object type
local sid, identity, bits, kind = ARGV[7], ARGV[8], ARGV[9], ARGV[10]
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

-- Set or clear one identity's permissions on an object (no event: permissions are not data).
-- ARGV[7] object sid, [8] identity, [9] bits ("rwm" subset) or "-" to delete
local sid, identity, bits = ARGV[7], ARGV[8], ARGV[9]
if service_gone() then return err('notfound', 'service') end
local o = load_object(sid)
if not o then return err('notfound', 'object', sid) end
local key = P .. 'pm:' .. sid
if bits == '-' then
  if redis.call('HDEL', key, identity) == 0 then return err('notfound', 'permission', identity) end
else
  redis.call('HSET', key, identity, bits)
end
return {'OK', o.t}

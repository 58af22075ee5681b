-- Appended to every write script, whose own text runs as the function body() defined just above
-- (storage/lua.py). With an Idempotency-Key (storage/idempotency.py) the script runs only while the
-- request still holds the key's claim, and records the key as applied, with the script's whole
-- reply, in the same atomic step as the write: a request that dies after this point is answered
-- from that reply when retried, and the write is never done twice.
-- A.ik    the key's record (same slot as KEYS[1]), or absent
-- A.itok  the claiming request's token
if A.ik then
  local r = redis.call('HMGET', A.ik, 'tok', 'st')
  if r[1] ~= A.itok or r[2] ~= 'p' then return err('superseded', 'idempotency_key') end
end
local reply = body()
if A.ik and type(reply) == 'table' and reply[1] == 'OK' then
  redis.call('HSET', A.ik, 'st', 'a', 'r', cmsgpack.pack(reply))
end
return reply

-- Store the whole answer of a request that claimed an Idempotency-Key, or give the claim up.
-- Plain script (no lib prelude; arguments by name). The record keeps the TTL set when it was claimed.
-- KEYS[1]     the record
-- A.tok       the claiming request's token
-- A.status    the answer's HTTP status, or 0 to give the claim up (only while still pending: nothing applied)
-- A.body      the answer's body
-- A.headers   the answer's headers that matter, packed
-- A.rebuilt   "1" when the answer was rebuilt from an applied record (any request may store it then)
-- Answers 1 if stored (or given up), 0 if the record is no longer this request's.
local A = cmsgpack.unpack(ARGV[1])
local key = KEYS[1]
local r = redis.call('HMGET', key, 'tok', 'st')
local ours = r[1] == A.tok
if A.status == 0 then
  if ours and r[2] == 'p' then redis.call('DEL', key) return 1 end
  return 0
end
if not (ours or (A.rebuilt == '1' and r[2] == 'a')) then return 0 end
redis.call('HSET', key, 'st', 'd', 's', A.status, 'b', A.body, 'hd', A.headers)
redis.call('HDEL', key, 'r', 'lx')
return 1

-- Claim an Idempotency-Key record for one request, or say what became of its first use
-- (storage/idempotency.py explains the states). Plain script (no lib prelude; arguments by name).
-- KEYS[1]     the record (sync:{IS}:ik:{AC}:{key} or sync:{AC}:ik:{key})
-- A.hash      the request's fingerprint (method, path, form body)
-- A.tok       this request's random token
-- A.now_ms    milliseconds since the epoch
-- A.lease_ms  how long a pending claim holds off other requests with the key
-- A.ttl_ms    how long the record is kept
-- Answers {"new"} (claimed: go ahead), {"mismatch"}, {"busy", ms until the claim lapses},
-- {"applied", the write script's packed reply} or {"done", status, body, packed headers}.
local A = cmsgpack.unpack(ARGV[1])
local key, now = KEYS[1], tonumber(A.now_ms)
local r = redis.call('HMGET', key, 'h', 'st', 'lx', 'r', 's', 'b', 'hd')
if r[1] then
  if r[1] ~= A.hash then return {'mismatch'} end
  if r[2] == 'd' then return {'done', r[5], r[6], r[7]} end
  if r[2] == 'a' then return {'applied', r[4]} end
  local left = tonumber(r[3]) - now
  if left > 0 then return {'busy', left} end
  -- a pending claim whose request died (or is very slow: its write script will now refuse it)
  redis.call('HSET', key, 'tok', A.tok, 'lx', now + A.lease_ms)
  return {'new'}
end
redis.call('HSET', key, 'h', A.hash, 'tok', A.tok, 'st', 'p', 'lx', now + A.lease_ms)
redis.call('PEXPIRE', key, A.ttl_ms)
return {'new'}

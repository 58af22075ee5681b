-- The per-Service delivery lease: one worker at a time delivers a Service's queue, so per-object
-- order holds across server processes. Plain script (no lib prelude; arguments by name as in lib.lua).
-- KEYS[1] the lease
-- A.op     "take" (acquire or renew) | "release"
-- A.owner  the worker asking
-- A.ms     lease duration (take)
-- Answers 1, or 0 when another worker holds the lease.
local A = cmsgpack.unpack(ARGV[1])
local holder = redis.call('GET', KEYS[1])
if A.op == 'take' then
  if holder and holder ~= A.owner then return 0 end
  redis.call('SET', KEYS[1], A.owner, 'PX', A.ms)
  return 1
end
if holder == A.owner then redis.call('DEL', KEYS[1]) end
return 1

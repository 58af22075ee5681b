-- The per-Service delivery lease: one worker at a time delivers a Service's queue, so per-object
-- order holds across server processes. Standalone script (no lib prelude).
-- KEYS[1] the lease; ARGV[1] "take" (acquire or renew) | "release", ARGV[2] owner, ARGV[3] ms
local holder = redis.call('GET', KEYS[1])
if ARGV[1] == 'take' then
  if holder and holder ~= ARGV[2] then return 0 end
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
if holder == ARGV[2] then redis.call('DEL', KEYS[1]) end
return 1

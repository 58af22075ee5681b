-- Replace a Service's webhook config copy (sync:{IS}:wh) unless a newer version is there already,
-- and never for a deleted Service. Standalone script (no lib prelude).
-- KEYS[1] the copy, KEYS[2] the Service's tombstone; ARGV[1] version, ARGV[2…] field, value pairs
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local current = tonumber(redis.call('HGET', KEYS[1], 'v') or '-1')
if current > tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', ARGV[1], unpack(ARGV, 2))
return 1

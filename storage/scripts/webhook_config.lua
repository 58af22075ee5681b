-- Replace a Service's webhook config copy (sync:{IS}:wh) unless a newer version is there already,
-- and never for a deleted Service. Plain script (no lib prelude; arguments by name as in lib.lua).
-- KEYS[1] the copy, KEYS[2] the Service's tombstone
-- A.version  the Service record's version "v"
-- A.fields   the copy's fields: an array field, value, field, value…
-- Answers 1 if replaced, 0 if not.
local A = cmsgpack.unpack(ARGV[1])
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local current = tonumber(redis.call('HGET', KEYS[1], 'v') or '-1')
if current > tonumber(A.version) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', A.version, unpack(A.fields))
return 1

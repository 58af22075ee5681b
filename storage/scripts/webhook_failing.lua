-- Record since when a Service's webhook receiver is failing, on its config copy, unless an earlier
-- time is recorded, and only while the copy exists: a Service deleted meanwhile (its copy deleted
-- with it) must not come back as a stray key. Plain script (no lib prelude; arguments by name).
-- KEYS[1] the Service's webhook config copy
-- A.field  the field (storage/webhooks.py FAILING_SINCE)
-- A.since  milliseconds since the epoch
-- Answers 1 if recorded, 0 otherwise.
local A = cmsgpack.unpack(ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return redis.call('HSETNX', KEYS[1], A.field, A.since)

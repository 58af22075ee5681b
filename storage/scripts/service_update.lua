-- Update a Service record's fields only if it still exists (a concurrent delete must not resurrect
-- it), and bump its version "v", which versions the webhook config copy (storage/webhooks.py): racing
-- updates cannot leave an older copy behind. Plain script (no lib prelude; arguments by name as in lib.lua).
-- KEYS[1] the Service record "sync:{AC}:svc:{IS}"
-- A.fields  the changed fields: an array field, value, field, value…
-- Answers 1 if updated, 0 if the record is gone.
local A = cmsgpack.unpack(ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(A.fields))
redis.call('HINCRBY', KEYS[1], 'v', 1)
return 1

-- Move one queue entry to the dead letters (capped), unless the Service was deleted meanwhile (then
-- just forget it). Plain script (no lib prelude; arguments by name as in lib.lua).
-- KEYS[1] queue, KEYS[2] dead letters, KEYS[3] tombstone
-- A.id      the queue entry id
-- A.cap     dead letters kept (MAXLEN ~)
-- A.fields  the dead letter's fields: an array field, value, field, value…
-- Answers 1 if moved to the dead letters, 0 if only forgotten.
local A = cmsgpack.unpack(ARGV[1])
redis.call('XACK', KEYS[1], 'wh', A.id)
redis.call('XDEL', KEYS[1], A.id)
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', A.cap, '*', unpack(A.fields))
return 1

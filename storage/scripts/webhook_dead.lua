-- Move one queue entry to the dead letters (capped), unless the Service was deleted meanwhile (then
-- just forget it). Standalone script (no lib prelude).
-- KEYS[1] queue, KEYS[2] dead letters, KEYS[3] tombstone; ARGV[1] entry id, ARGV[2] cap, ARGV[3…] fields
redis.call('XACK', KEYS[1], 'wh', ARGV[1])
redis.call('XDEL', KEYS[1], ARGV[1])
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
return 1

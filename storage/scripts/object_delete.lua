-- Delete an object with everything it owns, recording its removal event.
-- A.sid       object sid
-- A.sweeping  "1" when called by the expiry sweeper (only delete if really expired), else ""
-- A.keep_log  seconds to keep the event log after removal (so reconnecting clients see the removal)
-- Answers {"OK", type, unique name}.
local sid, sweeping, keep_log = A.sid, A.sweeping == '1', tonumber(A.keep_log)
local key = KEYS[1]
local flat = redis.call('HGETALL', key)
if #flat == 0 then return err('notfound', 'object', sid) end
local o = {}
for i = 1, #flat, 2 do o[flat[i]] = flat[i + 1] end
if sweeping then
  if is_live(o.x) then return err('live', o.t, sid) end
elseif not is_live(o.x) then
  return err('notfound', o.t, sid)
end
local eid = tonumber(o.e) + 1
if o.un ~= '' and redis.call('HGET', P .. 'n:' .. o.t, o.un) == sid then
  redis.call('HDEL', P .. 'n:' .. o.t, o.un)
end
redis.call('ZREM', P .. 'ix:' .. o.t, sid)
redis.call('ZREM', P .. 'exp', sid)
-- UNLINK frees large collections off the main thread; stale item expiry entries are dropped
-- by the sweeper when it finds their parent gone.
redis.call('UNLINK', key, P .. 'it:' .. sid, P .. 'io:' .. sid, P .. 'pm:' .. sid)
drop_history(sid)
emit(sid, eid, {t = o.t .. '_removed', ot = o.t, un = o.un, rev = hex(eid)})
redis.call('EXPIRE', P .. 'ev:' .. sid, keep_log)
return {'OK', o.t, o.un}

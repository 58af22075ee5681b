-- Publish one Stream message: it lives only in the stream's event log (not readable over REST).
-- ARGV[7] stream sid, [8] message sid, [9] data JSON
local sid, msid, data = ARGV[7], ARGV[8], ARGV[9]
if service_gone() then return err('notfound', 'service') end
local o = load_object(sid)
if not o or o.t ~= 'stream' then return err('notfound', 'stream', sid) end
local eid = next_event_id(sid)
emit(sid, eid, {t = 'stream_message_published', ot = 'stream', un = o.un, m = msid, d = data})
return {'OK', eid}

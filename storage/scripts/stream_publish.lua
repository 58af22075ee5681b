-- Publish one Stream message: it lives only in the stream's event log (not readable over REST).
-- A.sid          stream sid
-- A.message_sid  the message's TZ… sid
-- A.data         data JSON
-- Answers {"OK", event id, message sid} (the sid too, so an Idempotency-Key replay rebuilds the answer).
local sid, msid, data = A.sid, A.message_sid, A.data
if service_gone() then return err('notfound', 'service') end
local o = load_object(sid)
if not o or o.t ~= 'stream' then return err('notfound', 'stream', sid) end
local eid = next_event_id(sid)
emit(sid, eid, {t = 'stream_message_published', ot = 'stream', un = o.un, m = msid, d = data})
return {'OK', eid, msid}

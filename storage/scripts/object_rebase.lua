-- Move an object's event counter past a client's cursor, restating its current state above it.
-- The store came back older than what a client saw (a failover without SYNC_DURABILITY=replica, a
-- restored backup): its cursor is ahead of the object's counter, and the ids in between will be
-- reused for other changes, which the twilio-sync SDK drops (it ignores ids at or below one it
-- has seen). So, in this one atomic step, the counter jumps to the cursor and the current state is
-- recorded as new events above it: a Document's data as a document_updated, each live List/Map
-- item as an *_item_updated (its revision becomes that event's id, as any write would make it),
-- and for a List, the indexes the client may hold that the store no longer has (at most
-- A.gone_max from the restored next index on) as *_item_removed. A Stream (no state) or an empty
-- collection gets a *_updated marker, which the SDK is not sent. Every later write continues
-- above the cursor.
-- A counter equal to the cursor is rebased only when A.reused is 1: a feed that read event N and
-- finds another event N in the log now (a write that reused the id) asks so. Anyone else asking
-- with cursor N has merely read the counter before event N was written (a stale read, no rollback),
-- and restating the state then would record every value twice. Idempotent: a counter already
-- above the cursor (another node, another subscriber did it first) changes nothing, so two nodes
-- rebasing at once record the state once. No webhooks: the
-- restatements are no change anyone made (emit's quiet flag).
-- A.sid       object sid
-- A.cursor    the highest event id a client saw: the restated events take the ids after it
-- A.gone_max  most List indexes to report removed
-- A.reused    1: the log holds another event at the cursor than the one the caller read there
-- Answers {"OK", the object's last event id after, events recorded (0: the counter was above the cursor)}.
local sid, cursor = A.sid, tonumber(A.cursor)
if service_gone() then return err('notfound', 'service') end
local o = load_object(sid)
if not o then return err('notfound', 'object', sid) end
local e = tonumber(o.e)
if e > cursor or (e == cursor and A.reused ~= 1) then return {'OK', e, 0} end
local key, kind = KEYS[1], o.t
redis.call('HSET', key, 'e', cursor)
local n = 0
if kind == 'document' then
  local eid = next_event_id(sid)
  local ev = {t = 'document_updated', ot = kind, un = o.un, rev = hex(eid), d = o.d}
  if o.x ~= '' then ev.x = tonumber(o.x) end
  emit(sid, eid, ev, true)
  history(sid, nil, 0, {r = eid, d = o.d, u = NOW, b = ACTOR, c = tonumber(o.c)},
          {r = e, d = o.d, u = tonumber(o.u), b = o.b, c = tonumber(o.c)})
  n = 1
elseif kind == 'list' or kind == 'map' then
  local items = P .. 'it:' .. sid
  local flat = redis.call('HGETALL', items)
  local live = {}
  for i = 1, #flat, 2 do
    local item = cmsgpack.unpack(flat[i + 1])
    if not item.x or item.x > NOW then live[#live + 1] = {k = flat[i], v = item} end
  end
  table.sort(live, function(a, b) return a.v.r < b.v.r end)  -- in the order they were written
  for _, it in ipairs(live) do
    local eid, item = next_event_id(sid), it.v
    local old = {r = item.r, d = item.d, u = item.u, b = item.b, c = item.c}
    item.r = eid
    redis.call('HSET', items, it.k, cmsgpack.pack(item))
    local ev = {t = kind .. '_item_updated', ot = kind, un = o.un, rev = hex(eid), crev = hex(eid), d = item.d, k = it.k}
    if item.x then ev.x = item.x end
    emit(sid, eid, ev, true)
    history(sid, it.k, kind == 'list' and tonumber(it.k) or 0, {r = eid, d = item.d, u = NOW, b = ACTOR, c = item.c}, old)
    n = n + 1
  end
  if kind == 'list' then
    -- indexes pushed in the lost history: each took an event id, so at most cursor - e of them
    local first = tonumber(o.ni or '0')
    local last = first + math.min(cursor - e, tonumber(A.gone_max)) - 1
    for index = first, last do
      local eid = next_event_id(sid)
      emit(sid, eid, {t = 'list_item_removed', ot = kind, un = o.un, rev = hex(eid), crev = hex(eid),
                      k = tostring(index)}, true)
      n = n + 1
    end
  end
end
if n == 0 then
  -- a Stream, an empty List or Map: one list_updated-like marker (no SDK event, no webhook), so a
  -- reader's cursor moves past the ids in the log like after any event
  local eid = next_event_id(sid)
  emit(sid, eid, {t = kind .. '_updated', ot = kind, un = o.un, rev = hex(eid)}, true)
  n = 1
end
return {'OK', tonumber(redis.call('HGET', key, 'e')), n}

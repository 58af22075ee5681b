-- Create a Document, List, Map or Stream, with its unique name, listing entry, expiry and event.
-- A.kind         object type (document|list|map|stream)
-- A.sid          the new object's sid
-- A.unique_name  unique name, or ""
-- A.data         data JSON (documents), or ""
-- A.ttl          ttl (expiry_from in lib.lua: "" or "0" never expires, N seconds)
-- Answers {"OK", the object hash (HGETALL), expiry or ""}.
local kind, sid, uname, data, ttl = A.kind, A.sid, A.unique_name, A.data, A.ttl
if service_gone() then return err('notfound', 'service') end
if uname ~= '' then
  local holder = redis.call('HGET', P .. 'n:' .. kind, uname)
  if holder then
    if load_object(holder) then return err('exists', kind, uname) end
    -- the holder expired but is not swept yet: it is gone for every reader, so the name is free
  end
end
local x = expiry_from(ttl, '')
local seq = redis.call('INCR', P .. 'seq')
local key = KEYS[1]
redis.call('DEL', key)
redis.call('HSET', key, 'sid', sid, 't', kind, 'un', uname, 'c', NOW, 'u', NOW, 'x', x, 'b', ACTOR, 'e', 0)
if kind == 'document' then redis.call('HSET', key, 'd', data) end
if kind == 'list' then redis.call('HSET', key, 'ni', 0) end
if kind == 'list' or kind == 'map' then redis.call('HSET', key, 'hf', 0, 'ht', NOW) end
if kind == 'document' then history(sid, nil, 0, {r = 0, d = data, u = NOW, b = ACTOR, c = NOW}) end
redis.call('ZADD', P .. 'ix:' .. kind, seq, sid)
if uname ~= '' then redis.call('HSET', P .. 'n:' .. kind, uname, sid) end
schedule(sid, x)
local ev = {t = kind .. '_created', ot = kind, un = uname, rev = '0'}
if kind == 'document' then ev.d = data end
if x ~= '' then ev.x = tonumber(x) end
emit(sid, 0, ev)
return {'OK', redis.call('HGETALL', key), x}

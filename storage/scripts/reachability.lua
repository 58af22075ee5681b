-- Reachability of SDK endpoints and the endpoint_connected / endpoint_disconnected webhooks.
-- KEYS[1] the Service's webhook config copy "sync:{IS}:wh" (routes to the Service's slot).
-- ACTOR is the identity and ENDPOINT the endpoint id (lib.lua calling convention).
-- A.mode  "connect" | "disconnect" | "due" (fire debounced disconnects due by now)
-- Answers {"OK", due ms of a newly deferred disconnect or ""}.
local mode = A.mode
local cfg = redis.call('HMGET', KEYS[1], 're', 'db', 'dw')
local enabled = cfg[1] == '1'
local pending, last_ep = P .. 'rd', P .. 'rde'

local function hook(t, identity, endpoint)
  queue_webhook(cmsgpack.pack({t = t, id = 0, sid = '', ms = NOW, b = identity, o = ORIGIN, ep = endpoint}))
end

if mode == 'connect' then
  redis.call('SADD', P .. 'rc:' .. ACTOR, ENDPOINT)
  redis.call('SADD', P .. 'ri', ACTOR)  -- identities with endpoint sets, so deleting the Service finds them
  redis.call('ZREM', pending, ACTOR)  -- a reconnect inside the window suppresses the disconnect
  redis.call('HDEL', last_ep, ACTOR)
  if enabled then hook('endpoint_connected', ACTOR, ENDPOINT) end
  return {'OK', ''}
end

if mode == 'disconnect' then
  local eps = P .. 'rc:' .. ACTOR
  redis.call('SREM', eps, ENDPOINT)
  if redis.call('EXISTS', eps) == 0 then redis.call('SREM', P .. 'ri', ACTOR) end
  if not enabled then return {'OK', ''} end
  if cfg[2] ~= '1' then
    hook('endpoint_disconnected', ACTOR, ENDPOINT)
    return {'OK', ''}
  end
  if redis.call('SCARD', eps) > 0 then return {'OK', ''} end  -- only the last endpoint counts
  local due = NOW + tonumber(cfg[3] or '5000')
  redis.call('ZADD', pending, due, ACTOR)
  redis.call('HSET', last_ep, ACTOR, ENDPOINT)
  return {'OK', tostring(due)}
end

-- due: fire what is due if the identity is still offline; ZREM first, so each fires once
for _, identity in ipairs(redis.call('ZRANGEBYSCORE', pending, '-inf', NOW, 'LIMIT', 0, 500)) do
  redis.call('ZREM', pending, identity)
  local endpoint = redis.call('HGET', last_ep, identity) or ''
  redis.call('HDEL', last_ep, identity)
  if enabled and redis.call('SCARD', P .. 'rc:' .. identity) == 0 then
    hook('endpoint_disconnected', identity, endpoint)
  end
end
return {'OK', ''}

-- Rotate one refresh token. KEYS[1]: the session, KEYS[2]: the user's index.
-- ARGV: presented generation, now (ms), grace (ms), idle (ms), user-agent policy
-- ("record"|"revoke"), user agent, ip, tombstone (ms), index member.
local function split(s)
  local t, i = {}, 1
  while true do
    local j = string.find(s, "\031", i, true)
    if not j then t[#t + 1] = string.sub(s, i); return t end
    t[#t + 1] = string.sub(s, i, j - 1); i = j + 1
  end
end
local function fmt(n) return string.format("%.0f", n) end

local v = redis.call("GET", KEYS[1])
if not v then return {"expired"} end
if v == "R" then return {"revoked"} end
local f = split(v)
local now = tonumber(ARGV[2])
local expires = tonumber(f[5])
if now >= expires then
  redis.call("DEL", KEYS[1])
  redis.call("ZREM", KEYS[2], ARGV[9])
  return {"expired"}
end
local function revoke()
  redis.call("SET", KEYS[1], "R", "PX", math.min(expires - now, tonumber(ARGV[8])))
  redis.call("ZREM", KEYS[2], ARGV[9])
end
local gen = tonumber(f[1])
local presented = tonumber(ARGV[1])
if presented > gen then return {"invalid"} end
if presented < gen then
  if presented + 1 == gen and now - tonumber(f[4]) < tonumber(ARGV[3]) then
    return {"graced", v}
  end
  revoke()
  return {"reused", f[10]}
end
if ARGV[5] == "revoke" and ARGV[6] ~= f[9] then
  revoke()
  return {"ua_revoked", f[10]}
end
local exp = math.min(now + tonumber(ARGV[4]), tonumber(f[6]))
f[1] = fmt(gen + 1); f[3] = ARGV[2]; f[4] = ARGV[2]; f[5] = fmt(exp); f[7] = ARGV[7]; f[9] = ARGV[6]
local nv = table.concat(f, "\031")
redis.call("SET", KEYS[1], nv, "PX", exp - now)
redis.call("ZADD", KEYS[2], now, ARGV[9])
if redis.call("PTTL", KEYS[2]) < exp - now then redis.call("PEXPIRE", KEYS[2], exp - now) end
return {"rotated", nv}

-- Create a session. KEYS[1]: the session, KEYS[2]: the user's index.
-- ARGV: value, ttl (ms), now (ms), max sessions, index member, session key prefix,
-- user id, tombstone (ms). Returns the evicted members.
local function split(s)
  local t, i = {}, 1
  while true do
    local j = string.find(s, "\031", i, true)
    if not j then t[#t + 1] = string.sub(s, i); return t end
    t[#t + 1] = string.sub(s, i, j - 1); i = j + 1
  end
end
local now = tonumber(ARGV[3])
local prefix = ARGV[6]
local live = {}
for _, m in ipairs(redis.call("ZRANGE", KEYS[2], 0, -1)) do
  local v = redis.call("GET", prefix .. m)
  if not v or v == "R" then
    redis.call("ZREM", KEYS[2], m)
  else
    local f = split(v)
    local expires = tonumber(f[5])
    if expires <= now then
      redis.call("DEL", prefix .. m)
      redis.call("ZREM", KEYS[2], m)
    elseif f[10] == ARGV[7] then
      live[#live + 1] = {m, expires}
    end
  end
end
local evicted = {}
local max = tonumber(ARGV[4])
local i = 1
while #live - i + 1 >= max do
  local m, expires = live[i][1], live[i][2]
  redis.call("SET", prefix .. m, "R", "PX", math.min(expires - now, tonumber(ARGV[8])))
  redis.call("ZREM", KEYS[2], m)
  evicted[#evicted + 1] = m
  i = i + 1
end
local ttl = tonumber(ARGV[2])
redis.call("SET", KEYS[1], ARGV[1], "PX", ttl)
redis.call("ZADD", KEYS[2], now, ARGV[5])
if redis.call("PTTL", KEYS[2]) < ttl then redis.call("PEXPIRE", KEYS[2], ttl) end
return evicted

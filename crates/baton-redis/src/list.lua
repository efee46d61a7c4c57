-- List a user's live sessions, most recently used first, dropping dead index entries.
-- KEYS[1]: the user's index. ARGV: session key prefix, now (ms), user id.
-- Returns member, value, member, value, ...
local function field(s, n)
  local i = 1
  for _ = 1, n - 1 do i = string.find(s, "\031", i, true) + 1 end
  local j = string.find(s, "\031", i, true)
  return string.sub(s, i, j and j - 1 or -1)
end
local now = tonumber(ARGV[2])
local out = {}
for _, m in ipairs(redis.call("ZREVRANGE", KEYS[1], 0, -1)) do
  local v = redis.call("GET", ARGV[1] .. m)
  if not v or v == "R" then
    redis.call("ZREM", KEYS[1], m)
  elseif tonumber(field(v, 5)) <= now then
    redis.call("DEL", ARGV[1] .. m)
    redis.call("ZREM", KEYS[1], m)
  elseif field(v, 10) == ARGV[3] then
    out[#out + 1] = m
    out[#out + 1] = v
  end
end
return out

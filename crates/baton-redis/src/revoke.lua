-- Revoke sessions of one user. KEYS[1]: the user's index.
-- ARGV: session key prefix, now (ms), user id, tombstone (ms), then the members to revoke,
-- or none for all of the user's sessions. Returns how many live sessions were revoked.
local function field(s, n)
  local i = 1
  for _ = 1, n - 1 do i = string.find(s, "\031", i, true) + 1 end
  local j = string.find(s, "\031", i, true)
  return string.sub(s, i, j and j - 1 or -1)
end
local now = tonumber(ARGV[2])
local members = {}
if #ARGV > 4 then
  for k = 5, #ARGV do members[#members + 1] = ARGV[k] end
else
  members = redis.call("ZRANGE", KEYS[1], 0, -1)
end
local count = 0
for _, m in ipairs(members) do
  local key = ARGV[1] .. m
  local v = redis.call("GET", key)
  if v and v ~= "R" and field(v, 10) == ARGV[3] then
    local expires = tonumber(field(v, 5))
    if expires > now then
      redis.call("SET", key, "R", "PX", math.min(expires - now, tonumber(ARGV[4])))
      count = count + 1
    else
      redis.call("DEL", key)
    end
    redis.call("ZREM", KEYS[1], m)
  elseif not v or v == "R" then
    redis.call("ZREM", KEYS[1], m)
  end
end
return count

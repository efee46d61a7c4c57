-- Shared by every script. One key per user holds all of that user's sessions:
-- records separated by \30, fields by \31.
-- Live record:    member, generation, created, last used, idle deadline, absolute deadline,
--                 ip, device name, user agent, user id, attempt id of the latest rotation,
--                 device id, IPv4 network last seen ("4/16|10.1.0.0/16"), IPv6 network last
--                 seen ("6/48|2001:db8:1::/48"), network changed at, auth time, amr
--                 (space-separated), acr, DPoP key thumbprint
--                 (times in ms since the epoch; records written before the last seven
--                 fields existed read as if they were empty).
-- Revoked record: member, "R", remembered until, attempt id of the revoking call, outcome
--                 ("reused", "ua_revoked", "net_revoked", "replaced" or ""), user id (with an
--                 outcome only).
-- An attempt id lets a call that is sent again after a lost reply get the first try's outcome.
local RS, US = "\030", "\031"
local function split(s, sep)
  local t, i = {}, 1
  while true do
    local j = string.find(s, sep, i, true)
    if not j then t[#t + 1] = string.sub(s, i); return t end
    t[#t + 1] = string.sub(s, i, j - 1); i = j + 1
  end
end
local function fmt(n) return string.format("%.0f", n) end
-- The user's records still alive at `now`.
local function load(key, now)
  local v = redis.call("GET", key)
  local out = {}
  if not v or v == "" then return out end
  for _, r in ipairs(split(v, RS)) do
    local f = split(r, US)
    local until_ms = (f[2] == "R") and tonumber(f[3]) or tonumber(f[5])
    if until_ms and until_ms > now then
      if f[2] ~= "R" then
        for k = #f + 1, 19 do f[k] = "" end
      end
      out[#out + 1] = f
    end
  end
  return out
end
-- Writes the records back with a TTL that covers the longest of them.
local function save(key, records, now)
  if #records == 0 then redis.call("DEL", key); return end
  local parts, ttl = {}, 1
  for i, f in ipairs(records) do
    parts[i] = table.concat(f, US)
    local until_ms = (f[2] == "R") and tonumber(f[3]) or tonumber(f[5])
    if until_ms - now > ttl then ttl = until_ms - now end
  end
  redis.call("SET", key, table.concat(parts, RS), "PX", fmt(ttl))
end
local function find(records, member)
  for i, f in ipairs(records) do
    if f[1] == member then return i, f end
  end
end
local function tombstone(f, now, keep, attempt, outcome)
  local user = ""
  if outcome ~= "" then user = f[10] end
  return {f[1], "R", fmt(math.min(tonumber(f[5]), now + keep)), attempt, outcome, user}
end

-- Rotate. KEYS[1]: the user's key. ARGV: member, presented generation, now, grace (ms),
-- idle (ms), user-agent policy ("record"|"revoke"), user agent, ip, tombstone (ms).
local now = tonumber(ARGV[3])
local records = load(KEYS[1], now)
local i, f = find(records, ARGV[1])
if not f then return {"expired"} end
if f[2] == "R" then return {"revoked"} end
local gen, presented = tonumber(f[2]), tonumber(ARGV[2])
if presented > gen then return {"invalid"} end
if presented < gen then
  if presented + 1 == gen and now - tonumber(f[4]) < tonumber(ARGV[4]) then
    return {"graced", table.concat(f, US)}
  end
  records[i] = tombstone(f, now, tonumber(ARGV[9]))
  save(KEYS[1], records, now)
  return {"reused", f[10]}
end
if ARGV[6] == "revoke" and ARGV[7] ~= f[9] then
  records[i] = tombstone(f, now, tonumber(ARGV[9]))
  save(KEYS[1], records, now)
  return {"ua_revoked", f[10]}
end
f[2] = fmt(gen + 1)
f[4] = ARGV[3]
f[5] = fmt(math.min(now + tonumber(ARGV[5]), tonumber(f[6])))
f[7] = ARGV[8]
f[9] = ARGV[7]
save(KEYS[1], records, now)
return {"rotated", table.concat(f, US)}

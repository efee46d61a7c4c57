-- Rotate. KEYS[1]: the user's key. ARGV: member, presented generation, now, grace (ms),
-- idle (ms), user-agent policy ("record"|"revoke"), user agent, ip, tombstone (ms),
-- reuse detection ("strict"|"after-use"), attempt id, network policy
-- ("record"|"flag"|"revoke"), network class of the ip ("4/16", or "" when unknown), network,
-- the DPoP key thumbprint the request proved ("" for none).
-- Sent again after a lost reply (same attempt id), it answers what the first try did: the
-- same successor ("graced"), or the same revocation.
local now = tonumber(ARGV[3])
local attempt = ARGV[11]
local records = load(KEYS[1], now)
local i, f = find(records, ARGV[1])
if not f then return {"expired"} end
if f[2] == "R" then
  if f[4] == attempt and (f[5] == "reused" or f[5] == "ua_revoked" or f[5] == "net_revoked") then
    return {f[5], f[6]}
  end
  return {"revoked"}
end
-- A session bound to a DPoP key answers only a request that proves it.
if f[19] ~= "" and f[19] ~= ARGV[15] then return {"dpop_mismatch"} end
local gen, presented = tonumber(f[2]), tonumber(ARGV[2])
if presented > gen then return {"invalid"} end
local graced = presented + 1 == gen and (f[11] == attempt or ARGV[10] == "after-use"
  or now - tonumber(f[4]) < tonumber(ARGV[4]))
if presented < gen and not graced then
  records[i] = tombstone(f, now, tonumber(ARGV[9]), attempt, "reused")
  save(KEYS[1], records, now)
  return {"reused", f[10]}
end
-- Checked on the grace path too.
if ARGV[6] == "revoke" and ARGV[7] ~= f[9] then
  records[i] = tombstone(f, now, tonumber(ARGV[9]), attempt, "ua_revoked")
  save(KEYS[1], records, now)
  return {"ua_revoked", f[10]}
end
-- The network last seen of each family: field 13 for IPv4, 14 for IPv6, as "class|network".
local slot = (string.sub(ARGV[13], 1, 1) == "6") and 14 or 13
local seen = ARGV[13] .. "|" .. ARGV[14]
local net_changed = ARGV[13] ~= "" and string.sub(f[slot], 1, #ARGV[13] + 1) == ARGV[13] .. "|"
  and f[slot] ~= seen
if ARGV[12] == "revoke" and net_changed then
  records[i] = tombstone(f, now, tonumber(ARGV[9]), attempt, "net_revoked")
  save(KEYS[1], records, now)
  return {"net_revoked", f[10]}
end
if graced then return {"graced", table.concat(f, US), "0"} end
f[2] = fmt(gen + 1)
f[4] = ARGV[3]
f[5] = fmt(math.min(now + tonumber(ARGV[5]), tonumber(f[6])))
f[7] = ARGV[8]
f[9] = ARGV[7]
f[11] = attempt
if ARGV[13] ~= "" then f[slot] = seen end
if net_changed and ARGV[12] == "flag" then f[15] = ARGV[3] end
save(KEYS[1], records, now)
return {"rotated", table.concat(f, US), net_changed and "1" or "0"}

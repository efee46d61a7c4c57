-- Revoke. KEYS[1]: the user's key. ARGV: now, user id, tombstone (ms), attempt id, then the
-- members to revoke, or none for every session of the user. Returns the members it revoked;
-- sent again with the same attempt id, the same members.
local now = tonumber(ARGV[1])
local attempt = ARGV[4]
local records = load(KEYS[1], now)
local wanted = nil
if #ARGV > 4 then
  wanted = {}
  for k = 5, #ARGV do wanted[ARGV[k]] = true end
end
local revoked, changed = {}, false
for i, f in ipairs(records) do
  if not wanted or wanted[f[1]] then
    if f[2] ~= "R" and f[10] == ARGV[2] then
      records[i] = tombstone(f, now, tonumber(ARGV[3]), attempt, "")
      revoked[#revoked + 1] = f[1]
      changed = true
    elseif f[2] == "R" and f[4] == attempt then
      revoked[#revoked + 1] = f[1]
    end
  end
end
if changed then save(KEYS[1], records, now) end
return revoked

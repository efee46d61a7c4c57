-- Revoke. KEYS[1]: the user's key. ARGV: now, user id, tombstone (ms), then the members to
-- revoke, or none for every session of the user. Returns how many live sessions it revoked.
local now = tonumber(ARGV[1])
local records = load(KEYS[1], now)
local wanted = nil
if #ARGV > 3 then
  wanted = {}
  for k = 4, #ARGV do wanted[ARGV[k]] = true end
end
local count = 0
for i, f in ipairs(records) do
  if f[2] ~= "R" and f[10] == ARGV[2] and (not wanted or wanted[f[1]]) then
    records[i] = tombstone(f, now, tonumber(ARGV[3]))
    count = count + 1
  end
end
if count > 0 then save(KEYS[1], records, now) end
return count

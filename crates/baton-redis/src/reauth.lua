-- Reauthenticate. KEYS[1]: the user's key. ARGV: member, user id, now, amr, acr. Sets the
-- auth time, amr and acr of that user's live session and returns the record, or nothing when
-- it is not one. Sent again, it sets the same values.
local now = tonumber(ARGV[3])
local records = load(KEYS[1], now)
local i, f = find(records, ARGV[1])
if not f or f[2] == "R" or f[10] ~= ARGV[2] then return false end
f[16] = ARGV[3]
f[17] = ARGV[4]
f[18] = ARGV[5]
save(KEYS[1], records, now)
return table.concat(f, US)

-- Create. KEYS[1]: the user's key. ARGV: the new record, now, max sessions, user id,
-- tombstone (ms), attempt id. Replaces the user's live session with the same device id, then
-- evicts the user's least recently used sessions beyond the limit; returns the evicted and
-- the replaced members. Sent again with the same record (a lost reply), it changes nothing
-- and returns the same members.
local now = tonumber(ARGV[2])
local records = load(KEYS[1], now)
local record = split(ARGV[1], US)
local evicted, replaced = {}, {}
if find(records, record[1]) then
  for _, f in ipairs(records) do
    if f[2] == "R" and f[4] == ARGV[6] then
      if f[5] == "replaced" then
        replaced[#replaced + 1] = f[1]
      elseif f[5] == "" then
        evicted[#evicted + 1] = f[1]
      end
    end
  end
  return {evicted, replaced}
end
if record[12] ~= "" then
  for i, f in ipairs(records) do
    if f[2] ~= "R" and f[10] == ARGV[4] and f[12] == record[12] then
      replaced[#replaced + 1] = f[1]
      records[i] = tombstone(f, now, tonumber(ARGV[5]), ARGV[6], "replaced")
    end
  end
end
while true do
  local count, oldest = 0, nil
  for i, f in ipairs(records) do
    if f[2] ~= "R" and f[10] == ARGV[4] then
      count = count + 1
      if not oldest then
        oldest = i
      else
        local a, b = tonumber(f[4]), tonumber(records[oldest][4])
        if a < b or (a == b and f[1] < records[oldest][1]) then oldest = i end
      end
    end
  end
  if count < tonumber(ARGV[3]) then break end
  evicted[#evicted + 1] = records[oldest][1]
  records[oldest] = tombstone(records[oldest], now, tonumber(ARGV[5]), ARGV[6], "")
end
records[#records + 1] = record
save(KEYS[1], records, now)
return {evicted, replaced}

-- Create. KEYS[1]: the user's key. ARGV: the new record, now, max sessions, user id,
-- tombstone (ms), attempt id. Evicts the user's least recently used sessions beyond the
-- limit and returns their members. Sent again with the same record (a lost reply), it changes
-- nothing and returns the same evictions.
local now = tonumber(ARGV[2])
local records = load(KEYS[1], now)
local record = split(ARGV[1], US)
local evicted = {}
if find(records, record[1]) then
  for _, f in ipairs(records) do
    if f[2] == "R" and f[4] == ARGV[6] then evicted[#evicted + 1] = f[1] end
  end
  return evicted
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
return evicted

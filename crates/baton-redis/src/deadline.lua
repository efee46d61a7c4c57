-- Every write script starts here: ARGV[1] is the write's deadline in Redis's clock (ms),
-- taken off ARGV. A write Redis reaches after it (its client has given up) changes nothing.
do
  local deadline = tonumber(table.remove(ARGV, 1))
  local t = redis.call("TIME")
  if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > deadline then
    return redis.error_reply("BATON_LATE the write reached Redis after its deadline")
  end
end

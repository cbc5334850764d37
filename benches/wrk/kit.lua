-- The load-test kit's request generator (benches/wrk/run.sh sets these through the environment):
--   WRK_TOKEN    a JWT sent as `Authorization: Bearer ...` (empty: none)
--   WRK_PATHS    how many distinct paths to cycle through under /api/v1/items/ (0: always /)
--   WRK_CLIENTS  how many distinct X-Client-Id values to cycle through (0: none)
-- and prints the latency percentiles wrk's own report lacks (p99.9) in a parseable line.
local token = os.getenv("WRK_TOKEN") or ""
local paths = tonumber(os.getenv("WRK_PATHS") or "0")
local clients = tonumber(os.getenv("WRK_CLIENTS") or "0")
local counter = 0

request = function()
  counter = counter + 1
  local headers = {}
  if token ~= "" then
    headers["Authorization"] = "Bearer " .. token
  end
  if clients > 0 then
    headers["X-Client-Id"] = "client-" .. (counter % clients)
  end
  local path = "/"
  if paths > 0 then
    path = "/api/v1/items/" .. (counter % paths) .. "?page=" .. (counter % 7)
  end
  return wrk.format("GET", path, headers)
end

done = function(summary, latency, requests)
  io.write(string.format("kit-latency-us p50=%d p99=%d p999=%d\n",
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end

-- The soak run's request generator (benches/wrk/soak.sh): the full gateway's traffic, JWT on
-- every request (WRK_TOKEN), 10,000 client ids, 200 cacheable paths, and one request in 50 to
-- /limited/, whose policy admits 50 a second: the planned 429s. Prints one parseable line with
-- p99 and the answers by kind, summed over wrk's threads.
local token = os.getenv("WRK_TOKEN") or ""
local counter = 0
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  planned = 0
  unplanned = 0
end

request = function()
  counter = counter + 1
  local headers = { ["Authorization"] = "Bearer " .. token, ["X-Client-Id"] = "client-" .. (counter % 10000) }
  if counter % 50 == 0 then
    return wrk.format("GET", "/limited/" .. counter, headers)
  end
  return wrk.format("GET", "/api/v1/items/" .. (counter % 200), headers)
end

response = function(status, headers, body)
  if status == 429 then
    planned = planned + 1
  elseif status < 200 or status >= 300 then
    unplanned = unplanned + 1
  end
end

done = function(summary, latency, requests)
  local limited, other = 0, 0
  for _, thread in ipairs(threads) do
    limited = limited + thread:get("planned")
    other = other + thread:get("unplanned")
  end
  local errors = summary.errors
  io.write(string.format("soak p99_us=%d requests=%d planned_429=%d other_non2xx=%d socket_errors=%d\n",
    latency:percentile(99), summary.requests, limited, other,
    errors.connect + errors.read + errors.write + errors.timeout))
end

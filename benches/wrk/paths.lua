-- Cycles through many distinct paths (and an X-Request-ID per request) so routing and logging
-- see varied input rather than one hot string.
local paths = {}
for i = 1, 200 do
  paths[i] = "/api/v1/items/" .. i .. "?page=" .. (i % 7)
end
local counter = 0
request = function()
  counter = counter + 1
  local path = paths[(counter % #paths) + 1]
  return wrk.format("GET", path, { ["X-Request-ID"] = "wrk-" .. counter })
end

-- Example wrk script for `proxybench.sh --lua benches/compare/lua/paths.lua`.
-- Cycles through the comma-separated paths in $WRK_PATHS (default "/"), e.g.
--   WRK_PATHS=/cacheable?k=1,/cacheable?k=2 benches/compare/proxybench.sh --scenario cache-hit --lua benches/compare/lua/paths.lua
-- Headers given with -H are still sent (wrk.headers); each wrk thread keeps its own counter.
local paths = {}
for p in string.gmatch(os.getenv("WRK_PATHS") or "/", "[^,]+") do
  table.insert(paths, p)
end
local i = 0
request = function()
  i = i + 1
  return wrk.format(nil, paths[(i % #paths) + 1])
end

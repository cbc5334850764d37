-- edgegate rate-limit decision, atomic on the Redis server. Mirrors src/ratelimit/algorithm.rs
-- exactly (aligned windows, bucket levels in thousandths) so both stores decide alike.
-- KEYS[1]: the key. ARGV: algorithm, limit, window_ms, burst, mode (take | refund), ttl_ms.
-- Returns {allowed, limit, remaining, reset_secs, retry_after_secs}. The clock is Redis's TIME,
-- so gateways with skewed clocks agree.
local key = KEYS[1]
local algorithm = ARGV[1]
local limit = tonumber(ARGV[2])
local window = math.max(1, tonumber(ARGV[3]))
local burst = math.max(1, tonumber(ARGV[4]))
local mode = ARGV[5]
local ttl = tonumber(ARGV[6])
local MILLI = 1000

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local state = redis.call('HMGET', key, 'at', 'v', 'p')
local at = tonumber(state[1]) or 0
local v = tonumber(state[2]) or 0
local p = tonumber(state[3]) or 0

local function save()
  redis.call('HSET', key, 'at', at, 'v', v, 'p', p)
  redis.call('PEXPIRE', key, ttl)
end

local function secs(ms)
  return math.ceil(ms / 1000)
end

local function flow_ms(milli)
  return math.ceil(milli * window / math.max(1, limit * MILLI))
end

if mode == 'refund' then
  if algorithm == 'token_bucket' then
    v = v + MILLI
  elseif algorithm == 'leaky_bucket' then
    v = math.max(0, v - MILLI)
  else
    v = math.max(0, v - 1)
  end
  save()
  return {1, 0, 0, 0, 0}
end

local allowed, reported, remaining, reset_ms, retry_ms
if algorithm == 'fixed_window' then
  local start = now - (now % window)
  if at ~= start then v = 0 end
  reset_ms = start + window - now
  allowed = v < limit
  if allowed then v = v + 1 end
  at, p = start, 0
  reported, remaining = limit, math.max(0, limit - v)
  retry_ms = allowed and 0 or reset_ms
elseif algorithm == 'sliding_window' then
  local start = now - (now % window)
  local current, previous = 0, 0
  if at == start then
    current, previous = v, p
  elseif at + window == start then
    previous = v
  end
  local elapsed = now - start
  allowed = previous * (window - elapsed) + (current + 1) * window <= limit * window
  if allowed then current = current + 1 end
  local used = math.ceil((previous * (window - elapsed) + current * window) / window)
  reset_ms = start + window - now
  if allowed then
    retry_ms = 0
  elseif current >= limit or previous == 0 then
    retry_ms = reset_ms
  else
    local room = (limit - current - 1) * window
    retry_ms = math.max(0, window - math.floor(room / previous) - elapsed)
  end
  at, v, p = start, current, previous
  reported, remaining = limit, math.max(0, limit - used)
elseif algorithm == 'token_bucket' then
  local capacity = burst * MILLI
  local tokens = capacity
  if at ~= 0 then
    tokens = math.min(capacity, v + math.floor(math.max(0, now - at) * limit * MILLI / window))
  end
  allowed = tokens >= MILLI
  if allowed then tokens = tokens - MILLI end
  at, v, p = now, tokens, 0
  reported, remaining = burst, math.floor(tokens / MILLI)
  reset_ms = flow_ms(capacity - tokens)
  retry_ms = allowed and 0 or flow_ms(MILLI - tokens)
else -- leaky_bucket
  local capacity = burst * MILLI
  local level = 0
  if at ~= 0 then
    level = math.max(0, v - math.floor(math.max(0, now - at) * limit * MILLI / window))
  end
  allowed = level + MILLI <= capacity
  if allowed then level = level + MILLI end
  at, v, p = now, level, 0
  reported, remaining = burst, math.floor((capacity - level) / MILLI)
  reset_ms = flow_ms(level)
  retry_ms = allowed and 0 or flow_ms(level + MILLI - capacity)
end
save()
local retry_secs = 0
if not allowed then retry_secs = math.max(1, secs(retry_ms)) end
return {allowed and 1 or 0, reported, remaining, secs(reset_ms), retry_secs}

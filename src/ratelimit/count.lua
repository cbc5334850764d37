-- edgegate local-first rate limits: one key's sync, or one exact decision for a key an instance
-- has no fresh view of. Both push this instance's admissions, read the fleet's count and lease
-- this instance a share of what is left: what no live lease holds, split over the live
-- instances. The fleet never admits past the limit: every admission is either counted or inside
-- a lease that the others' shares leave out.
-- KEYS[1]: the current window's counter, KEYS[2]: the previous window's, KEYS[3]: the current
-- window's leases (instance -> "amount:expires_ms"), one hash tag.
-- ARGV: push, take (1: decide one request here), limit, weight (sliding windows:
-- window - elapsed, else 0), window_ms, ttl_ms, instance, instances, lease_ms.
-- Returns {admitted, current, previous, lease}.
local push = tonumber(ARGV[1])
local take = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local weight = tonumber(ARGV[4])
local window = math.max(1, tonumber(ARGV[5]))
local ttl = tonumber(ARGV[6])
local instance = ARGV[7]
local instances = math.max(1, tonumber(ARGV[8]))
local lease_ms = tonumber(ARGV[9])

local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local previous = tonumber(redis.call('GET', KEYS[2]) or '0')
if push > 0 then
  current = redis.call('INCRBY', KEYS[1], push)
  redis.call('PEXPIRE', KEYS[1], ttl)
end

local others = 0
local leases = redis.call('HGETALL', KEYS[3])
for i = 1, #leases, 2 do
  local amount, expires = string.match(leases[i + 1], '^(%d+):(%d+)$')
  if expires == nil or tonumber(expires) <= now then
    redis.call('HDEL', KEYS[3], leases[i])
  elseif leases[i] ~= instance then
    others = others + tonumber(amount)
  end
end

local used = math.floor(previous * weight / window) + current
local admitted = 0
if take == 1 and used + others < limit then
  current = redis.call('INCR', KEYS[1])
  redis.call('PEXPIRE', KEYS[1], ttl)
  used = used + 1
  admitted = 1
end
local lease = math.floor(math.max(0, limit - used - others) / instances)
if lease > 0 then
  redis.call('HSET', KEYS[3], instance, lease .. ':' .. (now + lease_ms))
  redis.call('PEXPIRE', KEYS[3], ttl)
else
  redis.call('HDEL', KEYS[3], instance)
end
return {admitted, current, previous, lease}

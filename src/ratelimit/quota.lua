-- edgegate calendar quota: one period's counter of one key.
-- KEYS[1]: the counter. ARGV: limit, mode (0: read, 1: take one if any is left, 2: give one
-- back), expire_at_ms (the period's end plus a grace). Returns {allowed, used}.
local limit = tonumber(ARGV[1])
local mode = tonumber(ARGV[2])
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if mode == 1 then
  if used >= limit then
    return {0, used}
  end
  used = redis.call('INCR', KEYS[1])
  redis.call('PEXPIREAT', KEYS[1], ARGV[3])
elseif mode == 2 and used > 0 then
  used = redis.call('DECR', KEYS[1])
end
return {1, used}

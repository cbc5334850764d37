-- edgegate local-first rate limits: this instance is alive; how many are, and Redis's clock.
-- KEYS[1]: the live-instance set. ARGV: instance id, liveness_ms (an instance silent this long
-- no longer counts). Returns {now_ms, instances}.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local liveness = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - liveness)
redis.call('PEXPIRE', KEYS[1], liveness * 10)
return {now, redis.call('ZCARD', KEYS[1])}

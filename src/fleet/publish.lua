-- edgegate fleet purge: appends one purge to the purge log and announces it on the channel.
-- KEYS[1]: epoch, KEYS[2]: sequence, KEYS[3]: log (one hash tag, so one Cluster slot).
-- ARGV: candidate epoch, origin instance, purge JSON, log length kept, channel.
-- The epoch names this Redis dataset: it changes when the data is lost (a restart without
-- persistence), which tells subscribers that the log no longer covers what they missed.
redis.call('SET', KEYS[1], ARGV[1], 'NX')
local epoch = redis.call('GET', KEYS[1])
local seq = redis.call('INCR', KEYS[2])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], seq .. '-0', 'origin', ARGV[2], 'purge', ARGV[3])
redis.call('PUBLISH', ARGV[5], epoch .. ' ' .. seq .. ' ' .. ARGV[2] .. ' ' .. ARGV[3])
return {epoch, seq}

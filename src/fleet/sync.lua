-- edgegate fleet purge: where the purge log stands, and the entries after a subscriber's cursor.
-- KEYS[1]: epoch, KEYS[2]: sequence, KEYS[3]: log. ARGV: candidate epoch, first sequence
-- wanted, most entries returned. Returns {epoch, sequence, entries}; each entry is
-- {id, {field, value, ...}} as XRANGE gives it.
redis.call('SET', KEYS[1], ARGV[1], 'NX')
local epoch = redis.call('GET', KEYS[1])
local seq = tonumber(redis.call('GET', KEYS[2]) or '0')
local entries = {}
if seq >= tonumber(ARGV[2]) then
  entries = redis.call('XRANGE', KEYS[3], ARGV[2] .. '-0', '+', 'COUNT', ARGV[3])
end
return {epoch, seq, entries}

-- A finished crawl's items kept in Redis expire STATECRAWL_ITEMS_TTL seconds
-- later (mark_running in take_leases.lua takes the expiry off again when the
-- crawl runs again). An expiry already set (an API job's) is left alone.
-- KEYS: meta items   ARGV: ttl (s)   Returns 1 if the expiry was set.
if redis.call('HGET', KEYS[1], 'state') ~= 'finished' then return 0 end
if redis.call('TTL', KEYS[2]) ~= -1 then return 0 end  -- -2: no items; >= 0: has one
return redis.call('EXPIRE', KEYS[2], ARGV[1])

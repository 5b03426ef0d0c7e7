-- Record where a crawl's items go (STATECRAWL_SINK) the first time a worker joins, and
-- return what is recorded (the caller refuses to run with another). A crawl begun
-- before sinks existed that already has items in Redis is recorded as 'redis'.
-- KEYS: meta items   ARGV: the joining worker's sink   Returns the recorded sink.
local first = ARGV[1]
if redis.call('HLEN', KEYS[2]) > 0 then first = 'redis' end
redis.call('HSETNX', KEYS[1], 'sink', first)
return redis.call('HGET', KEYS[1], 'sink')

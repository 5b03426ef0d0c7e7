-- Reclaim the leases of dead workers in one shard (> 0) of a sharded crawl
-- (statecrawl.frontier.shards). Workers' heartbeats live in shard 0's `workers`;
-- the caller reads them (after its heartbeat dropped the dead) and passes the
-- live ones. A worker is also live here if it leased in this shard within the
-- timeout (this shard's `workers`, written by lease.lua): one that joined after
-- the caller's read. Every other owner's leases go back into the frontier, as
-- heartbeat.lua does in shard 0.
--
-- KEYS: queue leases stats ready hosts workers
-- ARGV: timeout_ms live_worker...
-- Returns how many leases were reclaimed. (host_done.lua is prepended.)
local queue, leases, stats, ready, hosts, workers = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local since = now - tonumber(ARGV[1])
local live = {}
for j = 2, #ARGV do live[ARGV[j]] = true end
for _, w in ipairs(redis.call('ZRANGEBYSCORE', workers, since, '+inf')) do live[w] = true end
redis.call('ZREMRANGEBYSCORE', workers, '-inf', '(' .. since)
local reclaimed = 0
local all = redis.call('HGETALL', leases)
for j = 1, #all, 2 do
  local id, value = all[j], all[j + 1]
  local owner, rest = string.match(value, '^(%S+) (.*)$')
  if owner and not live[owner] then
    redis.call('HDEL', leases, id)
    redis.call('ZADD', queue, lease_score(rest), id)
    host_done(ready, hosts, value)
    reclaimed = reclaimed + 1
  end
end
if reclaimed > 0 then
  redis.call('HINCRBY', stats, 'reclaimed', reclaimed)
  redis.call('PUBLISH', queue, 'reclaimed')
end
return reclaimed

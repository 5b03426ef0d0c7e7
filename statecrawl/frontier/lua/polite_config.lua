-- Make a crawl polite and give it its budget, unless it has one: the first
-- worker's settings make the crawl's budget (`statecrawl hosts` changes it
-- while the crawl runs). Per-host overrides from settings are set the same way.
--
-- KEYS: meta hosts
-- ARGV: delay_ms concurrency horizon_ms at_target at_start_ms at_max_ms late_ms
--       {host field value}*
-- Returns the crawl's budget, the values of the seven names in ARGV's order (a
-- sharded crawl's other shards get shard 0's: statecrawl.frontier.shards).
local meta, hosts = KEYS[1], KEYS[2]
redis.call('HSET', meta, 'polite', '1')
local names = {'*|d', '*|c', '*|h', '*|at', '*|as', '*|am', '*|l'}
for i, name in ipairs(names) do redis.call('HSETNX', hosts, name, ARGV[i]) end
for i = #names + 1, #ARGV, 3 do
  redis.call('HSETNX', hosts, ARGV[i] .. '|' .. ARGV[i + 1], ARGV[i + 2])
end
return redis.call('HMGET', hosts, unpack(names))

-- Shared by commit.lua, requeue_owned.lua, heartbeat.lua and quarantine.lua
-- (prepended): a polite lease (statecrawl.frontier.hosts) is over.
--
-- A polite crawl's lease value is "<worker> <score> <host>"; a plain one's is
-- "<worker> <score>". lease_score() reads the score of either.
local function lease_score(rest)
  return string.match(rest, '^(%S+)')
end

-- The host's count of requests in flight goes down by one (the field goes at
-- 0: absent means none, and a crawl of many hosts keeps no field per host for
-- it), and a host parked at its concurrency cap may be served again from its
-- next allowed time.
local function host_done(ready, hosts, value)
  local host = string.match(value, '^%S+ %S+ (.*)$')
  if not host then return end
  if redis.call('HINCRBY', hosts, host .. '|n', -1) <= 0 then
    redis.call('HDEL', hosts, host .. '|n')
  end
  local due = tonumber(redis.call('HGET', hosts, host)) or 0
  local score = redis.call('ZSCORE', ready, host)
  if score and tonumber(score) > due then redis.call('ZADD', ready, due, host) end
end

-- Shared by lease.lua, commit.lua and host_slot.lua (prepended to each): the
-- fleet-wide politeness budget of statecrawl.frontier.hosts.
--
-- In a polite crawl (meta.polite = 1) the frontier (`queue` and the `fifo`
-- lists) is only the intake: each lease first moves up to DRAIN requests from
-- it into `hostq`, one lexically sorted
-- ZSET of "<host> <priority:10 digits> <id>" members (so the head of a host is
-- one ZRANGEBYLEX), and puts their host into `ready` (host -> the time it may
-- next be served, ms on the Redis clock). A lease then serves the hosts of
-- `ready` due within the horizon, earliest first: each request gets a slot
-- time `at` (the host's next allowed time, or now) and moves the host's next
-- time to at + its delay. Hosts not yet due are never looked at; a host at
-- its concurrency cap is parked until one of its leases ends (host_done.lua).

local DRAIN = 200
local PRIO_BIAS = 2147483648

-- A URL's host, as Python's urlsplit(url).hostname.
local function url_host(url)
  if type(url) ~= 'string' then return '' end
  local rest = string.match(url, '^%a[%w+.-]*://([^/?#]*)') or ''
  rest = (string.gsub(rest, '^.*@', ''))
  local host
  if string.sub(rest, 1, 1) == '[' then
    host = string.match(rest, '^%[([^%]]*)%]') or ''
  else
    host = (string.gsub(rest, ':%d*$', ''))
  end
  return string.lower(host)
end

-- The host of a stored request: in clear in a packed request
-- (statecrawl.frontier.packing; empty for the crawl's home host, the host of
-- meta.start_url, passed as `home`), from the URL of one stored as JSON.
local function host_of(body, home)
  if string.sub(body, 1, 1) ~= '{' then
    local host = string.match(body, '^.([^%z]*)%z') or ''
    if host == '' then return home end
    return host
  end
  local ok, doc = pcall(cjson.decode, body)
  return url_host(ok and type(doc) == 'table' and doc.url or '')
end

local function now_ms()
  local t = redis.call('TIME')
  return t[1] * 1000 + math.floor(t[2] / 1000)
end

-- A host's budget: its next allowed time, delay (the largest of its override
-- or the crawl's delay, robots.txt's Crawl-delay and AutoThrottle's, plus the
-- lateness a worker may send with), cap on
-- requests in flight (0 = none) and requests in flight now.
local function host_conf(hosts, host, cache)
  local c = cache[host]
  if c then return c end
  local v = redis.call('HMGET', hosts, host, host .. '|d', host .. '|r', host .. '|a',
    host .. '|c', host .. '|n', '*|d', '*|c', '*|at', '*|as', '*|l')
  local delay = tonumber(v[2]) or tonumber(v[7]) or 0
  local robots = tonumber(v[3]) or 0
  if robots > delay then delay = robots end
  if (tonumber(v[9]) or 0) > 0 then
    local auto = tonumber(v[4]) or tonumber(v[10]) or 0
    if auto > delay then delay = auto end
  end
  -- a worker may send up to `*|l` ms after its slot (STATECRAWL_HOST_LATE): slots
  -- are that much further apart, so the next request still comes a delay later
  if delay > 0 then delay = delay + (tonumber(v[11]) or 0) end
  c = {next = tonumber(v[1]) or 0, delay = math.floor(delay), n = tonumber(v[6]) or 0,
       cap = tonumber(v[5]) or tonumber(v[8]) or 0}
  cache[host] = c
  return c
end

-- Move a host's next allowed time to `due`, and its place in `ready` (if it
-- has queued requests) no earlier than that. Used by host_slot.lua and
-- host_backoff.lua.
local function defer_host(hosts, ready, host, due)
  redis.call('HSET', hosts, host, string.format('%d', due))
  local score = redis.call('ZSCORE', ready, host)
  if score and tonumber(score) < due then redis.call('ZADD', ready, due, host) end
end

local function host_head(hostq, host)
  return redis.call('ZRANGEBYLEX', hostq, '[' .. host .. ' ', '(' .. host .. '!', 'LIMIT', 0, 1)
end

-- Move up to DRAIN requests from the intake (both parts of the frontier,
-- take_leases.lua) to their hosts' queues.
local function polite_drain(meta, seq, queue, fifo, reqs, hostq, ready, hosts, now, cache)
  local home = url_host(redis.call('HGET', meta, 'start_url') or '')
  frontier_pop(seq, queue, fifo, reqs, DRAIN, function(id, score, body)
    local host = host_of(body, home)
    local p = math.floor(tonumber(score) or 0) + PRIO_BIAS
    if p < 0 then p = 0 elseif p > 4294967295 then p = 4294967295 end
    redis.call('ZADD', hostq, 0, host .. ' ' .. string.format('%010d', p) .. ' ' .. id)
    if not redis.call('ZSCORE', ready, host) then
      local c = host_conf(hosts, host, cache)
      redis.call('ZADD', ready, math.max(now, c.next), host)
    end
  end)
end

-- Lease up to n requests politely; appends "<id> <at> <now> <host>", request
-- JSON pairs to `out`. Returns how many.
local function polite_take(meta, seq, queue, fifo, reqs, leases, stats, hostq, ready, hosts,
                           worker, n, out, horizon)
  local now = now_ms()
  local cache = {}
  polite_drain(meta, seq, queue, fifo, reqs, hostq, ready, hosts, now, cache)
  local limit = now + horizon
  local taken = 0
  for _ = 1, 3 * n + 20 do
    if taken >= n then break end
    local r = redis.call('ZRANGEBYSCORE', ready, '-inf', limit, 'WITHSCORES', 'LIMIT', 0, 1)
    if #r == 0 then break end
    local host = r[1]
    local c = host_conf(hosts, host, cache)
    local head = host_head(hostq, host)
    if #head == 0 then
      redis.call('ZREM', ready, host)
    elseif c.cap > 0 and c.n >= c.cap then
      -- parked until one of its leases ends; re-checked after a minute regardless
      redis.call('ZADD', ready, now + 60000, host)
    elseif c.next > limit then
      redis.call('ZADD', ready, c.next, host)
    else
      local prio, id = string.match(head[1], ' (%d+) (%S+)$')
      redis.call('ZREM', hostq, head[1])
      local body = redis.call('HGET', reqs, id)
      if body then
        local at = math.max(now, c.next)
        c.next, c.n = at + c.delay, c.n + 1
        redis.call('HSET', hosts, host, string.format('%d', c.next))
        redis.call('HINCRBY', hosts, host .. '|n', 1)
        redis.call('HSET', leases, id,
          worker .. ' ' .. string.format('%d', tonumber(prio) - PRIO_BIAS) .. ' ' .. host)
        out[#out + 1] = id .. ' ' .. string.format('%d %d', at, now) .. ' ' .. host
        out[#out + 1] = body
        taken = taken + 1
      end
      if #host_head(hostq, host) == 0 then
        redis.call('ZREM', ready, host)
      else
        redis.call('ZADD', ready, math.max(now, c.next), host)
      end
    end
  end
  return leased(meta, stats, taken)
end

-- take_leases (take_leases.lua), or polite_take in a polite crawl. `k` holds
-- the keys: meta seq queue fifo reqs leases stats hostq ready hosts.
local function take_any(k, worker, n, out)
  if redis.call('HGET', k.meta, 'polite') == '1' then
    local horizon = tonumber(redis.call('HGET', k.hosts, '*|h')) or 500
    return polite_take(k.meta, k.seq, k.queue, k.fifo, k.reqs, k.leases, k.stats, k.hostq,
      k.ready, k.hosts, worker, n, out, horizon)
  end
  return take_leases(k.meta, k.seq, k.queue, k.fifo, k.reqs, k.leases, k.stats, worker, n, out)
end

-- Apply one worker's batch of session usage to the crawl's session pool, and
-- return the pool as it is now. One call per flush of a worker (spaced
-- STATECRAWL_SESSION_FLUSH_INTERVAL apart), so counting uses costs no round
-- trip per request.
--
-- A session record (JSON in the `sessions` hash) is
--   {created (ms), proxy (index into STATECRAWL_PROXIES, -1 = none), uses,
--    errors (an error score: +1 per failure, -0.5 per success, >= 0),
--    pooled (true for pool sessions), retired (reason), retired_at (ms)}.
-- Pool sessions are retired when a worker saw a blocked status, or at
-- max_uses, max_errors or max_age; retired records stay (for status and
-- tests) but leave the `pool` zset. Sessions a spider names itself
-- (meta["cookiejar"], the login session) are counted and bound to a proxy
-- but never retired here: the spider owns them. New sessions take proxies
-- round-robin by their sequence number, so the binding is made once, here,
-- for every worker.
--
-- KEYS: sessions pool seq stats
-- ARGV: pool_size max_uses max_errors max_age_ms n_proxies
--       n_deltas {session uses errors_delta retire_reason('' = none)}*
--       n_ensure {session}*            explicit sessions to create if missing
-- Returns {n_retired, {session}*, n_pool, {session proxy uses errors}*,
--          n_ensure, {session proxy}*}   (errors as strings: they are fractional)
local sessions, pool, seq, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local t = redis.call('TIME')  -- the Redis clock: workers' clocks may disagree
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local pool_size = tonumber(ARGV[1])
local max_uses, max_errors, max_age = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local n_proxies = tonumber(ARGV[5])
local i = 6
local retired = {}

local function is_retired(rec)
  return rec.retired ~= nil and rec.retired ~= cjson.null
end

local function new_record(pooled)
  local n = redis.call('INCR', seq)
  local proxy = -1
  if n_proxies > 0 then proxy = (n - 1) % n_proxies end
  redis.call('HINCRBY', stats, 'sessions_created', 1)
  return {created = now, proxy = proxy, uses = 0, errors = 0, pooled = pooled}, n
end

local function retire(sid, rec, reason)
  rec.retired = reason
  rec.retired_at = now
  redis.call('ZREM', pool, sid)
  redis.call('HINCRBY', stats, 'sessions_retired', 1)
  retired[#retired + 1] = sid
end

local n_deltas = tonumber(ARGV[i]); i = i + 1
for _ = 1, n_deltas do
  local sid, uses, err, reason = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), ARGV[i + 3]
  i = i + 4
  local raw = redis.call('HGET', sessions, sid)
  if raw then
    local rec = cjson.decode(raw)
    if not is_retired(rec) then
      rec.uses = rec.uses + uses
      rec.errors = math.max(0, rec.errors + err)
      if rec.pooled then
        if reason ~= '' then retire(sid, rec, reason)
        elseif max_uses > 0 and rec.uses >= max_uses then retire(sid, rec, 'max_uses')
        elseif max_errors > 0 and rec.errors >= max_errors then retire(sid, rec, 'max_errors')
        end
      end
      redis.call('HSET', sessions, sid, cjson.encode(rec))
    end
  end
end

if max_age > 0 then
  for _, sid in ipairs(redis.call('ZRANGEBYSCORE', pool, '-inf', now - max_age)) do
    local raw = redis.call('HGET', sessions, sid)
    if raw then
      local rec = cjson.decode(raw)
      retire(sid, rec, 'max_age')
      redis.call('HSET', sessions, sid, cjson.encode(rec))
    else
      redis.call('ZREM', pool, sid)
    end
  end
end

local ensured = {}
local n_ensure = tonumber(ARGV[i]); i = i + 1
for _ = 1, n_ensure do
  local sid = ARGV[i]; i = i + 1
  local raw = redis.call('HGET', sessions, sid)
  local rec
  if raw then
    rec = cjson.decode(raw)
  else
    rec = new_record(false)
    redis.call('HSET', sessions, sid, cjson.encode(rec))
  end
  ensured[#ensured + 1] = sid
  ensured[#ensured + 1] = rec.proxy
end

local size = redis.call('ZCARD', pool)
while size < pool_size do
  local rec, n = new_record(true)
  local sid = 'pool-' .. n
  redis.call('HSET', sessions, sid, cjson.encode(rec))
  redis.call('ZADD', pool, now, sid)
  size = size + 1
end

local out = {#retired}
for _, sid in ipairs(retired) do out[#out + 1] = sid end
local members = redis.call('ZRANGE', pool, 0, -1)
out[#out + 1] = #members
for _, sid in ipairs(members) do
  local rec = cjson.decode(redis.call('HGET', sessions, sid))
  out[#out + 1] = sid
  out[#out + 1] = rec.proxy
  out[#out + 1] = rec.uses
  out[#out + 1] = tostring(rec.errors)
end
out[#out + 1] = n_ensure
for _, v in ipairs(ensured) do out[#out + 1] = v end
return out

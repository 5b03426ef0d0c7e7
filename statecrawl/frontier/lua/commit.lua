-- Commit one batch of a worker's output, atomically, in this order:
--   1. new requests: dupefilter check-and-add, crawl limit, then the end of
--      their score's `fifo` list (take_leases.lua)
--   2. items: stored under their key (a re-fetched page replaces its item),
--      or, for an item a sink holds (flags 2), only counted: the digest of
--      "item " .. key goes into `digests`, beside the exact dupefilter's
--      request fingerprints (same layout, bucket overhead shared), so a page
--      written again is counted once. `items` in the stats counts the keys.
--   3. acknowledgements: the lease and the stored request are deleted
--   4. a lease of up to `want` requests for the same worker, as lease.lua
--      does, so a busy worker refills its buffer without a round trip of
--      its own (the crawl's finished-check stays with lease.lua)
-- A request is acknowledged in the same batch as, or a later batch than, the
-- output of its callback, so a crash never loses the output of a request
-- whose lease is gone.
--
-- The dupefilter is a prepended snippet (dedupe_<mode>.lua) defining
-- make_dedupe(seen_key, meta_key) -> function(fingerprint) -> true if new;
-- digests.lua, take_leases.lua, polite.lua and host_done.lua are prepended too.
--
-- A commit is applied at most once: the worker's last commit token and its
-- result are kept in the tokens hash (a worker has one commit in flight at a
-- time), so a worker that lost the reply (Redis restarted, connection cut)
-- can send the same commit again safely. The replay writes the token again
-- (same value), so a WAIT for replicas after it covers the commit too.
--
-- The crawl's epoch (a random token meta holds from its creation) must be the
-- one the worker joined: if meta is gone or holds another epoch, Redis lost
-- the crawl's state (restarted empty, flushed, the crawl deleted and made
-- again), and the script writes nothing and fails with "SCLOST".
--
-- A request counts against the crawl's limit unless its flags say otherwise
-- (robots.txt and sitemaps, retries of a leased request): `admitted` in the
-- stats counts those that do (crawls begun before it existed start from
-- `enqueued`). In a sharded crawl with a limit (statecrawl.frontier.shards) the
-- call carries a *grant* instead, the count it may admit, taken from shard 0's
-- pool by quota.lua; what it leaves unused comes back as `spare`. A request over
-- a grant is not recorded as seen: with a grant given back later it can still be
-- admitted, when a link to it comes again.
--
-- KEYS: meta seq queue reqs leases seen items failed stats tokens hostq ready hosts
--       digests (the exact layout's hash, whatever the dupefilter mode) fifo ts
-- ARGV: worker token want epoch grant ('' = none: meta.limit holds)
--       n_counters {stats_field delta}*      crawl-wide counters (e.g. retried); a
--                                             field "ts:<name>" goes to the current
--                                             rolling bucket instead (rolling.py)
--       n_requests {fingerprint flags score request}*   flags: 1 = dedupe, 2 = not counted,
--                                                     4 = record as seen (without dedupe)
--       n_items {key flags json}*        flags: 1 = failed, 2 = in a sink (json empty)
--       n_acks {request_id}*
-- Returns {enqueued, duplicates, limit_dropped, acked, spare, id1, json1, id2, json2, ...}
local meta, seq, queue, reqs, leases, seen, items, failed, stats, tokens =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local hostq, ready, hosts, digests, fifo = KEYS[11], KEYS[12], KEYS[13], KEYS[14], KEYS[15]
local ts = KEYS[16]
local k = {meta = meta, seq = seq, queue = queue, fifo = fifo, reqs = reqs, leases = leases,
           stats = stats, hostq = hostq, ready = ready, hosts = hosts}
local worker, token, want, epoch = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local grant = tonumber(ARGV[5])
local i = 6

local last = redis.call('HGET', tokens, worker)
if last and string.sub(last, 1, #token + 1) == token .. ' ' then
  -- written again (unchanged), so that a WAIT after this replay covers the commit
  -- (statecrawl.frontier.replication)
  redis.call('HSET', tokens, worker, last)
  return cjson.decode(string.sub(last, #token + 2))
end
if redis.call('HGET', meta, 'epoch') ~= epoch then
  return redis.error_reply('SCLOST the crawl is gone from Redis or was created again')
end
local seen_add = make_dedupe(seen, meta)
local seen_has_not = grant and make_dedupe(seen, meta, true)  -- the same check, writing nothing

-- The rolling counters' bucket of now (statecrawl.frontier.rolling): 10 s, kept an hour.
local t = redis.call('TIME')
local bucket = ts .. ':' .. math.floor(tonumber(t[1]) / 10)
local rolled = false
local function roll(name, delta)
  if delta ~= 0 then
    redis.call('HINCRBY', bucket, name, delta)
    rolled = true
  end
end

local n_counters = tonumber(ARGV[i]); i = i + 1
for _ = 1, n_counters do
  if string.sub(ARGV[i], 1, 3) == 'ts:' then
    roll(string.sub(ARGV[i], 4), tonumber(ARGV[i + 1]))
  else
    redis.call('HINCRBY', stats, ARGV[i], ARGV[i + 1])
  end
  i = i + 2
end
local was_empty = redis.call('ZCARD', queue) == 0 and redis.call('ZCARD', hostq) == 0
  and redis.call('ZCARD', fifo) == 0
local scores = {}

local limit = tonumber(redis.call('HGET', meta, 'limit') or '0') or 0
local admitted = redis.call('HGET', stats, 'admitted')
-- a crawl with requests but no `admitted` is from before the counter (never a shard);
-- a new one records it with its first requests, counted or not (robots.txt, sitemaps)
local before = not admitted and redis.call('HGET', stats, 'enqueued')
local fresh = not admitted and not before
if not admitted and not grant then admitted = before end
admitted = tonumber(admitted or '0') or 0
local limited = limit > 0
if grant then limit, limited = admitted + grant, true end
local enqueued, duplicates, limit_dropped, acked, counted = 0, 0, 0, 0, 0

local n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local fp, flags, score, body = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3]
  i = i + 4
  local counts = flags % 4 < 2
  local new = true
  if flags % 2 == 1 and grant and counts and admitted >= limit then
    new = seen_has_not(fp)  -- over the grant: dropped below, not recorded
  elseif flags % 2 == 1 then
    new = seen_add(fp)
  elseif flags >= 4 then
    seen_add(fp)  -- enqueued even if seen, and recorded: links back to it are duplicates
  end
  if not new then
    duplicates = duplicates + 1
  elseif counts and limited and admitted >= limit then
    limit_dropped = limit_dropped + 1
  else
    fifo_push(fifo, score, body, scores)  -- its id comes with its lease
    if counts then
      admitted = admitted + 1
      counted = counted + 1
    end
    enqueued = enqueued + 1
  end
end

-- True if the digest of item key `key` was not in `digests` (and adds it).
-- (digests.lua is prepended.)
local function item_digest_new(key)
  return digest_put(digests, sha1_bytes('item ' .. key), false)
end

n = tonumber(ARGV[i]); i = i + 1
local items_sent = n
if n > 0 and redis.call('HEXISTS', stats, 'items') == 0 then
  redis.call('HSET', stats, 'items', redis.call('HLEN', items))  -- a crawl begun before the counter
end
for _ = 1, n do
  local key, flags, body = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2]
  i = i + 3
  local new
  if flags >= 2 then
    new = item_digest_new(key)
  else
    new = redis.call('HSET', items, key, body) == 1
  end
  if new then redis.call('HINCRBY', stats, 'items', 1) end
  if flags % 2 == 1 then
    redis.call('SADD', failed, key)
  else
    redis.call('SREM', failed, key)
  end
end

n = tonumber(ARGV[i]); i = i + 1
for _ = 1, n do
  local id = ARGV[i]
  i = i + 1
  local lease = redis.call('HGET', leases, id)
  -- Only the owner acknowledges: a lease taken over by another worker is
  -- that worker's to finish (its output is idempotent with ours).
  if lease and string.sub(lease, 1, #worker + 1) == worker .. ' ' then
    redis.call('HDEL', leases, id)
    redis.call('HDEL', reqs, id)
    host_done(ready, hosts, lease)
    acked = acked + 1
  end
end

if counted > 0 or (fresh and enqueued > 0) then redis.call('HSET', stats, 'admitted', admitted) end
if enqueued > 0 then
  redis.call('HINCRBY', stats, 'enqueued', enqueued)
  mark_running(meta)
end
if duplicates > 0 then redis.call('HINCRBY', stats, 'duplicates', duplicates) end
if limit_dropped > 0 then redis.call('HINCRBY', stats, 'limit_dropped', limit_dropped) end
if acked > 0 then redis.call('HINCRBY', stats, 'acked', acked) end
roll('pages', acked)
roll('items', items_sent)
roll('enqueued', enqueued)
roll('duplicates', duplicates)
if rolled then redis.call('EXPIRE', bucket, 3600) end
-- Wake idle workers when work appears in an empty frontier.
if was_empty and enqueued > 0 then redis.call('PUBLISH', queue, 'work') end
local result = {enqueued, duplicates, limit_dropped, acked, grant and (grant - counted) or 0}
if want > 0 and redis.call('HGET', meta, 'state') ~= 'cancelled' then
  take_any(k, worker, want, result)
end
redis.call('HSET', tokens, worker, token .. ' ' .. cjson.encode(result))
return result

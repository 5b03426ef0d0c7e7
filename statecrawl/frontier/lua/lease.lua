-- Lease up to N requests to a worker: pop the best-scored ids from the
-- frontier and record them as in flight under the worker's id. Also records
-- the worker's heartbeat and, when nothing could be leased, tells whether the
-- whole crawl is finished (frontier and in-flight set both empty), marking it
-- so in meta. The caller asks for that check only when it has no unflushed
-- output of its own, so a worker's start requests cannot race it.
--
-- Like a commit, a lease is applied at most once per token (kept in the
-- tokens hash under "<worker>|lease"), so a worker that lost the reply gets
-- the same requests when it asks again.
--
-- Like a commit, it fails with "SCLOST" and changes nothing when meta is gone
-- or holds another epoch than the worker's (see commit.lua).
--
-- KEYS: meta queue reqs leases workers stats tokens hostq ready hosts seq fifo
-- ARGV: worker n check_finished(0|1) token epoch
-- Times come from the Redis clock, so workers on different machines agree.
-- Returns {state, id1, json1, id2, json2, ...}; a polite crawl's state may be
-- "running <ms>" (nothing leased; the first host is due in <ms>), and each id is
-- "<id> <at> <now> <host>" (polite.lua). (take_leases.lua and polite.lua are prepended.)
local meta, queue, reqs, leases, workers, stats, tokens, hostq, ready, hosts, seq, fifo =
  KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10],
  KEYS[11], KEYS[12]
local k = {meta = meta, seq = seq, queue = queue, fifo = fifo, reqs = reqs, leases = leases,
           stats = stats, hostq = hostq, ready = ready, hosts = hosts}
local worker, n, token = ARGV[1], tonumber(ARGV[2]), ARGV[4]
local field = worker .. '|lease'
local last = redis.call('HGET', tokens, field)
if last and string.sub(last, 1, #token + 1) == token .. ' ' then
  redis.call('HSET', tokens, field, last)  -- a write, so a WAIT after the replay covers it
  return cjson.decode(string.sub(last, #token + 2))
end
if redis.call('HGET', meta, 'epoch') ~= ARGV[5] then
  return redis.error_reply('SCLOST the crawl is gone from Redis or was created again')
end
local now = redis.call('TIME')

redis.call('ZADD', workers, now[1] * 1000 + math.floor(now[2] / 1000), worker)
local state = redis.call('HGET', meta, 'state') or 'running'
local out = {state}
if state == 'cancelled' then return out end

if n > 0 and take_any(k, worker, n, out) > 0 then
  if state == 'finished' then out[1] = 'running' end
  redis.call('HSET', tokens, field, token .. ' ' .. cjson.encode(out))
  return out
end

if ARGV[3] == '1' and redis.call('ZCARD', queue) == 0 and redis.call('ZCARD', fifo) == 0
    and redis.call('HLEN', leases) == 0
    and redis.call('ZCARD', hostq) == 0 then
  if state == 'running' then
    redis.call('HSET', meta, 'state', 'finished', 'finished_at', now[1])
  end
  out[1] = 'finished'
end
-- A polite crawl whose hosts are all waiting: say when the first is due within
-- the horizon ("running <ms>"), so that idle workers sleep until then.
if out[1] == 'running' and redis.call('HGET', meta, 'polite') == '1' then
  local first = redis.call('ZRANGE', ready, 0, 0, 'WITHSCORES')
  if #first > 0 then
    local horizon = tonumber(redis.call('HGET', hosts, '*|h')) or 500
    local wait = tonumber(first[2]) - horizon - (now[1] * 1000 + math.floor(now[2] / 1000))
    out[1] = 'running ' .. string.format('%d', math.max(0, wait))
  end
end
return out

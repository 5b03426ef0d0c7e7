-- Add finished documents (in completion order) and newly discovered pages.
--
-- Each document comes with a key (its page's URL, or "#<n>" for the n-th URL
-- of a batch; "" = none). A key already in the index names the slot its
-- first copy took: a page fetched twice (a worker killed after storing its
-- document, before acknowledging the page) replaces that document instead
-- of adding a second one, and counts once. New documents go to the next
-- indexes 0, 1, 2, ... (a key that failed before stops counting as failed); the job's limit caps how many are kept, crawl-wide,
-- whichever worker sends them. total (pages known) grows by `discovered`,
-- capped by the limit, never below the pages done. A job that has ended
-- takes nothing. A batch (its total fixed at the start) completes with the
-- document that makes docs + failed reach its total.
--
-- KEYS: job request docs errors robots index hooks secret
-- ARGV: ttl_ms discovered key1 doc1 key2 doc2 ... (each doc compressed)
-- Returns {status ('' = no such job), accepted, docs, total}.
local ttl, discovered = tonumber(ARGV[1]), tonumber(ARGV[2])
local job = redis.call('HMGET', KEYS[1], 'status', 'docs', 'failed', 'total', 'limit', 'kind')
if not job[1] then return {'', 0, 0, 0} end
local docs, failed, total, limit = tonumber(job[2]), tonumber(job[3]), tonumber(job[4]), tonumber(job[5])
if job[1] ~= 'scraping' then return {job[1], 0, docs, total} end
local accepted = 0
for i = 3, #ARGV, 2 do
  local key, doc = ARGV[i], ARGV[i + 1]
  local slot = key ~= '' and redis.call('HGET', KEYS[6], key) or false
  if slot and slot ~= 'failed' then
    redis.call('HSET', KEYS[3], slot, doc)
    accepted = accepted + 1
  elseif limit <= 0 or docs < limit then
    if slot then failed = failed - 1 end  -- it failed before; now it is a page
    redis.call('HSET', KEYS[3], docs, doc)
    if key ~= '' then redis.call('HSET', KEYS[6], key, docs) end
    docs = docs + 1
    accepted = accepted + 1
  end
end
total = total + discovered
if limit > 0 and job[6] ~= 'batch' then total = math.min(total, limit) end
total = math.max(total, docs + failed)
redis.call('HSET', KEYS[1], 'docs', docs, 'failed', failed, 'total', total)
local status = job[1]
local now = now_ms()
if job[6] == 'batch' and docs + failed >= total then
  status = 'completed'
  redis.call('HSET', KEYS[1], 'status', status, 'finished_at', string.format('%.0f', now))
  redis.call('DEL', KEYS[8])
end
touch(now, ttl)
return {status, accepted, docs, total}

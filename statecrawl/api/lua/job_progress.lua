-- Add finished documents (in completion order) and newly discovered pages.
--
-- Documents go to docs under the next indexes 0, 1, 2, ...; the job's limit
-- caps how many are kept, crawl-wide, whichever worker sends them. total
-- (pages known) grows by `discovered`, capped by the limit, never below the
-- pages done. A job that has ended takes nothing.
--
-- ARGV: ttl_ms discovered doc1 doc2 ... (each a compressed document)
-- Returns {status ('' = no such job), accepted, docs, total}.
local ttl, discovered = tonumber(ARGV[1]), tonumber(ARGV[2])
local job = redis.call('HMGET', KEYS[1], 'status', 'docs', 'failed', 'total', 'limit')
if not job[1] then return {'', 0, 0, 0} end
local docs, failed, total, limit = tonumber(job[2]), tonumber(job[3]), tonumber(job[4]), tonumber(job[5])
if job[1] ~= 'scraping' then return {job[1], 0, docs, total} end
local accepted = #ARGV - 2
if limit > 0 then accepted = math.max(0, math.min(accepted, limit - docs)) end
for i = 1, accepted do
  redis.call('HSET', KEYS[3], docs + i - 1, ARGV[2 + i])
end
docs = docs + accepted
total = total + discovered
if limit > 0 then total = math.min(total, limit) end
total = math.max(total, docs + failed)
redis.call('HSET', KEYS[1], 'docs', docs, 'total', total)
touch(now_ms(), ttl)
return {job[1], accepted, docs, total}

-- The first step of a purge (statecrawl.frontier.lifecycle): delete the
-- crawl's meta, and its API job's record if it has one, in one atomic step
-- that first checks the crawl may go. With meta gone the crawl's epoch is
-- gone, so every lease and commit of a worker still on it fails with SCLOST
-- from here on (lease.lua, commit.lua); the rest of its keys are unlinked
-- after, in batches (purge_batch.lua).
--
-- A worker is live when its heartbeat is younger than live_ms.
--   'force': always.
--   'idle':  not while a worker is live, nor while its API job is running
--            (statecrawl purge without --force).
--   'ttl':   only a crawl marked finished at least ttl_s ago (meta
--            finished_at, Redis clock), with no live worker and no API job
--            (a job's crawl expires with the job, STATECRAWL_API_JOB_TTL):
--            a crawl that ran again since (mark_running drops finished_at)
--            or a worker that just joined keeps it.
--
-- KEYS: meta workers job
-- ARGV: mode live_ms ttl_s
-- Returns {outcome, state, live workers, epoch}: outcome 'purged', 'gone'
-- (no meta and no job record: nothing deleted), or refused: 'live',
-- 'job_running', 'api_job', 'not_finished', 'recent'.
local meta, workers, job = KEYS[1], KEYS[2], KEYS[3]
local mode, live_ms, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local fields = redis.call('HMGET', meta, 'state', 'finished_at', 'epoch')
local state, finished_at, epoch = fields[1] or '', fields[2], fields[3] or ''
local live = redis.call('ZCOUNT', workers, now - live_ms, '+inf')
local job_status = redis.call('HGET', job, 'status')
if redis.call('EXISTS', meta) == 0 and not job_status then return {'gone', '', live, ''} end
if mode ~= 'force' then
  if live > 0 then return {'live', state, live, epoch} end
  if job_status == 'scraping' then return {'job_running', state, live, epoch} end
end
if mode == 'ttl' then
  if job_status then return {'api_job', state, live, epoch} end
  if state ~= 'finished' or not finished_at then return {'not_finished', state, live, epoch} end
  if tonumber(finished_at) + ttl > tonumber(t[1]) then return {'recent', state, live, epoch} end
end
redis.call('UNLINK', meta, job)
return {'purged', state, live, epoch}

-- Queue one webhook delivery behind the job's earlier ones (statecrawl.api.webhooks).
--
-- KEYS: job hooks -- one job's keys, one hash tag.
-- ARGV: entry ("<delivery id> <JSON>")
-- The list expires with the job: its PEXPIREAT is the job's expires_at, so it
-- never outlives the record (touch() in job_common.lua moves that moment on
-- each job write; the next push follows it). A job that is gone takes nothing.
-- Returns the list's length after the push, 0 when there is no such job.
local expires = redis.call('HGET', KEYS[1], 'expires_at')
if not expires then return 0 end
local n = redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('PEXPIREAT', KEYS[2], expires)
return n

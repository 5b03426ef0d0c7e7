-- Quarantine a leased request that its worker could not rebuild (poison in
-- the frontier): in one step, the request leaves the in-flight set and the
-- request store and goes to the crawl's dead-letter list, so it is neither
-- lost without a trace nor handed to the next worker. Only the lease's owner
-- can do it. (statecrawl/deadletter.py describes the dead letter.)
--
-- KEYS: leases reqs dead stats ready hosts
-- ARGV: worker request_id error max_entries max_data [data]
--       (data: what the dead letter shows, e.g. a packed request's JSON; default
--       the stored value)
-- Returns 1 if quarantined, 0 if the lease is not the worker's (any more).
-- (dead_letter.lua is prepended.)
local leases, reqs, dead, stats = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local worker, id, err = ARGV[1], ARGV[2], ARGV[3]
local max_entries, max_data = tonumber(ARGV[4]), tonumber(ARGV[5])
local lease = redis.call('HGET', leases, id)
if not lease or string.sub(lease, 1, #worker + 1) ~= worker .. ' ' then return 0 end
local body = ARGV[6] or redis.call('HGET', reqs, id) or ''
local t = redis.call('TIME')
push_dead_letter(dead, stats, cjson.encode({
  kind = 'request', ref = id, error = err, worker = worker,
  at = tonumber(t[1]) + tonumber(t[2]) / 1e6, data = string.sub(body, 1, max_data),
}), max_entries, 'request')
redis.call('HDEL', leases, id)
host_done(KEYS[5], KEYS[6], lease)
redis.call('HDEL', reqs, id)
return 1

-- Claim due jobs from the webhook index for one sender (statecrawl.api.webhooks).
--
-- KEYS: sc:api:hooks (job id -> when its next delivery is due, ms, Redis clock)
-- ARGV: lease_ms max
-- Each claimed job's score moves to now + lease: no other sender sees it due
-- until this one releases it (or dies, and the lease runs out). The lease
-- score is the claim's token: a release checks it is still there.
-- Returns {lease, next due (ms, '' = none), now, id1, id2, ...}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease = string.format('%.0f', now + tonumber(ARGV[1]))
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', string.format('%.0f', now),
                       'LIMIT', 0, tonumber(ARGV[2]))
for _, id in ipairs(due) do
  redis.call('ZADD', KEYS[1], 'XX', lease, id)
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
local out = {lease, first[2] or '', string.format('%.0f', now)}
for _, id in ipairs(due) do table.insert(out, id) end
return out

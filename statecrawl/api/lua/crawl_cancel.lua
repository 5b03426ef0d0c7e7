-- Cancel a crawl that has not ended (the live page's Cancel, for a crawl with no job).
-- One script, so a crawl that finishes meanwhile stays finished.
-- KEYS: meta
-- Returns false when there is no crawl, else its state before ("running" if none is
-- recorded); only a crawl not finished or cancelled is set to "cancelled".
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local state = redis.call('HGET', KEYS[1], 'state') or 'running'
if state ~= 'finished' and state ~= 'cancelled' then
  redis.call('HSET', KEYS[1], 'state', 'cancelled')
end
return state

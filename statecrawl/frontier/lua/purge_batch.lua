-- One batch of a purge (statecrawl.frontier.lifecycle): unlink keys of a
-- crawl whose meta purge_meta.lua deleted, unless the crawl was created
-- again meanwhile (a worker started with its id made a new meta): then the
-- keys are the new crawl's, and nothing is deleted. UNLINK frees large
-- values in Redis' background thread.
--
-- KEYS: meta key...   (all of one crawl: one hash tag)
-- Returns the number of keys unlinked, or -1 (the crawl exists again).
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
local n = 0
for i = 2, #KEYS do n = n + redis.call('UNLINK', KEYS[i]) end
return n

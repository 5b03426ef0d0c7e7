-- Check fingerprints against the crawl's dupefilter without enqueuing
-- anything, and record the new ones unless asked only to check: the
-- dupefilter's path with Scrapy's own scheduler, and the benchmarks.
-- Prepended with dedupe_<mode>.lua, like commit.lua.
--
-- KEYS: seen meta
-- ARGV: add(0|1) fingerprint*
-- Returns the number of fingerprints that were new (with add=0, a repeat
-- within the call counts as new each time).
local is_new = make_dedupe(KEYS[1], KEYS[2], ARGV[1] ~= '1')
local new = 0
for i = 2, #ARGV do
  if is_new(ARGV[i]) then new = new + 1 end
end
return new

-- Move one unreadable session value (a cookie-jar field, a browser storage
-- state, the spider state) to the crawl's dead-letter list, but only if it
-- still holds the bad value the worker read (compare-and-move): a good value
-- another worker wrote since is never deleted.
--
-- KEYS: holder (a HASH with mode 'hash', a STRING with mode 'string'), dead, stats
-- ARGV: mode field raw letter max kind
--   field: the hash field (ignored for 'string'); raw: the value as read;
--   letter: the dead letter's JSON; max: entries kept in dead; kind: the
--   dead letter's kind (counted as quarantined_<kind>)
-- Returns 1 if moved, 0 if the value is no longer there. (dead_letter.lua is prepended.)
local holder, dead, stats = KEYS[1], KEYS[2], KEYS[3]
local mode, field, raw = ARGV[1], ARGV[2], ARGV[3]
local current
if mode == 'hash' then
  current = redis.call('HGET', holder, field)
else
  current = redis.call('GET', holder)
end
if current ~= raw then
  return 0
end
if mode == 'hash' then
  redis.call('HDEL', holder, field)
else
  redis.call('DEL', holder)
end
push_dead_letter(dead, stats, ARGV[4], tonumber(ARGV[5]), ARGV[6])
return 1

-- Shared by quarantine.lua and quarantine_field.lua (prepended to each).
-- Appends one dead letter (JSON) to the crawl's dead-letter list, keeps the
-- newest `max_entries`, and counts it as `quarantined` and
-- `quarantined_<kind>` in the crawl's stats (statecrawl/frontier/deadletter.py).
local function push_dead_letter(dead, stats, letter, max_entries, kind)
  redis.call('RPUSH', dead, letter)
  redis.call('LTRIM', dead, -max_entries, -1)
  redis.call('HINCRBY', stats, 'quarantined', 1)
  redis.call('HINCRBY', stats, 'quarantined_' .. kind, 1)
end

-- After an outage, a worker cannot be sure which of its leases Redis still
-- has: a lease whose reply was lost, or state rolled back by a Redis restart
-- (appendfsync everysec), can leave a lease under its id that it does not
-- know about. Such a lease would never be processed nor reclaimed (the
-- worker is alive), and the crawl would never finish. This gives back every
-- lease the worker holds in Redis that it did not list as known.
--
-- KEYS: queue leases stats ready hosts
-- ARGV: worker {known_request_id}*
-- Returns the number given back. (requeue_owned.lua is prepended.)
local known = {}
for j = 2, #ARGV do known[ARGV[j]] = true end
return requeue_owned(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1],
  function(id) return not known[id] end, 'released')

-- Give leased requests back to the frontier, with their original score, when
-- the worker holding them will not process them (it is stopping). Only the
-- owner's leases are released. (host_done.lua and requeue_owned.lua are prepended.)
--
-- KEYS: queue leases stats ready hosts
-- ARGV: worker {request_id}*
-- Returns the number released.
local ids = {}
for j = 2, #ARGV do ids[ARGV[j]] = true end
return requeue_owned(KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], ARGV[1], function(id) return ids[id] end,
  'released')

-- A worker leaves the crawl: every lease it still holds goes back to the
-- frontier (with its score), and it is forgotten. Nothing it held can be
-- orphaned, even a lease whose reply it never received.
--
-- KEYS: queue leases workers stats tokens ready hosts
-- ARGV: worker [reason]   'released' (default: it stopped) or 'reclaimed' (its
--                         watchdog saw its process die)
-- Returns the number of leases given back. (requeue_owned.lua is prepended.)
local queue, leases, workers, stats, tokens = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local ready, hosts = KEYS[6], KEYS[7]
local worker, reason = ARGV[1], ARGV[2] or 'released'
local released = requeue_owned(queue, leases, stats, ready, hosts, worker, function() return true end, reason)
redis.call('ZREM', workers, worker)
redis.call('HDEL', tokens, worker, worker .. '|lease', worker .. '|info', worker .. '|q+', worker .. '|q-')
return released

-- A fresh slot for a polite request that missed its own (its worker was late,
-- or the host was backed off since): the host's next allowed time, or now,
-- and the next time moves on by the host's delay. (polite.lua is prepended.)
--
-- KEYS: hosts ready
-- ARGV: host
-- Returns {at, now} (ms, Redis clock).
local hosts, ready, host = KEYS[1], KEYS[2], ARGV[1]
local now = now_ms()
local c = host_conf(hosts, host, {})
local at = math.max(now, c.next)
defer_host(hosts, ready, host, at + c.delay)
return {string.format('%d', at), string.format('%d', now)}

-- A worker replies to a service request (statecrawl.frontier.service): the
-- reply is pushed only while the caller's ticket exists (a caller that gave
-- up deleted it, or it expired with the caller's timeout), and the ticket is
-- deleted with the push: the caller needs it no more, its headers go at once,
-- and a second push (a re-fetch after a worker was declared dead) finds none,
-- so the list holds one reply at most, which the caller's BLPOP takes (the
-- emptied list is gone with it). The reply list expires by itself, so nothing
-- is left behind if nobody reads it.
--
-- KEYS: ticket reply
-- ARGV: reply_json ttl_ms
-- Returns 1 if the reply was pushed, 0 if the ticket is gone.
if redis.call('DEL', KEYS[1]) == 0 then
  return 0
end
redis.call('LPUSH', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1

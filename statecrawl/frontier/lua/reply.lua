-- A worker replies to a service request (statecrawl.frontier.service): the
-- reply is pushed only while the caller's ticket exists (a caller that gave
-- up deleted it, or it expired with the caller's timeout), and the reply
-- list expires by itself, so nothing is left behind if nobody reads it.
--
-- KEYS: ticket reply
-- ARGV: reply_json ttl_ms
-- Returns 1 if the reply was pushed, 0 if the ticket is gone.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('LPUSH', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1

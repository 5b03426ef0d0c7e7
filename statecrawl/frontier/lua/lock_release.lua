-- Release a lock only if it is still held with our value (compare-and-delete),
-- so a worker whose lock expired never deletes the lock another worker took
-- since. Also used to take over the lock of a worker found dead.
--
-- KEYS: lock
-- ARGV: value
-- Returns 1 if deleted, else 0.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0

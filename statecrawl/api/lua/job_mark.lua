-- Set one field of a job record, only while the job exists (an expired job is not made again,
-- without its expiry). The expiry is left as it is: a mark is no change of the job's own.
--
-- ARGV: field value
-- Returns 1 if set, 0 if there is no such job.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1

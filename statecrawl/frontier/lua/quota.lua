-- A sharded crawl's page limit (statecrawl.frontier.shards): shard 0 hands out
-- admissions. meta.limit is the limit; meta.quota_out counts the admissions granted
-- to shards' commits and not given back. op "+" grants up to n (what the limit has
-- left), op "-" takes n back (a grant's unused part). Each worker's last call of
-- each op is kept in `tokens` (field "<worker>|q+" or "<worker>|q-"), so a call sent
-- again (its reply lost) returns the first answer and is not applied twice.
--
-- KEYS: meta tokens
-- ARGV: op worker token n epoch
-- Returns the count granted (+) or taken back (-).
local meta, tokens = KEYS[1], KEYS[2]
local op, worker, token, n, epoch = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local field = worker .. '|q' .. op
local last = redis.call('HGET', tokens, field)
if last and string.sub(last, 1, #token + 1) == token .. ' ' then
  redis.call('HSET', tokens, field, last)  -- written again: a WAIT after it covers it
  return tonumber(string.sub(last, #token + 2))
end
if redis.call('HGET', meta, 'epoch') ~= epoch then
  return redis.error_reply('SCLOST the crawl is gone from Redis or was created again')
end
local out = tonumber(redis.call('HGET', meta, 'quota_out') or '0') or 0
local limit = tonumber(redis.call('HGET', meta, 'limit') or '0') or 0
local done = math.max(0, math.min(n, op == '+' and limit - out or out))
if done > 0 then redis.call('HINCRBY', meta, 'quota_out', op == '+' and done or -done) end
redis.call('HSET', tokens, field, token .. ' ' .. done)
return done

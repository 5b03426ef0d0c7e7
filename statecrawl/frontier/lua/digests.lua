-- The crawl's `digests` HASH, shared by the exact dupefilter (dedupe_exact.lua)
-- and commit.lua's item-key digests (prepended to both).
--
-- A digest is 20 bytes. Bytes 1-2 name one of 65,536 fields, the bucket;
-- bytes 3-10, the remainder, are appended to that field's value, a string of
-- 8-byte remainders; a match counts only at a remainder boundary.

-- The 20 bytes of SHA-1 of `text`.
local function sha1_bytes(text)
  return (string.gsub(redis.sha1hex(text), '..', function(h) return string.char(tonumber(h, 16)) end))
end

-- True if digest `d` was not in `digests`; adds it unless `check_only`.
local function digest_put(digests, d, check_only)
  local bucket, rest = string.sub(d, 1, 2), string.sub(d, 3, 10)
  local packed = redis.call('HGET', digests, bucket)
  if packed then
    local from = 1
    while true do
      local at = string.find(packed, rest, from, true)
      if not at then break end
      if at % 8 == 1 then return false end
      from = at + 1
    end
  end
  if not check_only then redis.call('HSET', digests, bucket, (packed or '') .. rest) end
  return true
end

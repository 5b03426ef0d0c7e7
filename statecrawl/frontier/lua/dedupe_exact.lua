-- Exact dupefilter, compact layout: the crawl's `digests` HASH.
--
-- A fingerprint is 20 bytes (Scrapy's SHA-1 REQUEST_FINGERPRINTER; one of any
-- other length is hashed with SHA-1 first). Bytes 1-2 name one of 65,536
-- fields, the bucket; bytes 3-10, the remainder, are appended to that field's
-- value, a string of 8-byte remainders. So 80 bits of each fingerprint are
-- kept, at about 8 bytes a URL plus a field's overhead (~55 bytes) shared by
-- the URLs of its bucket. Two URLs are confused only when those 80 bits
-- agree: for a crawl of N URLs, a chance of about N^2 / 2^81 that it happens
-- at all (4e-13 at 1M URLs, 4e-7 at 1G).
--
-- Each new fingerprint also counts in `seen` of the crawl's stats hash. The
-- keys of the crawl are found from seen_key's prefix "sc:{id}:" (one hash
-- slot; see statecrawl/keys.py). With check_only, nothing is written.
-- (digests.lua is prepended: the layout, and digest_put.)
local function fingerprint_digest(fingerprint)
  if #fingerprint == 20 then return fingerprint end
  return sha1_bytes(fingerprint)
end

local function make_dedupe(seen_key, meta_key, check_only)
  local prefix = string.sub(seen_key, 1, -5)  -- strip "seen"
  local digests, stats = prefix .. 'digests', prefix .. 'stats'
  return function(fingerprint)
    if not digest_put(digests, fingerprint_digest(fingerprint), check_only) then return false end
    if not check_only then redis.call('HINCRBY', stats, 'seen', 1) end
    return true
  end
end

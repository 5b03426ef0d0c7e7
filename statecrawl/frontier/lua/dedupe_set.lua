-- Exact dupefilter of crawls begun before the compact layout: a SET of binary
-- fingerprints (the crawl's `seen` key). With check_only, nothing is added.
local function make_dedupe(seen_key, meta_key, check_only)
  if check_only then
    return function(fingerprint)
      return redis.call('SISMEMBER', seen_key, fingerprint) == 0
    end
  end
  return function(fingerprint)
    return redis.call('SADD', seen_key, fingerprint) == 1
  end
end

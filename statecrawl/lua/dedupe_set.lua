-- Exact dupefilter: a SET of binary fingerprints.
local function make_dedupe(seen_key, meta_key)
  return function(fingerprint)
    return redis.call('SADD', seen_key, fingerprint) == 1
  end
end

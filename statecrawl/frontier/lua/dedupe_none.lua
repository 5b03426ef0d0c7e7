-- No crawl-wide dupefilter: every request is new (a local one may filter).
local function make_dedupe(seen_key, meta_key, check_only)
  return function(fingerprint) return true end
end

-- Bloom dupefilter: the crawl's `bloom` bitmap of m bits in blocks of 4096
-- bits (512 bytes), k bits per fingerprint, all in one block (a blocked Bloom
-- filter: one GETRANGE reads everything a check needs). m and k are the
-- crawl's (meta bloom_m, bloom_k), fixed by its first worker; dedupe_init.lua
-- preallocated the bitmap, and statecrawl.dupefilter.bloom_parameters sized m
-- for the uneven load of blocks.
--
-- A fingerprint is 20 bytes (Scrapy's SHA-1; any other length is hashed with
-- SHA-1 first). Bytes 1-6 pick the block; bytes 7-9 and 10-12 give x and y,
-- and the k bit positions in the block follow by enhanced double hashing:
-- position i is x, then x += y, y += i (mod 4096). Bits are numbered as
-- GETBIT does (bit 0 = the high bit of byte 0). The fingerprint is new when
-- any of its bits is 0; those are set with one SETRANGE of the bytes that
-- change. A false positive (all k bits set by other URLs) makes a new URL
-- look seen: it is skipped.
--
-- Each new fingerprint counts in `seen` of the crawl's stats hash, and
-- `bloom_estimated_false_skips` there is raised to floor(E): the expected
-- number of new URLs skipped as false positives so far, the integral over
-- inserts of the false-positive rate at that fill (see expected_false_skips).
-- The script cannot tell a false positive from a real duplicate; this is an
-- estimate. The keys of the crawl are found from seen_key's prefix "sc:{id}:"
-- (one hash slot; see statecrawl/keys.py). With check_only, nothing is written.
local BLOCK_BITS, BLOCK_BYTES = 4096, 512
local MASK = {128, 64, 32, 16, 8, 4, 2, 1}  -- bit r of a byte, GETBIT order
local byte, band, bor = string.byte, bit.band, bit.bor

local function fingerprint_digest(fingerprint)
  if #fingerprint == 20 then return fingerprint end
  local hex = redis.sha1hex(fingerprint)
  return (string.gsub(hex, '..', function(h) return string.char(tonumber(h, 16)) end))
end

-- With n fingerprints in `blocks` blocks, a block holds j of them with the
-- Poisson probability P(j; n / blocks), and a fresh fingerprint is a false
-- positive there with probability g(j) = (1 - (1 - 1/4096)^(kj))^k.
-- Returns the false-positive rate now, sum_j P(j) g(j), and the expected
-- false skips so far, integral over [0, n] of that rate, which is
-- blocks * sum_j P(Poisson(n / blocks) > j) g(j).
local function false_positives(n, blocks, k)
  if n <= 0 then return 0, 0 end
  local lam = n / blocks
  local loglam, lq = math.log(lam), k * math.log(1 - 1 / BLOCK_BITS)
  local logp, cdf, rate, tail = -lam, 0, 0, 0
  for j = 0, math.floor(lam + 12 * math.sqrt(lam) + 30) do
    if j > 0 then logp = logp + loglam - math.log(j) end
    local p = math.exp(logp)
    cdf = cdf + p
    local g = (1 - math.exp(lq * j)) ^ k
    rate = rate + p * g
    if cdf < 1 then tail = tail + (1 - cdf) * g end
  end
  return rate, blocks * tail
end

local function make_dedupe(seen_key, meta_key, check_only)
  local prefix = string.sub(seen_key, 1, -5)  -- strip "seen"
  local bloom, stats = prefix .. 'bloom', prefix .. 'stats'
  local params = redis.call('HMGET', meta_key, 'bloom_m', 'bloom_k')
  local m, k = tonumber(params[1]), tonumber(params[2])
  if not m or not k or m < BLOCK_BITS then
    error({err = 'ERR statecrawl: the bloom dupefilter of this crawl is not initialised '
                 .. '(meta has no bloom_m / bloom_k)'})
  end
  local blocks = math.floor(m / BLOCK_BITS)
  local rate, estimate, reported  -- on the first insert of the call
  return function(fingerprint)
    local d = fingerprint_digest(fingerprint)
    local a1, a2, a3, a4, a5, a6, b1, b2, b3, c1, c2, c3 = byte(d, 1, 12)
    local block = (((((a1 * 256 + a2) * 256 + a3) * 256 + a4) * 256 + a5) * 256 + a6) % blocks
    local x = ((b1 * 256 + b2) * 256 + b3) % BLOCK_BITS
    local y = ((c1 * 256 + c2) * 256 + c3) % BLOCK_BITS
    local start = block * BLOCK_BYTES
    local bytes = redis.call('GETRANGE', bloom, start, start + BLOCK_BYTES - 1)
    local fresh = false
    local x0, y0 = x, y
    for i = 1, k do  -- a repeat (the common case) only reads
      local r = x % 8
      if band(byte(bytes, (x - r) / 8 + 1), MASK[r + 1]) == 0 then
        fresh = true
        break
      end
      x = (x + y) % BLOCK_BITS
      y = (y + i) % BLOCK_BITS
    end
    if not fresh then return false end
    if check_only then return true end
    local changed = {}  -- byte index (1-based) -> its new value
    x, y = x0, y0
    for i = 1, k do
      local r = x % 8
      local at = (x - r) / 8 + 1
      local value = changed[at] or byte(bytes, at)
      if band(value, MASK[r + 1]) == 0 then changed[at] = bor(value, MASK[r + 1]) end
      x = (x + y) % BLOCK_BITS
      y = (y + i) % BLOCK_BITS
    end
    local order = {}
    for at in pairs(changed) do order[#order + 1] = at end
    table.sort(order)
    local parts, from = {}, order[1]
    for _, at in ipairs(order) do
      if at > from then parts[#parts + 1] = string.sub(bytes, from, at - 1) end
      parts[#parts + 1] = string.char(changed[at])
      from = at + 1
    end
    redis.call('SETRANGE', bloom, start + order[1] - 1, table.concat(parts))
    local n = redis.call('HINCRBY', stats, 'seen', 1)
    if not rate then
      reported = tonumber(redis.call('HGET', stats, 'bloom_estimated_false_skips')) or 0
      rate, estimate = false_positives(n - 1, blocks, k)
    end
    estimate = estimate + rate
    if math.floor(estimate) > reported then
      reported = math.floor(estimate)
      redis.call('HSET', stats, 'bloom_estimated_false_skips', reported)
    end
    return true
  end
end

-- Applies one increment batch to one subject's hash, all or nothing.
--
-- KEYS[1]  the subject's hash of cells
-- KEYS[2]  the batch's marker (same slot)
-- ARGV     mode ('apply' or 'check'), the marker's lifetime in ms, the
--          event time (Unix seconds), the oldest month index and day
--          number kept, the number of counters written and of buckets
--          written per counter, then per counter (every bucket of a
--          counter receives the same additions): what a bucket holds
--          after the batch if it holds nothing yet ('' when the batch
--          overflows from zero); for its count and then its value the
--          lowest and highest amount a bucket may hold ('' where every
--          amount will do) and the sum of the batch's additions; and the
--          field names `ID:B` of its buckets, its total first.
--
-- A bucket's field holds `COUNT:VALUE:LASTUPDATED`.
--
-- Replies {'ok'}, {'duplicate'} when the marker says the batch was
-- applied already, {'overflow', {count, value of each bucket}} when an
-- amount is out of its bounds, or {'not_integer', field} when a field
-- does not hold two canonical 64-bit integers and a time. The marker is
-- set first (a batch applying claims its id) and removed again when a
-- check fails, so nothing stays written unless every check passes; then
-- one HSET writes every bucket.
--
-- Amounts stay decimal strings: Lua numbers are doubles, exact only below
-- 2^53. Long amounts are compared digit by digit and added in limbs of
-- seven digits. Amounts of at most 13 characters (below 10^13 in
-- magnitude, their sums below 2 * 10^13) are added as Lua numbers, which
-- is exact, and print back exactly with Lua's 14 significant digits.

local cells, marker = KEYS[1], KEYS[2]
local mode, marker_ms, at = ARGV[1], ARGV[2], ARGV[3]
local oldest_month, oldest_day = tonumber(ARGV[4]), tonumber(ARGV[5])
local event_time = tonumber(at)

-- Canonical decimal integers: an optional '-', then digits without a
-- leading zero, or '0'. `negative` is the sign, `digits` the magnitude.
local MINUS, ZERO = string.byte('-'), string.byte('0')
local function split_sign(a)
  if string.byte(a, 1) == MINUS then
    return true, string.sub(a, 2)
  end
  return false, a
end

-- Compares two magnitudes: -1, 0 or 1.
local function compare_digits(a, b)
  if #a ~= #b then
    return #a < #b and -1 or 1
  end
  if a == b then
    return 0
  end
  return a < b and -1 or 1
end

-- Compares two canonical decimal integers: -1, 0 or 1.
local function compare(a, b)
  local a_negative, a_digits = split_sign(a)
  local b_negative, b_digits = split_sign(b)
  if a_negative ~= b_negative then
    return a_negative and -1 or 1
  end
  local order = compare_digits(a_digits, b_digits)
  return a_negative and -order or order
end

-- Whether `value`, a '-' and digits, is canonical and within 64 bits.
local function is_int64(value)
  local first = string.byte(value, 1)
  if first == MINUS then
    if string.byte(value, 2) == ZERO then
      return false
    end
  elseif first == ZERO then
    return #value == 1
  end
  if #value < 19 then
    return true
  end
  local negative, digits = split_sign(value)
  local limit = negative and '9223372036854775808' or '9223372036854775807'
  return #digits < 19 or compare_digits(digits, limit) <= 0
end

-- Limbs of seven digits, least significant first. A limb, and the sum or
-- difference of two limbs with a carry, is far below 2^53: exact.
local LIMB_DIGITS, LIMB_BASE = 7, 10000000

local function to_limbs(digits)
  local limbs, last = {}, #digits
  while last > 0 do
    local first = last - LIMB_DIGITS + 1
    if first < 1 then
      first = 1
    end
    limbs[#limbs + 1] = tonumber(string.sub(digits, first, last))
    last = first - 1
  end
  return limbs
end

local function from_limbs(limbs)
  local top = #limbs
  while top > 1 and limbs[top] == 0 do
    top = top - 1
  end
  local parts = {string.format('%d', limbs[top])}
  for i = top - 1, 1, -1 do
    parts[#parts + 1] = string.format('%07d', limbs[i])
  end
  return table.concat(parts)
end

-- a + b, for magnitudes.
local function add_digits(a, b)
  local x, y = to_limbs(a), to_limbs(b)
  local sum, carry = {}, 0
  for i = 1, math.max(#x, #y) do
    local s = (x[i] or 0) + (y[i] or 0) + carry
    if s >= LIMB_BASE then
      sum[i], carry = s - LIMB_BASE, 1
    else
      sum[i], carry = s, 0
    end
  end
  if carry > 0 then
    sum[#sum + 1] = carry
  end
  return from_limbs(sum)
end

-- a - b, for magnitudes with a >= b.
local function subtract_digits(a, b)
  local x, y = to_limbs(a), to_limbs(b)
  local difference, borrow = {}, 0
  for i = 1, #x do
    local d = x[i] - (y[i] or 0) - borrow
    if d < 0 then
      difference[i], borrow = d + LIMB_BASE, 1
    else
      difference[i], borrow = d, 0
    end
  end
  return from_limbs(difference)
end

-- a + b, for canonical decimal integers; the result is canonical (a
-- string, or a number that prints as one).
local function add(a, b)
  if b == '0' then
    return a
  end
  if #a <= 13 and #b <= 13 then
    return a + b
  end
  local a_negative, a_digits = split_sign(a)
  local b_negative, b_digits = split_sign(b)
  if a_negative == b_negative then
    local sum = add_digits(a_digits, b_digits)
    return a_negative and ('-' .. sum) or sum
  end
  local order = compare_digits(a_digits, b_digits)
  if order == 0 then
    return '0'
  elseif order > 0 then
    local difference = subtract_digits(a_digits, b_digits)
    return a_negative and ('-' .. difference) or difference
  end
  local difference = subtract_digits(b_digits, a_digits)
  return b_negative and ('-' .. difference) or difference
end

-- Whether `amount` lies within `lowest` and `highest`.
local function within(amount, lowest, highest)
  if #amount <= 13 then
    -- Below 10^13 in magnitude: within any lower bound of at least 14
    -- digits below zero and any upper bound of at least 14 above it.
    -- (Signs are read as bytes: Redis's collation may ignore a '-'.)
    if (lowest == '' or (#lowest >= 15 and string.byte(lowest, 1) == MINUS))
        and (highest == '' or (#highest >= 14 and string.byte(highest, 1) ~= MINUS)) then
      return true
    end
  end
  return (lowest == '' or compare(amount, lowest) >= 0)
      and (highest == '' or compare(amount, highest) <= 0)
end

-- The buckets: their names, and where their counter's arguments start.
local counter_count, per_counter = tonumber(ARGV[6]), tonumber(ARGV[7])
local names, starts = {}, {}
for c = 0, counter_count - 1 do
  local start = 8 + c * (7 + per_counter)
  for k = 1, per_counter do
    local b = c * per_counter + k
    names[b], starts[b] = ARGV[start + 6 + k], start
  end
end

-- One HMGET of every bucket, a thousand at a time (unpack is bounded).
local stored = {}
for first = 1, #names, 1000 do
  local last = math.min(first + 999, #names)
  local chunk = redis.call('HMGET', cells, unpack(names, first, last))
  for i = 1, last - first + 1 do
    stored[first + i - 1] = chunk[i]
  end
end

-- Claim the batch's id: a batch applied already answers 'duplicate'.
if mode == 'apply' then
  if not redis.call('SET', marker, '1', 'PX', marker_ms, 'NX') then
    return {'duplicate'}
  end
elseif redis.call('EXISTS', marker) == 1 then
  return {'duplicate'}
end

-- Check every amount against its bounds.
local counts, values, stamps = {}, {}, {}
local out_of_bounds = false
for b = 1, #names do
  local text, count, value, stamp = stored[b], '0', '0', nil
  local s = starts[b]
  if text then
    count, value, stamp = string.match(text, '^(%-?%d+):(%-?%d+):(%d+)$')
    if not count or not is_int64(count) or not is_int64(value) then
      if mode == 'apply' then
        redis.call('DEL', marker)
      end
      return {'not_integer', names[b]}
    end
    if not within(count, ARGV[s + 1], ARGV[s + 2]) or not within(value, ARGV[s + 4], ARGV[s + 5]) then
      out_of_bounds = true
    end
  elseif ARGV[s] == '' then
    -- A new bucket: its amounts are zero, and the client checked zero.
    out_of_bounds = true
  end
  counts[b], values[b], stamps[b] = count, value, stamp
end
if out_of_bounds or mode == 'check' then
  if mode == 'apply' then
    redis.call('DEL', marker)
  end
  if not out_of_bounds then
    return {'ok'}
  end
  local current = {}
  for b = 1, #names do
    current[#current + 1] = counts[b]
    current[#current + 1] = values[b]
  end
  return {'overflow', current}
end

-- Every sum fits: write each bucket's new amounts and lastUpdated (the
-- latest event time it has seen). A bucket written for the first time
-- prunes its counter's buckets out of retention (their amounts stay in
-- the total), unless the counter's total is new too.
local writes, prune = {}, false
for b = 1, #names do
  local s, stamp = starts[b], stamps[b]
  if (b - 1) % per_counter == 0 then
    -- The counter's total: only a counter written before has old buckets.
    prune = stamp ~= nil
  elseif not stamp and prune then
    prune = false
    local counter = string.match(names[b], '^(%d+):')
    local prefix = counter .. ':'
    local stale = {}
    for _, name in ipairs(redis.call('HKEYS', cells)) do
      if string.sub(name, 1, #prefix) == prefix then
        local kind, number = string.match(name, '^%d+:([md])(%d+)$')
        number = tonumber(number)
        if (kind == 'm' and number < oldest_month) or (kind == 'd' and number < oldest_day) then
          stale[#stale + 1] = name
        end
      end
    end
    for first = 1, #stale, 1000 do
      redis.call('HDEL', cells, unpack(stale, first, math.min(first + 999, #stale)))
    end
  end
  writes[#writes + 1] = names[b]
  if not stamp then
    writes[#writes + 1] = ARGV[s]
  else
    if stamp + 0 < event_time then
      stamp = at
    end
    writes[#writes + 1] = add(counts[b], ARGV[s + 3]) .. ':' .. add(values[b], ARGV[s + 6]) .. ':' .. stamp
  end
end
-- Pairs, a thousand arguments at a time.
for first = 1, #writes, 1000 do
  redis.call('HSET', cells, unpack(writes, first, math.min(first + 999, #writes)))
end
return {'ok'}

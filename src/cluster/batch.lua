-- Applies one increment batch to one subject's hash, all or nothing.
--
-- KEYS[1]  the subject's hash of cells
-- KEYS[2]  the batch's marker (same slot)
-- ARGV     mode ('apply' or 'check'), the marker's lifetime in ms, the
--          event time (Unix seconds), the oldest month index and day
--          number kept, then the fields (count; per field: name, lowest
--          and highest value it may hold ('' where every value will do)
--          and the sum of its additions) and the buckets written (count;
--          names `ID:B`).
--
-- Replies {'ok'}, {'duplicate'} when the marker says the batch was
-- applied already, {'overflow', {current values}} when a field is out of
-- its bounds, or {'not_integer', field} when a field does not hold a
-- canonical 64-bit integer. Nothing is written unless every check passes;
-- then one HSET writes every new value and stamp.
--
-- Amounts stay decimal strings: Lua numbers are doubles, exact only below
-- 2^53. They are compared digit by digit and added in limbs of seven
-- digits; no Lua number ever holds more than one limb and a carry.

local cells, marker = KEYS[1], KEYS[2]
if redis.call('EXISTS', marker) == 1 then
  return {'duplicate'}
end

local mode, marker_ms, at = ARGV[1], ARGV[2], ARGV[3]
local oldest_month, oldest_day = tonumber(ARGV[4]), tonumber(ARGV[5])

-- Canonical decimal integers: an optional '-', then digits without a
-- leading zero, or '0'. `negative` is the sign, `digits` the magnitude.
local MINUS = string.byte('-')
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

-- Whether `value` is a canonical decimal integer within 64 bits.
local function is_int64(value)
  if value ~= '0' and not string.match(value, '^%-?[1-9]%d*$') then
    return false
  end
  local negative, digits = split_sign(value)
  if #digits < 19 then
    return true
  end
  local limit = negative and '9223372036854775808' or '9223372036854775807'
  return compare_digits(digits, limit) <= 0
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

-- a + b, for canonical decimal integers; the result is canonical.
local function add(a, b)
  local a_negative, a_digits = split_sign(a)
  local b_negative, b_digits = split_sign(b)
  if #a_digits <= LIMB_DIGITS and #b_digits <= LIMB_DIGITS then
    -- One limb each (the common case): their sum is exact.
    return string.format('%d', tonumber(a) + tonumber(b))
  end
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

-- HMGET of any number of fields, a thousand at a time (unpack is bounded).
local function read_fields(names)
  local values = {}
  for first = 1, #names, 1000 do
    local last = math.min(first + 999, #names)
    local chunk = redis.call('HMGET', cells, unpack(names, first, last))
    for i = 1, last - first + 1 do
      values[first + i - 1] = chunk[i]
    end
  end
  return values
end

-- One read: every field the batch changes, then every bucket's stamp.
local field_count = tonumber(ARGV[6])
local bucket_at = 7 + 4 * field_count
local bucket_count = tonumber(ARGV[bucket_at])
local names = {}
for f = 1, field_count do
  names[f] = ARGV[3 + 4 * f]
end
for b = 1, bucket_count do
  names[field_count + b] = ARGV[bucket_at + b] .. ':u'
end
local values = read_fields(names)

-- Check every field against its bounds.
local current = {}
local out_of_bounds = false
for f = 1, field_count do
  local value = values[f]
  if not value then
    value = '0'
  elseif not is_int64(value) then
    return {'not_integer', names[f]}
  end
  current[f] = value
  local lowest, highest = ARGV[4 + 4 * f], ARGV[5 + 4 * f]
  if (lowest ~= '' and compare(value, lowest) < 0)
      or (highest ~= '' and compare(value, highest) > 0) then
    out_of_bounds = true
  end
end
if out_of_bounds then
  return {'overflow', current}
end
if mode == 'check' then
  return {'ok'}
end

-- Every sum fits: the bounds held. The new values, then the stamps.
local writes = {}
for f = 1, field_count do
  writes[#writes + 1] = names[f]
  writes[#writes + 1] = add(current[f], ARGV[6 + 4 * f])
end

-- lastUpdated: the latest event time each bucket has seen. A bucket
-- written for the first time prunes its counter's buckets that are out
-- of retention (their amounts stay in the total).
local event_time = tonumber(at)
local counters, had_total = {}, {}
for b = 1, bucket_count do
  local counter, bucket = string.match(ARGV[bucket_at + b], '^(%d+):(.*)$')
  counters[b] = counter
  if bucket == 't' and values[field_count + b] then
    had_total[counter] = true
  end
end
local pruned = {}
for b = 1, bucket_count do
  local counter, stamp = counters[b], values[field_count + b]
  if not stamp or tonumber(stamp) < event_time then
    writes[#writes + 1] = names[field_count + b]
    writes[#writes + 1] = at
  end
  -- A counter whose total has no stamp yet was never written for this
  -- subject, so it has no old buckets to prune.
  if not stamp and not pruned[counter] and had_total[counter] then
    pruned[counter] = true
    local stale = {}
    local prefix = counter .. ':'
    for _, name in ipairs(redis.call('HKEYS', cells)) do
      local id, kind, number
      if string.sub(name, 1, #prefix) == prefix then
        id, kind, number = string.match(name, '^(%d+):([md])(%d+):')
      end
      if id == counter then
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
end
-- Pairs, a thousand arguments at a time.
for first = 1, #writes, 1000 do
  redis.call('HSET', cells, unpack(writes, first, math.min(first + 999, #writes)))
end

redis.call('SET', marker, '1', 'PX', marker_ms)
return {'ok'}

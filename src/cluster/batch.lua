-- Applies one increment batch to one subject's hash, all or nothing.
--
-- KEYS[1]  the subject's hash of cells
-- KEYS[2]  the batch's marker (same slot)
-- ARGV     mode ('apply' or 'check'), the marker's lifetime in ms, the
--          event time (Unix seconds), the oldest month index and day
--          number kept, then the fields (count; per field: name, lowest
--          and highest value it may hold ('' where every value will do),
--          number of additions, additions) and the buckets written
--          (count; names `ID:B`).
--
-- Replies {'ok'}, {'duplicate'} when the marker says the batch was
-- applied already, {'overflow', {current values}} when a field is out of
-- its bounds, or {'not_integer', field} when a field does not hold an
-- integer. Nothing is written unless every check passes.
--
-- Amounts stay decimal strings: Lua numbers are doubles.

local cells, marker = KEYS[1], KEYS[2]
if redis.call('EXISTS', marker) == 1 then
  return {'duplicate'}
end

local mode, marker_ms, at = ARGV[1], ARGV[2], ARGV[3]
local oldest_month, oldest_day = tonumber(ARGV[4]), tonumber(ARGV[5])

-- Compares two canonical decimal integers: -1, 0 or 1.
local function compare(a, b)
  local a_negative, b_negative = a:sub(1, 1) == '-', b:sub(1, 1) == '-'
  if a_negative ~= b_negative then
    return a_negative and -1 or 1
  end
  local a_digits = a_negative and a:sub(2) or a
  local b_digits = b_negative and b:sub(2) or b
  local order
  if #a_digits ~= #b_digits then
    order = #a_digits < #b_digits and -1 or 1
  elseif a_digits == b_digits then
    order = 0
  else
    order = a_digits < b_digits and -1 or 1
  end
  return a_negative and -order or order
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

-- Phase one: read (a thousand fields a call) and check every field.
local field_count = tonumber(ARGV[6])
local fields, names, at_arg = {}, {}, 7
for f = 1, field_count do
  local additions = tonumber(ARGV[at_arg + 3])
  names[f] = ARGV[at_arg]
  fields[f] = {ARGV[at_arg], at_arg + 4, additions, ARGV[at_arg + 1], ARGV[at_arg + 2]}
  at_arg = at_arg + 4 + additions
end
local values = read_fields(names)
local current = {}
local out_of_bounds = false
for f = 1, field_count do
  local value = values[f]
  if not value then
    value = '0'
  elseif not string.match(value, '^%-?[0-9]+$') then
    return {'not_integer', names[f]}
  end
  current[f] = value
  local lowest, highest = fields[f][4], fields[f][5]
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

-- Phase two: write. Every addition was checked to fit.
for f = 1, field_count do
  local name, first, additions = fields[f][1], fields[f][2], fields[f][3]
  for a = first, first + additions - 1 do
    redis.call('HINCRBY', cells, name, ARGV[a])
  end
end

-- lastUpdated: the latest event time each bucket has seen. A bucket
-- written for the first time prunes its counter's buckets that are out
-- of retention (their amounts stay in the total).
local bucket_count = tonumber(ARGV[at_arg])
local updated_names = {}
for b = 1, bucket_count do
  updated_names[b] = ARGV[at_arg + b] .. ':u'
end
local updated = read_fields(updated_names)
local later = {}
local pruned = {}
local had_total = {}
for b = 1, bucket_count do
  local counter, bucket = string.match(ARGV[at_arg + b], '^(%d+):(.*)$')
  if bucket == 't' and updated[b] then
    had_total[counter] = true
  end
end
for b = 1, bucket_count do
  local bucket = ARGV[at_arg + b]
  if not updated[b] or tonumber(updated[b]) < tonumber(at) then
    later[#later + 1] = updated_names[b]
    later[#later + 1] = at
  end
  local counter = string.match(bucket, '^(%d+):')
  -- A counter whose total has no stamp yet was never written for this
  -- subject, so it has no old buckets to prune.
  if not updated[b] and not pruned[counter] and had_total[counter] then
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
for first = 1, #later, 1000 do
  redis.call('HSET', cells, unpack(later, first, math.min(first + 999, #later)))
end

redis.call('SET', marker, '1', 'PX', marker_ms)
return {'ok'}

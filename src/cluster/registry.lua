-- Appends one registry change to the registry's log, if the log is still
-- at the version the change was planned against.
--
-- KEYS[1]  the registry's log (a list; its length is the version)
-- ARGV[1]  the version the change was planned against
-- ARGV[2]  the change
--
-- Replies 1 when appended, 0 when the registry moved on (plan again).
if redis.call('LLEN', KEYS[1]) ~= tonumber(ARGV[1]) then
  return 0
end
redis.call('RPUSH', KEYS[1], ARGV[2])
return 1

-- The argument contract (src/store/README.md, "Script arguments"). Every
-- script takes exactly one ARGV: a JSON object (built by redis/script-args.ts)
-- that it reads by name. A field that is missing, of the wrong type or not in
-- the script's list makes the script answer an `ARGS` error before it reads or
-- writes anything, so a mistake in the caller can never be stored silently.
--
-- Kinds: 'str' string; 'int' whole number >= 0; 'pos' whole number >= 1;
-- 'map' object of string values; 'list' array; 'bool' true or false;
-- 'budget' an optional budget: [] (none) or [count, window ms], both whole >= 1.
local function arg_pos(v) return type(v) == 'number' and v >= 1 and v == math.floor(v) and v < 9007199254740992 end
local ARG_KINDS = {
  str = function(v) return type(v) == 'string' end,
  int = function(v) return type(v) == 'number' and v >= 0 and v == math.floor(v) and v < 9007199254740992 end,
  pos = arg_pos,
  budget = function(v)
    if type(v) ~= 'table' then return false end
    local n = 0
    for _ in pairs(v) do n = n + 1 end
    return n == 0 or (n == 2 and arg_pos(v[1]) and arg_pos(v[2]))
  end,
  map = function(v)
    if type(v) ~= 'table' then return false end
    for k, x in pairs(v) do
      if type(k) ~= 'string' or type(x) ~= 'string' then return false end
    end
    return true
  end,
  list = function(v) return type(v) == 'table' and (next(v) == nil or v[1] ~= nil) end,
  bool = function(v) return type(v) == 'boolean' end,
}

-- Returns the arguments, or nil and the error reply to return.
local function script_args(script, spec)
  if #ARGV ~= 1 then
    return nil, redis.error_reply('ARGS ' .. script .. ': expects one JSON object, got ' .. #ARGV .. ' arguments')
  end
  local ok, args = pcall(cjson.decode, ARGV[1])
  if not ok or type(args) ~= 'table' then
    return nil, redis.error_reply('ARGS ' .. script .. ': the argument is not a JSON object')
  end
  for name, kind in pairs(spec) do
    if not ARG_KINDS[kind](args[name]) then
      local problem = args[name] == nil and 'is missing' or ('is not ' .. kind)
      return nil, redis.error_reply('ARGS ' .. script .. ': ' .. name .. ' ' .. problem)
    end
  end
  for name in pairs(args) do
    if spec[name] == nil then
      return nil, redis.error_reply('ARGS ' .. script .. ': unknown field ' .. tostring(name))
    end
  end
  return args
end

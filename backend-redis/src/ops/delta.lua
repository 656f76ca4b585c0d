-- delta: reading a commit's delta from ARGV (after consts.lua, see ops/mod.rs); only commit.lua and
-- write_concurrent.lua include it.

-- The items of value v after the delta in ARGV from index i on: the cleared flag ('1'/'0'), the
-- number of removed names, the removed names, then one argument per item to set, each already
-- encoded as stored (name length, value length, name, value). In this order (clear, remove, set),
-- as session_core::Delta defines it. Items the delta does not name are copied as runs of bytes.
-- Returns nil when v's items do not parse.
local function items_after(v, i)
  local drop = {}
  local dropping = false
  local j = i + 2
  for _ = 1, tonumber(ARGV[i + 1]) do
    drop[ARGV[j]] = true
    dropping = true
    j = j + 1
  end
  local first_set = j
  for k = first_set, #ARGV do
    local a, b = string.byte(ARGV[k], 1, 2)
    drop[string.sub(ARGV[k], 7, 6 + a * 256 + b)] = true
    dropping = true
  end
  local parts = {}
  if ARGV[i] ~= '1' then
    local n = #v
    if not dropping then
      parts[1] = string.sub(v, HEADER + 1)
    else
      local p = HEADER + 1
      local run = p
      while p <= n do
        local a, b, c, d, e, f = string.byte(v, p, p + 5)
        if not f then
          return nil
        end
        local name_len = a * 256 + b
        local q = p + 6 + name_len + ((c * 256 + d) * 256 + e) * 256 + f
        if q > n + 1 then
          return nil
        end
        if drop[string.sub(v, p + 6, p + 5 + name_len)] then
          if run < p then
            parts[#parts + 1] = string.sub(v, run, p - 1)
          end
          run = q
        end
        p = q
      end
      if run <= n then
        parts[#parts + 1] = string.sub(v, run, n)
      end
    end
  end
  for k = first_set, #ARGV do
    parts[#parts + 1] = ARGV[k]
  end
  return table.concat(parts)
end

-- When the delta in ARGV from index i on (as for items_after) only replaces stored items with
-- values of the same length: the writes that apply it in place, a flat list of offset (0-based)
-- then bytes for each (no table per write), so that the stored value is not rebuilt. Otherwise
-- nil.
local function in_place(v, i)
  if ARGV[i] == '1' or ARGV[i + 1] ~= '0' or #ARGV < i + 2 then
    return nil
  end
  local wanted = {}
  local left = 0
  for k = i + 2, #ARGV do
    local a, b = string.byte(ARGV[k], 1, 2)
    wanted[string.sub(ARGV[k], 7, 6 + a * 256 + b)] = k
    left = left + 1
  end
  local writes = {}
  local n = #v
  local p = HEADER + 1
  while p <= n and left > 0 do
    local a, b, c, d, e, f = string.byte(v, p, p + 5)
    if not f then
      return nil
    end
    local name_len = a * 256 + b
    local value_len = ((c * 256 + d) * 256 + e) * 256 + f
    local k = wanted[string.sub(v, p + 6, p + 5 + name_len)]
    if k then
      local record = ARGV[k]
      if #record - 6 - name_len ~= value_len then
        return nil
      end
      writes[#writes + 1] = p + 5 + name_len
      writes[#writes + 1] = string.sub(record, 7 + name_len)
      wanted[string.sub(v, p + 6, p + 5 + name_len)] = nil
      left = left - 1
    end
    p = p + 6 + name_len + value_len
  end
  if left > 0 or p > n + 1 then
    return nil
  end
  return writes
end


// The Lua scripts RedisStore runs on the server (one atomic step each). Constants only.
#pragma once

namespace tern::store::redis::scripts {

// ARGV[1]: '1' for dense appends, else '0'. Then the batch's ops, flattened; each op is a
// one-letter code and a fixed number of fields (RedisStore::commit builds them).
// Dense appends (ternd, where several nodes may append to one conversation): before writing
// anything, every append must be the next seq of its conversation (its head + 1, or the
// previous append's + 1 in this batch); else the script writes nothing and fails with
// TERNSEQ: a node's idea of the head was behind (another node appended, or an earlier batch
// failed half-known), and it must reload the head. Seqs above 2^53 would lose precision in
// Lua numbers; no real conversation gets there. Base keys ("{u:alice}", "{c:g1}", "{d:alice/1}")
// come from C++; the script appends the suffixes. Only keys of removed members are built
// here, with the same format. Nothing can fail half way but an unknown op code (a bug: the
// C++ side only emits known ones) or Redis running out of memory, so the batch applies whole.
inline constexpr const char* kCommit = R"lua(
local a = ARGV
local n = #a
local function width(i)
  local op = a[i]
  if op == 'A' or op == 'M' or op == 'S' or op == 'R' or op == 'B' then return 4 end
  if op == 'I' or op == 'D' then return 5 end
  if op == 'X' or op == 'L' or op == 'U' or op == 'Y' then return 3 end
  if op == 'C' then return 4 + 2 * tonumber(a[i+3]) end
  if op == 'm' or op == 'j' or op == 'p' or op == 'd' or op == 'h' or op == 'z' then return 4 end
  if op == 'x' or op == 'r' then return 3 end
  if op == 'e' or op == 't' then return 3 end
  if op == 'k' then return 2 end
  if op == 'c' then return 4 + tonumber(a[i+3]) end
  return nil
end
if a[1] == '1' then
  local want = {}
  local i = 2
  while i <= n do
    if a[i] == 'A' then
      local k = a[i+1]
      local w = want[k]
      if w == nil then
        local last = redis.call('ZRANGE', k .. ':log', -1, -1)[1]
        if last then w = tonumber(last, 16) + 1 else w = 1 end
      end
      if tonumber(a[i+2], 16) ~= w then return redis.error_reply('TERNSEQ appended seq is not the next one') end
      want[k] = w + 1
    end
    local wd = width(i)
    if wd == nil then return redis.error_reply('tern: unknown op ' .. tostring(a[i])) end
    i = i + wd
  end
end
local i = 2
while i <= n do
  local op = a[i]
  if op == 'A' then
    redis.call('ZADD', a[i+1] .. ':log', 0, a[i+2])
    redis.call('HSET', a[i+1] .. ':f', a[i+2], a[i+3])
    i = i + 4
  elseif op == 'I' then
    local hk = a[i+1] .. ':idem'
    redis.call('HSET', hk, a[i+2], a[i+3])
    redis.call('ZADD', 'idemexp', a[i+4], string.len(hk) .. ':' .. hk .. a[i+2])
    i = i + 5
  elseif op == 'M' then
    redis.call('HSET', a[i+1] .. ':in', a[i+2], a[i+3])
    i = i + 4
  elseif op == 'X' then
    redis.call('HDEL', a[i+1] .. ':in', a[i+2])
    i = i + 3
  elseif op == 'S' then
    redis.call('HSET', a[i+1] .. ':cur', a[i+2], a[i+3])
    i = i + 4
  elseif op == 'R' then
    redis.call('HSET', a[i+1] .. ':r', a[i+2], a[i+3])
    i = i + 4
  elseif op == 'L' then
    redis.call('HSET', a[i+1] .. ':a', 's', a[i+2])
    i = i + 3
  elseif op == 'U' then
    redis.call('HSET', a[i+1] .. ':a', 'c', a[i+2])
    i = i + 3
  elseif op == 'D' then
    local dk = a[i+1] .. ':d'
    local old = redis.call('HGET', dk, a[i+2])
    local tok = a[i+3]
    if old and old ~= tok and old ~= '' then redis.call('DEL', '{t:' .. old .. '}') end
    if tok ~= '' then redis.call('SET', '{t:' .. tok .. '}', a[i+4]) end
    redis.call('HSET', dk, a[i+2], tok)
    i = i + 5
  elseif op == 'C' then
    local c = a[i+1]
    local base = '{c:' .. c .. '}'
    local nrows = tonumber(a[i+3])
    local keep = {}
    for j = 0, nrows - 1 do keep[a[i+4+2*j]] = true end
    for _, u in ipairs(redis.call('SMEMBERS', base .. ':mu')) do
      if not keep[u] then redis.call('HDEL', '{u:' .. u .. '}:ix', c) end
    end
    redis.call('DEL', base .. ':mu')
    for j = 0, nrows - 1 do
      local u = a[i+4+2*j]
      redis.call('SADD', base .. ':mu', u)
      redis.call('HSET', '{u:' .. u .. '}:ix', c, a[i+5+2*j])
    end
    redis.call('SET', base .. ':m', a[i+2])
    i = i + 4 + 2 * nrows
  elseif op == 'B' then
    redis.call('HSET', a[i+1] .. ':ix', a[i+2], a[i+3])
    i = i + 4
  elseif op == 'Y' then
    redis.call('HDEL', a[i+1] .. ':ix', a[i+2])
    i = i + 3
  -- Ops of the per-slot scripts on a Redis Cluster (redis_cluster_commit.h), lower case.
  elseif op == 'm' then
    local old = redis.call('HGET', a[i+1] .. ':in', a[i+2])
    if not old or tonumber(old) < tonumber(a[i+3]) then redis.call('HSET', a[i+1] .. ':in', a[i+2], a[i+3]) end
    i = i + 4
  elseif op == 'j' then
    redis.call('HSET', a[i+1] .. ':idem', a[i+2], a[i+3])
    i = i + 4
  elseif op == 'p' then
    redis.call('HSET', a[i+1] .. ':idp', a[i+2], a[i+3])
    i = i + 4
  elseif op == 'e' then
    redis.call('ZADD', 'idemexp', a[i+1], a[i+2])
    i = i + 3
  elseif op == 't' then
    redis.call('SET', '{t:' .. a[i+1] .. '}', a[i+2])
    i = i + 3
  elseif op == 'k' then
    redis.call('DEL', '{t:' .. a[i+1] .. '}')
    i = i + 2
  elseif op == 'd' then
    redis.call('HSET', a[i+1] .. ':d', a[i+2], a[i+3])
    i = i + 4
  -- h/x/z/r: HSET/HDEL/ZADD/ZREM of a whole key (the parts of an op that spans slots).
  elseif op == 'h' then
    redis.call('HSET', a[i+1], a[i+2], a[i+3])
    i = i + 4
  elseif op == 'x' then
    redis.call('HDEL', a[i+1], a[i+2])
    i = i + 3
  elseif op == 'z' then
    redis.call('ZADD', a[i+1], a[i+2], a[i+3])
    i = i + 4
  elseif op == 'r' then
    redis.call('ZREM', a[i+1], a[i+2])
    i = i + 3
  elseif op == 'c' then
    local base = '{c:' .. a[i+1] .. '}'
    local n = tonumber(a[i+3])
    redis.call('DEL', base .. ':mu')
    for j = 0, n - 1 do redis.call('SADD', base .. ':mu', a[i+4+j]) end
    redis.call('SET', base .. ':m', a[i+2])
    i = i + 4 + n
  else
    return redis.error_reply('tern: unknown op ' .. tostring(op))
  end
end
return 1
)lua";

// KEYS: log zset, frames hash. ARGV: exclusive lower bound "(<hex seq>", limit.
// Returns seq1, frame1, seq2, frame2, ...
inline constexpr const char* kReadMessages = R"lua(
local ks = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], '+', 'LIMIT', 0, ARGV[2])
local out = {}
for j, k in ipairs(ks) do
  out[2 * j - 1] = k
  out[2 * j] = redis.call('HGET', KEYS[2], k)
end
return out
)lua";

// ARGV: now_ms, chunk. Drops up to `chunk` idempotency records that expired before now_ms
// (the index member is "<len>:<hash key><client_msg_id>"); returns how many.
inline constexpr const char* kPurge = R"lua(
local ms = redis.call('ZRANGEBYSCORE', 'idemexp', '-inf', '(' .. ARGV[1], 'LIMIT', 0, ARGV[2])
for _, m in ipairs(ms) do
  local p = string.find(m, ':', 1, true)
  local len = tonumber(string.sub(m, 1, p - 1))
  redis.call('HDEL', string.sub(m, p + 1, p + len), string.sub(m, p + len + 1))
  redis.call('ZREM', 'idemexp', m)
end
return #ms
)lua";

}  // namespace tern::store::redis::scripts

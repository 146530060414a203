// The Lua scripts RedisStore runs on the server (one atomic step each). Constants only.
#pragma once

namespace tern::store::redis::scripts {

// ARGV[1]: for dense appends the committing node's token (never '0'), else '0'. Then the batch's ops, flattened; each op is a
// one-letter code and a number of fields fixed by the code (and, for A, C and E, a count
// field); RedisStore::commit builds them.
// The checks run first, before anything is written:
//  - Dense appends (ternd, where several nodes may append to one conversation): every append
//    must be the next seq of its conversation (its head + 1, or the previous append's + 1 in
//    this batch); else the script writes nothing and returns the array {'TERNSEQ', <id of
//    each conversation whose appends were not next, its head>...} (the node reads the heads
//    again itself; only the ids are used): the node's idea of those heads was
//    behind (another node appended first); it reloads them and sequences those sends again
//    (services/group_committer.h). The script then reserves the next seq of each of them
//    for this node ({c:<id>}:rv, 250 ms, set if free): until that node's append lands (which
//    deletes it) or it expires, other nodes' appends to the conversation are behind too —
//    without it a node that re-sequences could lose to a faster sender every time. On one
//    redis-server it also sets the marker rvany (300 ms), so that appends read reservations
//    only while one may exist. (A node of a version before the marker reserves without it:
//    during a rolling upgrade its reservations may go unseen — only fairness, never density.)
//  - Idempotency (op 'i': idemexp member, conversation, now, expiry; emitted before a send's
//    'I' on one redis-server with dense appends, RedisStore::commit_checks_idempotency): the
//    client_msg_id must have no unexpired record (its idemexp score, the record's expiry, is
//    not before now); else the send is a duplicate (the same message sent again, e.g. through
//    another node, whose first attempt committed): its conversation is named in TERNSEQ like
//    one behind, but not reserved, so nothing is written and the sender, sequencing it again,
//    reads the record and answers with it. The check is the record's idemexp write itself
//    (ZADD NX; its 'I' then writes only the hash), undone if the batch writes nothing.
//  - On a Redis Cluster the same check is op 'j' (conversation id, the record's hash
//    {c:<conv>}:idem, its field, now), in the script of the conversation's master, emitted before
//    the record's write (redis_cluster_commit.h): the record itself is read (HGET; the global
//    idemexp is in another slot) and its expiry, the first 8 bytes of the encoded record (big-
//    endian, sign bit flipped: rocks::encode_idempotency), compared with now. A duplicate is
//    named in TERNSEQ, unreserved, exactly as above.
//  - A one-time prekey take (T) must find its key present (and not taken earlier in this
//    batch); else TERNTAKE: another node handed the key out first.
//  - A device that must be new (op 'n': user key, device; before its 'D') must not be in the
//    user's device hash; else TERNDEV: another node linked that number (or registered that
//    user) first.
//  - A conversation's record that must be unchanged (op 'e': conversation id, the meta it must
//    have, before its 'C'; PutConversation::expected, a channel's change): the stored meta
//    (or the one an earlier 'C'/'c' of this batch writes) must be those bytes; else TERNCONV:
//    another node changed the channel first.
//  - On a Redis Cluster, op 'l' (conversation id, a commit's lease token, the token of the
//    redo record this commit writes; right before the conversation's 'e'): the
//    conversation's change lease ({c:<id>}:lk, kLeaseChange) must be absent or this token;
//    else TERNCONV: another node's change of it is between its phases. Once the batch is
//    written the lease is deleted if it is this token, and the redo record ({c:<id>}:rd) if
//    it is that one's: the change it names is made.
//  - On a Redis Cluster, op 'L' (a key) first in a script merged from several slots of one
//    master: an EXISTS of one key per further slot, which fails the script ("non local key")
//    before anything is written if that slot moved to another node. A slot whose ops read in
//    these checks (p, m, j, T, n, and A with dense appends) needs none: the read fails the
//    same way.
//  - On a Redis Cluster, op 'p' (a send's idempotency pointer: hash, client_msg_id,
//    conversation) must find the pointer absent or naming its conversation; else the script
//    writes nothing and returns {'TERNIDP', (hash, client_msg_id, the conversation it names)...}
//    (redis_cluster_commit.cc decides whether the send is a repeat and runs the script again).
// Any failure writes nothing (the only writes before the checks end are the 'i' entries,
// removed again). Seqs above 2^53 would lose precision in Lua numbers; no real
// conversation gets there. Base keys of devices ("{d:alice/1}") come from C++; the script
// builds the others from raw ids with the same formats ("{c:<id>}", "{u:<id>}", "{m:<id>}").
// Global indexes: idemexp (idempotency expiry; on one redis-server only: a Cluster keeps one
// per slot, redis_cluster_commit.h slot_index_key), users (every user, lex), mpend (uploads not
// yet collected, score created_ts, member media id ‖ owner), msgexp/msgexpv (message expiry:
// score expires_at, member conversation ‖ \0 ‖ seq hex; value the media ids), reports/reportv
// (lex by 16-hex-digit id). Nothing can fail half way but an unknown op code (a bug: the C++
// side only emits known ones) or Redis running out of memory, so the batch applies whole.
inline constexpr const char* kCommit = R"lua(
local a = ARGV
local n = #a
local function width(i)
  local op = a[i]
  if op == 'h' or op == 'M' or op == 'R' or op == 'W' or op == 'Q' or op == 'T' or op == 'm' or op == 'z' or op == 'p' or op == 'l' then
    return 4
  end
  if op == 'I' or op == 'D' or op == 'P' or op == 'G' or op == 'i' or op == 'j' then return 5 end
  if op == 'x' or op == 'r' or op == 'U' or op == 'K' or op == 'H' or op == 'J' or op == 'Z' or op == 'N' or op == 'n' or op == 'e' then
    return 3
  end
  if op == 'C' then return 4 + 2 * tonumber(a[i+3]) end
  if op == 't' then return 3 end
  if op == 'k' or op == 'L' then return 2 end
  if op == 'c' then return 4 + tonumber(a[i+3]) end
  if op == 'A' then return 6 + tonumber(a[i+5]) end
  if op == 'E' then return 4 + tonumber(a[i+3]) end
  return nil
end
local me = a[1]
local dense = me ~= '0'
-- Whether some conversation may hold a reservation ({c:<id>}:rv, below). On one redis-server
-- every reservation is covered by the marker 'rvany' (set after it, living longer), so while
-- there is none, one EXISTS per script stands for a GET per conversation. A Cluster's scripts
-- (they name a slot's key) cannot read a global key: they read each reservation.
local reserved = nil
if #KEYS > 0 then reserved = true end
local held = {}
local forward = {}  -- op 'm' at index i: its mark moves forward (read in the checks)
local want = {}
local behind = {}
local late = {'TERNSEQ'}
local dup = {}
local taken = {}
local added, addlist = {}, {}  -- the idemexp members the checks added
local idp = {'TERNIDP'}  -- op 'p': pointers that named another conversation
local metas = {}  -- conversation id → the meta an earlier 'C'/'c' of the batch writes (op 'e')
-- A send into c repeats a client_msg_id that has a record: c is named in TERNSEQ like a
-- conversation behind, but not reserved (below).
local function repeat_of(c)
  behind[c] = true
  dup[c] = true
  local last = redis.call('ZRANGE', '{c:' .. c .. '}:log', -1, -1)[1]
  late[#late + 1] = c
  late[#late + 1] = last and tonumber(last, 16) or 0
end
-- The batch writes nothing after all: the checks' idemexp entries go again.
local function undo()
  for j = 1, #addlist, 1000 do redis.call('ZREM', 'idemexp', unpack(addlist, j, math.min(j + 999, #addlist))) end
end
local i = 2
while i <= n do
  local op = a[i]
  if op == 'A' and dense then
    local c = a[i+1]
    if not behind[c] then
      local w = want[c]
      local taken = false
      if w == nil then
        local base = '{c:' .. c .. '}'
        local last = redis.call('ZRANGE', base .. ':log', -1, -1)[1]
        if last then w = tonumber(last, 16) + 1 else w = 1 end
        if reserved == nil then reserved = redis.call('EXISTS', 'rvany') == 1 end
        if reserved then
          local rv = redis.call('GET', base .. ':rv')
          if rv == me then held[#held + 1] = base .. ':rv' elseif rv then taken = true end
        end
      end
      if taken or tonumber(a[i+2], 16) ~= w then
        behind[c] = true
        late[#late + 1] = c
        late[#late + 1] = w - 1
      end
      want[c] = w + 1
    end
  elseif op == 'i' then
    -- The record's expiry-index entry is written here already (NX: only if it has none, the
    -- common case), which is also the check: one call instead of a ZSCORE now and a ZADD
    -- below. If the batch then writes nothing, the entries added here are removed again. (A
    -- client_msg_id twice in one batch, which pending sends rule out, keeps its first expiry.)
    local c, m = a[i+2], a[i+1]
    if not behind[c] and not added[m] then
      if redis.call('ZADD', 'idemexp', 'NX', a[i+4], m) == 1 then
        added[m] = true
        addlist[#addlist + 1] = m
      else
        local exp = redis.call('ZSCORE', 'idemexp', m)
        if exp and tonumber(exp) >= tonumber(a[i+3]) then repeat_of(c) end
      end
    end
  elseif op == 'j' then
    -- The record's expiry: 8 bytes, big-endian, sign bit flipped; the first byte is 0x80 for
    -- every expiry after 1970 (below 2^56 ms), so the other seven bytes are the number (exact
    -- in a Lua number below 2^53).
    local c = a[i+1]
    if not behind[c] then
      local v = redis.call('HGET', a[i+2], a[i+3])
      if v then
        local b1, b2, b3, b4, b5, b6, b7, b8 = string.byte(v, 1, 8)
        local exp = -1
        if b1 == 128 and b8 then
          exp = ((((((b2 * 256 + b3) * 256 + b4) * 256 + b5) * 256 + b6) * 256 + b7) * 256) + b8
        end
        if exp >= tonumber(a[i+4]) then repeat_of(c) end
      end
    end
  elseif op == 'T' then
    local k = a[i+1] .. ':pk'
    local t = k .. a[i+2]
    if taken[t] or #redis.call('ZRANGEBYLEX', k, '[' .. a[i+2], a[i+3], 'LIMIT', 0, 1) == 0 then
      undo()
      return redis.error_reply('TERNTAKE one-time prekey already taken')
    end
    taken[t] = true
  elseif op == 'L' then
    -- A Cluster script merged from several slots of one master (redis_cluster_commit.h): one
    -- key of each slot but the first is read before anything is written, so a slot that
    -- moved to another node fails the script here ("non local key") with nothing written.
    redis.call('EXISTS', a[i+1])
  elseif op == 'p' then
    -- A send's idempotency pointer (hash, client_msg_id, conversation). One that names another
    -- conversation is reported and the script writes nothing: the device may have used the id
    -- there (redis_cluster_commit.cc reads that record, decides, and runs the script again).
    -- Checked before anything is written because the script may also append this send (a
    -- Cluster commit folds a master's phase-0 ops into its phase-1 script).
    local cur = redis.call('HGET', a[i+1], a[i+2])
    if cur and cur ~= a[i+3] then
      idp[#idp + 1] = a[i+1]
      idp[#idp + 1] = a[i+2]
      idp[#idp + 1] = cur
    end
  elseif op == 'm' then
    -- A Cluster's inbox mark only moves forward. Read here, before anything is written, so
    -- that this read also checks the slot (no op 'L' for it: redis_cluster_commit.cc).
    local old = redis.call('HGET', a[i+1] .. ':in', a[i+2])
    forward[i] = not old or tonumber(old) < tonumber(a[i+3])
  elseif op == 'n' then
    if redis.call('HEXISTS', a[i+1] .. ':d', a[i+2]) == 1 then
      undo()
      return redis.error_reply('TERNDEV device already exists')
    end
  elseif op == 'e' then
    local cur = metas[a[i+1]]
    if cur == nil then cur = redis.call('GET', '{c:' .. a[i+1] .. '}:m') end
    if cur ~= a[i+2] then
      undo()
      return redis.error_reply('TERNCONV the conversation changed meanwhile')
    end
  elseif op == 'l' then
    local held = redis.call('GET', '{c:' .. a[i+1] .. '}:lk')
    if held and held ~= a[i+2] then
      undo()
      return redis.error_reply('TERNCONV another node is changing the conversation')
    end
  elseif op == 'C' or op == 'c' then
    metas[a[i+1]] = a[i+2]
  end
  local wd = width(i)
  if wd == nil then
    undo()
    return redis.error_reply('tern: unknown op ' .. tostring(op))
  end
  i = i + wd
end
if #late > 1 then
  undo()
  -- The next seq of each conversation behind is reserved for this node for a moment, so that
  -- its resend is not beaten again and again by a node that sends faster than it can retry.
  local marked = false
  for j = 2, #late, 2 do
    if not dup[late[j]] then
      redis.call('SET', '{c:' .. late[j] .. '}:rv', me, 'NX', 'PX', 250)
      marked = true
    end
  end
  if marked and #KEYS == 0 then redis.call('SET', 'rvany', '1', 'PX', 300) end
  return late
end
if #idp > 1 then
  undo()
  return idp
end
for _, k in ipairs(held) do redis.call('DEL', k) end
i = 2
while i <= n do
  local op = a[i]
  if op == 'A' then
    local c = a[i+1]
    local base = '{c:' .. c .. '}'
    redis.call('ZADD', base .. ':log', 0, a[i+2])
    redis.call('HSET', base .. ':f', a[i+2], a[i+3])
    local member = c .. '\0' .. a[i+2]
    local nm = tonumber(a[i+5])
    local ids = ''
    for j = 1, nm do
      local m = '{m:' .. a[i+5+j] .. '}'
      redis.call('ZADD', m .. ':r', 0, member)
      redis.call('HSET', m .. ':rx', member, a[i+4])
      ids = ids .. a[i+5+j]
    end
    if a[i+4] ~= '0' then
      redis.call('ZADD', '{msgexp}', a[i+4], member)
      redis.call('HSET', '{msgexp}v', member, ids)
    end
    i = i + 6 + nm
  elseif op == 'E' then
    local member = a[i+1] .. '\0' .. a[i+2]
    redis.call('ZREM', '{msgexp}', member)
    redis.call('HDEL', '{msgexp}v', member)
    local nm = tonumber(a[i+3])
    for j = 1, nm do
      local m = '{m:' .. a[i+3+j] .. '}'
      redis.call('ZREM', m .. ':r', member)
      redis.call('HDEL', m .. ':rx', member)
    end
    i = i + 4 + nm
  elseif op == 'i' or op == 'j' then
    i = i + 5
  elseif op == 'n' or op == 'e' then
    i = i + 3
  elseif op == 'l' then
    local base = '{c:' .. a[i+1] .. '}'
    if redis.call('GET', base .. ':lk') == a[i+2] then redis.call('DEL', base .. ':lk') end
    if redis.call('LINDEX', base .. ':rd', 0) == a[i+3] then redis.call('DEL', base .. ':rd') end
    i = i + 4
  elseif op == 'L' then
    i = i + 2
  elseif op == 'I' then
    local hk = a[i+1] .. ':idem'
    redis.call('HSET', hk, a[i+2], a[i+3])
    local m = string.len(hk) .. ':' .. hk .. a[i+2]
    if not added[m] then redis.call('ZADD', 'idemexp', a[i+4], m) end
    i = i + 5
  elseif op == 'M' then
    redis.call('HSET', a[i+1] .. ':in', a[i+2], a[i+3])
    i = i + 4
  elseif op == 'h' then
    redis.call('HSET', a[i+1], a[i+2], a[i+3])
    i = i + 4
  elseif op == 'x' then
    redis.call('HDEL', a[i+1], a[i+2])
    i = i + 3
  elseif op == 'R' then
    redis.call('HSET', a[i+1] .. ':r', a[i+2], a[i+3])
    i = i + 4
  elseif op == 'U' then
    redis.call('HSET', '{u:' .. a[i+1] .. '}:a', 'c', a[i+2])
    redis.call('ZADD', 'users', 0, a[i+1])
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
  -- Ops of the scripts on a Redis Cluster (redis_cluster_commit.h), lower case.
  elseif op == 'm' then
    if forward[i] then redis.call('HSET', a[i+1] .. ':in', a[i+2], a[i+3]) end
    i = i + 4
  elseif op == 'p' then
    -- The pointer, checked above: absent (written now) or naming this conversation already.
    redis.call('HSETNX', a[i+1], a[i+2], a[i+3])
    i = i + 4
  elseif op == 't' then
    redis.call('SET', '{t:' .. a[i+1] .. '}', a[i+2])
    i = i + 3
  elseif op == 'k' then
    redis.call('DEL', '{t:' .. a[i+1] .. '}')
    i = i + 2
  -- z/r: ZADD/ZREM of a whole key (the parts of an op that spans slots).
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
  elseif op == 'K' then
    redis.call('SET', a[i+1] .. ':k', a[i+2])
    i = i + 3
  elseif op == 'P' then
    -- one member per key: 8 hex digits of the id, then the public key (lex order = id order)
    redis.call('ZREMRANGEBYLEX', a[i+1] .. ':pk', '[' .. a[i+2], a[i+3])
    redis.call('ZADD', a[i+1] .. ':pk', 0, a[i+2] .. a[i+4])
    i = i + 5
  elseif op == 'Q' or op == 'T' then
    redis.call('ZREMRANGEBYLEX', a[i+1] .. ':pk', '[' .. a[i+2], a[i+3])
    i = i + 4
  elseif op == 'G' then
    local owner = a[i+2]
    local u = '{u:' .. owner .. '}'
    redis.call('HSET', '{m:' .. a[i+1] .. '}:o', owner, a[i+3] .. ' ' .. a[i+4])
    redis.call('ZADD', u .. ':me', 0, a[i+1])
    redis.call('HSET', u .. ':ms', a[i+1], a[i+3])
    redis.call('ZADD', 'mpend', a[i+4], a[i+1] .. owner)
    i = i + 5
  elseif op == 'H' then
    local u = '{u:' .. a[i+2] .. '}'
    redis.call('HDEL', '{m:' .. a[i+1] .. '}:o', a[i+2])
    redis.call('ZREM', u .. ':me', a[i+1])
    redis.call('HDEL', u .. ':ms', a[i+1])
    i = i + 3
  elseif op == 'J' then
    redis.call('ZREM', 'mpend', a[i+1] .. a[i+2])
    i = i + 3
  elseif op == 'W' then
    redis.call('ZADD', a[i+1] .. ':rec', 0, a[i+2])
    redis.call('HSET', a[i+1] .. ':rv', a[i+2], a[i+3])
    i = i + 4
  elseif op == 'Z' then
    redis.call('ZREM', a[i+1] .. ':rec', a[i+2])
    redis.call('HDEL', a[i+1] .. ':rv', a[i+2])
    i = i + 3
  elseif op == 'N' then
    redis.call('ZADD', '{reports}', 0, a[i+1])
    redis.call('HSET', '{reports}v', a[i+1], a[i+2])
    i = i + 3
  else
    return redis.error_reply('tern: unknown op ' .. tostring(op))
  end
end
return 1
)lua";

// KEYS: a token bucket (hash: tokens, at µs). ARGV: rate per second, burst, n. Takes n tokens
// if the bucket, refilled since `at` by Redis's clock, holds them: 1 taken, 0 not. The key
// expires once it would be full again (an absent bucket is a full one).
// A Redis Cluster commit's change lease on a conversation (redis_change_lease.h): a change
// computed from a record (PutConversation::expected) takes it before phase 0 writes the
// change's rows in other slots, so that no other node's change of the conversation can land
// between that and the conversation's phase-1 script (which checks it: op 'l', and deletes it).
// With the lease it writes its redo record ({c:<id>}:rd, a list: its token, then the change's
// commit ops, the first of them its 'e'), which the phase-1 script deletes with the lease.
// A redo record whose lease is gone names a change whose commit stopped between the lease and
// phase 1 (its node died): if the stored meta is still the one that change counted from, the
// lease is taken and the record returned, for the caller to make that change first; if not,
// the record is dropped.
// KEYS[1] the lease {c:<id>}:lk, KEYS[2] the meta {c:<id>}:m, KEYS[3] the redo record
// {c:<id>}:rd; ARGV[1] the commit's token, ARGV[2] the meta the change counts from, ARGV[3]
// the lease's life in ms, ARGV[4..] the change's ops (its redo).
// Returns {1} (taken), {0} (the meta is another: the change is stale), {2} (another token
// holds it), {3, the record...} (taken, to make the recorded change first).
inline constexpr const char* kLeaseChange = R"lua(
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then return {2} end
local orphan = redis.call('LRANGE', KEYS[3], 0, -1)
if #orphan > 0 and orphan[1] ~= ARGV[1] then
  if orphan[2] == 'e' and redis.call('GET', KEYS[2]) == orphan[4] then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
    local out = {3}
    for j = 1, #orphan do out[#out + 1] = orphan[j] end
    return out
  end
  redis.call('DEL', KEYS[3])
end
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return {0} end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
redis.call('DEL', KEYS[3])
redis.call('RPUSH', KEYS[3], ARGV[1])
for j = 4, #ARGV, 1000 do redis.call('RPUSH', KEYS[3], unpack(ARGV, j, math.min(j + 999, #ARGV))) end
return {1}
)lua";

// Gives a change lease back (a commit that failed after taking it): KEYS[1] the lease,
// KEYS[2] the redo record; ARGV[1] the token. Deletes each only if it is still that token's
// (the record: its first item); returns how many it deleted.
inline constexpr const char* kLeaseRelease = R"lua(
local n = 0
if redis.call('GET', KEYS[1]) == ARGV[1] then n = n + redis.call('DEL', KEYS[1]) end
if redis.call('LINDEX', KEYS[2], 0) == ARGV[1] then n = n + redis.call('DEL', KEYS[2]) end
return n
)lua";

inline constexpr const char* kTakeTokens = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local rate, burst, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(b[1]) or burst, tonumber(b[2]) or now
if now > at then tokens = math.min(burst, tokens + (now - at) * rate / 1000000) end
local taken = 0
if tokens >= n then
  tokens = tokens - n
  taken = 1
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.6f', tokens), 'at', string.format('%.0f', math.max(now, at)))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return taken
)lua";

// KEYS: a blob's leases (zset: holder, score expiry in ms) and its collect mark (string:
// the holder, with a TTL). ARGV: op, holder, ttl ms. 'L' takes a lease unless the blob is
// being collected; 'C' takes the collect mark unless a lease that has not expired is held or
// the mark is; 'l' / 'c' drop the holder's lease / mark. 1 taken (or dropped), 0 refused.
// Expiry by Redis's clock, so the nodes' clocks do not matter. The marks are not written to
// the AOF nor sent to replicas (REPL_NONE): they live for a send or a collection, and with
// `appendfsync always` each would cost an fsync (a send with one blob took twice the CPU per
// message, docs/benchmarks.md). A failover or a restart loses them: see docs/scaling.md.
inline constexpr const char* kMediaMark = R"lua(
redis.set_repl(redis.REPL_NONE)
local op, holder, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
if op == 'l' then
  redis.call('ZREM', KEYS[1], holder)
  return 1
end
if op == 'c' then
  if redis.call('GET', KEYS[2]) == holder then redis.call('DEL', KEYS[2]) end
  return 1
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if op == 'L' then
  redis.call('ZADD', KEYS[1], now + ttl, holder)
  if redis.call('PTTL', KEYS[1]) < ttl then redis.call('PEXPIRE', KEYS[1], ttl) end
  return 1
end
if redis.call('ZCARD', KEYS[1]) > 0 then return 0 end
redis.call('SET', KEYS[2], holder, 'PX', ttl)
return 1
)lua";

// KEYS: a user's link codes (hash: code hash → expiry in ms). ARGV: 'A', code hash, ttl ms,
// max: adds the code unless the user holds max unexpired ones, answering its expiry (0: full);
// 'T', code hash: removes the code, 1 if it was held and unexpired, else 0. Expired codes are
// dropped first, so the hash holds at most max fields and HGETALL is bounded; the key expires
// with its newest code. Expiry by Redis's clock. Written to the AOF and replicated like any
// write (a code is rare: one fsync per code costs nothing that matters).
inline constexpr const char* kLinkCode = R"lua(
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local all = redis.call('HGETALL', KEYS[1])
local live = 0
for i = 1, #all, 2 do
  if tonumber(all[i + 1]) <= now then redis.call('HDEL', KEYS[1], all[i]) else live = live + 1 end
end
if ARGV[1] == 'T' then
  return redis.call('HDEL', KEYS[1], ARGV[2])
end
if live >= tonumber(ARGV[4]) then return 0 end
local ttl = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[2], now + ttl)
redis.call('PEXPIRE', KEYS[1], ttl)
return now + ttl
)lua";

// KEYS: the report counter, the reports' index (zset of 16-hex-digit ids; one hash tag, so one
// slot). Answers the next report id. A counter that does not exist yet (reports stored by an
// earlier version, which counted per node) starts at the highest stored id. INCR is written to
// the AOF before the answer, so an id is never handed out twice, even across a Redis restart.
inline constexpr const char* kNextReportId = R"lua(
if redis.call('EXISTS', KEYS[1]) == 0 then
  local top = redis.call('ZREVRANGEBYLEX', KEYS[2], '+', '-', 'LIMIT', 0, 1)
  redis.call('SET', KEYS[1], top[1] and tonumber(top[1], 16) or 0)
end
return redis.call('INCR', KEYS[1])
)lua";

// KEYS: an index zset, a value hash. ARGV: 'L' (lex range) or 'S' (score range), min, max,
// limit. Returns member, score ('' for a lex range), value ('' if the hash has none) for each
// index member in range, at most limit: one round trip for a bounded, ordered read.
inline constexpr const char* kRange = R"lua(
local by_score = ARGV[1] == 'S'
local ms
if by_score then
  ms = redis.call('ZRANGEBYSCORE', KEYS[1], ARGV[2], ARGV[3], 'WITHSCORES', 'LIMIT', 0, ARGV[4])
else
  ms = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[2], ARGV[3], 'LIMIT', 0, ARGV[4])
end
local out = {}
local step = by_score and 2 or 1
for j = 1, #ms, step do
  out[#out + 1] = ms[j]
  out[#out + 1] = by_score and ms[j + 1] or ''
  out[#out + 1] = redis.call('HGET', KEYS[2], ms[j]) or ''
end
return out
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

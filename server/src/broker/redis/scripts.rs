//! The Lua scripts that make each cluster-wide rule one atomic step in Redis. Every key a
//! script touches is passed in `KEYS` and shares one hash tag (see [`super::keys`]), so
//! the scripts run unchanged on a single Redis and on a Redis Cluster.

use redis::Script;
use std::sync::LazyLock;

/// Shared Lua: Redis's own clock in ms. Registry entries are written and compared with
/// it, so nodes whose clocks differ still agree on which entries are alive.
const REDIS_NOW: &str = r#"
local function redis_now()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"#;

/// Shared Lua: the inbox. A list of `<ms>:<frame>` members in seq order (every frame
/// begins `{"seq":<seq>,`), appended at the tail and trimmed from the head, so an append
/// is a cheap push and a member costs Redis about 16 bytes beyond its own length. Inboxes
/// written by earlier builds (until November 2026) are sorted sets (score = seq, the same
/// members); the first script to touch one turns it into the list, keeping its expiry.
const INBOX: &str = r#"
local function ms_of(member)
  return tonumber(string.match(member, '^(%d+):'))
end
local function seq_of(member)
  return tonumber(string.match(member, '^%d+:{"seq":(%d+)'))
end
local function upgrade_inbox(inbox)
  if redis.call('TYPE', inbox)['ok'] ~= 'zset' then return end
  local members = redis.call('ZRANGE', inbox, 0, -1)
  local pttl = redis.call('PTTL', inbox)
  redis.call('DEL', inbox)
  for i = 1, #members, 1000 do
    redis.call('RPUSH', inbox, unpack(members, i, math.min(i + 999, #members)))
  end
  if pttl > 0 then redis.call('PEXPIRE', inbox, pttl) end
end
-- Drops members older than cutoff ms from the head, at most 1024 per call so one call
-- never runs long; the common case (nothing old) costs one LINDEX.
local function trim_age(inbox, cutoff)
  local oldest = redis.call('LINDEX', inbox, 0)
  if not oldest then return end
  local at = ms_of(oldest)
  if at == nil or at >= cutoff then return end
  for _ = 1, 16 do
    local expired = 0
    for _, member in ipairs(redis.call('LRANGE', inbox, 0, 63)) do
      at = ms_of(member)
      if at == nil or at >= cutoff then break end
      expired = expired + 1
    end
    if expired > 0 then redis.call('LTRIM', inbox, expired, -1) end
    if expired < 64 then return end
  end
end
-- {seq, frame, ...} of the members after seq `after` and not older than cutoff ms. Seqs
-- rise along the list, so the member after `after` sits no earlier than
-- len - (last - after): only the tail is read.
local function read_after(inbox, after, cutoff)
  local result = {}
  local last = redis.call('LINDEX', inbox, -1)
  if not last then return result end
  local start = 0
  local last_seq = seq_of(last)
  if last_seq ~= nil then
    if last_seq <= after then return result end
    start = math.max(0, redis.call('LLEN', inbox) - (last_seq - after))
  end
  for _, member in ipairs(redis.call('LRANGE', inbox, start, -1)) do
    local at, seq = string.match(member, '^(%d+):{"seq":(%d+)')
    if seq ~= nil and tonumber(seq) > after and tonumber(at) >= cutoff then
      table.insert(result, tonumber(seq))
      table.insert(result, string.sub(member, #at + 2))
    end
  end
  return result
end
"#;

/// Shared Lua: the markers of keyed sends (`broker::idempotency::Marker`): a string
/// `<fingerprint>|<answer fields separated by |>`, written in the same script as the send
/// it marks. `marked(key, fingerprint)` returns nil (no marker, or no key given), {'r'}
/// (the key marks another request) or {'f', fields...} (the first send's answer).
const MARKER: &str = r#"
local function marked(key, fingerprint)
  if fingerprint == '' then return nil end
  local found = redis.call('GET', key)
  if not found then return nil end
  local fields = {}
  for field in string.gmatch(found, '[^|]+') do table.insert(fields, field) end
  if fields[1] ~= fingerprint then return {'r'} end
  local answer = {'f'}
  for i = 2, #fields do table.insert(answer, fields[i]) end
  return answer
end
local function mark(key, fingerprint, ttl, answer)
  if fingerprint == '' then return end
  redis.call('SET', key, fingerprint .. '|' .. table.concat(answer, '|'), 'PX', ttl)
end
"#;

/// Appends to users' inboxes and publishes each message live, in one step so that
/// messages leave in seq order. Several messages (for one user or many) may come in one
/// call: that is how concurrent sends share one round trip and one script run (see
/// [`super::appender`]). KEYS: seq, inbox, conns, channel, marker, once per message. ARGV:
/// now ms (the messages' time, for age trimming), ttl ms, max length, publish mode (0:
/// PUBLISH, 1: SPUBLISH, 2: none; the caller publishes once replicas confirmed the write,
/// see [`super::ops::append`]), then per message its body (the envelope without seq), its
/// marker's fingerprint ('' for none) and the marker's ttl ms.
/// Returns, per message, {seq, live connections, timestamps of messages trimmed by length...},
/// and in mode 2 the payload to publish last; or {'f', seq, live connections} when the
/// message's marker was found (nothing written), {'r'} when it marks another request,
/// {'e', why} when the message's keys could not take it.
pub static APPEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{INBOX}{REDIS_NOW}{MARKER}
local now = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local max_len = tonumber(ARGV[3])
local mode = ARGV[4]
local clock = redis_now()
-- One message; a key of the wrong kind fails this message only ({{'e', why}}), never
-- the others of the batch: a script error would leave their writes done and report
-- them all as failed.
local function append_one(seq_key, inbox, conns_key, channel, body)
  local seq = redis.pcall('INCR', seq_key)
  if type(seq) == 'table' then return {{'e', 'seq: ' .. tostring(seq['err'])}} end
  local frame = '{{"seq":' .. seq .. ',' .. string.sub(body, 2)
  local member = ARGV[1] .. ':' .. frame
  local len = redis.pcall('RPUSH', inbox, member)
  if type(len) == 'table' and redis.call('TYPE', inbox)['ok'] == 'zset' then
    upgrade_inbox(inbox)
    len = redis.pcall('RPUSH', inbox, member)
  end
  if type(len) == 'table' then return {{'e', 'inbox: ' .. tostring(len['err'])}} end
  local result = {{seq, 0}}
  if len > max_len then
    for _, trimmed in ipairs(redis.call('LPOP', inbox, len - max_len)) do
      table.insert(result, ms_of(trimmed))
    end
  end
  -- Age trimming once every 16 appends is enough: reads filter by age anyway, and the
  -- key itself expires when the inbox goes quiet for the TTL.
  if seq % 16 == 0 then trim_age(inbox, now - ttl) end
  redis.call('PEXPIRE', inbox, ttl)
  local conns = redis.pcall('HGETALL', conns_key)
  if type(conns) ~= 'table' or conns['err'] then conns = {{}} end
  for j = 2, #conns, 2 do
    local expires = tonumber(string.match(conns[j], '^(%d+)'))
    if expires ~= nil and expires > clock then result[2] = result[2] + 1 end
  end
  local payload = 'm' .. seq .. ' ' .. frame
  if mode == '1' then
    redis.call('SPUBLISH', channel, payload)
  elseif mode == '0' then
    redis.call('PUBLISH', channel, payload)
  else
    table.insert(result, payload)
  end
  return result
end
local results = {{}}
for i = 1, #KEYS / 5 do
  local marker, fingerprint = KEYS[i * 5], ARGV[3 + i * 3]
  local found = marked(marker, fingerprint)
  if found then
    results[i] = found
  else
    results[i] = append_one(KEYS[i * 5 - 4], KEYS[i * 5 - 3], KEYS[i * 5 - 2], KEYS[i * 5 - 1], ARGV[2 + i * 3])
    if results[i][1] ~= 'e' then
      mark(marker, fingerprint, ARGV[4 + i * 3], {{results[i][1], results[i][2]}})
    end
  end
end
return results
"#
    ))
});

/// Positions a connecting device and returns what to replay. KEYS: inbox, cursors, seq.
/// ARGV: now ms, ttl ms, device ('' for none), since. A device's first connection (or one
/// whose cursor went unused for the TTL) starts at the user's watermark.
/// Returns {after, seq, frame, seq, frame, ...}.
pub static OPEN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{INBOX}
local now = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
upgrade_inbox(KEYS[1])
trim_age(KEYS[1], now - ttl)
local fields = redis.call('HGETALL', KEYS[2])
local watermark = 0
for i = 1, #fields, 2 do
  if fields[i] == '~w' then
    watermark = tonumber(fields[i + 1])
  else
    local used = tonumber(string.match(fields[i + 1], ':(%d+)$'))
    if used == nil or used + ttl < now then redis.call('HDEL', KEYS[2], fields[i]) end
  end
end
local after = watermark
if ARGV[3] ~= '' then
  local field = 'd:' .. ARGV[3]
  local cursor = redis.call('HGET', KEYS[2], field)
  if cursor then after = tonumber(string.match(cursor, '^(%d+):')) end
  redis.call('HSET', KEYS[2], field, after .. ':' .. now)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
-- A since above the newest seq comes from an inbox Redis no longer has: ignore it.
local since = tonumber(ARGV[4])
local newest = tonumber(redis.call('GET', KEYS[3]) or '0')
if since > after and since <= newest then after = since end
local result = {{after}}
for _, v in ipairs(read_after(KEYS[1], after, now - ttl)) do table.insert(result, v) end
return result
"#
    ))
});

/// Inbox messages after a seq, younger than the TTL, touching no cursor. KEYS: inbox.
/// ARGV: after, now ms, ttl ms. Returns {seq, frame, ...}.
pub static READ: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{INBOX}
upgrade_inbox(KEYS[1])
return read_after(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]) - tonumber(ARGV[3]))
"#
    ))
});

/// A device's cumulative ack. KEYS: seq, cursors. ARGV: device ('' for none), seq, now ms,
/// ttl ms. Returns {1, newest} when recorded, {0, newest} when seq is beyond the newest.
pub static ACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local newest = tonumber(redis.call('GET', KEYS[1]) or '0')
local seq = tonumber(ARGV[2])
if seq > newest then return {0, newest} end
if ARGV[1] ~= '' then
  local field = 'd:' .. ARGV[1]
  local cursor = redis.call('HGET', KEYS[2], field)
  local at = 0
  if cursor then at = tonumber(string.match(cursor, '^(%d+):')) end
  if seq > at then at = seq end
  redis.call('HSET', KEYS[2], field, at .. ':' .. ARGV[3])
end
local watermark = tonumber(redis.call('HGET', KEYS[2], '~w') or '0')
if seq > watermark then redis.call('HSET', KEYS[2], '~w', seq) end
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return {1, newest}
"#,
    )
});

/// Checks the per-user limit and reserves a slot. KEYS: conns. ARGV: connection id,
/// device ('' for none), limit, lease ms. Expired entries (their node died) are dropped;
/// entries of the same device are replaced. Returns {0} when full, else {1, replaced
/// connection ids...}. Times are Redis's clock.
pub static ADMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{REDIS_NOW}
local now = redis_now()
local entries = redis.call('HGETALL', KEYS[1])
local live = 0
local same_device = {{}}
for i = 1, #entries, 2 do
  local expires, device = string.match(entries[i + 1], '^(%d+)|(.*)$')
  if expires == nil or tonumber(expires) <= now then
    redis.call('HDEL', KEYS[1], entries[i])
  elseif ARGV[2] ~= '' and device == ARGV[2] then
    table.insert(same_device, entries[i])
  else
    live = live + 1
  end
end
if live >= tonumber(ARGV[3]) then return {{0}} end
for _, id in ipairs(same_device) do redis.call('HDEL', KEYS[1], id) end
redis.call('HSET', KEYS[1], ARGV[1], (now + tonumber(ARGV[4])) .. '|' .. ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
local result = {{1}}
for _, id in ipairs(same_device) do table.insert(result, id) end
return result
"#
    ))
});

/// Refreshes live connections' leases, or restores them after Redis lost them. KEYS:
/// conns, once per connection (one user's on a Cluster, any users' elsewhere). ARGV:
/// lease ms, then connection id and device per connection. Each key's expiry is set to
/// the lease, so it never ends before the newest entry in it. Returns how many.
pub static REFRESH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{REDIS_NOW}
local lease = tonumber(ARGV[1])
local expires = redis_now() + lease
for i = 1, #KEYS do
  redis.call('HSET', KEYS[i], ARGV[i * 2], expires .. '|' .. ARGV[i * 2 + 1])
  redis.call('PEXPIRE', KEYS[i], lease)
end
return #KEYS
"#
    ))
});

/// Counts a user's live connections and tells every node to close them (4403).
/// KEYS: conns, channel. ARGV: sharded. Returns the count.
pub static KICK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{REDIS_NOW}
local now = redis_now()
local live = 0
local conns = redis.call('HGETALL', KEYS[1])
for i = 2, #conns, 2 do
  local expires = tonumber(string.match(conns[i], '^(%d+)'))
  if expires ~= nil and expires > now then live = live + 1 end
end
if ARGV[1] == '1' then
  redis.call('SPUBLISH', KEYS[2], 'k')
else
  redis.call('PUBLISH', KEYS[2], 'k')
end
return live
"#
    ))
});

/// Records this node as alive and its connection count. KEYS: nodes set, count key.
/// ARGV: node id, count, ttl ms. Expiry in Redis's clock. Returns 1 when the node was
/// not listed (first heartbeat, or its last one ran out or Redis lost it).
pub static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{REDIS_NOW}
local added = redis.call('ZADD', KEYS[1], redis_now() + tonumber(ARGV[3]), ARGV[1])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
return added
"#
    ))
});

/// Records one connection in a room's presence. KEYS: presence hash. ARGV: field, value,
/// ttl ms.
pub static PRESENCE_ENTER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"#,
    )
});

/// Re-asserts one node's part of a room's presence: exactly the given fields, in chunks
/// so that no single command carries a huge room. KEYS: the node's part. ARGV: ttl ms,
/// then field, value pairs. With no pairs the part is gone.
pub static PRESENCE_SYNC: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
redis.call('DEL', KEYS[1])
for i = 2, #ARGV, 2000 do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 1999, #ARGV)))
end
if #ARGV >= 3 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return 1
"#,
    )
});

/// Drops nodes whose heartbeat ran out and returns the live ones. KEYS: nodes set.
pub static LIVE_NODES: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{REDIS_NOW}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', redis_now())
return redis.call('ZRANGE', KEYS[1], 0, -1)
"#
    ))
});

/// Stores a client app message once per (app, user, id). KEYS: seen key, stream.
/// ARGV: dedup ttl ms, stream max length, user, type, id, data, ts, device.
/// Returns 1 when stored, 0 for a duplicate. Both keys share a slot, so the check and
/// the append cannot be separated by a crash.
pub static STORE_INBOUND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if not redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then return 0 end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*',
  'user', ARGV[3], 'type', ARGV[4], 'id', ARGV[5], 'data', ARGV[6], 'ts', ARGV[7], 'device', ARGV[8])
return 1
"#,
    )
});

/// Claims an idempotency key (see `broker::idempotency` for the record format). KEYS: the
/// record. ARGV: the attempt's token, fingerprint, ttl ms, abandoned-after ms. Returns
/// {1, the pending record stored} when claimed, else {0, the record found}. A pending
/// record older than abandoned-after (Redis's clock) belongs to an attempt that died and
/// is claimed over.
pub static IDEMPOTENCY_CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{REDIS_NOW}
local now = redis_now()
local found = redis.call('GET', KEYS[1])
if found then
  local at = tonumber(string.match(found, '^p:(%d+):'))
  if at == nil or now - at < tonumber(ARGV[4]) then return {{0, found}} end
end
local pending = 'p:' .. now .. ':' .. ARGV[1] .. ':' .. ARGV[2]
redis.call('SET', KEYS[1], pending, 'PX', ARGV[3])
return {{1, pending}}
"#
    ))
});

/// Replaces an attempt's pending record with its answer, keeping the key's expiry, only
/// while the key still holds that pending record. KEYS: the record. ARGV: the pending
/// record, the done record. Returns 1 when replaced. A script so it can be made durable
/// (`WAIT`) like the send it follows.
pub static IDEMPOTENCY_COMPLETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
return 1
"#,
    )
});

/// Frees an idempotency key whose attempt failed, only while it still holds that
/// attempt's pending record. KEYS: the record. ARGV: the pending record.
pub static IDEMPOTENCY_RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"#,
    )
});

/// Shared Lua: a stream (a room with history, an app's broadcasts). `meta` is a hash with
/// the epoch (`e`) and the last offset (`o`); `hist` a list of `<offset>:<ms>:<frame>` in
/// offset order, one entry per offset (appended at the tail, trimmed from the head), so
/// the entry of offset `o` sits at index `o - first`. A missing meta means the stream is
/// new or Redis lost it: it starts again with a new epoch and an empty history.
const STREAM: &str = r#"
local function stream_epoch(meta, hist, candidate, meta_ttl)
  local epoch = redis.call('HGET', meta, 'e')
  if not epoch then
    epoch = candidate
    redis.call('DEL', hist)
    redis.call('HSET', meta, 'e', epoch, 'o', 0)
  end
  redis.call('PEXPIRE', meta, meta_ttl)
  return epoch
end
local function entry_offset(entry)
  return tonumber(string.match(entry, '^(%d+):'))
end
local function entry_ms(entry)
  return tonumber(string.match(entry, '^%d+:(%d+):'))
end
-- Drops entries older than cutoff from the head, at most 1024 per call.
local function trim_stream_age(hist, cutoff)
  for _ = 1, 16 do
    local expired = 0
    for _, entry in ipairs(redis.call('LRANGE', hist, 0, 63)) do
      if entry_ms(entry) >= cutoff then break end
      expired = expired + 1
    end
    if expired > 0 then redis.call('LTRIM', hist, expired, -1) end
    if expired < 64 then return end
  end
end
"#;

/// Appends a message to a stream and publishes it, in one step, so every node gets a
/// stream's messages in offset order. KEYS: meta, hist, channel, marker. ARGV: now ms,
/// size, ttl ms, meta ttl ms, a new epoch (used if the stream has none), body (the
/// envelope without offset and epoch), publish mode (as [`APPEND`]'s), marker fingerprint
/// ('' for none), marker ttl ms. Returns {offset, epoch} (and in mode 2 the payload to
/// publish), {'f', offset, epoch} for a found marker, {'r'} for another request's.
pub static STREAM_PUBLISH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{STREAM}{MARKER}
local found = marked(KEYS[4], ARGV[8])
if found then return found end
local now = tonumber(ARGV[1])
local epoch = stream_epoch(KEYS[1], KEYS[2], ARGV[5], ARGV[4])
local offset = redis.call('HINCRBY', KEYS[1], 'o', 1)
local frame = '{{"offset":' .. offset .. ',"epoch":"' .. epoch .. '",' .. string.sub(ARGV[6], 2)
local len = redis.call('RPUSH', KEYS[2], offset .. ':' .. now .. ':' .. frame)
local size = tonumber(ARGV[2])
if len > size then redis.call('LTRIM', KEYS[2], len - size, -1) end
trim_stream_age(KEYS[2], now - tonumber(ARGV[3]))
redis.call('PEXPIRE', KEYS[2], ARGV[3])
mark(KEYS[4], ARGV[8], ARGV[9], {{offset, epoch}})
local payload = 's' .. offset .. ':' .. epoch .. ' ' .. frame
if ARGV[7] == '1' then
  redis.call('SPUBLISH', KEYS[3], payload)
elseif ARGV[7] == '0' then
  redis.call('PUBLISH', KEYS[3], payload)
else
  return {{offset, epoch, payload}}
end
return {{offset, epoch}}
"#
    ))
});

/// Reads a stream. KEYS: meta, hist. ARGV: 'now' or 'after', the reader's offset, its
/// epoch ('' for any), now ms, ttl ms, limit, a new epoch (for a stream that has none),
/// meta ttl ms. Returns {epoch, top, recovered (0/1), more (0/1), offset, frame, ...}:
/// after the reader's offset when recovered, else from the oldest kept; nothing for 'now'.
pub static STREAM_READ: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{STREAM}
local epoch = stream_epoch(KEYS[1], KEYS[2], ARGV[7], ARGV[8])
local top = tonumber(redis.call('HGET', KEYS[1], 'o') or '0')
if ARGV[1] == 'now' then return {{epoch, top, 0, 0}} end
local cutoff = tonumber(ARGV[4]) - tonumber(ARGV[5])
trim_stream_age(KEYS[2], cutoff)
local after = tonumber(ARGV[2])
local limit = tonumber(ARGV[6])
local head = redis.call('LINDEX', KEYS[2], 0)
local first = head and entry_offset(head) or (top + 1)
local recovered = false
if (ARGV[3] == '' or ARGV[3] == epoch) and after <= top then
  if after == top then
    recovered = true
  elseif head and after + 1 >= first then
    local entry = redis.call('LINDEX', KEYS[2], after + 1 - first)
    recovered = entry ~= false and entry ~= nil and entry_ms(entry) >= cutoff
  end
end
local start = 0
if recovered then start = after + 1 - first end
if start < 0 then start = 0 end
local entries = redis.call('LRANGE', KEYS[2], start, start + limit)
local result = {{epoch, top, recovered and 1 or 0, 0}}
local taken = 0
for _, entry in ipairs(entries) do
  local offset, ms = string.match(entry, '^(%d+):(%d+):')
  if tonumber(ms) >= cutoff and (not recovered or tonumber(offset) > after) then
    if taken == limit then
      result[4] = 1
      break
    end
    table.insert(result, tonumber(offset))
    table.insert(result, string.sub(entry, #offset + #ms + 3))
    taken = taken + 1
  end
end
return result
"#
    ))
});

/// A live-only message with a marker: publishes it unless the marker of an earlier send
/// is there. KEYS: marker, channel. ARGV: fingerprint, marker ttl ms, payload, mode (0:
/// PUBLISH, 1: SPUBLISH). Returns {'n'} when published, {'f'} for a found marker, {'r'}
/// for another request's.
pub static PUBLISH_ONCE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{MARKER}
local found = marked(KEYS[1], ARGV[1])
if found then return found end
mark(KEYS[1], ARGV[1], ARGV[2], {{'n'}})
if ARGV[4] == '1' then
  redis.call('SPUBLISH', KEYS[2], ARGV[3])
else
  redis.call('PUBLISH', KEYS[2], ARGV[3])
end
return {{'n'}}
"#
    ))
});

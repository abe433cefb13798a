-- Counts one request against a rate limit, atomically and on Redis's clock, with the
-- same steps as the memory store (rate_limit/memory.rs: `bucket` and `window`).
-- KEYS[1]: the key's counts, a hash.
-- ARGV: algorithm ("bucket" or "window"), rate, per (microseconds), burst.
-- Returns {allowed (1 or 0), tokens left (a string)} for a token bucket, and
-- {allowed, current, previous, microseconds into the window} for a sliding window.
-- A refused request changes nothing: the same state is read again next time.

-- Scripts that read TIME before writing need effect replication before Redis 5.
if redis.replicate_commands then
  redis.replicate_commands()
end

local key = KEYS[1]
local rate = tonumber(ARGV[2])
local per = tonumber(ARGV[3])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])

-- Numbers as exact text: Redis would turn a big one into "1.7e+15".
local function exact(x)
  return string.format('%.17g', x)
end

if ARGV[1] == 'bucket' then
  local burst = tonumber(ARGV[4])
  local state = redis.call('HMGET', key, 'tokens', 'at')
  local tokens, at = tonumber(state[1]), tonumber(state[2])
  if tokens == nil or at == nil then
    tokens, at = burst, now
  end
  local elapsed = math.max(now - at, 0) / 1000000
  tokens = math.min(tokens + elapsed * (rate / (per / 1000000)), burst)
  local allowed = 0
  if tokens >= 1 then
    allowed = 1
    tokens = tokens - 1
    redis.call('HSET', key, 'tokens', exact(tokens), 'at', exact(now))
    -- Gone once full again, when a fresh bucket says the same.
    local full_in_ms = (burst - tokens) * per / rate / 1000
    redis.call('PEXPIRE', key, math.ceil(full_in_ms) + 1000)
  end
  return {allowed, exact(tokens)}
end

local index = math.floor(now / per)
local state = redis.call('HMGET', key, 'window', 'current', 'previous')
local window = tonumber(state[1])
local current, previous = tonumber(state[2]) or 0, tonumber(state[3]) or 0
if window == nil then
  current, previous = 0, 0
elseif index == window + 1 then
  current, previous = 0, current
elseif index ~= window then
  current, previous = 0, 0
end
local into = now - index * per
local weight = math.min(math.max(1 - into / per, 0), 1)
local allowed = 0
if previous * weight + current + 1 <= rate then
  allowed = 1
  current = current + 1
  redis.call('HSET', key, 'window', exact(index), 'current', current, 'previous', previous)
  -- Counted until the next window ends.
  redis.call('PEXPIRE', key, math.ceil((2 * per - into) / 1000) + 1000)
end
return {allowed, current, previous, into}

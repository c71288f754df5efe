-- Scenario 2 through an outside load generator: one transfer per request.
--
--   wrk -t1 -c64 -d10s --latency -s transfers.lua http://127.0.0.1:PORT -- ACCOUNTS PREFIX KEY SEED
--
-- ACCOUNTS: a file of account ids (`acct_…`), one a line; each request debits one and credits
-- another, a uniformly random pair. PREFIX: `tr_` and the 10 base32 digits of the run's start
-- in Unix milliseconds; each request's `id` is PREFIX and a 16-digit counter, so ids are unique
-- and time-ordered like the ones the server makes (new ids above every stored one append to
-- the `transfers` key). KEY: the API key. SEED: for the random pairs and amounts.
--
-- No `response` hook: wrk then reads answers without calling Lua; a non-2xx answer is counted
-- by wrk itself (`summary.errors.status`), and printed by `done` with the figures the benchmark
-- suite (crates/bench/src/wrk.rs) reads.

local accounts = {}
local prefix = "tr_"
local counter = 0
local digits = "0123456789abcdefghjkmnpqrstvwxyz"

function init(args)
  for line in io.lines(args[1]) do
    if #line > 0 then
      accounts[#accounts + 1] = line
    end
  end
  if #accounts < 2 then
    error("transfers.lua: need at least two accounts in " .. tostring(args[1]))
  end
  prefix = args[2]
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. args[3]
  math.randomseed(tonumber(args[4]) or os.time())
end

-- `n` (below 2^53) in `width` base32 digits.
local function base32(n, width)
  local out = {}
  for i = width, 1, -1 do
    local d = n % 32
    out[i] = digits:sub(d + 1, d + 1)
    n = (n - d) / 32
  end
  return table.concat(out)
end

function request()
  counter = counter + 1
  local n = #accounts
  local debit = math.random(n)
  local credit = math.random(n - 1)
  if credit >= debit then
    credit = credit + 1
  end
  local body = string.format(
    '{"id":"%s%s","debit_account":"%s","credit_account":"%s","amount":%d,"currency":"EUR"}',
    prefix, base32(counter, 16), accounts[debit], accounts[credit], math.random(1000))
  return wrk.format(nil, "/v1/transfers", nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "paycore-wrk requests=%d duration_us=%d p50_us=%d p99_us=%d p999_us=%d max_us=%d " ..
    "status_errors=%d connect_errors=%d read_errors=%d write_errors=%d timeouts=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9), latency.max, e.status, e.connect, e.read, e.write, e.timeout))
end

-- wrk script of ledger-bench's two-serves section: deposits into random funded accounts (a0 ..
-- a<N-1>). Every deposit also moves the currency's one cash account (system.cash.EUR), so all
-- of them meet on one stream: the hottest contention two engines can have. Each has an
-- Idempotency-Key of its own. Settings as in transfers.lua: LEDGER_BENCH_TOKEN,
-- LEDGER_BENCH_ACCOUNTS and LEDGER_BENCH_RUN (unique per wrk process and run).
local token = os.getenv("LEDGER_BENCH_TOKEN") or ""
local accounts = tonumber(os.getenv("LEDGER_BENCH_ACCOUNTS") or "1000")
local run = os.getenv("LEDGER_BENCH_RUN") or "0"
local threads_started = 0

function setup(thread)
  threads_started = threads_started + 1
  thread:set("thread_number", threads_started)
end

local sent = 0

function init(args)
  math.randomseed(os.time() + 7919 * (thread_number or 0))
end

function request()
  sent = sent + 1
  local account = math.random(0, accounts - 1)
  local body = string.format('{"amount":%d}', math.random(1, 100))
  local headers = {
    ["Authorization"] = "Bearer " .. token,
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = string.format("wrk-deposit-%s-%d-%d", run, thread_number or 0, sent),
  }
  return wrk.format("POST", string.format("/v1/accounts/a%d/deposits", account), headers, body)
end

-- One line the bench parses; latencies in microseconds.
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
      "ledger-bench: requests=%d duration_us=%d non_2xx=%d socket_errors=%d p50_us=%d p90_us=%d p99_us=%d p999_us=%d\n",
      summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end

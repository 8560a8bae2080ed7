-- wrk script of ledger-bench: random transfers between the bench's funded accounts (a0 ..
-- a<N-1>), each with an Idempotency-Key of its own, as a client that retries safely sends them.
-- Settings come from the environment: LEDGER_BENCH_TOKEN (a teller token), LEDGER_BENCH_ACCOUNTS
-- and LEDGER_BENCH_RUN (makes the keys unique across runs on one database).
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
  local from = math.random(0, accounts - 1)
  local to = math.random(0, accounts - 2)
  if to >= from then to = to + 1 end
  local body = string.format('{"from":"a%d","to":"a%d","amount":%d,"currency":"EUR"}', from, to,
                             math.random(1, 100))
  local headers = {
    ["Authorization"] = "Bearer " .. token,
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = string.format("wrk-%s-%d-%d", run, thread_number or 0, sent),
  }
  return wrk.format("POST", "/v1/transfers", headers, body)
end

-- One line the bench parses; latencies in microseconds.
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
      "ledger-bench: requests=%d duration_us=%d non_2xx=%d socket_errors=%d p50_us=%d p90_us=%d p99_us=%d p999_us=%d\n",
      summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end

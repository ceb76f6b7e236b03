-- wrk script for `python -m benchmarks.http`: every request is a new one-unit sale with its
-- own sale id and Idempotency-Key, `<tag>-<thread>-<n>`, n counting per wrk thread. The
-- benchmark runs one connection per thread, so a thread's requests are sequential: each
-- response answers the thread's one request in flight, and a request sent while another was
-- still unanswered (a connection that broke and was reopened) leaves that one unanswered.
--
-- wrk -t N -c N ... -s sale.lua URL -- TOKEN TAG OUTLET SKU_OR_PREFIX hot|distinct
-- prints, after wrk's own summary, lines the benchmark parses:
--   status <code> <count>      responses by HTTP status (a refusal is a 4xx, never a sale)
--   replayed <count>           2xx answers that were replays of a recorded sale (expected: 0)
--   sent <count>               requests sent
--   unanswered <sale id>       sent, never answered (resolved afterwards under its key)
--   latency_us <p> <value>     wrk's latency distribution over every response (100: max)

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  token, tag, outlet, sku_arg, mode = args[1], args[2], args[3], args[4], args[5]
  if mode == "hot" then
    sku = sku_arg
  else
    sku = sku_arg .. id
  end
  sent = 0
  replayed = 0
  statuses = {}
  unanswered = {}
  pending = nil
  headers = {
    ["Authorization"] = "Bearer " .. token,
    ["Content-Type"] = "application/json",
  }
end

function request()
  if pending ~= nil then
    table.insert(unanswered, pending)
  end
  sent = sent + 1
  local sale = tag .. "-" .. id .. "-" .. sent
  pending = sale
  headers["Idempotency-Key"] = sale
  local body = '{"outlet":"' .. outlet .. '","sale_id":"' .. sale ..
    '","lines":[{"sku":"' .. sku .. '","quantity":1}]}'
  return wrk.format("POST", "/v1/sales", headers, body)
end

function response(status, response_headers, body)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
  if response_headers["idempotent-replayed"] or response_headers["Idempotent-Replayed"] then
    replayed = replayed + 1
  end
  pending = nil
end

function done(summary, latency, requests)
  local totals = {}
  local total_sent = 0
  local total_replayed = 0
  for _, thread in ipairs(threads) do
    total_replayed = total_replayed + thread:get("replayed")
    for code, count in pairs(thread:get("statuses")) do
      totals[code] = (totals[code] or 0) + count
    end
    total_sent = total_sent + thread:get("sent")
    for _, sale in ipairs(thread:get("unanswered")) do
      io.write("unanswered ", sale, "\n")
    end
    local last = thread:get("pending")
    if last ~= nil then
      io.write("unanswered ", last, "\n")
    end
  end
  for code, count in pairs(totals) do
    io.write("status ", code, " ", count, "\n")
  end
  io.write("sent ", total_sent, "\n")
  io.write("replayed ", total_replayed, "\n")
  for _, p in ipairs({50, 90, 99, 99.9}) do
    io.write("latency_us ", p, " ", latency:percentile(p), "\n")
  end
  io.write("latency_us 100 ", latency.max, "\n")
  io.write("duration_us ", summary.duration, "\n")
  io.write("errors ", summary.errors.connect, " ", summary.errors.read, " ",
           summary.errors.write, " ", summary.errors.status, " ", summary.errors.timeout, "\n")
end

-- Fixed arrival rate for wrk (bench/run.py), wrk2's method with Debian's wrk (Debian has no wrk2):
-- run with as many threads as connections (-tN -cN), so each thread owns one connection and its
-- requests and responses alternate. Each connection sends on its own constant schedule
-- (RATE / N per second); a request's latency is counted from its *scheduled* send time when it
-- went out late (the previous answer was slow), so a stall is not hidden by the generator waiting
-- for it (no coordinated omission), and from its actual send time when wrk's millisecond timer let
-- it go out early. Clock: clock_gettime(CLOCK_MONOTONIC) through LuaJIT's FFI (microseconds).
-- Args: `-- RATE STREAM KEY`. At the end: `BENCHJSON {...}` with percentiles over all threads.
local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } timespec;
  int clock_gettime(int clk_id, timespec *tp);
]]
local ts = ffi.new("timespec")
local function now()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) * 1e-9
end

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

local interval, start, k, sched, sent = 0.001, nil, 0, 0, 0
lats, bad = {}, 0

function init(args)
  local rate = tonumber(args[1] or "1000")
  local stream = args[2] == "1" and "true" or "false"
  local key = args[3] or ""
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  if key ~= "" then wrk.headers["Authorization"] = "Bearer " .. key end
  wrk.body = '{"model":"m1","max_tokens":16,"stream":' .. stream ..
             ',"messages":[{"role":"user","content":"hello"}]}'
  interval = tonumber(args[4] or "1") / rate  -- args[4]: the thread (= connection) count
end

function delay()
  local t = now()
  if start == nil then start = t end  -- the first request goes out without a delay() call
  local d = start + k * interval - t
  if d <= 0 then return 0 end
  return math.floor(d * 1000)
end

function request()
  sent = now()
  if start == nil then start = sent end
  sched = start + k * interval
  k = k + 1
  return wrk.format()
end

function response(status, headers, body)
  local from = sched < sent and sched or sent
  lats[#lats + 1] = (now() - from) * 1e6
  if status ~= 200 then bad = bad + 1 end
end

function done(summary, latency, requests)
  local all, bad_total = {}, 0
  for _, t in ipairs(threads) do
    for _, v in ipairs(t:get("lats")) do all[#all + 1] = v end
    bad_total = bad_total + t:get("bad")
  end
  table.sort(all)
  local function pct(q)
    if #all == 0 then return -1 end
    return all[math.min(#all, math.floor(q / 100 * #all) + 1)]
  end
  local e = summary.errors
  io.write(string.format('BENCHJSON {"requests":%d,"duration_us":%d,"non200":%d,"socket_errors":%d,' ..
    '"timeouts":%d,"p50_us":%.1f,"p90_us":%.1f,"p99_us":%.1f,"p999_us":%.1f,"max_us":%.1f}\n',
    #all, summary.duration, bad_total, e.connect + e.read + e.write, e.timeout,
    pct(50), pct(90), pct(99), pct(99.9), #all > 0 and all[#all] or -1))
end

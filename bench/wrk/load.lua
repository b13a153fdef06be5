-- Closed loop for wrk (bench/run.py): `wrk ... -s load.lua URL -- KIND STREAM KEY`.
-- KIND "short": one of 16 short chat prompts per request, cycling.
-- KIND "long": a ~100 KB context shared by every request + a distinct question (thread id and a
--   counter), the shape of RAG / agentic traffic where prefix affinity pays.
-- STREAM "1" asks for server-sent events. At the end one line `BENCHJSON {...}` with the counts.
local kind, stream, key = "short", false, ""
local bodies, n, prefix, suffix = {}, 0, nil, nil
tid = 0  -- set per thread by setup()
local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
  table.insert(threads, thread)
end

local function context(bytes)
  -- Deterministic words, the same in every thread (and every run), so all requests share it.
  local words = {"alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa",
                 "lambda", "mu", "nu", "xi", "omicron", "pi", "rho", "sigma", "tau", "upsilon"}
  local out, size, x = {}, 0, 12345
  while size < bytes do
    x = (x * 1103515245 + 12345) % 2147483648
    local w = words[(x % #words) + 1]
    out[#out + 1] = w
    size = size + #w + 1
  end
  return "Reference document. " .. table.concat(out, " ")
end

function init(args)
  kind = args[1] or "short"
  stream = args[2] == "1"
  key = args[3] or ""
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  if key ~= "" then wrk.headers["Authorization"] = "Bearer " .. key end
  local s = stream and "true" or "false"
  if kind == "long" then
    prefix = '{"model":"m1","max_tokens":16,"stream":' .. s ..
             ',"messages":[{"role":"system","content":"' .. context(100 * 1024) ..
             '"},{"role":"user","content":"Question '
    suffix = ': what does the document say about the topic above?"}]}'
  else
    local prompts = {"hello", "hi there", "what is 2+2?", "tell me a joke", "good morning",
                     "translate 'cat' to French", "name a colour", "say something nice", "how are you?",
                     "write a haiku", "what day is it?", "define entropy", "list three fruits",
                     "who wrote Hamlet?", "count to five", "summarise: the sky is blue"}
    for i, p in ipairs(prompts) do
      bodies[i] = wrk.format(nil, nil, nil, '{"model":"m1","max_tokens":16,"stream":' .. s ..
                             ',"messages":[{"role":"user","content":"' .. p .. '"}]}')
    end
  end
end

function request()
  n = n + 1
  if kind == "long" then
    -- The question's length varies with n (0..511 extra "?"): LuaJIT interns every string and its
    -- hash of a long string samples only a few bytes, so 100 KB strings of one length that differ
    -- near the end all collide, and each new one is compared byte by byte with the others (50+
    -- µs per request, the generator's cost); a length in the hash keeps them apart.
    return wrk.format(nil, nil, nil, prefix .. tid .. "-" .. n .. string.rep("?", n % 512) .. suffix)
  end
  return bodies[(n % #bodies) + 1]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect_errors":%d,' ..
    '"read_errors":%d,"write_errors":%d,"status_errors":%d,"timeouts":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end

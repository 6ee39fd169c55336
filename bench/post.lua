-- wrk script: POST JSON bodies and print one machine-readable summary line.
-- BODY_FILE: one body, sent on every request. BODY_LIST: a file naming one body file a line,
-- sent in turn (each wrk thread cycles through them), so the server sees varied rows.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

local function read(path)
  local f = assert(io.open(path, "rb"))
  local body = f:read("*a")
  f:close()
  return body
end

local list = os.getenv("BODY_LIST")
if list then
  local requests, next_one = {}, 0
  -- After wrk has set the Host header: every request made once, in full.
  function init(args)
    for path in io.lines(list) do
      requests[#requests + 1] = wrk.format(nil, nil, nil, read(path))
    end
  end
  function request()
    next_one = next_one % #requests + 1
    return requests[next_one]
  end
else
  wrk.body = read(os.getenv("BODY_FILE"))
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d non2xx=%d socket_errors=%d p50_us=%d p99_us=%d\n",
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end

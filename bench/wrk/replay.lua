-- Replays prepared requests with wrk, for the raw per-endpoint ceiling of `make load`.
--
--   wrk -t1 -c64 -d10s --latency -s bench/wrk/replay.lua URL -- FILE MODE THREADS
--
-- FILE holds one request per line: METHOD <tab> PATH <tab> BEARER <tab> JSON BODY (written
-- by bench/load.py from really issued prescriptions and minted identities). Thread i of
-- THREADS takes lines i, i + THREADS, ... and cycles through them. MODE "unique" gives every
-- request its own Idempotency-Key and uses each line once (a dispensation of one pack): past
-- the end of the file the requests repeat and get 409, which wrk counts as non-2xx.
local threads = 0

function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

function init(args)
  unique = args[2] == "unique"
  local nthreads = tonumber(args[3]) or 1
  reqs = {}
  local n = 0
  for line in io.lines(args[1]) do
    if n % nthreads == tid then
      local m, p, b, body = line:match("^([^\t]*)\t([^\t]*)\t([^\t]*)\t(.*)$")
      reqs[#reqs + 1] = { m, p, b, body }
    end
    n = n + 1
  end
  i = 0
end

function request()
  i = i + 1
  local r = reqs[(i - 1) % #reqs + 1]
  local headers = { ["Authorization"] = "Bearer " .. r[3], ["Content-Type"] = "application/json" }
  if unique then
    headers["Idempotency-Key"] = "wrk-" .. tid .. "-" .. i
  end
  return wrk.format(r[1], r[2], headers, r[4])
end

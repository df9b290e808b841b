-- wrk script for run.sh.
-- PATCH_PERCENT=0 (default): wrk sends the URL of its command line (no Lua per request).
-- PATCH_PERCENT=10: GET /users/{id}, and PATCH /users/{id} (a new name) 10 % of the
-- time, ids 1..USERS at random.
local patch_percent = tonumber(os.getenv("PATCH_PERCENT") or "0")
local users = tonumber(os.getenv("USERS") or "100")
local n = 0

if patch_percent > 0 then
  init = function(args)
    math.randomseed(os.time())
  end

  request = function()
    local id = math.random(1, users)
    n = n + 1
    if math.random(1, 100) <= patch_percent then
      return wrk.format("PATCH", "/users/" .. id, { ["Content-Type"] = "application/json" },
        string.format('{"name":"user %d %d"}', id, n))
    end
    return wrk.format("GET", "/users/" .. id)
  end
end

-- The figures run.sh reads.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT rps=%.1f p50_us=%d p99_us=%d errors=%d non2xx=%d requests=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout + e.status, e.status, summary.requests))
end

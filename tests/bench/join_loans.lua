-- wrk script: exactly N checkouts, each of a distinct (member, resource) pair
-- (used by tests/bench/join_bench.py to fill a node with loans).
--
--   wrk -tT -cC -d3600s --timeout 30s -s tests/bench/join_loans.lua http://127.0.0.1:PORT -- \
--       TOKEN_FILE USERS_FILE RESOURCES_FILE N LIMIT T
--
-- TOKEN_FILE: a librarian JWT; USERS_FILE: one member id per line (M lines);
-- RESOURCES_FILE: one resource id per line (R lines). Each request is
-- POST /v1/loans {"resource_id","user_id"} as the librarian.
--
-- Pair i (0-based): member m = i mod M, k = floor(i / M), resource (m + k) mod R,
-- so a member never gets the same resource twice while floor(i / M) < R.
-- wrk thread t (1..T) takes the pairs t-1, t-1+T, t-1+2T, ... below LIMIT and
-- owns a share of N (N/T, the first N mod T threads one more). It issues a
-- checkout while its 201 answers plus its checkouts in flight are fewer than
-- its share, so a checkout that failed is replaced by the next pair; once its
-- share is complete (or its pairs below LIMIT are used up) and nothing is in
-- flight, it stops (wrk.thread:stop()). A connection with nothing to do
-- meanwhile asks GET /healthz. wrk itself runs until the driver sends SIGINT
-- (when the server counts N loans). wrk's first thread is asked for one
-- request before the run that it never sends (it checks that it parses):
-- that one is a GET /healthz.
-- done() prints "BENCH created=.. failed=.. healthz=.. exhausted=.. seconds=.."
-- and "FAIL status=count ..." plus one sample body of a failed checkout.

local counter = 0
local threads = {}

function setup(thread)
    counter = counter + 1
    thread:set("thread_id", counter)
    threads[#threads + 1] = thread
end

local uids, rids = {}, {}
local headers
local M, R, N, LIMIT, T
local quota, next_i, inflight = 0, 0, 0
local stopped = false
local verified = false
local healthz_req

-- per-thread results, read by done() through thread:get()
created, failed, healthz, exhausted, fail_codes, fail_sample = 0, 0, 0, 0, "", ""
local codes = {}

local function read_lines(path, into)
    for line in io.lines(path) do
        local s = line:match("^%s*(%S+)")
        if s then
            into[#into + 1] = s
        end
    end
end

function init(args)
    if not args[6] then
        error("usage: wrk ... -s join_loans.lua URL -- TOKEN_FILE USERS_FILE RESOURCES_FILE N LIMIT T")
    end
    local token
    for line in io.lines(args[1]) do
        token = token or line:match("^%s*(%S+)")
    end
    read_lines(args[2], uids)
    read_lines(args[3], rids)
    N, LIMIT, T = tonumber(args[4]), tonumber(args[5]), tonumber(args[6])
    M, R = #uids, #rids
    if not token or M == 0 or R == 0 or not N or not LIMIT or not T then
        error("join_loans.lua: empty token, users or resources file, or bad N/LIMIT/T")
    end
    local t = thread_id or 1
    quota = math.floor(N / T) + ((t <= N % T) and 1 or 0)
    next_i = t - 1
    headers = { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json" }
    healthz_req = wrk.format("GET", "/healthz")
end

function request()
    -- wrk calls request() of its first thread once before it runs, to check
    -- the request parses: that one is never sent, so it takes no pair
    if not verified then
        verified = true
        if (thread_id or 1) == 1 then
            return healthz_req
        end
    end
    if created + inflight < quota and next_i < LIMIT then
        local i = next_i
        next_i = next_i + T
        inflight = inflight + 1
        local m = i % M
        local k = math.floor(i / M)
        local r = (m + k) % R
        return wrk.format("POST", "/v1/loans", headers,
            '{"resource_id":"' .. rids[r + 1] .. '","user_id":"' .. uids[m + 1] .. '"}')
    end
    return healthz_req
end

function response(status, hdrs, body)
    if status == 201 then
        created = created + 1
        inflight = inflight - 1
    elseif status == 200 then
        healthz = healthz + 1 -- GET /healthz (a checkout answers 201 or an error)
    else
        failed = failed + 1
        inflight = inflight - 1
        codes[status] = (codes[status] or 0) + 1
        local parts = {}
        for s, n in pairs(codes) do
            parts[#parts + 1] = s .. "=" .. n
        end
        fail_codes = table.concat(parts, " ")
        if fail_sample == "" and body then
            fail_sample = body:sub(1, 300):gsub("[\r\n]", " ")
        end
    end
    if not stopped and inflight == 0 and (created >= quota or next_i >= LIMIT) then
        stopped = true
        if created < quota then
            exhausted = 1
        end
        wrk.thread:stop()
    end
end

function done(summary, latency, requests)
    local c, f, h, e = 0, 0, 0, 0
    local fails, sample = {}, ""
    for _, t in ipairs(threads) do
        c = c + t:get("created")
        f = f + t:get("failed")
        h = h + t:get("healthz")
        e = e + t:get("exhausted")
        local fc = t:get("fail_codes")
        if fc and fc ~= "" then
            fails[#fails + 1] = fc
        end
        local s = t:get("fail_sample")
        if sample == "" and s and s ~= "" then
            sample = s
        end
    end
    io.write(string.format("BENCH created=%d failed=%d healthz=%d exhausted=%d seconds=%.3f " ..
        "p50_ms=%.2f p99_ms=%.2f\n", c, f, h, e, summary.duration / 1e6,
        latency:percentile(50) / 1000, latency:percentile(99) / 1000))
    io.write("FAIL " .. table.concat(fails, " ") .. "\n")
    io.write("FAIL_SAMPLE " .. sample .. "\n")
end

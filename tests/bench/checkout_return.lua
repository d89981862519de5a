-- wrk script: checkout / return pairs across many members and resources.
--
--   wrk -t2 -c64 -d15s -s tests/bench/checkout_return.lua http://127.0.0.1:PORT -- USERS_FILE RESOURCES_FILE
--
-- USERS_FILE: "<user_id> <member JWT>" per line; RESOURCES_FILE: one resource id per line.
-- A connection that has nothing to return checks out a random resource as a
-- random member (POST /v1/loans); every 201 answer puts the new loan id on
-- this wrk thread's return stack, and the next request of any connection of
-- the thread returns it (POST /v1/loans/{id}/return) with the owner's token.
-- wrk calls response() before it asks request() for that connection's next
-- request, so in steady state requests alternate checkout, return.
-- done() prints one line "BENCH key=value ..." that tests/bench/run.sh parses.

local counter = 0
local threads = {}

function setup(thread)
    counter = counter + 1
    thread:set("thread_id", counter)
    threads[#threads + 1] = thread
end

local users, token_of, resources, pending = {}, {}, {}, {}

-- per-thread counters, read by done() through thread:get()
checkouts, returns, conflicts, errors, unparsed = 0, 0, 0, 0, 0

function init(args)
    if not args[1] or not args[2] then
        error("usage: wrk ... -s checkout_return.lua URL -- USERS_FILE RESOURCES_FILE")
    end
    for line in io.lines(args[1]) do
        local uid, tok = line:match("^(%S+)%s+(%S+)")
        if uid then
            users[#users + 1] = tok
            token_of[uid] = tok
        end
    end
    for line in io.lines(args[2]) do
        if line ~= "" then
            resources[#resources + 1] = line
        end
    end
    if #users == 0 or #resources == 0 then
        error("empty users or resources file")
    end
    math.randomseed(os.time() * 1000 + (thread_id or 0))
end

function request()
    local n = #pending
    if n > 0 then
        local loan = pending[n]
        pending[n] = nil
        return wrk.format("POST", "/v1/loans/" .. loan[1] .. "/return",
            { ["Authorization"] = "Bearer " .. loan[2] }, "")
    end
    local token = users[math.random(#users)]
    local rid = resources[math.random(#resources)]
    return wrk.format("POST", "/v1/loans",
        { ["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json" },
        '{"resource_id":"' .. rid .. '"}')
end

function response(status, headers, body)
    if status == 201 then
        local id = body:match('"id"%s*:%s*"([%x%-]+)"')
        local uid = body:match('"user_id"%s*:%s*"([%x%-]+)"')
        if id and uid and token_of[uid] then
            checkouts = checkouts + 1
            pending[#pending + 1] = { id, token_of[uid] }
        else
            unparsed = unparsed + 1
        end
    elseif status == 200 then
        returns = returns + 1
    elseif status == 409 then
        -- same member drew the same resource twice at once, or no free copy
        conflicts = conflicts + 1
    else
        errors = errors + 1
    end
end

function done(summary, latency, requests)
    local c, r, k, e, u = 0, 0, 0, 0, 0
    for _, t in ipairs(threads) do
        c = c + t:get("checkouts")
        r = r + t:get("returns")
        k = k + t:get("conflicts")
        e = e + t:get("errors")
        u = u + t:get("unparsed")
    end
    local secs = summary.duration / 1e6
    local pairs_per_s = r / secs
    io.write(string.format(
        "BENCH checkouts=%d returns=%d conflicts=%d errors=%d unparsed=%d seconds=%.3f " ..
        "pairs_per_s=%.1f writes_per_s=%.1f p50_ms=%.2f p99_ms=%.2f\n",
        c, r, k, e, u, secs, pairs_per_s, 2 * pairs_per_s,
        latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end

-- wrk script: GET /v1/me/loans as a random member per request.
--
--   wrk -t2 -c64 -d15s -s tests/bench/me_loans.lua http://127.0.0.1:PORT -- TOKENS_FILE
--
-- TOKENS_FILE holds one member JWT per line (written by tests/bench/setup.py).
-- The same script is run against nginx serving a static file at the same
-- path, so both sides pay the same request-generation cost in wrk.

local counter = 0

function setup(thread)
    counter = counter + 1
    thread:set("thread_id", counter)
end

local tokens = {}

function init(args)
    local path = args[1] or os.getenv("TOKENS_FILE")
    if not path then
        error("usage: wrk ... -s me_loans.lua URL -- TOKENS_FILE")
    end
    for line in io.lines(path) do
        if line ~= "" then
            tokens[#tokens + 1] = line
        end
    end
    if #tokens == 0 then
        error("no tokens in " .. path)
    end
    math.randomseed(os.time() * 1000 + (thread_id or 0))
end

function request()
    local token = tokens[math.random(#tokens)]
    return wrk.format("GET", "/v1/me/loans", { ["Authorization"] = "Bearer " .. token })
end

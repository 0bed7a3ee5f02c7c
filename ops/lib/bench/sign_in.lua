-- Password sign-in, each request for the next of BENCH_USERS users
-- (bench-<i>@example.com, password BENCH_PASSWORD), each wrk thread starting
-- at its own offset. BENCH_HEADERS as in request.lua.
package.path = (os.getenv("BENCH_LUA_DIR") or ".") .. "/?.lua;" .. package.path
local report = require("report")

local users = tonumber(os.getenv("BENCH_USERS") or "16")
local password = os.getenv("BENCH_PASSWORD")
local headers = { ["Content-Type"] = "application/json" }
for line in string.gmatch(os.getenv("BENCH_HEADERS") or "", "[^\n]+") do
	local name, value = string.match(line, "^([^:]+):%s*(.*)$")
	if name then headers[name] = value end
end

local threads = 0
function setup(thread)
	thread:set("offset", threads * 7)
	threads = threads + 1
end

local n = 0
function request()
	n = n + 1
	local i = ((offset or 0) + n) % users
	local body = string.format('{"email":"bench-%d@example.com","password":"%s"}', i, password)
	return wrk.format("POST", "/v1/client/sign_in", headers, body)
end

done = report.done

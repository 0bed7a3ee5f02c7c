-- Refresh rotation: BENCH_TOKENS names a file of refresh tokens, one per
-- line (one per signed-in session). wrk thread k of n takes the tokens at
-- lines k, k+n, ...; each request takes one of the thread's tokens and the
-- reply's new refresh token goes back into the thread's pool, so every
-- session is a chain of rotations and no token is used twice. A failed
-- rotation loses its chain (counted by wrk as a non-2xx answer).
package.path = (os.getenv("BENCH_LUA_DIR") or ".") .. "/?.lua;" .. package.path
local report = require("report")

local headers = { ["Content-Type"] = "application/json" }
for line in string.gmatch(os.getenv("BENCH_HEADERS") or "", "[^\n]+") do
	local name, value = string.match(line, "^([^:]+):%s*(.*)$")
	if name then headers[name] = value end
end

-- setup() runs in the main state, once per thread, before the threads start.
local started = 0
local all = {}
function setup(thread)
	thread:set("id", started)
	started = started + 1
	table.insert(all, thread)
end

local pool = {}
function init(_args)
	local k = 0
	local n = tonumber(os.getenv("BENCH_THREADS") or "1")
	for line in io.lines(os.getenv("BENCH_TOKENS")) do
		if k % n == id then table.insert(pool, line) end
		k = k + 1
	end
end

function request()
	local token = table.remove(pool) or "rt_exhausted"
	local body = string.format('{"refresh_token":"%s"}', token)
	return wrk.format("POST", "/v1/client/token/refresh", headers, body)
end

failures = {}
function response(status, _headers, body)
	if status ~= 200 then
		failures[status] = (failures[status] or 0) + 1
		if status ~= 401 or not failures.body then failures.body = body end
	end
	if status == 200 then
		local token = string.match(body, '"refresh_token"%s*:%s*"([^"]+)"')
		if token then
			table.insert(pool, token)
		else
			failures.unparsed = body
		end
	end
end

-- Refusals by status, and one body, on stderr (a chain that fails is lost).
function done(summary, latency, requests)
	for _, thread in ipairs(all) do
		local f = thread:get("failures")
		for k, v in pairs(f or {}) do
			io.stderr:write(string.format("refresh: %s %s\n", tostring(k), tostring(v)))
		end
	end
	report.done(summary, latency, requests)
end

-- One fixed request: BENCH_METHOD (GET), BENCH_BODY (none) and
-- BENCH_HEADERS ("Name: value" lines). Used for session verification, the
-- banned address, /v1/client/me and the plain handler.
package.path = (os.getenv("BENCH_LUA_DIR") or ".") .. "/?.lua;" .. package.path
local report = require("report")

wrk.method = os.getenv("BENCH_METHOD") or "GET"
wrk.body = os.getenv("BENCH_BODY")
for line in string.gmatch(os.getenv("BENCH_HEADERS") or "", "[^\n]+") do
	local name, value = string.match(line, "^([^:]+):%s*(.*)$")
	if name then wrk.headers[name] = value end
end

done = report.done

-- Shared by the ops/bench wrk scripts: one machine-readable line at the end.
-- wrk's latency percentiles are in microseconds.
local M = {}

function M.done(summary, latency, _requests)
	local e = summary.errors
	io.write(string.format(
		'BENCH_JSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"non2xx":%d,"socket_errors":%d}\n',
		summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
		e.status, e.connect + e.read + e.write + e.timeout))
end

return M

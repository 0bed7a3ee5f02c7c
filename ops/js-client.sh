#!/usr/bin/env bash
# Builds and tests the browser client (clients/js): npm ci, npm run build
# (dist/idmesh.js, which the e2e suite's Node and Chromium tests load), npm
# test (type-check and vitest). Called by ops/test.sh before cargo test.
# Installs Debian's nodejs and npm when missing; the client needs Node.js 20
# or later (vitest 4), so an older Node is reported and the client's tests are
# skipped (the e2e tests then say SKIPPED too).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=ops/lib/deps.sh
source "$ROOT/ops/lib/deps.sh"
cd "$ROOT/clients/js"

_idm_need_cmds node:nodejs npm:npm || exit 1
major=$(node -p 'process.versions.node.split(".")[0]')
if ((major < 20)); then
	idm_warn "Node.js $(node --version) is older than 20: clients/js is not built or tested (install Node.js 20+)"
	exit 0
fi
log=${TMPDIR:-/tmp}/idmesh-npm.log
idm_say "clients/js: npm ci (log: $log)"
if ! npm ci --no-audit --no-fund --prefer-offline >"$log" 2>&1 </dev/null; then
	tail -n 20 "$log" >&2
	idm_err "npm ci failed in clients/js"
	exit 1
fi
idm_say "clients/js: npm run build, npm test"
npm run --silent build
npm test --silent

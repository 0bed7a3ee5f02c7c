#!/usr/bin/env bash
# ops/check-deps.sh: the dependency policy of docs/DEPENDENCIES.md, checked.
#
#   1. one version of each listed crypto crate in Cargo.lock, apart from the
#      exceptions documented in docs/DEPENDENCIES.md (ops/check_deps.py crypto)
#   2. every [workspace.dependencies] entry used by a member
#   3. no declared dependency left unused: `cargo machete`, installed with
#      `cargo install --locked` when missing. If it cannot be installed (no
#      registry, build failure) the check does not pass silently: it runs the
#      fallback scan in ops/check_deps.py, which applies the same rule, and
#      says so. IDM_NO_INSTALL=1 skips the install attempt (fallback directly).
#
# Exits non-zero on any finding. Run by .ci/run before clippy.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

MACHETE_VERSION=0.9.2
rc=0

echo "==> crypto crates: one version each"
python3 ops/check_deps.py crypto || rc=1

echo "==> workspace dependencies: each used by a member"
python3 ops/check_deps.py workspace || rc=1

echo "==> unused dependencies"
if ! command -v cargo-machete >/dev/null 2>&1 && [[ ${IDM_NO_INSTALL:-0} != 1 ]]; then
	log=${TMPDIR:-/tmp}/idmesh-cargo-machete-install.log
	echo "==> cargo install --locked cargo-machete@$MACHETE_VERSION (log: $log)"
	# Its own target directory, not the project's.
	if ! env -u CARGO_TARGET_DIR cargo install --locked --version "$MACHETE_VERSION" cargo-machete \
		>"$log" 2>&1 </dev/null; then
		tail -n 5 "$log" >&2 || true
		echo "warning: cargo-machete could not be installed" >&2
	fi
fi
if command -v cargo-machete >/dev/null 2>&1; then
	# --with-metadata: without it the e2e crate (tests/) is not fully scanned.
	cargo machete --with-metadata || rc=1
else
	echo "warning: no cargo-machete: using the fallback scan (ops/check_deps.py unused)" >&2
	python3 ops/check_deps.py unused || rc=1
fi

exit "$rc"

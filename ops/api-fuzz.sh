#!/usr/bin/env bash
# Fuzz the public API against its OpenAPI document (docs/OPENAPI.md).
#
#   ops/api-fuzz.sh                 (run by ops/test.sh on whole-suite runs)
#   ops/api-fuzz.sh --include-path-regex '^/v1/users'   extra schemathesis args
#
# Starts an isolated platform in-process (tests/examples/api_fuzz.rs, the
# same test kit the e2e suite uses: its own databases, Redis prefix and
# nats-server), then runs schemathesis against edge-guard's /openapi.json
# for a bounded number of examples per operation
# (IDM_FUZZ_MAX_EXAMPLES, default 25). Fails on any 5xx, a status the
# document does not list, or a body or content type that does not match it.
# schemathesis is installed from PyPI when missing (pinned below).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=ops/lib/deps.sh
source "$ROOT/ops/lib/deps.sh"

SCHEMATHESIS_PKG="schemathesis==4.32.5"
SCHEMATHESIS_VERSION=${SCHEMATHESIS_PKG#*==}

ensure_deps || exit 1
IDM_TEST_NATS_SERVER=${IDM_TEST_NATS_SERVER:-$(ensure_nats_server_binary)} || exit 1
export IDM_TEST_NATS_SERVER
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/idmesh/target}
export IDM_TEST_PG_URL=${IDM_TEST_PG_URL:-$IDM_PG_ADMIN_URL}
export IDM_TEST_REDIS_URL=${IDM_TEST_REDIS_URL:-$IDM_REDIS_URL}
export IDM_TEST_NATS_URL=${IDM_TEST_NATS_URL:-$IDM_NATS_URL}

# The scripts directory of the python3 on PATH (where pip puts executables).
scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
st=$scripts/schemathesis
if [[ ! -x $st ]] || [[ $("$st" --version 2>/dev/null) != *"$SCHEMATHESIS_VERSION"* ]]; then
	idm_say "pip install $SCHEMATHESIS_PKG"
	python3 -m pip install --quiet --disable-pip-version-check "$SCHEMATHESIS_PKG" >&2 ||
		{ idm_err "cannot install $SCHEMATHESIS_PKG"; exit 1; }
fi
[[ -x $st ]] || { idm_err "schemathesis not found after installing $SCHEMATHESIS_PKG"; exit 1; }
export IDM_SCHEMATHESIS=$st

# Built with the test profile's dependencies, so a test run has already
# compiled nearly all of it; only the example itself links here.
started=$SECONDS
rc=0
timeout "${IDM_FUZZ_TIMEOUT:-900}" \
	cargo run --quiet -p idm-e2e --example api_fuzz -- "$@" || rc=$?
idm_say "api fuzz: exit $rc after $((SECONDS - started)) s"
exit "$rc"

#!/usr/bin/env bash
# Run all tests (README command #2).
#
#   ops/test.sh                      cargo test --workspace
#   ops/test.sh -- --nocapture       extra arguments go to cargo test
#   ops/test.sh -p idm-auth          with -p/--package, only those packages
#
# A whole-suite run (no -p) then fuzzes the public API against its OpenAPI
# document (ops/api-fuzz.sh: schemathesis against an in-process platform;
# IDM_TEST_FUZZ=0 skips it), scores every kind of mail with SpamAssassin
# (ops/mail-spam-check.sh; IDM_TEST_MAIL_SPAM=0 skips it), checks the deployment files
# (ops/deploy-checks.sh: hadolint, compose config, Kubernetes overlays) and
# runs the compose stack for real (ops/compose-smoke.sh; needs root or a
# Docker engine). IDM_TEST_DEPLOY=0 skips both.
#
# Makes sure PostgreSQL, Redis and NATS answer (ops/lib/deps.sh), drops test
# databases left over by earlier runs (idmt_*), then runs cargo test with
# IDM_TEST_PG_URL, IDM_TEST_REDIS_URL and IDM_TEST_NATS_URL pointing at them.
# Test platforms start their own nats-server (IDM_TEST_NATS_SERVER); the
# machine's NATS serves the tests that need a bus but no platform.
# Exits non-zero if cargo or a deployment check failed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=ops/lib/deps.sh
source "$ROOT/ops/lib/deps.sh"

ensure_deps || exit 1

# tests/tests/e2e/edge.rs drives Debian's headless Chromium (the CORS browser
# test) and starts a private redis-server (the Redis outage test). Install
# them when missing; the browser test says SKIPPED if Chromium cannot be had.
_idm_need_cmds chromium:chromium || idm_warn "chromium is not installed; the browser test will be skipped"
_idm_need_cmds redis-server:redis-server || idm_warn "redis-server is not installed; the Redis outage test will fail"
# The fault-injection suite (tests/tests/faults.rs, about a minute) kills and
# restarts PostgreSQL servers of its own: it needs initdb and postgres
# (/usr/lib/postgresql/<v>/bin, Debian's postgresql package; as root they
# run as the postgres user). IDM_TEST_PG_BIN names another directory.
if [[ -z ${IDM_TEST_PG_BIN:-} ]] && ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null && ! command -v initdb >/dev/null 2>&1; then
	_idm_apt_install postgresql || idm_warn "initdb is not installed; the fault-injection suite will fail"
fi
# The mail tests (docs/MAIL.md) judge messages with parsers not written here:
# Python's email package (standard library), dkimpy (with pynacl for
# Ed25519) for DKIM signatures
# (services/auth/src/mail/tests.rs) and aiosmtpd as a real SMTP relay with
# STARTTLS and AUTH (tests/tests/e2e/mail.rs); under CI a missing one fails
# those tests, elsewhere they say SKIPPED.
_idm_need_pip() {
	local module=$1 package=$2
	python3 -c "import $module" >/dev/null 2>&1 && return 0
	idm_say "pip install $package"
	python3 -m pip install --quiet --disable-pip-version-check "$package" >&2 ||
		idm_warn "$package could not be installed; the mail tests that need it will fail under CI"
}
_idm_need_pip dkim dkimpy
_idm_need_pip nacl pynacl
_idm_need_pip aiosmtpd aiosmtpd
# Every test platform runs its own authenticated nats-server (libs/testkit),
# and the TLS tests make a throw-away CA with openssl.
IDM_TEST_NATS_SERVER=${IDM_TEST_NATS_SERVER:-$(ensure_nats_server_binary)} || exit 1
export IDM_TEST_NATS_SERVER
_idm_need_cmds openssl:openssl || exit 1

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/idmesh/target}
export IDM_TEST_PG_URL=${IDM_TEST_PG_URL:-$IDM_PG_ADMIN_URL}
export IDM_TEST_REDIS_URL=${IDM_TEST_REDIS_URL:-$IDM_REDIS_URL}
export IDM_TEST_NATS_URL=${IDM_TEST_NATS_URL:-$IDM_NATS_URL}

# Tests create databases named idmt_<random>_<suffix> and drop them when they
# finish; a killed run leaves them behind. Only databases older than ten
# minutes that nobody is connected to are dropped (no FORCE), so a test run
# going on beside this one on the same PostgreSQL keeps its databases. \gexec runs each DROP on its own (DROP
# DATABASE cannot run inside a transaction block).
drop_leftover_test_databases() {
	local n
	n=$(PGCONNECT_TIMEOUT=5 psql "$IDM_TEST_PG_URL" -XAtq -v ON_ERROR_STOP=1 \
		-c "select count(*) from pg_database d where left(d.datname, 5) = 'idmt_'
		    and not exists (select 1 from pg_stat_activity a where a.datname = d.datname)
		    and (pg_stat_file('base/' || d.oid || '/PG_VERSION')).modification < now() - interval '10 minutes'")
	if ((n > 0)); then
		idm_say "dropping $n leftover test database(s) idmt_*"
		PGCONNECT_TIMEOUT=5 psql "$IDM_TEST_PG_URL" -XAtq >/dev/null 2>&1 <<'SQL' || true
select format('drop database if exists %I', d.datname)
from pg_database d where left(d.datname, 5) = 'idmt_'
and not exists (select 1 from pg_stat_activity a where a.datname = d.datname)
and (pg_stat_file('base/' || d.oid || '/PG_VERSION')).modification < now() - interval '10 minutes'
\gexec
SQL
	fi
}
drop_leftover_test_databases

scope=(--workspace)
for arg in "$@"; do
	[[ $arg == -- ]] && break
	case $arg in -p | -p* | --package | --package=*) scope=() ;; esac
done

# The browser client is built before the suite: its e2e tests load
# clients/js/dist/idmesh.js (IDM_TEST_JS=0 skips this).
if [[ ${IDM_TEST_JS:-1} != 0 ]] && ! "$ROOT/ops/js-client.sh"; then
	idm_err "clients/js failed to build or its tests failed"
	js_failed=1
fi

# --no-fail-fast: one failing test binary must not hide the others' results.
idm_say "cargo test --no-fail-fast ${scope[*]}${*:+ $*} (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
rc=${js_failed:-0}
cargo test --no-fail-fast "${scope[@]}" "$@" || rc=$?
if ((rc)); then
	idm_err "tests failed (cargo exit code $rc)"
fi

# The API against its document: only on whole-suite runs.
if [[ ${scope[*]} == --workspace && ${IDM_TEST_FUZZ:-1} != 0 ]]; then
	idm_say "public API fuzzing: ops/api-fuzz.sh"
	if ! "$ROOT/ops/api-fuzz.sh"; then
		idm_err "API fuzzing failed"
		rc=1
	fi
fi

# Spam scores of every kind of message (SpamAssassin, local tests only):
# only on whole-suite runs; IDM_TEST_MAIL_SPAM=0 skips it.
if [[ ${scope[*]} == --workspace && ${IDM_TEST_MAIL_SPAM:-1} != 0 ]]; then
	idm_say "mail spam scores: ops/mail-spam-check.sh"
	if ! "$ROOT/ops/mail-spam-check.sh"; then
		idm_err "a kind of mail scores too high with SpamAssassin"
		rc=1
	fi
fi

# The deployment: only on whole-suite runs.
if [[ ${scope[*]} == --workspace && ${IDM_TEST_DEPLOY:-1} != 0 ]]; then
	idm_say "deployment files: ops/deploy-checks.sh"
	if ! "$ROOT/ops/deploy-checks.sh"; then
		idm_err "deployment checks failed"
		rc=1
	fi
	if [[ $(id -u) -ne 0 ]] && ! timeout 10 docker version >/dev/null 2>&1 && [[ ${CI:-} != true ]]; then
		idm_warn "no Docker engine and not root: the compose smoke test is skipped (CI runs it)"
	else
		idm_say "compose stack: ops/compose-smoke.sh"
		if ! "$ROOT/ops/compose-smoke.sh"; then
			idm_err "compose smoke test failed"
			rc=1
		fi
	fi
fi
exit "$rc"

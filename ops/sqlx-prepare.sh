#!/usr/bin/env bash
# Regenerates the offline data of sqlx's compile-time checked queries
# (`.sqlx/` at the workspace root), so builds need no database
# (`SQLX_OFFLINE=true` in .cargo/config.toml).
#
#   ops/sqlx-prepare.sh           rewrite .sqlx/ from the current queries
#   ops/sqlx-prepare.sh --check   regenerate into a temporary directory and
#                                 fail on any difference with .sqlx/ (CI)
#
# Needs the local PostgreSQL (IDM_PG_ADMIN_URL, as ops/lib/deps.sh sets it;
# IDM_TEST_PG_URL wins when set). It creates a scratch database, applies every
# service's migrations (the global schemas, and the per-issuer store schema
# once as `store`, which is put on the URL's search_path so the store's
# unqualified statements resolve), then recompiles the crates holding query
# macros with DATABASE_URL pointing there and SQLX_OFFLINE_DIR naming the
# output directory: sqlx-macros writes one query-<hash>.json per statement.
# No sqlx-cli is needed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

check=false
case "${1:-}" in
--check) check=true ;;
"") ;;
*)
	echo "usage: $0 [--check]" >&2
	exit 2
	;;
esac

admin=${IDM_TEST_PG_URL:-${IDM_PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/postgres}}
base=${admin%/*}
db="idm_sqlx_prepare_$$"
# Crates whose sources hold query macros, and where their migrations go.
crates=(idm-account idm-auth idm-session idm-user idm-user-store idm-deletion-worker idm-webhook)
schemas=(
	"services/account/migrations:account"
	"services/auth/migrations:auth"
	"services/user/migrations:directory"
	"services/session/migrations:session_keys"
	"services/webhook/migrations:webhook"
	"services/user-store/migrations:store"
	"services/deletion-worker/migrations:deletion"
)

psql_admin() { PGCONNECT_TIMEOUT=5 psql "$admin" -XAtq -v ON_ERROR_STOP=1 "$@"; }
out=""
cleanup() {
	psql_admin -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
	if [[ -n $out && $check == true ]]; then rm -rf "$out"; fi
}
trap cleanup EXIT

psql_admin -c "CREATE DATABASE $db" >/dev/null
for entry in "${schemas[@]}"; do
	dir=${entry%%:*}
	schema=${entry##*:}
	PGCONNECT_TIMEOUT=5 psql "$base/$db" -XAtq -v ON_ERROR_STOP=1 -c "CREATE SCHEMA $schema" >/dev/null
	for file in "$dir"/*.sql; do
		# Unqualified names land in the schema, as under idm_db::migrate.
		PGOPTIONS="-c search_path=$schema" PGCONNECT_TIMEOUT=5 \
			psql "$base/$db" -XAtq -v ON_ERROR_STOP=1 -f "$file" >/dev/null
	done
done

if [[ $check == true ]]; then
	out=$(mktemp -d)
else
	out="$ROOT/.sqlx"
	rm -rf "$out"
	mkdir -p "$out"
fi

# Force the macros to run again: cargo would otherwise reuse the crates
# compiled offline (the environment below is not part of its fingerprint).
for crate in "${crates[@]}"; do
	dir=services/${crate#idm-}
	find "$dir/src" -name '*.rs' -exec touch {} +
done
args=()
for crate in "${crates[@]}"; do args+=(-p "$crate"); done
SQLX_OFFLINE=false SQLX_OFFLINE_DIR="$out" \
	DATABASE_URL="$base/$db?options=-csearch_path%3Dstore" \
	cargo check --quiet --all-targets "${args[@]}"

if [[ $check == true ]]; then
	if ! diff -r "$ROOT/.sqlx" "$out"; then
		echo "error: .sqlx/ is out of date: run ops/sqlx-prepare.sh and commit .sqlx/" >&2
		exit 1
	fi
	echo "ok: .sqlx/ matches the queries ($(find "$out" -name 'query-*.json' | wc -l) statements)"
else
	echo "wrote $(find "$out" -name 'query-*.json' | wc -l) statements to .sqlx/"
fi

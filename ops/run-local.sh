#!/usr/bin/env bash
# Run the whole idmesh platform locally (README command #1).
#
#   ops/run-local.sh              build, start everything, stay in the foreground;
#                                 Ctrl-C (or SIGTERM) stops all services
#   ops/run-local.sh --detach     build, start, print, exit; services keep running
#   ops/run-local.sh stop         stop the services of a previous run
#   --no-build                    (with either start form) skip `cargo build`
#
# State lives in .idmesh/ (gitignored): secrets.env, demo.json, nats/ (the
# NATS server config and one nkey seed per service), logs/, pids/.
# The platform gets its own authenticated nats-server on 127.0.0.1:4223
# (IDM_LOCAL_NATS_PORT); the machine's NATS on 4222 is not used.
# IDM_NATS_CLUSTER=3 starts a three-node NATS cluster instead (clients on
# 4223-4225, routes on 6223-6225: IDM_LOCAL_NATS_ROUTE_PORT), with streams
# kept on every node (IDM_NATS_STREAM_REPLICAS=3). See docs/MESSAGING.md.
# The two EU regions' databases live on a PostgreSQL cluster of their own
# (initdb into .idmesh/pg-eu, or /var/tmp/idmesh-pg-eu-* as root; 127.0.0.1:5433, IDM_LOCAL_EU_PG_PORT; 0 keeps
# them on the main server), so regions on separate servers are exercised
# (docs/REGIONS.md). It keeps running after the services stop, like the
# main PostgreSQL; `ops/run-local.sh stop` stops it too.
# See docs/OPERATIONS.md.
#
# ops/bench sources this file for its functions (main runs only when the
# file is executed) and points it elsewhere with IDM_LOCAL_STATE (state
# directory), IDM_LOCAL_DB (database name; stores get <name>_store_<region>),
# IDM_LOCAL_PORT_BASE (edge port; the others follow it), IDM_LOCAL_PROFILE
# (debug or release) and IDM_SUBJECT_PREFIX / IDM_REDIS_PREFIX.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=ops/lib/deps.sh
source "$ROOT/ops/lib/deps.sh"

STATE=${IDM_LOCAL_STATE:-$ROOT/.idmesh}
PID_DIR=$STATE/pids
LOG_DIR=$STATE/logs
SECRETS=$STATE/secrets.env
DEMO=$STATE/demo.json
NATS_DIR=$STATE/nats
NATS_CONF=$NATS_DIR/nats-server.conf
LOCAL_NATS_PORT=${IDM_LOCAL_NATS_PORT:-4223}
LOCAL_NATS_URL=nats://127.0.0.1:$LOCAL_NATS_PORT
NATS_CLUSTER=${IDM_NATS_CLUSTER:-1}
LOCAL_NATS_ROUTE_PORT=${IDM_LOCAL_NATS_ROUTE_PORT:-6223}
NATS_NODES=(nats-server) # pid names of this run's nats-servers (start_nats)

REGIONS=(wnam enam sam weur eeur apac oc afr)
DB=${IDM_LOCAL_DB:-idmesh}
PORT_BASE=${IDM_LOCAL_PORT_BASE:-8080}
PROFILE=${IDM_LOCAL_PROFILE:-debug}
EDGE=http://127.0.0.1:$PORT_BASE
ACCOUNT=http://127.0.0.1:$((PORT_BASE + 1))
READY_TIMEOUT=${IDM_READY_TIMEOUT:-60}
EU_PG_PORT=${IDM_LOCAL_EU_PG_PORT:-5433}
# As root the cluster runs as the postgres user, which cannot reach into
# .idmesh (private to root): its directory is then under /var/tmp, one per
# checkout. IDM_LOCAL_EU_PG_DIR chooses another.
if ((EUID == 0)); then
	EU_PG_DIR=${IDM_LOCAL_EU_PG_DIR:-/var/tmp/idmesh-pg-eu-$(printf '%s' "$ROOT" | sha256sum | cut -c1-12)}
else
	EU_PG_DIR=${IDM_LOCAL_EU_PG_DIR:-$STATE/pg-eu}
fi
STOP_TIMEOUT=10

usage() {
	sed -n '2,15s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

# --- process helpers -----------------------------------------------------------

# Alive and not a zombie (services are our children in foreground mode).
is_alive() {
	local stat
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[[ ${stat:0:1} != Z ]]
}

# Is pid one of our service binaries, or the nats-server running our config
# (guards against recycled pids)?
is_ours() {
	local argv0 args
	[[ $1 =~ ^[0-9]+$ ]] || return 1
	args=$(tr '\0' '\n' <"/proc/$1/cmdline" 2>/dev/null) || return 1
	argv0=$(head -n 1 <<<"$args")
	[[ ${argv0##*/} == idm-* ]] && return 0
	[[ ${argv0##*/} == nats-server ]] && grep -qxE "$NATS_DIR/nats-server(-n[0-9]+)?\.conf" <<<"$args"
}

# SIGTERM the given pids, wait up to STOP_TIMEOUT s, then SIGKILL the rest.
stop_pids() {
	local pid live=() deadline
	for pid in "$@"; do
		if is_alive "$pid" && is_ours "$pid" && kill -TERM "$pid" 2>/dev/null; then
			live+=("$pid")
		fi
	done
	((${#live[@]})) || return 0
	deadline=$((SECONDS + STOP_TIMEOUT))
	while ((SECONDS < deadline)); do
		local still=()
		for pid in "${live[@]}"; do is_alive "$pid" && still+=("$pid"); done
		live=("${still[@]}")
		((${#live[@]})) || return 0
		sleep 0.2
	done
	for pid in "${live[@]}"; do
		if is_alive "$pid" && is_ours "$pid"; then
			idm_warn "pid $pid did not stop within ${STOP_TIMEOUT}s; sending SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
		fi
	done
}

# Stop whatever the pid files name (a previous run, or `stop`).
stop_from_pidfiles() {
	local f pids=() n=0
	shopt -s nullglob
	for f in "$PID_DIR"/*.pid; do
		pids+=("$(cat "$f" 2>/dev/null || true)")
	done
	shopt -u nullglob
	# Remove the files first: a foreground run watching them then knows it
	# has been taken over instead of reporting crashes.
	rm -f "$PID_DIR"/*.pid
	for f in "${pids[@]}"; do
		if is_alive "$f" && is_ours "$f"; then n=$((n + 1)); fi
	done
	if ((n)); then
		idm_say "stopping $n running process(es) of a previous run"
		stop_services_then_nats "${pids[@]}"
	fi
}

# The services drain in-flight work over NATS, so NATS stops last.
stop_services_then_nats() {
	local pid services=() nats=()
	for pid in "$@"; do
		if [[ $(head -c 4096 "/proc/$pid/cmdline" 2>/dev/null | tr '\0' '\n' | head -n 1) == */nats-server ]]; then
			nats+=("$pid")
		else
			services+=("$pid")
		fi
	done
	((${#services[@]} == 0)) || stop_pids "${services[@]}"
	((${#nats[@]} == 0)) || stop_pids "${nats[@]}"
}

# --- this run's services ---------------------------------------------------------

NAMES=()              # in start order
declare -A ADDR=()    # name -> host:port
declare -A BIN=()     # name -> binary
declare -A PID=()     # name -> pid (this run only)
declare -A REPORTED=() # name -> 1 once a crash was reported
KEEP_RUNNING=0

add_service() { # name binary addr
	NAMES+=("$1")
	BIN[$1]=$2
	ADDR[$1]=$3
}

# Stop only what this run started, and remove only pid files still naming it.
stop_own() {
	local name f
	((${#PID[@]})) || return 0
	stop_services_then_nats "${PID[@]}"
	for name in "${!PID[@]}"; do
		f=$PID_DIR/$name.pid
		if [[ -f $f && $(cat "$f" 2>/dev/null) == "${PID[$name]}" ]]; then rm -f "$f"; fi
	done
	PID=()
}

on_exit() {
	local rc=$?
	if ((!KEEP_RUNNING && ${#PID[@]})); then
		idm_say "stopping services"
		stop_own
	fi
	exit "$rc"
}

on_signal() {
	trap '' INT TERM
	printf '\n' >&2
	idm_say "stopping services"
	stop_own
	idm_say "stopped"
	exit 0
}

log_tail() { # name [lines]
	local log=$LOG_DIR/$1.log
	printf -- '--- last lines of %s ---\n' "${log#"$ROOT"/}" >&2
	tail -n "${2:-30}" "$log" >&2 2>/dev/null || true
	printf -- '---\n' >&2
}

# start_service name VAR=value...: start in its own session (so the terminal's
# Ctrl-C and hang-up reach only this script), logs and pid under .idmesh/.
start_service() {
	local name=$1 bin
	shift
	bin=$CARGO_TARGET_DIR/$PROFILE/${BIN[$name]}
	(
		for kv in "$@"; do export "${kv?}"; done
		exec setsid "$bin" </dev/null >"$LOG_DIR/$name.log" 2>&1
	) &
	PID[$name]=$!
	printf '%s\n' "$!" >"$PID_DIR/$name.pid"
}

port_in_use() { # host:port
	(exec 3<>"/dev/tcp/${1%:*}/${1##*:}") 2>/dev/null
}

# --- steps -------------------------------------------------------------------

define_services() {
	local i
	for i in "${!REGIONS[@]}"; do
		add_service "user-store-${REGIONS[$i]}" idm-user-store "127.0.0.1:$((PORT_BASE + 10 + i))"
	done
	add_service account idm-account "127.0.0.1:$((PORT_BASE + 1))"
	add_service auth idm-auth "127.0.0.1:$((PORT_BASE + 2))"
	add_service session idm-session "127.0.0.1:$((PORT_BASE + 3))"
	add_service user idm-user "127.0.0.1:$((PORT_BASE + 4))"
	add_service deletion-worker idm-deletion-worker "127.0.0.1:$((PORT_BASE + 6))"
	add_service webhook idm-webhook "127.0.0.1:$((PORT_BASE + 7))"
	add_service edge-guard idm-edge-guard "127.0.0.1:$PORT_BASE"
}

# The nkey seed file of a service (see `idmctl nats-config`).
seed_file() { # identity
	printf '%s/nkeys/%s.nk\n' "$NATS_DIR" "$1"
}

build() {
	local flags=()
	[[ $PROFILE == release ]] && flags=(--release)
	idm_say "cargo build --bins ${flags[*]} (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
	cargo build --bins "${flags[@]}"
	local name missing=0
	for name in "${NAMES[@]}" idmctl; do
		if [[ ! -x $CARGO_TARGET_DIR/$PROFILE/${BIN[$name]:-$name} ]]; then
			idm_err "missing binary $CARGO_TARGET_DIR/$PROFILE/${BIN[$name]:-$name}"
			missing=1
		fi
	done
	((!missing))
}

psql_admin() {
	PGCONNECT_TIMEOUT=5 psql "$IDM_PG_ADMIN_URL" -XAtq -v ON_ERROR_STOP=1 "$@"
}

# --- the EU regions' own PostgreSQL cluster ---------------------------------------

is_eu() { [[ $1 == weur || $1 == eeur ]]; }

# The PostgreSQL binary `name`: the newest /usr/lib/postgresql/<v>/bin, else PATH.
pg_bin() {
	local found
	found=$(compgen -G "/usr/lib/postgresql/*/bin/$1" | sort -V | tail -n 1 || true)
	printf '%s
' "${found:-$1}"
}

# Runs a PostgreSQL tool as the postgres user when we are root (it refuses root).
as_pg_user() {
	if ((EUID == 0)); then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

eu_pg_base() {
	if [[ $EU_PG_PORT == 0 ]]; then
		printf '%s
' "${IDM_PG_URL_BASE:-postgres://postgres@127.0.0.1:5432}"
	else
		printf 'postgres://postgres@127.0.0.1:%s
' "$EU_PG_PORT"
	fi
}

# initdb once into $EU_PG_DIR, then start it unless it already runs.
ensure_eu_postgres() {
	[[ $EU_PG_PORT != 0 ]] || return 0
	local data=$EU_PG_DIR/data
	if [[ ! -f $data/PG_VERSION ]]; then
		[[ -x $(command -v "$(pg_bin initdb)") ]] || _idm_apt_install postgresql || {
			idm_err "initdb is needed for the EU regions' PostgreSQL (or set IDM_LOCAL_EU_PG_PORT=0)"
			return 1
		}
		mkdir -p "$EU_PG_DIR"
		if ((EUID == 0)); then chown postgres: "$EU_PG_DIR"; fi
		idm_say "EU PostgreSQL: initdb into ${EU_PG_DIR#"$ROOT"/}"
		as_pg_user "$(pg_bin initdb)" -D "$data" -U postgres --auth=trust -E UTF8 >/dev/null
	fi
	if as_pg_user "$(pg_bin pg_ctl)" -D "$data" status >/dev/null 2>&1; then
		return 0
	fi
	idm_say "EU PostgreSQL: starting on 127.0.0.1:$EU_PG_PORT"
	as_pg_user "$(pg_bin pg_ctl)" -D "$data" -l "$EU_PG_DIR/postgres.log" -w -t 30 \
		-o "-p $EU_PG_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=''" start >/dev/null
}

stop_eu_postgres() {
	local data=$EU_PG_DIR/data
	[[ -f $data/PG_VERSION ]] || return 0
	if as_pg_user "$(pg_bin pg_ctl)" -D "$data" status >/dev/null 2>&1; then
		as_pg_user "$(pg_bin pg_ctl)" -D "$data" -m fast -w stop >/dev/null && idm_say "EU PostgreSQL stopped"
	fi
}

create_databases() {
	local db r url created=()
	for db in "$DB" "${REGIONS[@]/#/${DB}_store_}"; do
		url=$IDM_PG_ADMIN_URL
		r=${db#"${DB}"_store_}
		if [[ $db != "$DB" ]] && is_eu "$r"; then url=$(eu_pg_base)/postgres; fi
		if [[ -z $(PGCONNECT_TIMEOUT=5 psql "$url" -XAtq -c "select 1 from pg_database where datname = '$db'") ]]; then
			PGCONNECT_TIMEOUT=5 psql "$url" -XAtq -v ON_ERROR_STOP=1 -c "create database \"$db\"" >/dev/null
			created+=("$db")
		fi
	done
	if ((${#created[@]})); then
		idm_say "databases: created ${created[*]}"
	else
		idm_say "databases: $DB and 8 regional stores exist"
	fi
}

# .idmesh/secrets.env: generated once, then reused (the master keys encrypt
# data at rest; changing them would orphan it).
load_secrets() {
	local line k v added=()
	IDM_OPERATOR_TOKEN='' IDM_SESSION_MASTER_KEY='' IDM_USER_MASTER_KEY='' IDM_AUTH_MASTER_KEY='' IDM_WEBHOOK_MASTER_KEY='' IDM_KEY_TRANSPORT_KEY='' IDM_EDGE_HASH_KEY=''
	# Only during a master-key rotation (docs/OPERATIONS.md): the old keys.
	IDM_SESSION_MASTER_KEY_PREVIOUS='' IDM_USER_MASTER_KEY_PREVIOUS='' IDM_AUTH_MASTER_KEY_PREVIOUS='' IDM_WEBHOOK_MASTER_KEY_PREVIOUS=''
	(umask 077 && touch "$SECRETS")
	chmod 600 "$SECRETS"
	while IFS= read -r line || [[ -n $line ]]; do
		k=${line%%=*}
		v=${line#*=}
		case $k in
		IDM_OPERATOR_TOKEN | IDM_SESSION_MASTER_KEY | IDM_USER_MASTER_KEY | IDM_AUTH_MASTER_KEY | IDM_WEBHOOK_MASTER_KEY | IDM_KEY_TRANSPORT_KEY | IDM_EDGE_HASH_KEY) printf -v "$k" '%s' "$v" ;;
		IDM_SESSION_MASTER_KEY_PREVIOUS | IDM_USER_MASTER_KEY_PREVIOUS | IDM_AUTH_MASTER_KEY_PREVIOUS | IDM_WEBHOOK_MASTER_KEY_PREVIOUS) printf -v "$k" '%s' "$v" ;;
		esac
	done <"$SECRETS"
	if [[ -z $IDM_OPERATOR_TOKEN ]]; then
		IDM_OPERATOR_TOKEN=$(od -An -vtx1 -N32 /dev/urandom | tr -d ' \n')
		printf 'IDM_OPERATOR_TOKEN=%s\n' "$IDM_OPERATOR_TOKEN" >>"$SECRETS"
		added+=(IDM_OPERATOR_TOKEN)
	fi
	for k in IDM_SESSION_MASTER_KEY IDM_USER_MASTER_KEY IDM_AUTH_MASTER_KEY IDM_WEBHOOK_MASTER_KEY IDM_KEY_TRANSPORT_KEY IDM_EDGE_HASH_KEY; do
		if [[ -z ${!k} ]]; then
			v=$(head -c32 /dev/urandom | base64 -w0)
			printf -v "$k" '%s' "$v"
			printf '%s=%s\n' "$k" "$v" >>"$SECRETS"
			added+=("$k")
		fi
	done
	if ((${#added[@]})); then
		idm_say "secrets: generated ${added[*]} in ${STATE#"$ROOT"/}/secrets.env"
	else
		idm_say "secrets: reusing ${STATE#"$ROOT"/}/secrets.env"
	fi
}

# .idmesh/nats/: the server config (public keys and the permissions of
# libs/bus/src/acl.rs) and one seed per service, regenerated from the table
# at each start (seeds are kept), then this run's own nats-server.
start_nats() {
	local deadline line i port node urls=() args=()
	export IDM_SUBJECT_PREFIX=${IDM_SUBJECT_PREFIX:-idm}
	if ! [[ $NATS_CLUSTER =~ ^[1-5]$ ]]; then
		idm_err "IDM_NATS_CLUSTER=$NATS_CLUSTER: the number of NATS nodes, 1 to 5 (3 for a cluster)"
		exit 1
	fi
	if ((NATS_CLUSTER > 1)); then
		NATS_NODES=()
		for ((i = 1; i <= NATS_CLUSTER; i++)); do
			NATS_NODES+=("nats-n$i")
			args+=(--cluster-node "n$i=127.0.0.1:$((LOCAL_NATS_PORT + i - 1)):$((LOCAL_NATS_ROUTE_PORT + i - 1))")
			urls+=("nats://127.0.0.1:$((LOCAL_NATS_PORT + i - 1))")
			port_in_use "127.0.0.1:$((LOCAL_NATS_ROUTE_PORT + i - 1))" && {
				idm_err "127.0.0.1:$((LOCAL_NATS_ROUTE_PORT + i - 1)) (NATS route port; IDM_LOCAL_NATS_ROUTE_PORT) is already in use"
				exit 1
			}
		done
		LOCAL_NATS_URL=$(IFS=,; printf '%s' "${urls[*]}")
		# Streams keep a copy on every node (at most three are useful).
		export IDM_NATS_STREAM_REPLICAS=${IDM_NATS_STREAM_REPLICAS:-$((NATS_CLUSTER < 3 ? NATS_CLUSTER : 3))}
	fi
	for ((i = 0; i < NATS_CLUSTER; i++)); do
		port=$((LOCAL_NATS_PORT + i))
		if port_in_use "127.0.0.1:$port"; then
			idm_err "127.0.0.1:$port (for the platform's NATS; IDM_LOCAL_NATS_PORT) is already in use:"
			ss -ltnp "( sport = :$port )" >&2 2>/dev/null || true
			exit 1
		fi
	done
	"$CARGO_TARGET_DIR/$PROFILE/idmctl" nats-config --out "$NATS_DIR" --prefix "$IDM_SUBJECT_PREFIX" \
		--listen "127.0.0.1:$LOCAL_NATS_PORT" "${args[@]}" >"$LOG_DIR/idmctl.log"
	idm_say "nats: credentials in ${STATE#"$ROOT"/}/nats/ (one nkey seed per service); starting ${#NATS_NODES[@]} nats-server(s) on $LOCAL_NATS_URL"
	for i in "${!NATS_NODES[@]}"; do
		node=${NATS_NODES[$i]}
		if ((NATS_CLUSTER > 1)); then line=$NATS_DIR/nats-server-n$((i + 1)).conf; else line=$NATS_CONF; fi
		(exec setsid "$NATS_BIN" -c "$line" </dev/null >"$LOG_DIR/$node.log" 2>&1) &
		PID[$node]=$!
		printf '%s\n' "$!" >"$PID_DIR/$node.pid"
	done
	deadline=$((SECONDS + 15))
	for i in "${!NATS_NODES[@]}"; do
		node=${NATS_NODES[$i]}
		port=$((LOCAL_NATS_PORT + i))
		until line=$(timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && IFS= read -r -t 1 l <&3 && printf "%s" "$l"' _ "$port" 2>/dev/null) && [[ $line == INFO* ]]; do
			if ! is_alive "${PID[$node]}" || ((SECONDS >= deadline)); then
				idm_err "$node did not start"
				log_tail "$node"
				exit 1
			fi
			sleep 0.2
		done
	done
}

# start_store region [VAR=value...]: that region's store (extra variables
# override its settings; ops/bench-scale restarts stores this way).
start_store() {
	local r=$1 pg=${IDM_PG_URL_BASE:-postgres://postgres@127.0.0.1:5432}
	shift
	pg=${pg%/}
	if is_eu "$r"; then pg=$(eu_pg_base); fi
	start_service "user-store-$r" STORE_REGION="$r" STORE_HTTP_ADDR="${ADDR[user-store-$r]}" \
		STORE_DATABASE_URL="$pg/${DB}_store_$r" STORE_NATS_NKEY_SEED_FILE="$(seed_file "user-store-$r")" "$@"
}

start_all() {
	local pg=${IDM_PG_URL_BASE:-postgres://postgres@127.0.0.1:5432}
	pg=${pg%/}
	local name r
	export IDM_NATS_URL=$LOCAL_NATS_URL
	export IDM_SUBJECT_PREFIX=${IDM_SUBJECT_PREFIX:-idm}
	export RUST_LOG=${RUST_LOG:-info}

	for name in "${NAMES[@]}"; do
		if port_in_use "${ADDR[$name]}"; then
			idm_err "${ADDR[$name]} (for $name) is already in use:"
			ss -ltnp "( sport = :${ADDR[$name]##*:} )" >&2 2>/dev/null || true
			exit 1
		fi
	done

	idm_say "starting ${#NAMES[@]} services (logs in ${STATE#"$ROOT"/}/logs/)"
	for r in "${REGIONS[@]}"; do start_store "$r"; done
	start_service account ACCOUNT_HTTP_ADDR="${ADDR[account]}" ACCOUNT_DATABASE_URL="$pg/$DB" \
		ACCOUNT_OPERATOR_TOKEN="$IDM_OPERATOR_TOKEN" ACCOUNT_NATS_NKEY_SEED_FILE="$(seed_file account)"
	start_service auth AUTH_HTTP_ADDR="${ADDR[auth]}" AUTH_REDIS_URL="$IDM_REDIS_URL" \
		AUTH_DATABASE_URL="$pg/$DB" AUTH_MASTER_KEY="$IDM_AUTH_MASTER_KEY" \
		AUTH_MASTER_KEY_PREVIOUS="$IDM_AUTH_MASTER_KEY_PREVIOUS" AUTH_MAIL_DIR="$STATE/mail" \
		AUTH_NATS_NKEY_SEED_FILE="$(seed_file auth)"
	start_service session SESSION_HTTP_ADDR="${ADDR[session]}" SESSION_DATABASE_URL="$pg/$DB" \
		SESSION_MASTER_KEY="$IDM_SESSION_MASTER_KEY" SESSION_MASTER_KEY_PREVIOUS="$IDM_SESSION_MASTER_KEY_PREVIOUS" \
		SESSION_NATS_NKEY_SEED_FILE="$(seed_file session)" SESSION_KEY_TRANSPORT_KEY="$IDM_KEY_TRANSPORT_KEY"
	start_service user USER_HTTP_ADDR="${ADDR[user]}" USER_DATABASE_URL="$pg/$DB" \
		USER_MASTER_KEY="$IDM_USER_MASTER_KEY" USER_MASTER_KEY_PREVIOUS="$IDM_USER_MASTER_KEY_PREVIOUS" USER_DEFAULT_REGION=weur USER_NATS_NKEY_SEED_FILE="$(seed_file user)"
	start_service deletion-worker DELETION_HTTP_ADDR="${ADDR[deletion-worker]}" DELETION_DATABASE_URL="$pg/$DB" \
		DELETION_NATS_NKEY_SEED_FILE="$(seed_file deletion-worker)"
	# Receivers on this machine are reachable for local development only
	# (WEBHOOK_ALLOW_HTTP, loopback allowlisted; never in production).
	start_service webhook WEBHOOK_HTTP_ADDR="${ADDR[webhook]}" WEBHOOK_DATABASE_URL="$pg/$DB" \
		WEBHOOK_MASTER_KEY="$IDM_WEBHOOK_MASTER_KEY" WEBHOOK_MASTER_KEY_PREVIOUS="$IDM_WEBHOOK_MASTER_KEY_PREVIOUS" \
		WEBHOOK_ALLOW_HTTP=true WEBHOOK_ALLOWED_NETWORKS=127.0.0.0/8,::1/128 \
		WEBHOOK_NATS_NKEY_SEED_FILE="$(seed_file webhook)"
	# No proxy is trusted unless you name one: with a reverse proxy in front,
	# run with EDGE_TRUSTED_PROXIES=<its address> (docs/OPERATIONS.md).
	start_service edge-guard EDGE_HTTP_ADDR="${ADDR[edge-guard]}" \
		EDGE_REDIS_URL="$IDM_REDIS_URL" EDGE_TRUSTED_PROXIES="${EDGE_TRUSTED_PROXIES:-}" EDGE_COUNTRY_HEADER=cf-ipcountry \
		EDGE_OPERATOR_TOKEN="$IDM_OPERATOR_TOKEN" EDGE_NATS_NKEY_SEED_FILE="$(seed_file edge-guard)" \
		EDGE_KEY_TRANSPORT_KEY="$IDM_KEY_TRANSPORT_KEY" EDGE_HASH_KEY="$IDM_EDGE_HASH_KEY" \
		EDGE_JURISDICTION=eu # every region's store runs on this host (the /me memory may hold EU users)
}

http_code() { # url [curl args...]
	local url=$1
	shift
	curl -s -o /dev/null -w '%{http_code}' --max-time 3 "$@" "$url" 2>/dev/null || true
}

wait_ready() {
	local deadline=$((SECONDS + READY_TIMEOUT)) name pending=("${NAMES[@]}") next code
	declare -A last=()
	while :; do
		next=()
		for name in "${pending[@]}"; do
			if ! is_alive "${PID[$name]}"; then
				idm_err "$name exited during start-up"
				log_tail "$name"
				exit 1
			fi
			code=$(http_code "http://${ADDR[$name]}/readyz")
			last[$name]=$code
			[[ $code == 200 ]] || next+=("$name")
		done
		pending=("${next[@]}")
		((${#pending[@]})) || break
		if ((SECONDS >= deadline)); then
			for name in "${pending[@]}"; do
				idm_err "$name not ready after ${READY_TIMEOUT}s (GET http://${ADDR[$name]}/readyz -> ${last[$name]})"
				log_tail "$name"
			done
			exit 1
		fi
		sleep 0.5
	done
	idm_say "all ${#NAMES[@]} services ready"
}

# curl with the bearer token fed through stdin, so it never shows up in `ps`.
curl_auth() { # token curl-args...
	local token=$1
	shift
	printf 'header = "Authorization: Bearer %s"\n' "$token" | curl -K - "$@"
}

# Prints "account_id issuer_id secret_key restricted_key" from a demo.json.
demo_fields() {
	python3 -c 'import json,sys
d = json.load(open(sys.argv[1]))
print(d["account"]["id"], d["issuer"]["id"], d["secret_key"], d["restricted_key"])' "$1" 2>/dev/null
}

DEMO_ACCOUNT='' DEMO_ISSUER='' SK='' RK=''

ensure_demo() {
	local fields code tmp
	if [[ -f $DEMO ]] && fields=$(demo_fields "$DEMO"); then
		read -r DEMO_ACCOUNT DEMO_ISSUER SK RK <<<"$fields"
		code=$(curl_auth "$SK" -s -o /dev/null -w '%{http_code}' --max-time 10 "$EDGE/v1/issuer" || true)
		if [[ $code == 200 ]]; then
			idm_say "demo account: reusing .idmesh/demo.json"
		else
			idm_say "demo account in .idmesh/demo.json no longer works (GET /v1/issuer -> $code); creating a new one"
			SK=''
		fi
	fi
	if [[ -z $SK ]]; then
		tmp=$(umask 077 && mktemp "$STATE/demo.json.XXXXXX")
		code=$(curl_auth "$IDM_OPERATOR_TOKEN" -s -o "$tmp" -w '%{http_code}' --max-time 30 -X POST \
			-H 'content-type: application/json' -d '{"name":"demo"}' "$ACCOUNT/admin/v1/accounts" || true)
		if [[ $code != 200 && $code != 201 ]] || ! fields=$(demo_fields "$tmp"); then
			idm_warn "could not create the demo account: POST $ACCOUNT/admin/v1/accounts -> $code"
			head -c 2000 "$tmp" >&2 2>/dev/null || true
			printf '\n' >&2
			rm -f "$tmp"
			SK=''
			return 0
		fi
		chmod 600 "$tmp"
		mv -f "$tmp" "$DEMO"
		read -r DEMO_ACCOUNT DEMO_ISSUER SK RK <<<"$fields"
		idm_say "demo account: created $DEMO_ACCOUNT (saved to .idmesh/demo.json)"
	fi
	local body
	body=$(mktemp)
	code=$(curl_auth "$SK" -s -o "$body" -w '%{http_code}' --max-time 10 -X PATCH \
		-H 'content-type: application/json' -d '{"allowed_origins":["localhost"]}' "$EDGE/v1/issuer" || true)
	if [[ $code == 2?? ]]; then
		idm_say "demo issuer: allowed origins set to [localhost]"
	else
		idm_warn "PATCH /v1/issuer {\"allowed_origins\":[\"localhost\"]} -> $code: $(head -c 500 "$body")"
	fi
	rm -f "$body"
}

print_summary() {
	local name
	printf '\nidmesh is running.\n\n'
	printf '  %-24s %s\n' "edge-guard (public API)" "$EDGE"
	printf '  %-24s %s\n' "account (admin API)" "$ACCOUNT"
	for name in auth session user deletion-worker webhook "${REGIONS[@]/#/user-store-}"; do
		printf '  %-24s http://%s\n' "$name" "${ADDR[$name]}"
	done
	printf '  %-24s %s\n' "nats (authenticated)" "$LOCAL_NATS_URL (config and seeds: .idmesh/nats/)"
	printf '  every service: /healthz /readyz /metrics; logs: .idmesh/logs/<service>.log\n'
	printf '  operator token (admin API): see .idmesh/secrets.env\n\n'
	if [[ -z $SK ]]; then
		printf 'No demo account (see the warning above).\n\n'
		return
	fi
	cat <<EOF
Demo account $DEMO_ACCOUNT, issuer $DEMO_ISSUER (.idmesh/demo.json)
  secret key      $SK
  restricted key  $RK

Try it:
  export SK='$SK' RK='$RK'
  # sign up an end user with the restricted key, as a page on http://localhost:3000 would
  SIGNUP=\$(curl -s http://127.0.0.1:8080/v1/client/sign_up -H "Authorization: Bearer \$RK" -H 'Origin: http://localhost:3000' -H 'content-type: application/json' -d '{"email":"ada@example.com","password":"correct horse battery"}'); echo "\$SIGNUP"
  # read the user back with the secret key (note its region)
  curl -s 'http://127.0.0.1:8080/v1/users?email=ada@example.com' -H "Authorization: Bearer \$SK"
  # who am I: the session token from the sign-up response
  TOKEN=\$(printf '%s' "\$SIGNUP" | python3 -c 'import json,sys;print(json.load(sys.stdin)["session_token"])')
  curl -s http://127.0.0.1:8080/v1/client/me -H "Idm-Api-Key: \$RK" -H "Authorization: Bearer \$TOKEN" -H 'Origin: http://localhost:3000'

EOF
}

# Foreground: watch the services until Ctrl-C/SIGTERM.
supervise() {
	local name cur
	printf 'Services run in the foreground: press Ctrl-C to stop them (or run ops/run-local.sh stop).\n'
	while :; do
		sleep 2 &
		wait $! || true
		for name in "${NATS_NODES[@]}" "${NAMES[@]}"; do
			cur=$(cat "$PID_DIR/$name.pid" 2>/dev/null || true)
			if [[ $cur != "${PID[$name]}" ]]; then
				idm_say "services were stopped or taken over by another run; exiting"
				stop_own
				exit 0
			fi
			if [[ -z ${REPORTED[$name]:-} ]] && ! is_alive "${PID[$name]}"; then
				REPORTED[$name]=1
				idm_warn "$name exited unexpectedly; the others keep running"
				log_tail "$name" 20
			fi
		done
	done
}

main() {
	local mode=foreground build_first=1 arg
	for arg in "$@"; do
		case $arg in
		stop) mode=stop ;;
		--detach | -d) mode=detach ;;
		--no-build) build_first=0 ;;
		-h | --help) usage; exit 0 ;;
		*) idm_err "unknown argument: $arg"; usage >&2; exit 2 ;;
		esac
	done
	mkdir -p "$PID_DIR" "$LOG_DIR"
	chmod 700 "$STATE"

	if [[ $mode == stop ]]; then
		stop_from_pidfiles
		stop_eu_postgres
		idm_say "idmesh services stopped"
		exit 0
	fi

	export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/idmesh/target}
	trap on_exit EXIT
	trap on_signal INT TERM
	_idm_need_cmds curl:curl python3:python3 setsid:util-linux || exit 1
	# PostgreSQL and Redis are shared; NATS is this run's own (start_nats).
	local rc=0
	ensure_postgres || rc=1
	ensure_eu_postgres || rc=1
	ensure_redis || rc=1
	NATS_BIN=$(ensure_nats_server_binary) || rc=1
	((rc == 0)) || { idm_err "dependencies are not ready (see above)"; exit 1; }
	define_services
	if ((build_first)); then build; fi
	stop_from_pidfiles
	create_databases
	load_secrets
	start_nats
	start_all
	wait_ready
	ensure_demo
	print_summary
	if [[ $mode == detach ]]; then
		KEEP_RUNNING=1
		printf 'Detached. Stop with: ops/run-local.sh stop\n'
		exit 0
	fi
	supervise
}

# Executed (not sourced by ops/bench): run.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	main "$@"
fi

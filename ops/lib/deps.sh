# shellcheck shell=bash
# ops/lib/deps.sh: make sure PostgreSQL, Redis and NATS (with JetStream)
# answer at the configured URLs.
#
# Sourced by ops/run-local.sh, ops/test.sh and .ci/run; can also be run on its
# own (`bash ops/lib/deps.sh`) to just bring the dependencies up.
#
#   IDM_PG_ADMIN_URL  postgres://postgres@127.0.0.1:5432/postgres
#   IDM_REDIS_URL     redis://127.0.0.1:6379
#   IDM_NATS_URL      nats://127.0.0.1:4222
#   IDM_DEPS_TIMEOUT  seconds to wait for a dependency we started (30)
#
# A dependency that already answers is reused as it is. One that does not, on a
# local host (127.0.0.1, localhost, ::1), is installed from the Debian archive
# if missing (root only; otherwise the exact command to run is printed) and
# started. A remote one that does not answer is an error.
#
# The functions return non-zero on failure and never exit, so they behave the
# same with or without `set -e` in the caller.

: "${IDM_PG_ADMIN_URL:=postgres://postgres@127.0.0.1:5432/postgres}"
: "${IDM_REDIS_URL:=redis://127.0.0.1:6379}"
: "${IDM_NATS_URL:=nats://127.0.0.1:4222}"
: "${IDM_DEPS_TIMEOUT:=30}"
export IDM_PG_ADMIN_URL IDM_REDIS_URL IDM_NATS_URL

idm_say() { printf '==> %s\n' "$*" >&2; }
idm_warn() { printf 'warning: %s\n' "$*" >&2; }
idm_err() { printf 'error: %s\n' "$*" >&2; }

# The URL with any password replaced by ***, for printing.
idm_redact() {
	printf '%s\n' "$1" | sed -E 's#(://[^:/@]*):[^@/]*@#\1:***@#'
}

# Host and port of a URL, printed as "host port" (port empty if not given).
_idm_hostport() {
	local rest=${1#*://} host port
	rest=${rest%%/*}
	rest=${rest%%\?*}
	rest=${rest##*@}
	if [[ $rest == \[* ]]; then
		host=${rest%%]*}
		host=${host#[}
		port=${rest#*]}
		port=${port#:}
	else
		host=${rest%%:*}
		port=${rest#"$host"}
		port=${port#:}
	fi
	printf '%s %s\n' "$host" "$port"
}

_idm_is_local() {
	case $1 in
	'' | 127.0.0.1 | localhost | ::1) return 0 ;;
	*) return 1 ;;
	esac
}

_idm_is_root() { [[ $(id -u) -eq 0 ]]; }

# Install Debian packages (root only). Not root: print what to run, fail.
_idm_apt_install() {
	if ! _idm_is_root; then
		idm_err "missing Debian package(s): $*"
		printf '  run:  sudo apt-get update && sudo apt-get install -y %s\n' "$*" >&2
		return 1
	fi
	if ! command -v apt-get >/dev/null 2>&1; then
		idm_err "missing package(s) $* and no apt-get on this host; install them by hand"
		return 1
	fi
	local log=${TMPDIR:-/tmp}/idmesh-apt.log
	if [[ -z ${_IDM_APT_UPDATED:-} ]]; then
		idm_say "apt-get update"
		if ! apt-get update >"$log" 2>&1 </dev/null; then
			tail -n 20 "$log" >&2
			idm_err "apt-get update failed (full log: $log)"
			return 1
		fi
		_IDM_APT_UPDATED=1
	fi
	idm_say "apt-get install $*"
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >>"$log" 2>&1 </dev/null; then
		tail -n 20 "$log" >&2
		idm_err "apt-get install $* failed (full log: $log)"
		return 1
	fi
}

# _idm_need_cmds cmd:package ... installs the packages of missing commands.
_idm_need_cmds() {
	local spec pkgs=()
	for spec in "$@"; do
		if ! command -v "${spec%%:*}" >/dev/null 2>&1; then
			case " ${pkgs[*]} " in *" ${spec#*:} "*) ;; *) pkgs+=("${spec#*:}") ;; esac
		fi
	done
	[[ ${#pkgs[@]} -eq 0 ]] || _idm_apt_install "${pkgs[@]}"
}

# _idm_wait what check_fn: poll check_fn until it succeeds or IDM_DEPS_TIMEOUT.
_idm_wait() {
	local what=$1 check=$2 deadline=$((SECONDS + IDM_DEPS_TIMEOUT))
	while ((SECONDS < deadline)); do
		if "$check"; then return 0; fi
		sleep 0.5
	done
	"$check" && return 0
	idm_err "$what did not become ready within ${IDM_DEPS_TIMEOUT}s"
	return 1
}

# --- PostgreSQL ---------------------------------------------------------------

idm_pg_ready() {
	PGCONNECT_TIMEOUT=3 psql "$IDM_PG_ADMIN_URL" -XAtqc 'select 1' >/dev/null 2>&1
}

# Newest installed server version that has a "main" cluster (empty if none).
_idm_pg_cluster_version() {
	local conf
	for conf in /etc/postgresql/*/main/postgresql.conf; do
		[[ -f $conf ]] || continue
		conf=${conf#/etc/postgresql/}
		printf '%s\n' "${conf%%/*}"
	done | sort -V | tail -n 1
}

ensure_postgres() {
	local url shown host port ver fresh=0
	url=$IDM_PG_ADMIN_URL
	shown=$(idm_redact "$url")
	_idm_need_cmds psql:postgresql-client pg_isready:postgresql-client || return 1
	if idm_pg_ready; then
		idm_say "postgres: ready at $shown"
		return 0
	fi
	if pg_isready -q -t 3 -d "$url" >/dev/null 2>&1; then
		# The server is up; the problem is the login or the database.
		idm_err "postgres answers at $shown but \"select 1\" fails:"
		PGCONNECT_TIMEOUT=3 psql "$url" -XAtqc 'select 1' 2>&1 | tail -n 3 | sed 's/^/  /' >&2
		printf '  (local dev expects trust auth for 127.0.0.1 in pg_hba.conf, or a password in IDM_PG_ADMIN_URL)\n' >&2
		return 1
	fi
	read -r host port < <(_idm_hostport "$url")
	port=${port:-5432}
	if ! _idm_is_local "$host"; then
		idm_err "postgres does not answer at $shown (remote host; not starting anything)"
		return 1
	fi
	idm_say "postgres: not answering at $shown; starting it"
	if [[ -z $(_idm_pg_cluster_version) ]] && ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
		_idm_apt_install postgresql || return 1
		fresh=1
	fi
	ver=$(_idm_pg_cluster_version)
	if [[ -z $ver ]]; then
		if ! _idm_is_root; then
			idm_err "no PostgreSQL cluster exists"
			printf '  run:  sudo pg_createcluster <version> main --start\n' >&2
			return 1
		fi
		local bin
		ver=$(for bin in /usr/lib/postgresql/*/bin/postgres; do
			bin=${bin#/usr/lib/postgresql/}
			printf '%s\n' "${bin%%/*}"
		done | sort -V | tail -n 1)
		idm_say "postgres: creating cluster $ver/main on port $port"
		pg_createcluster "$ver" main -p "$port" >/dev/null || return 1
		fresh=1
	fi
	if ((fresh)); then
		# A cluster this script created: let local connections in without a
		# password, as on the dev machines and in CI. Never done to an
		# existing cluster.
		local hba=/etc/postgresql/$ver/main/pg_hba.conf
		{
			printf '# added by idmesh ops/lib/deps.sh for local dev/CI\n'
			printf 'local all all trust\nhost all all 127.0.0.1/32 trust\nhost all all ::1/128 trust\n'
			cat "$hba"
		} >"$hba.idmesh" && cat "$hba.idmesh" >"$hba" && rm -f "$hba.idmesh"
		idm_say "postgres: trust auth for local connections set in $hba"
	fi
	if pg_isready -q -t 3 -d "$url" >/dev/null 2>&1; then
		# The package's post-install started it already; pick up pg_hba.
		pg_ctlcluster --skip-systemctl-redirect "$ver" main reload >/dev/null 2>&1 || true
	elif ! pg_ctlcluster --skip-systemctl-redirect "$ver" main start; then
		idm_err "could not start PostgreSQL $ver/main"
		_idm_is_root || printf '  run:  sudo pg_ctlcluster --skip-systemctl-redirect %s main start\n' "$ver" >&2
		return 1
	fi
	_idm_wait "postgres ($shown)" idm_pg_ready || return 1
	idm_say "postgres: started $ver/main, ready at $shown"
}

# --- Redis --------------------------------------------------------------------

idm_redis_ready() {
	[[ $(timeout 3 redis-cli --no-auth-warning -u "$IDM_REDIS_URL" ping 2>/dev/null) == PONG ]]
}

ensure_redis() {
	local url shown host port
	url=$IDM_REDIS_URL
	shown=$(idm_redact "$url")
	_idm_need_cmds redis-cli:redis-tools || return 1
	if idm_redis_ready; then
		idm_say "redis: ready at $shown"
		return 0
	fi
	read -r host port < <(_idm_hostport "$url")
	port=${port:-6379}
	if ! _idm_is_local "$host"; then
		idm_err "redis does not answer at $shown (remote host; not starting anything)"
		return 1
	fi
	idm_say "redis: not answering at $shown; starting it"
	if [[ ! -x /usr/bin/redis-server ]]; then
		_idm_apt_install redis-server || return 1
		# The package may have started its own instance.
		if idm_redis_ready; then
			idm_say "redis: ready at $shown"
			return 0
		fi
	fi
	if ! _idm_is_root; then
		idm_err "not root: start redis yourself:"
		printf '  run:  sudo redis-server --daemonize yes --bind 127.0.0.1 -::1 --port %s --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log\n' "$port" >&2
		return 1
	fi
	mkdir -p /var/lib/redis /var/log/redis
	if ! redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$port" --save "" --appendonly no \
		--dir /var/lib/redis --logfile /var/log/redis/ci.log; then
		idm_err "redis-server failed to start (log: /var/log/redis/ci.log)"
		return 1
	fi
	if ! _idm_wait "redis ($shown)" idm_redis_ready; then
		tail -n 5 /var/log/redis/ci.log >&2 2>/dev/null
		return 1
	fi
	idm_say "redis: started, ready at $shown"
}

# --- NATS ---------------------------------------------------------------------

# Print the server's INFO line (NATS sends it on connect); fail if no answer.
idm_nats_info() {
	local host port
	read -r host port < <(_idm_hostport "$IDM_NATS_URL")
	host=${host:-127.0.0.1}
	port=${port:-4222}
	# shellcheck disable=SC2016
	timeout 4 bash -c 'exec 3<>"/dev/tcp/$1/$2" || exit 1
		IFS= read -r -t 3 line <&3 || exit 1
		printf "%s\n" "$line"' _ "$host" "$port" 2>/dev/null | grep '^INFO '
}

idm_nats_ready() { idm_nats_info >/dev/null; }

# JetStream is not optional: the MAIL work queue, EVENTS, DELETIONS and the
# webhook queues are streams. The server's INFO line says whether it has it.
_idm_nats_has_js() { [[ $1 == *'"jetstream":true'* ]]; }

_IDM_NATS_JS_DROPIN=/etc/systemd/system/nats-server.service.d/idmesh-jetstream.conf

# Debian's nats-server package installs a systemd unit (nats-server -c
# /etc/nats-server.conf) that starts at install time without JetStream. Give
# that unit JetStream with a drop-in, leaving the package's own files as they
# are, and restart it. Fails, changing nothing, unless we are root and that
# very unit is what runs.
_idm_enable_js_in_packaged_unit() {
	_idm_is_root || return 1
	command -v systemctl >/dev/null 2>&1 || return 1
	systemctl is-active --quiet nats-server.service 2>/dev/null || return 1
	[[ $(systemctl show -p FragmentPath --value nats-server.service 2>/dev/null) == */lib/systemd/system/nats-server.service ]] || return 1
	idm_say "nats: the packaged nats-server.service runs without JetStream; enabling it ($_IDM_NATS_JS_DROPIN)"
	mkdir -p "${_IDM_NATS_JS_DROPIN%/*}" || return 1
	printf '%s\n' \
		'# Added by idmesh ops/lib/deps.sh: idmesh needs JetStream. Its store goes to' \
		'# /var/lib/nats-server, which systemd creates for the unit'"'"'s user.' \
		'[Service]' \
		'StateDirectory=nats-server' \
		'ExecStart=' \
		'ExecStart=/usr/sbin/nats-server -c /etc/nats-server.conf -js -sd /var/lib/nats-server' \
		>"$_IDM_NATS_JS_DROPIN" || return 1
	systemctl daemon-reload && systemctl restart nats-server.service
}

_idm_nats_js_ready() {
	local info
	info=$(idm_nats_info) && _idm_nats_has_js "$info"
}

# NATS answers: fine with JetStream; without it, fix the packaged service if
# that is what runs, otherwise fail and say what to do. Never a warning: a
# platform without JetStream starts and then loses mail and events.
_idm_nats_require_js() {
	local info=$1 host shown
	shown=$(idm_redact "$IDM_NATS_URL")
	_idm_nats_has_js "$info" && return 0
	read -r host _ < <(_idm_hostport "$IDM_NATS_URL")
	if _idm_is_local "$host" && _idm_enable_js_in_packaged_unit; then
		_idm_wait "nats with JetStream ($shown)" _idm_nats_js_ready && return 0
	fi
	idm_err "NATS at $shown answers but has no JetStream (its INFO has no \"jetstream\":true)"
	printf '  idmesh needs it: restart that server with -js -sd <store dir> (or a jetstream {} block in\n' >&2
	printf '  its config), or point IDM_NATS_URL at a server that has it\n' >&2
	return 1
}

ensure_nats() {
	local url shown host port info
	url=$IDM_NATS_URL
	shown=$(idm_redact "$url")
	if info=$(idm_nats_info); then
		_idm_nats_require_js "$info" || return 1
		idm_say "nats: ready with JetStream at $shown"
		return 0
	fi
	read -r host port < <(_idm_hostport "$url")
	port=${port:-4222}
	if ! _idm_is_local "$host"; then
		idm_err "nats does not answer at $shown (remote host; not starting anything)"
		return 1
	fi
	idm_say "nats: not answering at $shown; starting it"
	if [[ ! -x /usr/sbin/nats-server ]]; then
		_idm_apt_install nats-server || return 1
		# On a systemd host the package has just started its own server on
		# the default port, without JetStream.
		sleep 1
		if info=$(idm_nats_info); then
			_idm_nats_require_js "$info" || return 1
			idm_say "nats: ready with JetStream at $shown"
			return 0
		fi
	fi
	if ! _idm_is_root; then
		idm_err "not root: start nats yourself:"
		printf '  run:  sudo start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p %s -js -sd /var/lib/nats-server -l /var/log/nats-server.log\n' "$port" >&2
		return 1
	fi
	# Default port: exactly the machine's usual command. Another port gets its
	# own pid file, store and log, so a server on 4222 does not mask it.
	local sd=/var/lib/nats-server log=/var/log/nats-server.log ssd=()
	if [[ $port != 4222 ]]; then
		sd=/var/lib/nats-server/port-$port
		log=/var/log/nats-server-$port.log
		ssd=(--pidfile "/run/idmesh-nats-$port.pid" --make-pidfile)
	fi
	mkdir -p "$sd"
	if ! start-stop-daemon --start --oknodo --background "${ssd[@]}" --exec /usr/sbin/nats-server -- \
		-a 127.0.0.1 -p "$port" -js -sd "$sd" -l "$log"; then
		idm_err "could not start nats-server (log: $log)"
		return 1
	fi
	if ! _idm_wait "nats ($shown)" idm_nats_ready; then
		tail -n 5 "$log" >&2 2>/dev/null
		return 1
	fi
	info=$(idm_nats_info) || true
	_idm_nats_require_js "$info" || return 1
	idm_say "nats: started with JetStream, ready at $shown"
}

# The nats-server binary, installed from Debian when missing; prints its path.
# ops/run-local.sh starts its own authenticated server with it, and the test
# kit one per test platform (IDM_TEST_NATS_SERVER overrides the path there).
ensure_nats_server_binary() {
	local bin
	bin=$(command -v nats-server 2>/dev/null || true)
	if [[ -z $bin && -x /usr/sbin/nats-server ]]; then bin=/usr/sbin/nats-server; fi
	if [[ -z $bin ]]; then
		_idm_apt_install nats-server >&2 || return 1
		bin=/usr/sbin/nats-server
	fi
	printf '%s\n' "$bin"
}

# --- all ----------------------------------------------------------------------

# Ensure all three; try every one even if an earlier one fails.
ensure_deps() {
	local rc=0
	ensure_postgres || rc=1
	ensure_redis || rc=1
	ensure_nats || rc=1
	if ((rc)); then
		idm_err "dependencies are not ready (see above)"
	fi
	return "$rc"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	set -euo pipefail
	ensure_deps
fi

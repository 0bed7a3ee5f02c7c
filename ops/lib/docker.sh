# shellcheck shell=bash
# ops/lib/docker.sh: a Docker engine and a Debian base image on a machine that
# cannot reach a container registry (CI, air-gapped hosts).
#
#   source ops/lib/docker.sh
#   idm_docker_start   reuse an engine that answers, or start our own dockerd;
#                      exports DOCKER_HOST for everything that follows
#   idm_docker_base    make the base image $IDM_DOCKER_BASE_IMAGE if missing:
#                      debootstrap --variant=minbase + docker import
#   idm_docker_stop    stop the dockerd that idm_docker_start started (by pid)
#
#   bash ops/lib/docker.sh start|base|stop|status     the same from a shell
#
# Variables:
#   IDM_DOCKER_DIR         state of our own engine: data and exec roots, socket,
#                          pid file, log, the cached base rootfs
#                          (${TMPDIR:-/tmp}/idmesh-docker; kept between runs
#                          so that images are reused)
#   IDM_DOCKER_BASE_IMAGE  name of the local base image (idmesh-local/debian:bookworm)
#   IDM_DEBIAN_SUITE       suite of the base image (bookworm)
#   IDM_DEBIAN_MIRROR      Debian mirror for debootstrap (the one apt uses here)
#   IDM_DOCKER_REUSE       1 (default): use an engine already answering at
#                          DOCKER_HOST or /var/run/docker.sock; 0: always our own
#
# Needs root to install (docker.io, docker-compose, debootstrap from Debian) and
# to run dockerd. Functions return non-zero on failure and never exit.

# shellcheck source=ops/lib/deps.sh
source "$(dirname "${BASH_SOURCE[0]}")/deps.sh"

: "${IDM_DOCKER_DIR:=${TMPDIR:-/tmp}/idmesh-docker}"
: "${IDM_DOCKER_BASE_IMAGE:=idmesh-local/debian:bookworm}"
: "${IDM_DEBIAN_SUITE:=bookworm}"
: "${IDM_DOCKER_REUSE:=1}"
: "${IDM_DOCKER_TIMEOUT:=60}"

# Debian's docker.io CLI (20.10) builds with BuildKit on its own; a newer CLI
# elsewhere on PATH may need the buildx plugin for that, so prefer Debian's.
_IDM_DOCKER_CHOSEN=${IDM_DOCKER:+1}
if [[ -z ${IDM_DOCKER:-} ]]; then
	if [[ -x /usr/bin/docker ]]; then IDM_DOCKER=/usr/bin/docker; else IDM_DOCKER=docker; fi
fi

_IDM_DOCKERD_OURS=0

idm_docker() { "$IDM_DOCKER" "$@"; }

_idm_docker_answers() { # [host]
	if [[ -n ${1:-} ]]; then
		DOCKER_HOST=$1 timeout 10 "$IDM_DOCKER" version --format '{{.Server.Version}}' >/dev/null 2>&1
	else
		timeout 10 "$IDM_DOCKER" version --format '{{.Server.Version}}' >/dev/null 2>&1
	fi
}

_idm_dockerd_pid() { # pid of our dockerd, if it runs
	local pid
	pid=$(cat "$IDM_DOCKER_DIR/dockerd.pid" 2>/dev/null) || return 1
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	[[ $(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | head -n 1) == *dockerd ]] || return 1
	printf '%s\n' "$pid"
}

# Install the engine, the Compose v1 CLI and debootstrap from Debian if missing.
idm_docker_install() {
	# docker-compose: Debian 12 has Compose v1 (1.29) and no v2 plugin; the
	# compose file is written for both (see docs/OPERATIONS.md).
	_idm_need_cmds dockerd:docker.io docker-compose:docker-compose debootstrap:debootstrap \
		curl:curl python3:python3 || return 1
	# Just installed: Debian's CLI, unless the caller chose one.
	if [[ -z $_IDM_DOCKER_CHOSEN && -x /usr/bin/docker ]]; then IDM_DOCKER=/usr/bin/docker; fi
	return 0
}

idm_docker_start() {
	idm_docker_install || return 1
	if ((IDM_DOCKER_REUSE)); then
		if [[ -n ${DOCKER_HOST:-} ]] && _idm_docker_answers "$DOCKER_HOST"; then
			idm_say "docker: using the engine at $DOCKER_HOST"
			return 0
		fi
		if _idm_docker_answers unix:///var/run/docker.sock; then
			export DOCKER_HOST=unix:///var/run/docker.sock
			idm_say "docker: using the engine at $DOCKER_HOST"
			return 0
		fi
	fi
	local sock=unix://$IDM_DOCKER_DIR/docker.sock pid
	export DOCKER_HOST=$sock
	if pid=$(_idm_dockerd_pid) && _idm_docker_answers "$sock"; then
		# Ours, left by an earlier run that did not stop it: adopt it.
		_IDM_DOCKERD_OURS=1
		idm_say "docker: reusing our dockerd (pid $pid) at $sock"
		return 0
	fi
	if ! _idm_is_root; then
		idm_err "docker: no engine answers and only root can start dockerd"
		return 1
	fi
	mkdir -p "$IDM_DOCKER_DIR/data" "$IDM_DOCKER_DIR/exec"
	rm -f "$IDM_DOCKER_DIR/docker.sock" "$IDM_DOCKER_DIR/dockerd.pid"
	idm_say "docker: starting dockerd (data root $IDM_DOCKER_DIR/data, log $IDM_DOCKER_DIR/dockerd.log)"
	# setsid: its own session, so a Ctrl-C in the calling terminal does not
	# reach it; we stop it ourselves, by pid. Fd 9 (ops/compose-smoke.sh's
	# lock) is closed so a dockerd left running does not hold the lock.
	setsid dockerd \
		--data-root "$IDM_DOCKER_DIR/data" \
		--exec-root "$IDM_DOCKER_DIR/exec" \
		--pidfile "$IDM_DOCKER_DIR/dockerd.pid" \
		--host "$sock" \
		</dev/null >"$IDM_DOCKER_DIR/dockerd.log" 2>&1 9>&- &
	local deadline=$((SECONDS + IDM_DOCKER_TIMEOUT))
	until _idm_docker_answers "$sock"; do
		if ((SECONDS >= deadline)); then
			tail -n 20 "$IDM_DOCKER_DIR/dockerd.log" >&2
			idm_err "docker: dockerd did not answer within ${IDM_DOCKER_TIMEOUT}s"
			return 1
		fi
		sleep 0.5
	done
	_IDM_DOCKERD_OURS=1
	idm_say "docker: dockerd $(idm_docker version --format '{{.Server.Version}}') ready (pid $(_idm_dockerd_pid))"
}

# Stop our dockerd (never an engine we merely reused): SIGTERM, then SIGKILL
# after IDM_DOCKER_TIMEOUT seconds. Containers it runs are stopped with it.
idm_docker_stop() {
	local pid deadline
	if ! pid=$(_idm_dockerd_pid); then
		return 0
	fi
	if ((!_IDM_DOCKERD_OURS)) && [[ ${1:-} != --force ]]; then
		return 0
	fi
	idm_say "docker: stopping dockerd (pid $pid)"
	kill -TERM "$pid" 2>/dev/null || return 0
	deadline=$((SECONDS + IDM_DOCKER_TIMEOUT))
	while [[ -d /proc/$pid ]]; do
		if ((SECONDS >= deadline)); then
			idm_warn "docker: dockerd (pid $pid) did not stop; sending SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
			break
		fi
		sleep 0.5
	done
	_IDM_DOCKERD_OURS=0
}

# The Debian mirror apt already uses (first deb.debian.org-style URI of the
# main archive), so debootstrap needs no network access apt does not have.
_idm_debian_mirror() {
	local uri
	uri=$(
		{
			grep -hE '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}'
			grep -hE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
				sed -E 's/^deb (\[[^]]*\] )?//' | awk '{print $1}'
		} | grep -E '/debian/?$' | grep -v -- '-security' | head -n 1
	)
	printf '%s\n' "${uri:-http://deb.debian.org/debian}"
}

# The base image every local image starts from: Debian minbase, apt sources
# as in the official image (suite, -updates, -security), apt lists removed.
idm_docker_base() {
	local image=$IDM_DOCKER_BASE_IMAGE suite=$IDM_DEBIAN_SUITE
	if idm_docker image inspect "$image" >/dev/null 2>&1; then
		idm_say "docker: base image $image present"
		return 0
	fi
	local tarball=$IDM_DOCKER_DIR/base-$suite.tar
	if [[ ! -s $tarball ]]; then
		local mirror rootfs
		mirror=${IDM_DEBIAN_MIRROR:-$(_idm_debian_mirror)}
		rootfs=$(mktemp -d "$IDM_DOCKER_DIR/rootfs.XXXXXX")
		idm_say "docker: debootstrap --variant=minbase $suite from $mirror (about a minute)"
		if ! debootstrap --variant=minbase "$suite" "$rootfs" "$mirror" \
			>"$IDM_DOCKER_DIR/debootstrap.log" 2>&1 </dev/null; then
			tail -n 20 "$IDM_DOCKER_DIR/debootstrap.log" >&2
			rm -rf "$rootfs"
			idm_err "docker: debootstrap failed (log: $IDM_DOCKER_DIR/debootstrap.log)"
			return 1
		fi
		rm -f "$rootfs/etc/apt/sources.list"
		cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${mirror%/debian*}/debian-security
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
		rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin \
			"$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/log/*.log
		tar -C "$rootfs" --numeric-owner -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
		rm -rf "$rootfs"
	fi
	idm_say "docker: importing $tarball as $image"
	idm_docker import --change 'CMD ["bash"]' --change 'ENV LANG=C.UTF-8' \
		"$tarball" "$image" >/dev/null || return 1
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	set -euo pipefail
	case ${1:-} in
	start) idm_docker_start && printf 'export DOCKER_HOST=%s\n' "$DOCKER_HOST" ;;
	base) idm_docker_start && idm_docker_base ;;
	stop) idm_docker_stop --force ;;
	status)
		if pid=$(_idm_dockerd_pid); then
			echo "our dockerd runs (pid $pid), DOCKER_HOST=unix://$IDM_DOCKER_DIR/docker.sock"
		else
			echo "our dockerd is not running"
		fi
		;;
	*)
		sed -n '2,16s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
		exit 2
		;;
	esac
fi

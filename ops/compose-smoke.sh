#!/usr/bin/env bash
# Run compose.yaml for real and smoke-test the platform through its edge.
#
#   ops/compose-smoke.sh            (root; run by ops/test.sh, so by CI)
#
# 1. `cargo build --bins` (debug, CARGO_TARGET_DIR; a no-op after the tests)
# 2. a Docker engine (ops/lib/docker.sh: reuses one that answers, else starts
#    its own dockerd) and the local Debian base image
# 3. images: idmesh (ops/Dockerfile's runtime stage with the host's binaries),
#    PostgreSQL, Redis and NATS stand-ins from Debian's packages
#    (ops/compose/local/, reused while their files are unchanged), and the mail
#    catcher through compose's own `build:`; the NATS credentials
#    (ops/compose/gen-nats.sh)
# 4. `up` and a wait until every container is healthy (Compose v2: `up --wait`)
# 5. the smoke test (ops/compose/smoke.py), /readyz of every service, and
#    NATS refusing a client without credentials
# 6. `down -v`, and the dockerd stopped by its pid if this script started it
#
# Variables: IDM_SMOKE_TIMEOUT (seconds for the stack to become healthy, 420),
# IDM_SMOKE_KEEP=1 (leave the stack and the engine running, for debugging).
# Secrets are generated into a temporary env file; .env is never read.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=ops/lib/docker.sh
source "$ROOT/ops/lib/docker.sh"

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/idmesh/target}
TIMEOUT=${IDM_SMOKE_TIMEOUT:-420}
PROJECT=idmesh-smoke
BINARIES=(idm-account idm-auth idm-deletion-worker idm-edge-guard idm-session idm-user idm-user-store idm-webhook
	idmctl)
# name in compose.yaml -> port of its /readyz inside the container
declare -A READY_PORT=(
	[edge-guard]=8080 [account]=8081 [auth]=8082 [session]=8083 [user]=8084
	[deletion-worker]=8086 [webhook]=8087
)
for r in wnam enam sam weur eeur apac oc afr; do READY_PORT[user-store-$r]=8090; done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/idmesh-smoke.XXXXXX")
STARTED=$SECONDS
COMPOSE=()
UP=0

step() { idm_say "[$((SECONDS - STARTED))s] $*"; }

compose() { "${COMPOSE[@]}" "$@"; }

cleanup() {
	local rc=$?
	set +e
	if ((UP)) && [[ ${IDM_SMOKE_KEEP:-0} != 1 ]]; then
		step "compose down -v"
		compose down -v --remove-orphans >"$WORK/down.log" 2>&1 || tail -n 20 "$WORK/down.log" >&2
	fi
	if [[ ${IDM_SMOKE_KEEP:-0} == 1 ]]; then
		idm_say "IDM_SMOKE_KEEP=1: stack and engine left running (DOCKER_HOST=$DOCKER_HOST, env file $WORK/env)"
	else
		# Each run adds a layer of fresh binaries: keep our engine's disk
		# bounded (images of earlier runs, build cache beyond 3 GB). Never
		# done to an engine we merely reused.
		if ((_IDM_DOCKERD_OURS)); then
			idm_docker image prune -f >/dev/null 2>&1
			idm_docker builder prune -f --keep-storage 3gb >/dev/null 2>&1
		fi
		idm_docker_stop
		rm -rf "$WORK"
	fi
	idm_say "compose smoke: $((SECONDS - STARTED))s in all, exit code $rc"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Compose v2 where the docker CLI has it; otherwise Debian's v1.
pick_compose() {
	if idm_docker compose version >/dev/null 2>&1; then
		COMPOSE=("$IDM_DOCKER" compose)
	else
		COMPOSE=(docker-compose)
	fi
	step "compose: $("${COMPOSE[@]}" version 2>/dev/null | head -n 1)"
	COMPOSE+=(--project-name "$PROJECT" --file "$ROOT/compose.yaml" --env-file "$WORK/env")
}

# Build a stand-in image unless one from the same files exists already.
# Stand-ins of older files are removed once the new one is built.
build_local_image() { # name dockerfile
	local name=$1 file=$2 sum tag old f files
	files=("$ROOT/ops/compose/local/$file")
	for f in "$ROOT/ops/compose/local/$name"-*.sh; do
		if [[ -e $f ]]; then files+=("$f"); fi
	done
	sum=$(cat "${files[@]}" | sha256sum | cut -c1-12)
	tag=idmesh-local/$name:$sum
	if ! idm_docker image inspect "$tag" >/dev/null 2>&1; then
		step "building $tag"
		if ! DOCKER_BUILDKIT=1 idm_docker build --build-arg "BASE_IMAGE=$IDM_DOCKER_BASE_IMAGE" \
			-f "$ROOT/ops/compose/local/$file" -t "$tag" "$ROOT/ops/compose/local" >"$WORK/build-$name.log" 2>&1; then
			tail -n 30 "$WORK/build-$name.log" >&2
			idm_err "building $tag failed"
			return 1
		fi
		for old in $(idm_docker images --format '{{.Repository}}:{{.Tag}}' "idmesh-local/$name"); do
			[[ $old == "$tag" ]] || idm_docker rmi "$old" >/dev/null 2>&1 || true
		done
	fi
	printf '%s\n' "$tag"
}

build_idmesh_image() {
	local b ctx=$WORK/context
	mkdir -p "$ctx/bin"
	for b in "${BINARIES[@]}"; do
		cp "$CARGO_TARGET_DIR/debug/$b" "$ctx/bin/$b"
	done
	step "building idmesh:smoke (runtime stage of ops/Dockerfile on $IDM_DOCKER_BASE_IMAGE, host binaries)"
	if ! DOCKER_BUILDKIT=1 idm_docker build -f "$ROOT/ops/Dockerfile" \
		--build-arg BINARIES=prebuilt --build-arg "RUNTIME_IMAGE=$IDM_DOCKER_BASE_IMAGE" \
		-t idmesh:smoke "$ctx" >"$WORK/build-idmesh.log" 2>&1; then
		tail -n 30 "$WORK/build-idmesh.log" >&2
		idm_err "building the idmesh image failed"
		return 1
	fi
}

build_mail_image() {
	step "compose build mail"
	# Compose builds through the docker CLI on PATH: make that ours, with
	# BuildKit, so the build is cached like the others.
	local path=$PATH
	if [[ $IDM_DOCKER == /* ]]; then path=${IDM_DOCKER%/*}:$PATH; fi
	if ! PATH=$path DOCKER_BUILDKIT=1 IDM_DEBIAN_IMAGE=$IDM_DOCKER_BASE_IMAGE \
		compose build mail >"$WORK/build-mail.log" 2>&1; then
		tail -n 30 "$WORK/build-mail.log" >&2
		idm_err "building the mail catcher failed"
		return 1
	fi
}

# The five images share nothing but the base, so they build side by side
# (mostly apt downloads and unpacking: the first run on a machine gains most).
build_images() {
	local rc=0 name
	declare -A jobs=()
	build_idmesh_image &
	jobs[$!]=idmesh
	build_mail_image &
	jobs[$!]=mail
	for name in postgres redis nats; do
		build_local_image "$name" "$name.Dockerfile" >"$WORK/tag-$name" &
		jobs[$!]=$name
	done
	for pid in "${!jobs[@]}"; do
		if ! wait "$pid"; then
			idm_err "the ${jobs[$pid]} image could not be built"
			rc=1
		fi
	done
	((rc == 0)) || return 1
	IDM_POSTGRES_IMAGE=$(cat "$WORK/tag-postgres")
	IDM_REDIS_IMAGE=$(cat "$WORK/tag-redis")
	IDM_NATS_IMAGE=$(cat "$WORK/tag-nats")
	export IDM_POSTGRES_IMAGE IDM_REDIS_IMAGE IDM_NATS_IMAGE
	export IDM_IMAGE=idmesh:smoke IDM_DEBIAN_IMAGE=$IDM_DOCKER_BASE_IMAGE
	step "images ready"
}

# Health of every container of the project: "name status" lines.
health_report() {
	local id
	for id in $(compose ps -q); do
		idm_docker inspect --format '{{.Name}} {{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}no-healthcheck{{end}}' "$id"
	done
}

wait_healthy() {
	local deadline=$((SECONDS + TIMEOUT)) report
	while :; do
		report=$(health_report)
		if [[ -n $report ]] && ! grep -qvE ' running (healthy|no-healthcheck)$' <<<"$report"; then
			return 0
		fi
		if grep -qE ' (exited|dead) ' <<<"$report" || ((SECONDS >= deadline)); then
			idm_err "the stack did not become healthy:"
			printf '%s\n' "$report" | grep -vE ' running healthy$' >&2
			return 1
		fi
		sleep 2
	done
}

compose_up() {
	step "compose up (every container healthy within ${TIMEOUT}s)"
	compose down -v --remove-orphans >/dev/null 2>&1 || true
	UP=1
	if [[ ${COMPOSE[1]} == compose ]]; then
		compose up --detach --no-build --wait --wait-timeout "$TIMEOUT"
	else
		compose up --detach --no-build >"$WORK/up.log" 2>&1 || {
			cat "$WORK/up.log" >&2
			return 1
		}
		wait_healthy
	fi
}

show_failure() {
	local svc
	compose ps >&2 || true
	for svc in $(compose ps --services 2>/dev/null); do
		printf -- '--- %s (last 15 lines) ---\n' "$svc" >&2
		compose logs --no-color --tail 15 "$svc" >&2 2>/dev/null || true
	done
}

# The container compose runs for a service. `docker exec` on it is much
# quicker than `compose exec`, and the same for Compose v1 and v2.
container_of() {
	idm_docker ps -q --filter "label=com.docker.compose.project=$PROJECT" \
		--filter "label=com.docker.compose.service=$1" | head -n 1
}

# The services' own logins work (the smoke test went through all of them);
# this checks the other half: NATS turns away a client without credentials,
# even one inside the compose network.
nats_refuses_anonymous() {
	local reply
	# shellcheck disable=SC2016 # expanded by the container's bash
	reply=$(idm_docker exec "$(container_of auth)" bash -c '
		exec 3<>/dev/tcp/nats/4222 || exit 1
		IFS= read -r -t 5 info <&3
		printf "CONNECT {\"verbose\":false,\"pedantic\":false}\r\nPING\r\n" >&3
		IFS= read -r -t 5 reply <&3
		printf "%s\n" "$reply"' 2>/dev/null) || true
	if [[ $reply == *"Authorization Violation"* ]]; then
		printf 'ok     NATS refuses a client without credentials\n'
	else
		printf 'FAILED NATS refuses a client without credentials: got %s\n' "${reply:-nothing}"
		return 1
	fi
}

# /readyz of every service, from inside its container (only edge-guard and
# account publish a port).
readyz_all() {
	local svc id code failed=0
	for svc in "${!READY_PORT[@]}"; do
		id=$(container_of "$svc")
		code=$(idm_docker exec "$id" curl -s -o /dev/null -w '%{http_code}' \
			"http://127.0.0.1:${READY_PORT[$svc]}/readyz" 2>/dev/null) || true
		if [[ $code == 200 ]]; then
			printf 'ok     %s /readyz\n' "$svc"
		else
			printf 'FAILED %s /readyz -> %s\n' "$svc" "${code:-no answer}"
			failed=$((failed + 1))
		fi
	done
	((failed == 0))
}

# One smoke run at a time per machine: runs share the engine (one would stop
# it under the other) and the project name (`down -v` would end the other's
# stack). A second run waits for the first.
take_lock() {
	mkdir -p "$IDM_DOCKER_DIR"
	exec 9>"$IDM_DOCKER_DIR/smoke.lock"
	if ! flock -n 9; then
		step "another compose smoke run holds $IDM_DOCKER_DIR/smoke.lock; waiting (up to 30 min)"
		flock -w 1800 9 || {
			idm_err "gave up waiting for the other compose smoke run"
			return 1
		}
	fi
}

main() {
	take_lock
	step "cargo build --bins (debug)"
	cargo build --bins --quiet
	idm_docker_start
	idm_docker_base
	bash "$ROOT/ops/compose/gen-env.sh" "$WORK/env" 2>/dev/null
	EDGE_PORT=$(free_port)
	ACCOUNT_PORT=$(free_port)
	export IDM_EDGE_BIND=127.0.0.1 IDM_EDGE_PORT=$EDGE_PORT IDM_ACCOUNT_PORT=$ACCOUNT_PORT
	pick_compose
	build_images
	# The operator tool ships in the image too (NATS credentials, see
	# docs/OPERATIONS.md): it must run there, as uid 10001, read-only.
	if idm_docker run --rm --read-only idmesh:smoke idmctl acl --prefix idm >"$WORK/idmctl.log" 2>&1 &&
		grep -q 'edge-guard' "$WORK/idmctl.log"; then
		printf 'ok     idmctl runs in the image\n'
	else
		tail -n 5 "$WORK/idmctl.log" >&2
		printf 'FAILED idmctl runs in the image\n'
		return 1
	fi
	step "NATS credentials (ops/compose/gen-nats.sh, through the image's idmctl)"
	export IDM_NATS_CONFIG_DIR=$WORK/nats
	IDM_DOCKER=$IDM_DOCKER IDM_IMAGE=idmesh:smoke bash "$ROOT/ops/compose/gen-nats.sh" "$IDM_NATS_CONFIG_DIR" 2>/dev/null
	if ! compose_up; then
		show_failure
		return 1
	fi
	step "stack healthy; smoke test through the edge on 127.0.0.1:$EDGE_PORT"
	local rc=0
	# shellcheck disable=SC2046
	IDM_OPERATOR_TOKEN=$(grep -E '^IDM_OPERATOR_TOKEN=' "$WORK/env" | cut -d= -f2-) \
		python3 "$ROOT/ops/compose/smoke.py" "http://127.0.0.1:$EDGE_PORT" "http://127.0.0.1:$ACCOUNT_PORT" \
		"${COMPOSE[@]}" logs --no-color mail || rc=1
	readyz_all || rc=1
	nats_refuses_anonymous || rc=1
	if ((rc)); then
		show_failure
		idm_err "compose smoke test failed"
		return 1
	fi
	step "compose smoke test passed"
}

main "$@"

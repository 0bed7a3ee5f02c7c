#!/usr/bin/env bash
# NATS credentials for compose.yaml: the server config (nkey public keys and
# each identity's permissions, from libs/bus/src/acl.rs) and one nkey seed per
# service, written by the image's own `idmctl nats-config`, so no Rust
# toolchain is needed on the host.
#
#   ops/compose/gen-nats.sh [DIR] [--rotate]
#
# DIR defaults to IDM_NATS_CONFIG_DIR or .idmesh/compose-nats (git-ignored),
# which is where compose.yaml looks. The image (IDM_IMAGE, default
# idmesh:local) must exist: `docker compose build` first. Seeds already in DIR
# are kept (--rotate makes new ones; restart every service then). The seeds
# are mode 600 and owned by uid 10001, the services' user, because compose
# bind-mounts each one, as it is, into its own service only.
#
# IDM_NATS_CLUSTER=3 also writes nats-server-{nats,nats-2,nats-3}.conf, the
# nodes of ops/compose/cluster.yaml (routes on 6222 between them, with the
# route password of cluster-route.secret; mode 600, owned by IDM_NATS_UID,
# default 0: the official nats image runs as root; set the uid of an image
# that does not, such as 65534 for ops/compose/local/nats.Dockerfile).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
dir=${IDM_NATS_CONFIG_DIR:-$ROOT/.idmesh/compose-nats}
if [[ $# -gt 0 && $1 != --* ]]; then
	dir=$1
	shift
fi
image=${IDM_IMAGE:-idmesh:local}
cluster=()
case ${IDM_NATS_CLUSTER:-1} in
1) ;;
3) cluster=(--cluster-node nats=nats:4222:6222 --cluster-node nats-2=nats-2:4222:6222 --cluster-node nats-3=nats-3:4222:6222) ;;
*)
	printf 'IDM_NATS_CLUSTER=%s: 1 (one server) or 3 (ops/compose/cluster.yaml)\n' "$IDM_NATS_CLUSTER" >&2
	exit 2
	;;
esac
docker=${IDM_DOCKER:-docker}

mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
# As root inside a network-less container, only to hand the seeds to 10001;
# the directories stay listable so compose can check the files exist.
# shellcheck disable=SC2016 # expanded by the container's shell
"$docker" run --rm --user 0:0 --network none -e "PREFIX=${IDM_SUBJECT_PREFIX:-idm}" \
	-e "NATS_UID=${IDM_NATS_UID:-0}" \
	-v "$dir:/out" "$image" sh -c '
	idmctl nats-config --out /out --prefix "$PREFIX" --listen 0.0.0.0:4222 \
		--jetstream-dir /data/jetstream "$@" >/dev/null
	chown -R 10001:10001 /out/nkeys
	for f in /out/nats-server-*.conf; do [ -e "$f" ] && chown "$NATS_UID" "$f"; done
	chmod 0755 /out /out/nkeys' sh "${cluster[@]}" "$@"
printf '==> %s: nats-server.conf and nkeys/<service>.nk\n' "$dir" >&2

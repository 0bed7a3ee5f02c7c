#!/usr/bin/env bash
# Write the secrets compose.yaml needs into an env file (default: .env beside
# compose.yaml), mode 600. Keys already in the file are kept as they are (the
# master keys encrypt data at rest, the passwords are baked into the database
# volumes on their first start); only missing ones are generated.
#
#   ops/compose/gen-env.sh [FILE]
#
# .env is git-ignored. Never commit it, never bake it into an image.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
file=${1:-$ROOT/.env}

hex32() { od -An -vtx1 -N32 /dev/urandom | tr -d ' \n'; }
b64_32() { head -c32 /dev/urandom | base64 -w0; }

(umask 077 && touch "$file")
chmod 600 "$file"
added=()
add() { # KEY generator
	if ! grep -qE "^$1=." "$file"; then
		printf '%s=%s\n' "$1" "$($2)" >>"$file"
		added+=("$1")
	fi
}
add IDM_OPERATOR_TOKEN hex32
add IDM_SESSION_MASTER_KEY b64_32
add IDM_USER_MASTER_KEY b64_32
add IDM_AUTH_MASTER_KEY b64_32
add IDM_WEBHOOK_MASTER_KEY b64_32
add IDM_KEY_TRANSPORT_KEY b64_32
add IDM_EDGE_HASH_KEY b64_32
# Hex only: the passwords go into postgres:// URLs unescaped.
add IDM_PG_PASSWORD hex32
add IDM_PG_EU_PASSWORD hex32
if ((${#added[@]})); then
	printf '==> %s: generated %s\n' "$file" "${added[*]}" >&2
else
	printf '==> %s: every secret already set\n' "$file" >&2
fi

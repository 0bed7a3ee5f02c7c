#!/usr/bin/env bash
# ops/mail-spam-check.sh: every kind of message auth sends (magic link,
# email code, verification code, each security notice), scored by Debian's
# SpamAssassin with its local tests only (`spamassassin -L -t`: no DNS, no
# network rules). Each must score below 1.0 (docs/MAIL.md has the scores).
# A benchmark-style check, not a timed test: run by ops/test.sh.
#
# The messages come from the idm-auth test that renders every kind
# (mail::tests::every_kind..., IDM_MAIL_SAMPLES_DIR), built exactly as the
# courier builds them. Installs `spamassassin` with apt when missing; if it
# cannot be had, says SKIPPED and exits 0.
#
#   ops/mail-spam-check.sh            check (exit 1 if a kind scores >= 1.0)
#   IDM_SPAM_MAX=0.5 ops/mail-spam-check.sh   a stricter ceiling
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=ops/lib/deps.sh
source "$ROOT/ops/lib/deps.sh"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/idmesh/target}
MAX=${IDM_SPAM_MAX:-1.0}

if ! command -v spamassassin >/dev/null 2>&1; then
	if ! _idm_apt_install spamassassin || ! command -v spamassassin >/dev/null 2>&1; then
		echo "SKIPPED: spamassassin (Debian package spamassassin) could not be installed; mail spam scores not checked"
		exit 0
	fi
fi

samples=$(mktemp -d "${TMPDIR:-/tmp}/idm-mail-samples.XXXXXX")
trap 'rm -rf "$samples"' EXIT
idm_say "rendering every kind of message (cargo test -p idm-auth --lib mail::tests::every_kind)"
IDM_MAIL_SAMPLES_DIR=$samples cargo test -q -p idm-auth --lib mail::tests::every_kind >/dev/null
shopt -s nullglob
files=("$samples"/*.eml)
if ((${#files[@]} == 0)); then
	idm_err "no messages were rendered into $samples"
	exit 1
fi

rc=0
printf '%-34s %6s  %s\n' kind score "rules hit"
for f in "${files[@]}"; do
	kind=$(basename "$f" .eml)
	# -L: local tests only; -t: test mode (the report is appended).
	status=$(spamassassin -L -t <"$f" 2>/dev/null |
		awk 'BEGIN{s=0} /^X-Spam-Status:/{s=1; line=$0; next} s && /^[ \t]/{line=line $0; next} s{print line; exit}')
	score=$(sed -nE 's/.*score=(-?[0-9.]+).*/\1/p' <<<"$status")
	rules=$(sed -nE 's/.*tests=([^ ]*).*/\1/p' <<<"$status" | tr -d ' \t')
	if [[ -z $score ]]; then
		idm_err "$kind: no X-Spam-Status from spamassassin"
		rc=1
		continue
	fi
	printf '%-34s %6s  %s\n' "$kind" "$score" "${rules:-none}"
	if awk -v s="$score" -v m="$MAX" 'BEGIN{exit !(s >= m)}'; then
		idm_err "$kind scores $score (ceiling $MAX)"
		rc=1
	fi
done
((rc == 0)) && idm_say "every kind scores below $MAX"
exit "$rc"

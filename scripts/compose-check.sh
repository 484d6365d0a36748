#!/usr/bin/env bash
# Checks docker-compose.yaml with real Compose parsers (no Docker engine needed).
#
#   scripts/compose-check.sh [COMPOSE_FILE]
#
# Parsers: `docker-compose` 1.29.2 (Debian bookworm's package, the Python implementation;
# installed with apt-get when missing and this runs as root), and Compose v2 (`docker compose`)
# too when its plugin is present. Each runs `config -q`: it resolves anchors, merge keys,
# variable defaults and every service's options against the Compose schema, and exits non-zero
# on any error.
#
# Exit status: 0 when every parser found accepts the file; 1 when one rejects it; 77 when no
# parser is available and none can be installed (the test turns that into a skip).
set -euo pipefail

cd "$(dirname "$0")/.."
FILE="${1:-docker-compose.yaml}"
SKIP=77

install_compose_v1() {
  # Debian's docker-compose (1.29.2): Python, no engine needed for `config`
  command -v apt-get >/dev/null 2>&1 || { echo "compose-check: no apt-get to install docker-compose" >&2; return 1; }
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo=(sudo -n); else
      echo "compose-check: not root and no password-less sudo: cannot install docker-compose" >&2
      return 1
    fi
  fi
  # wait for another apt/dpkg run to finish rather than fail on its lock
  local apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 -qq)
  echo "compose-check: installing Debian's docker-compose (apt-get) ..." >&2
  if ! "${apt[@]}" install -y --no-install-recommends docker-compose >/dev/null 2>&1; then
    "${apt[@]}" update >/dev/null 2>&1 || true
    "${apt[@]}" install -y --no-install-recommends docker-compose >&2 || {
      echo "compose-check: apt-get install docker-compose failed" >&2; return 1; }
  fi
}

parsers=()
if ! command -v docker-compose >/dev/null 2>&1; then
  install_compose_v1 || true
fi
if command -v docker-compose >/dev/null 2>&1; then parsers+=(v1); fi
if docker compose version >/dev/null 2>&1; then parsers+=(v2); fi
if [ "${#parsers[@]}" -eq 0 ]; then
  echo "compose-check: no Compose parser available (docker-compose could not be installed)" >&2
  exit "$SKIP"
fi

# an empty --env-file: the defaults written in the file are checked, not a local .env
# (docker-compose 1.29.2 wants a regular file: /dev/null is refused)
empty_env=$(mktemp)
trap 'rm -f "$empty_env"' EXIT
status=0
for parser in "${parsers[@]}"; do
  if [ "$parser" = v1 ]; then
    cmd=(docker-compose --env-file "$empty_env" -f "$FILE")
    name="docker-compose $(docker-compose version --short 2>/dev/null || echo '?')"
  else
    cmd=(docker compose --env-file "$empty_env" -f "$FILE")
    name="docker compose $(docker compose version --short 2>/dev/null || echo '?')"
  fi
  if out=$("${cmd[@]}" config -q 2>&1); then
    # warnings (a variable without a default, say) are printed, and fail the test
    echo "compose-check: $name: $FILE is valid${out:+; it warns: $out}"
  else
    echo "compose-check: $name rejects $FILE:" >&2
    echo "$out" >&2
    status=1
  fi
done
exit "$status"

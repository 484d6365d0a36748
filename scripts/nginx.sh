#!/usr/bin/env bash
# nginx with njs for the nginx tests (tests/test_nginx.py) and bench/bench_nginx.py.
#
#   scripts/nginx.sh          install Debian's nginx and its njs module (libnginx-mod-http-js) if
#                             either is missing (apt-get, as root); prints the nginx binary's path
#   scripts/nginx.sh --wrk    the same, and wrk (the HTTP benchmark bench/bench_nginx.py prefers)
#
# Idempotent: with everything installed it only checks.  Runs unattended (CI=true, no stdin).
# Progress goes to stderr, the binary's path alone to stdout.  The package's own server is not
# started (a policy-rc.d says no while apt-get runs): the tests and the bench run nginx in the
# foreground from a prefix of their own (nginx -p DIR -c DIR/nginx.conf), as any user.
#
# Exit status: 0 ready; 77 nginx or njs is not installed and cannot be installed here (not root,
# no apt-get, or apt-get failed): a test should skip; 2 usage; 1 anything else.
set -euo pipefail

SCRIPT=nginx.sh
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
MODULE=/usr/lib/nginx/modules/ngx_http_js_module.so

want_wrk=0
case ${1:-} in
    "") ;;
    --wrk) want_wrk=1 ;;
    *) log "usage: $0 [--wrk]"; exit 2 ;;
esac

missing=()
command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
[[ -f $MODULE ]] || missing+=(libnginx-mod-http-js)
if [[ $want_wrk -eq 1 ]] && ! command -v wrk >/dev/null; then
    missing+=(wrk)
fi

if [[ ${#missing[@]} -gt 0 ]]; then
    apt_install "${missing[*]}" "${missing[@]}"
fi

binary=$(command -v nginx || echo /usr/sbin/nginx)
[[ -x $binary ]] || { log "no nginx binary after installing it"; exit 1; }
[[ -f $MODULE ]] || { log "no njs module at $MODULE after installing it"; exit 1; }
echo "$binary"

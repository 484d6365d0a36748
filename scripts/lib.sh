# Shared by scripts/nginx.sh, scripts/postgres.sh and scripts/redis.sh (sourced, not run): their
# log lines, exit statuses, start/stop dispatch and the unattended apt-get install.  The script
# sourcing it sets SCRIPT (its name, for log lines) first.

SKIP=77  # not installed and cannot be installed here: a test should skip
OWN_POLICY=""  # a policy-rc.d this script wrote, removed on exit
trap '[[ -z $OWN_POLICY ]] || rm -f "$OWN_POLICY"' EXIT
log() { echo "$SCRIPT: $*" >&2; }
usage() { log "usage: $0 [start] DIR PORT | $0 stop DIR"; exit 2; }

# apt_install WHAT PACKAGE...: install PACKAGEs from the distribution (as root, with apt-get), or
# exit $SKIP saying why not; WHAT names them in the messages.
apt_install() {
    local what=$1
    shift
    if [[ $(id -u) -ne 0 ]]; then
        log "$what is not installed and this is not root (install it: apt-get install $*)"
        exit $SKIP
    fi
    if ! command -v apt-get >/dev/null; then
        log "$what is not installed and there is no apt-get to install it with"
        exit $SKIP
    fi
    local start=$SECONDS policy=/usr/sbin/policy-rc.d ok=0
    log "installing $what from the distribution's packages (apt-get) ..."
    # a server package would start a system-wide server on its standard port: not wanted here.  A
    # policy-rc.d that says "no" (101) keeps invoke-rc.d from starting it; only one we wrote is
    # removed.
    if [[ ! -e $policy ]]; then
        OWN_POLICY=$policy
        printf '#!/bin/sh\nexit 101\n' > "$policy"
        chmod 755 "$policy"
    fi
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends \
            -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
            "$@"; } </dev/null >&2 || ok=$?
    [[ -z $OWN_POLICY ]] || rm -f "$OWN_POLICY"
    OWN_POLICY=""
    if [[ $ok -ne 0 ]]; then
        log "apt-get could not install $what"
        exit $SKIP
    fi
    log "installed $what in $((SECONDS - start)) s"
}

# dispatch ARG...: the command line of a server script, `[start] DIR PORT` or `stop DIR`, onto the
# script's own start and stop functions
dispatch() {
    case ${1:-} in
        stop) [[ $# -eq 2 ]] || usage; stop "$2" ;;
        start) [[ $# -eq 3 ]] || usage; start "$2" "$3" ;;
        -h|--help|"") usage ;;
        *) [[ $# -eq 2 ]] || usage; start "$1" "$2" ;;
    esac
}

#!/usr/bin/env bash
# A throw-away Redis server for tests (tests/test_scheduler.py): the CeleryExecutor's broker.
#
#   scripts/redis.sh [start] DIR PORT   install Redis if it is missing (Debian: apt-get, as root),
#                                       start it on 127.0.0.1:PORT with its files in DIR
#                                       (config, pid file, log, Unix socket); prints the broker URL
#   scripts/redis.sh stop DIR           stop the server of DIR (if it runs)
#
# Idempotent: a server already running from DIR is left running (its URL is printed again).
# Runs unattended (CI=true, no stdin).  Progress goes to stderr, the URL alone to stdout.  The
# server listens on 127.0.0.1 only, keeps nothing on disk (no RDB snapshots, no AOF) and runs in
# the background (daemonized) until `stop`.
#
# Exit status: 0 ready (or stopped); 77 Redis is not installed and cannot be installed here (not
# root, no apt-get, or apt-get failed): a test should skip; 2 usage; 1 anything else.
set -euo pipefail

SCRIPT=redis.sh
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

install_redis() {
    apt_install Redis redis-server redis-tools
}

# whether process $1 runs (exists and is not a zombie: a daemon's parent may never reap it)
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    [[ ${stat##*) } != Z* ]]
}

# the pid of the server DIR's pid file names, if that process is a running redis-server
running_pid() {
    local dir=$1 pid cmdline
    [[ -s $dir/redis.pid ]] || return 1
    pid=$(<"$dir/redis.pid")
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    alive "$pid" || return 1
    cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
    [[ $cmdline == *redis-server* ]] || return 1
    echo "$pid"
}

start() {
    local dir=$1 port=$2
    [[ $port =~ ^[0-9]+$ ]] || usage
    if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
        install_redis
        if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
            log "no redis-server or redis-cli found after installing Redis"
            exit 1
        fi
    fi
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd -P)
    if running_pid "$dir" >/dev/null; then
        port=$(awk '$1 == "port" {print $2}' "$dir/redis.conf")
        log "already running on 127.0.0.1:$port ($dir)"
    else
        log "starting on 127.0.0.1:$port ($(redis-server --version | cut -d' ' -f1-3), log $dir/redis.log)"
        # quoted values: DIR may hold spaces.  save "" and appendonly no: nothing is persisted
        cat > "$dir/redis.conf" <<EOF
bind 127.0.0.1
port $port
unixsocket "$dir/redis.sock"
unixsocketperm 700
daemonize yes
pidfile "$dir/redis.pid"
logfile "$dir/redis.log"
dir "$dir"
save ""
appendonly no
databases 16
EOF
        rm -f "$dir/redis.pid"
        if ! redis-server "$dir/redis.conf" </dev/null >&2; then
            tail -n 20 "$dir/redis.log" >&2 2>/dev/null || true
            exit 1
        fi
        local tries=0
        until [[ $(redis-cli -s "$dir/redis.sock" ping 2>/dev/null) == PONG ]]; do
            if (( ++tries > 100 )); then  # 10 s
                log "the server did not answer on $dir/redis.sock"
                tail -n 20 "$dir/redis.log" >&2 2>/dev/null || true
                exit 1
            fi
            sleep 0.1
        done
    fi
    echo "redis://127.0.0.1:$port/0"
}

stop() {
    local dir=$1 pid
    if ! pid=$(running_pid "$dir"); then
        # no pid file (or a stale one): a server may still answer on the socket
        if [[ -S $dir/redis.sock ]] && command -v redis-cli >/dev/null \
                && redis-cli -s "$dir/redis.sock" shutdown nosave >/dev/null 2>&1; then
            log "stopped ($dir, through its socket)"
        else
            log "not running ($dir)"
        fi
        return 0
    fi
    redis-cli -s "$dir/redis.sock" shutdown nosave >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
    local tries=0
    while alive "$pid"; do
        if (( ++tries > 100 )); then  # 10 s
            log "pid $pid did not stop: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
    done
    log "stopped ($dir)"
}

dispatch "$@"

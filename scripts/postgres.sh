#!/usr/bin/env bash
# A throw-away PostgreSQL server for tests (tests/test_scheduler.py): Airflow's metadata database.
#
#   scripts/postgres.sh [start] DIR PORT   install PostgreSQL if it is missing (Debian: apt-get, as
#                                          root), create a cluster in DIR/data, start it on
#                                          127.0.0.1:PORT, create role and database airflow
#                                          (password airflow); prints the SQLAlchemy URL
#   scripts/postgres.sh stop DIR           stop the server of DIR/data (if it runs)
#
# Idempotent: an existing cluster is reused and a running server is left running.  Runs
# unattended (CI=true, no stdin).  Progress goes to stderr, the URL alone to stdout.  The server
# listens on 127.0.0.1 only, and on a Unix socket in DIR (no /var/run/postgresql needed).
# Run as root, the server runs as the `postgres` user (initdb refuses root) and DIR is given to
# it, so DIR's parent folders must be searchable by that user (a folder made by mktemp -d in
# /tmp is; pytest's tmp_path, under a 0700 folder, is not).
#
# Exit status: 0 ready (or stopped); 77 PostgreSQL is not installed and cannot be installed
# here (not root, no apt-get, or apt-get failed): a test should skip; 2 usage; 1 anything else.
set -euo pipefail

SCRIPT=postgres.sh
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# the newest server installed: Debian keeps it in /usr/lib/postgresql/N/bin, others on PATH
server_bindir() {
    local dir
    dir=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
    if [[ -n $dir && -x $dir/pg_ctl && -x $dir/initdb && -x $dir/postgres ]]; then
        echo "$dir"
    elif command -v pg_ctl >/dev/null && command -v initdb >/dev/null && command -v postgres >/dev/null; then
        dirname "$(command -v pg_ctl)"
    fi
}

install_postgres() {
    # the package would also create and start a cluster "main" on port 5432: not wanted here
    if [[ $(id -u) -eq 0 ]]; then
        mkdir -p /etc/postgresql-common/createcluster.d
        echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/no-main-cluster.conf
    fi
    apt_install PostgreSQL postgresql
}

# run a server program as the cluster's owner: `postgres` when we are root, else ourselves
as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

start() {
    local dir=$1 port=$2
    [[ $port =~ ^[0-9]+$ ]] || usage
    local bindir
    bindir=$(server_bindir)
    if [[ -z $bindir ]]; then
        install_postgres
        bindir=$(server_bindir)
        [[ -n $bindir ]] || { log "no PostgreSQL server found after installing it"; exit 1; }
    fi
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd -P)
    local data=$dir/data
    if [[ $(id -u) -eq 0 ]]; then
        id postgres >/dev/null 2>&1 || { log "no 'postgres' user to run the server as"; exit 1; }
        chown postgres: "$dir"
        if ! runuser -u postgres -- test -w "$dir"; then
            log "$dir: the postgres user cannot reach it (a parent folder is not searchable)"
            exit 1
        fi
    fi
    if [[ ! -s $data/PG_VERSION ]]; then
        log "initdb $data ($("$bindir/postgres" --version))"
        # trust on the socket in DIR (only its owner can reach it), passwords over TCP
        as_owner "$bindir/initdb" -D "$data" -U postgres -E UTF8 --locale=C \
            --auth-local=trust --auth-host=scram-sha-256 >"$dir/initdb.log" 2>&1 \
            || { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    if as_owner "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        log "already running ($data)"
    else
        log "starting on 127.0.0.1:$port (log $dir/postgres.log)"
        # fsync off: a test database, thrown away afterwards; it makes Airflow's many commits cheap
        as_owner "$bindir/pg_ctl" -D "$data" -l "$dir/postgres.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $port -k '$dir' -c fsync=off \
                -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 -c unix_socket_permissions=0700" start >&2 \
            || { tail -n 20 "$dir/postgres.log" >&2; exit 1; }
    fi
    local psql=(as_owner "$bindir/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d postgres)
    "${psql[@]}" <<'SQL' >&2
DO $$BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'airflow') THEN
    CREATE ROLE airflow LOGIN PASSWORD 'airflow';
  END IF;
END$$;
SELECT 'CREATE DATABASE airflow OWNER airflow ENCODING ''UTF8'''
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'airflow')\gexec
SQL
    echo "postgresql+psycopg2://airflow:airflow@127.0.0.1:$port/airflow"
}

stop() {
    local dir=$1
    local data=$dir/data bindir
    bindir=$(server_bindir)
    if [[ -z $bindir || ! -s $data/PG_VERSION ]]; then
        log "no cluster in $data"
        return 0
    fi
    if as_owner "$bindir/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        as_owner "$bindir/pg_ctl" -D "$data" -m fast -w -t 60 stop >&2
    else
        log "not running ($data)"
    fi
}

dispatch "$@"

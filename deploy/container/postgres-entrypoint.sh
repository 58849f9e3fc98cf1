#!/bin/bash
# Entrypoint of the PostgreSQL stand-in image (deploy/container/Dockerfile.postgres): initialises
# PGDATA on first start (POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB, as the official image), then
# runs the server on all addresses, port PGPORT (default 5432), password authentication.
set -euo pipefail
user="${POSTGRES_USER:-postgres}"
db="${POSTGRES_DB:-$user}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    : "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
    pwfile="$(mktemp)"
    printf '%s' "$POSTGRES_PASSWORD" >"$pwfile"
    initdb -D "$PGDATA" -U "$user" --pwfile="$pwfile" --auth-local=trust --auth-host=scram-sha-256 >/dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    if [ "$db" != postgres ]; then
        pg_ctl -D "$PGDATA" -w -s -o "-c listen_addresses='' -k /tmp" start
        createdb -h /tmp -U "$user" "$db"
        pg_ctl -D "$PGDATA" -w -s -m fast stop
    fi
fi
if [ "${1:-postgres}" = postgres ]; then
    shift || true
    exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
fi
exec "$@"

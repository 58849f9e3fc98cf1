#!/usr/bin/env bash
# Make sure a PostgreSQL server answers on 127.0.0.1:5432 with trust auth for the `postgres` user,
# as the test suite expects. Idempotent: does nothing when it already answers.
#
#   scripts/ensure-postgres.sh            # start (and, on a bare Debian machine, install) PostgreSQL
#
# Override the target with NAT_TEST_PG_URL (then this script only checks that it answers).
set -euo pipefail

host=127.0.0.1
port=5432

answers() {
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h "$host" -p "$port"
    else
        (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
    fi
}

if [ -n "${NAT_TEST_PG_URL:-}" ]; then
    echo "ensure-postgres: using NAT_TEST_PG_URL (not managed here)"
    exit 0
fi

if answers; then
    echo "ensure-postgres: PostgreSQL answers on $host:$port"
    exit 0
fi

if ! command -v pg_ctlcluster >/dev/null 2>&1; then
    echo "ensure-postgres: PostgreSQL is not installed; installing Debian's postgresql package"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
fi

version=$(ls /etc/postgresql | sort -V | tail -n 1)
hba="/etc/postgresql/$version/main/pg_hba.conf"
# A test machine: local TCP connections from the loopback address are trusted.
if [ -f "$hba" ] && ! grep -qE '^host\s+all\s+all\s+127\.0\.0\.1/32\s+trust' "$hba"; then
    echo "ensure-postgres: enabling trust auth for 127.0.0.1 in $hba"
    sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
fi

echo "ensure-postgres: starting cluster $version/main"
pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
for _ in $(seq 1 30); do
    if answers; then
        echo "ensure-postgres: PostgreSQL answers on $host:$port"
        exit 0
    fi
    sleep 1
done
echo "ensure-postgres: PostgreSQL did not come up on $host:$port" >&2
exit 1

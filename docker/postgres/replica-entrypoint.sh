#!/bin/bash
# A shard's streaming replica: on first start, copies the primary ($PRIMARY_HOST) with
# pg_basebackup (-R writes standby.signal and primary_conninfo), then runs the image's own
# entrypoint, which starts PostgreSQL as a hot standby.
set -euo pipefail
: "${PRIMARY_HOST:?set PRIMARY_HOST to the primary's service name}"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    mkdir -p "$PGDATA"
    chown postgres:postgres "$PGDATA"
    chmod 700 "$PGDATA"
    until gosu postgres pg_isready -h "$PRIMARY_HOST" -p 5432 -U app -d app; do
        sleep 1
    done
    PGPASSWORD="$REPLICATION_PASSWORD" gosu postgres pg_basebackup \
        -h "$PRIMARY_HOST" -p 5432 -U replicator -D "$PGDATA" -R -X stream -P
fi
exec docker-entrypoint.sh "$@"

#!/usr/bin/env bash
# End-to-end benchmark of an online slot move (issue 12): `pgshard rebalance move` of the slots
# holding about half of pgbench_accounts (SCALE 20: 1M of 2M rows, ~130 MB) from shard s0 to an
# empty shard s1, while pgbench writers keep updating keys in the moving slots and in the other
# slots, and a loop keeps running a keyless `SELECT count(*)` through pgshard.
#
# The shards are two PostgreSQL 15 clusters on this machine (wal_level = logical, no replicas):
# database `pgbench` on the first (s0, all 4096 slots and the pgbench data) and `pgbench_s1` on
# the second (s1, same schema, empty pgbench_accounts, owns no slots). With TWO_SERVERS=0 both
# are databases of one cluster; the mover then cannot insert a slice's rows ahead of its hold
# (see README, "A whole move under writers"). The catalog is in s0's database.
#
# Measured, same run:
#   1. baseline: MOVING_CLIENTS writers on keys of the moving slots and OTHER_CLIENTS writers on
#      keys of other slots, DURATION seconds, no move;
#   2. the move (one copy, then cutovers of BATCH slots each) with the same writers running
#      throughout;
# and reported: the move's duration, rows and MB copied and MB/s (from the journal), each
# cutover's write hold (from the hold's request to the flip, when statements on the slots go on)
# as p50/p99/max, the latency of the
# writers' transactions on the moving keys (p50/p99/max, baseline against during the move: what
# waiting at the hold cost them), the other-slot writers' TPS during the move against the
# baseline, the writers' failed transactions, and the keyless count: reads, and how many were
# not the true count.
#
# Usage (as root, or as a user who can run initdb):  bash benches/rebalance.sh
# Knobs: SCALE (20), SLOTS (the slots to move, 0-2047), BATCH (slots per cutover, 64),
#        MOVING_CLIENTS (16), OTHER_CLIENTS (4), DURATION (baseline seconds, 20),
#        TWO_SERVERS (1: s1 on a second cluster; 0: a second database of the first),
#        MOVING_RATE / OTHER_RATE (each group's total transactions per second, 1000 / 300;
#        0: unthrottled), COUNTER (1: the keyless count loop runs during the move; 0: not),
#        PGBIN (/usr/lib/postgresql/15/bin), BENCH_OS_USER (pgshard_pg), PGSHARD (binary:
#        target/release/pgshard, built if missing).
# Prints a markdown report and writes it to bench-results/rebalance.md (logs in
# bench-results/rebalance-logs/).
set -euo pipefail

SCALE=${SCALE:-20}
SLOTS=${SLOTS:-0-2047}
BATCH=${BATCH:-64}
MOVING_CLIENTS=${MOVING_CLIENTS:-16}
OTHER_CLIENTS=${OTHER_CLIENTS:-4}
DURATION=${DURATION:-20}
TWO_SERVERS=${TWO_SERVERS:-1}
# Each writer group's total rate (pgbench -R, transactions per second; 0: as fast as they can).
# Throttled by default: on a machine where shards, pgshard, the mover and the writers share a
# few cores, unthrottled writers take the CPU the catch-up needs and the move never converges.
MOVING_RATE=${MOVING_RATE:-1000}
# 0: no keyless count loop during the move (to see what it costs the copy and the holds).
COUNTER=${COUNTER:-1}
OTHER_RATE=${OTHER_RATE:-300}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
BENCH_OS_USER=${BENCH_OS_USER:-pgshard_pg}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS=$ROOT/bench-results
LOGS=$RESULTS/rebalance-logs
PGSHARD=${PGSHARD:-$ROOT/target/release/pgshard}

log() { printf '[rebalance.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

[[ -x $PGBIN/initdb ]] || die "no PostgreSQL binaries in $PGBIN (set PGBIN)"
command -v pgbench >/dev/null || die "pgbench not on PATH (Debian: postgresql-client-15)"
if [[ ! -x $PGSHARD ]]; then
    log "building $PGSHARD"
    (cd "$ROOT" && cargo build --release --locked --bin pgshard) >&2
fi

WORK=$(mktemp -d /tmp/pgshard-rebalance-XXXXXX)
chmod 755 "$WORK"
PIDS=()
mkdir -p "$LOGS"
# The second cluster (TWO_SERVERS=1) is stopped first; bench_cleanup does the rest.
cleanup() {
    local rc=$?
    if [[ -n ${PGDATA2:-} ]]; then
        as_user "$PGBIN/pg_ctl" -D "$PGDATA2" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    (exit "$rc")
    bench_cleanup
}
trap cleanup EXIT INT TERM
setup_bench_user
if [[ $(id -u) -eq 0 ]]; then chown "$BENCH_OS_USER:" "$WORK"; fi

EXTRA_PG_CONF="wal_level = logical
max_replication_slots = 20
max_wal_senders = 20
max_wal_size = 4GB
autovacuum = off"
start_bench_cluster
psql_super -c "ALTER ROLE app REPLICATION"
if [[ $TWO_SERVERS == 1 ]]; then
    # s1: a second cluster, the same settings, pgbench's schema and no rows of pgbench_accounts.
    free_port S1_PORT
    PGDATA2=$WORK/data2
    mkdir -p "$WORK/s1"
    if [[ $(id -u) -eq 0 ]]; then chown "$BENCH_OS_USER:" "$WORK/s1"; fi
    as_user "$PGBIN/initdb" -D "$PGDATA2" -U postgres --auth-local=trust \
        --auth-host=scram-sha-256 --pwfile="$WORK/pwfile" -E UTF8 --locale=C --no-sync \
        >"$WORK/initdb2.log" 2>&1 || { cat "$WORK/initdb2.log" >&2; die "initdb of s1 failed"; }
    sed -e "s/^port = .*/port = $S1_PORT/" \
        -e "s|^unix_socket_directories = .*|unix_socket_directories = '$WORK/s1'|" \
        <(sed -n '/^# pgshard benchmark$/,$p' "$PGDATA/postgresql.conf") >>"$PGDATA2/postgresql.conf"
    as_user "$PGBIN/pg_ctl" -D "$PGDATA2" -l "$WORK/postgresql-s1.log" -w start >/dev/null ||
        { tail -n 30 "$WORK/postgresql-s1.log" >&2; die "the second cluster did not start"; }
    psql -X -q -v ON_ERROR_STOP=1 -h "$WORK/s1" -p "$S1_PORT" -U postgres -d postgres \
        -c "CREATE ROLE app LOGIN PASSWORD 'app' REPLICATION" \
        -c "CREATE DATABASE pgbench_s1 OWNER app"
    "$PGBIN/pg_dump" --schema-only --no-owner -p "$PG_PORT" -d pgbench |
        psql -X -q -v ON_ERROR_STOP=1 -p "$S1_PORT" -d pgbench_s1 >/dev/null
else
    S1_PORT=$PG_PORT
    psql_super -c "CREATE DATABASE pgbench_s1 OWNER app TEMPLATE pgbench"
    psql -X -q -p "$S1_PORT" -d pgbench_s1 -c "TRUNCATE pgbench_accounts"
fi
ACCOUNTS=$((SCALE * 100000))

free_port PROXY_PORT
CONFIG=$WORK/pgshard.toml
cat >"$CONFIG" <<EOC
[server]
listen = "127.0.0.1:$PROXY_PORT"
database = "pgbench"
pool_mode = "transaction"

[pool]
size = $((MOVING_CLIENTS + OTHER_CLIENTS + 4))
checkout_timeout_ms = 60000

[[users]]
name = "app"
password = "app"

[catalog]
poll_interval_ms = 500

[sharding]
key_column = "aid"
key_type = "integer"

[[sharding.tables]]
name = "pgbench_accounts"

[[shards]]
name = "s0"
primary = "127.0.0.1:$PG_PORT"
database = "pgbench"
slots = "0-4095"

[[shards]]
name = "s1"
primary = "127.0.0.1:$S1_PORT"
database = "pgbench_s1"
slots = ""
EOC

# Which keys are in the moving slots: the router's own hash, through `pgshard locate`.
log "placing $ACCOUNTS keys by slot"
FIRST=${SLOTS%-*}
LAST=${SLOTS#*-}
seq 1 "$ACCOUNTS" | "$PGSHARD" locate --config "$CONFIG" --stdin --type integer |
    awk -v a="$FIRST" -v b="$LAST" -v m="$WORK/moving.keys" -v o="$WORK/other.keys" \
        '$2 >= a && $2 <= b { print $1 > m; next } { print $1 > o }'
MOVING_KEYS=$(wc -l <"$WORK/moving.keys")
OTHER_KEYS=$(wc -l <"$WORK/other.keys")
log "$MOVING_KEYS keys in slots $SLOTS, $OTHER_KEYS in others"
# Key lists as unsharded tables (on the default shard, s0): writers pick a random row of one.
psql -X -q -p "$PG_PORT" -d pgbench \
    -c "CREATE TABLE keys_moving (i serial PRIMARY KEY, aid int NOT NULL)" \
    -c "CREATE TABLE keys_other (i serial PRIMARY KEY, aid int NOT NULL)" \
    -c "\\copy keys_moving (aid) FROM '$WORK/moving.keys'" \
    -c "\\copy keys_other (aid) FROM '$WORK/other.keys'" \
    -c "VACUUM ANALYZE keys_moving" -c "VACUUM ANALYZE keys_other" -c "VACUUM ANALYZE pgbench_accounts"

for kind in moving other; do
    n=$MOVING_KEYS
    [[ $kind == other ]] && n=$OTHER_KEYS
    cat >"$WORK/$kind.sql" <<EOS
\\set i random(1, $n)
\\set delta random(-5000, 5000)
SELECT aid FROM keys_$kind WHERE i = :i \\gset
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
END;
EOS
done

NO_COLOR=1 "$PGSHARD" serve --config "$CONFIG" >>"$LOGS/pgshard.log" 2>&1 &
PIDS+=("$!")
wait_port "$PROXY_PORT" pgshard
PROXY="-h 127.0.0.1 -p $PROXY_PORT pgbench"

# writers KIND CLIENTS SECONDS TAG: pgbench through pgshard, per-transaction log in $WORK/TAG.*
writers() {
    local rate=$MOVING_RATE throttle=()
    [[ $1 == other ]] && rate=$OTHER_RATE
    if ((rate > 0)); then throttle=(-R "$rate"); fi
    pgbench -n -M extended -c "$2" -j 2 -T "$3" -f "$WORK/$1.sql" -l "${throttle[@]}" \
        --log-prefix="$WORK/$4" $PROXY >"$WORK/$4.out" 2>&1
}
# writers_until_stop KIND CLIENTS TAG: writers in runs of 5 s until $WORK/stop exists (each run
# exits normally, so its logs are complete).
writers_until_stop() {
    local i=0
    while [[ ! -e $WORK/stop ]]; do
        writers "$1" "$2" 5 "$3_$i" || true
        i=$((i + 1))
    done
}
tps_of() { awk '/^tps = / { printf "%.0f", $3 }' "$WORK/$1.out"; }
# failed TAG...: transactions pgbench reported failed, and clients it reported aborted.
failed() {
    cat "$@" | awk '/number of failed transactions:/ { n += $5 } /aborted/ { n++ } END { print n + 0 }'
}
# latencies TAG: p50 p99 max of the per-transaction latency logs, in ms.
latencies() {
    cat "$WORK/$1".[0-9]* 2>/dev/null | awk '{ print $3 / 1000 }' | sort -n |
        awk '{ v[NR] = $1 } END { if (NR == 0) { print "- - -"; exit }
            printf "%.1f %.1f %.1f", v[int(NR * 0.5) + 1], v[int(NR * 0.99) + 1], v[NR] }'
}

# The keyless count, in a loop until $WORK/stop exists: reads and wrong reads.
counter() {
    local reads=0 wrong=0 got
    while [[ $COUNTER == 1 && ! -e $WORK/stop ]]; do
        got=$(psql -X -qAt $PROXY -c "SELECT count(*) FROM pgbench_accounts" 2>&1) || got="error: $got"
        reads=$((reads + 1))
        if [[ $got != "$ACCOUNTS" ]]; then
            wrong=$((wrong + 1))
            echo "$got" >>"$LOGS/wrong-counts.log"
        fi
    done
    echo "$reads $wrong" >"$WORK/counter.out"
}

log "baseline: $MOVING_CLIENTS writers on moving keys, $OTHER_CLIENTS on others, ${DURATION}s"
writers moving "$MOVING_CLIENTS" "$DURATION" base_moving &
w1=$!
writers other "$OTHER_CLIENTS" "$DURATION" base_other &
w2=$!
wait "$w1" "$w2"

log "moving slots $SLOTS to s1 (batch $BATCH) under the same writers"
rm -f "$WORK/stop"
counter &
cpid=$!
writers_until_stop moving "$MOVING_CLIENTS" move_moving &
m1=$!
writers_until_stop other "$OTHER_CLIENTS" move_other &
m2=$!
sleep 2
start=$(date +%s.%N)
"$PGSHARD" rebalance move --config "$CONFIG" --slots "$SLOTS" --to s1 --batch "$BATCH" \
    >"$LOGS/move.out" 2>"$LOGS/move.err" || { tail "$LOGS/move.err" >&2; die "the move failed"; }
end=$(date +%s.%N)
sleep 2
touch "$WORK/stop"
wait "$m1" "$m2" "$cpid"
MOVE_S=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }')

# The writers ran before and after the move too: their logs give the move's window exactly.
window_tps() { # TAG: transactions that started between start and end, per second
    cat "$WORK/$1"_*.[0-9]* 2>/dev/null | awk -v a="$start" -v b="$end" \
        '{ t = $5 + $6 / 1e6; if (t >= a && t <= b) n++ } END { printf "%.0f", n / (b - a) }'
}
window_latencies() {
    cat "$WORK/$1"_*.[0-9]* 2>/dev/null | awk -v a="$start" -v b="$end" \
        '{ t = $5 + $6 / 1e6; if (t >= a && t <= b) print $3 / 1000 }' | sort -n |
        awk '{ v[NR] = $1 } END { if (NR == 0) { print "- - -"; exit }
            printf "%.1f %.1f %.1f", v[int(NR * 0.5) + 1], v[int(NR * 0.99) + 1], v[NR] }'
}

read -r reads wrong <"$WORK/counter.out"
holds=$(psql -X -qAt -p "$PG_PORT" -d pgbench -c \
    "SELECT s.hold_ms FROM pgshard.move_slices s JOIN pgshard.moves m USING (move_id)
     WHERE m.step = 'done' ORDER BY s.hold_ms" )
HOLDS=$(echo "$holds" | awk 'NF { v[++n] = $1 } END { if (n == 0) { print "- - - 0"; exit }
    printf "%.0f %.0f %.0f %d", v[int(n * 0.5) + 1], v[int(n * 0.99) + 1], v[n], n }')
read -r hold_p50 hold_p99 hold_max slices <<<"$HOLDS"
read -r rows mb copy_s <<<"$(psql -X -qAt -F ' ' -p "$PG_PORT" -d pgbench -c \
    "SELECT sum(rows_copied), round(sum(bytes_copied) / 1e6, 1), round(sum(copy_seconds)::numeric, 1) FROM pgshard.moves WHERE step = 'done'")"
read -r b50 b99 bmax <<<"$(latencies base_moving)"
read -r d50 d99 dmax <<<"$(window_latencies move_moving)"
read -r ob50 ob99 obmax <<<"$(latencies base_other)"
read -r od50 od99 odmax <<<"$(window_latencies move_other)"
base_other=$(tps_of base_other)
move_other=$(window_tps move_other)
failed=$(failed "$WORK"/move_*.out)
on_s1=$(psql -X -qAt -p "$S1_PORT" -d pgbench_s1 -c "SELECT count(*) FROM pgbench_accounts")

COUNTED=", and a loop runs \`SELECT count(*) FROM pgbench_accounts\` through pgshard"
[[ $COUNTER == 1 ]] || COUNTED=" (no keyless count loop: COUNTER=0)"
report=$(cat <<EOR
## benches/rebalance.sh ($(date -u +%Y-%m-%d), scale $SCALE, $(nproc) cores)

Shards: $([[ $TWO_SERVERS == 1 ]] && echo "two PostgreSQL clusters (s0 :$PG_PORT, s1 :$S1_PORT)" || echo "two databases of one PostgreSQL cluster").

Move of slots $SLOTS ($MOVING_KEYS of $ACCOUNTS pgbench_accounts rows) from s0 to an empty s1, \
copied once and cut over $BATCH slots at a time, while $MOVING_CLIENTS writers update keys in those slots and \
$OTHER_CLIENTS update keys in other slots (BEGIN; UPDATE; SELECT; END; at $MOVING_RATE and \
$OTHER_RATE transactions per second in all, 0 = unthrottled)$COUNTED.

| measure | value |
|---|---|
| move: wall time | ${MOVE_S} s, $slices cutovers |
| rows copied, MB, copy MB/s | $rows, $mb MB, $(awk -v m="$mb" -v s="$copy_s" 'BEGIN { if (s > 0) printf "%.1f", m / s; else print "-" }') MB/s (copy steps only, $copy_s s) |
| rows on s1 afterwards | $on_s1 (expected $MOVING_KEYS) |
| write hold per cutover (hold requested to slots released at the flip) p50 / p99 / max | $hold_p50 / $hold_p99 / $hold_max ms |
| moving-key writers' transaction latency p50 / p99 / max, baseline | $b50 / $b99 / $bmax ms |
| same, during the move (waits at the hold included) | $d50 / $d99 / $dmax ms |
| other-slot writers' latency p50 / p99 / max: baseline; during the move | $ob50 / $ob99 / $obmax ms; $od50 / $od99 / $odmax ms |
| other-slot writers' TPS: baseline, during the move, ratio | $base_other, $move_other, $(awk -v a="$move_other" -v b="$base_other" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }') |
| writers' failed transactions during the move | $failed |
| keyless count during the move: reads, wrong | $reads, $wrong |
EOR
)
echo "$report"
mkdir -p "$RESULTS"
echo "$report" >"$RESULTS/rebalance.md"
cp "$WORK"/*.out "$LOGS/" 2>/dev/null || true

#!/usr/bin/env bash
# What reading one's own writes costs: one shard (a PostgreSQL 15 primary and a streaming
# replica, reads from the replica) behind two pgshard processes, one with
# `sharding.read_your_writes` on (the default) and one with it off, measured in alternating runs
# of the same pgbench workloads:
#   - `select-only`: pgbench -S, no writes (the feature must cost nothing);
#   - `mixed`: 90% pgbench -S transactions, 10% single UPDATEs of a random account
#     (`-b select-only@9 -f update.sql@1`): after each write, that client's reads go to the
#     primary until the replica is seen to have replayed the write; `mixed-1%`: 1% UPDATEs;
#   - `write-read`: every transaction UPDATEs an account, then reads it back (as two statements,
#     outside a transaction), the worst case.
# For each run: tps, pgshard's CPU per transaction (user + system time from /proc), the share of
# transactions the replica ran (pg_stat_database.xact_commit on each server), and how many reads
# of `write-read` missed the client's own write (a stale balance), and the replica's replay lag
# halfway through.
#
# Usage (as root, or as a user who can run PostgreSQL): bash benches/read_your_writes.sh
# Knobs: DURATION (s per run, 10), REPEAT (alternating runs per cell, median reported, 3),
#        CLIENTS (16), SCALE (10), POOL_SIZE (20), PGBIN (/usr/lib/postgresql/15/bin),
#        BENCH_OS_USER (pgshard_pg), WORKLOADS ("select-only mixed-1% mixed write-read"),
#        PROTOCOLS ("simple prepared"), INTERVAL (sharding.replay_check_interval_ms, 10).
# Writes a markdown table to bench-results/read_your_writes.md (logs in bench-results/ryw-logs/).
set -euo pipefail

DURATION=${DURATION:-10}
REPEAT=${REPEAT:-3}
CLIENTS=${CLIENTS:-16}
SCALE=${SCALE:-10}
POOL_SIZE=${POOL_SIZE:-20}
INTERVAL=${INTERVAL:-10}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
BENCH_OS_USER=${BENCH_OS_USER:-pgshard_pg}
read -r -a WORKLOADS <<<"${WORKLOADS:-select-only mixed-1% mixed write-read}"
read -r -a PROTOCOLS <<<"${PROTOCOLS:-simple prepared}"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS=$ROOT/bench-results
CLK_TCK=$(getconf CLK_TCK)

log() { printf '[read_your_writes.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ -x $PGBIN/initdb ]] || die "no PostgreSQL binaries in $PGBIN (set PGBIN)"
command -v pgbench >/dev/null || die "pgbench not on PATH (Debian: postgresql-client-15)"

if [[ $(id -u) -eq 0 ]]; then
    id -u "$BENCH_OS_USER" >/dev/null 2>&1 ||
        useradd --system --no-create-home --shell /usr/sbin/nologin "$BENCH_OS_USER" ||
        die "cannot create OS user $BENCH_OS_USER"
    as_user() { runuser -u "$BENCH_OS_USER" -- "$@"; }
else
    as_user() { "$@"; }
fi

WORK=$(mktemp -d /tmp/pgshard-ryw.XXXXXX)
chmod 755 "$WORK"
if [[ $(id -u) -eq 0 ]]; then chown "$BENCH_OS_USER:" "$WORK"; fi
PIDS=()
UP=()

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    for dir in "${UP[@]}"; do
        as_user "$PGBIN/pg_ctl" -D "$dir" -m immediate -w stop >/dev/null 2>&1 || true
    done
    rm -rf "$RESULTS/ryw-logs"
    mkdir -p "$RESULTS/ryw-logs"
    cp "$WORK"/*.log "$WORK"/*.out "$WORK"/*.err "$RESULTS/ryw-logs/" 2>/dev/null || true
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

cd "$ROOT"
log "building (cargo build --release)"
cargo build --release --quiet
PGSHARD=$ROOT/target/release/pgshard

# ---------------------------------------------------------------------------------------------
# A primary and a streaming replica
# ---------------------------------------------------------------------------------------------

free_port PRIMARY_PORT
free_port REPLICA_PORT
PRIMARY=$WORK/primary
REPLICA=$WORK/replica
echo postgres >"$WORK/pwfile"
if [[ $(id -u) -eq 0 ]]; then chown "$BENCH_OS_USER:" "$WORK/pwfile"; fi
as_user "$PGBIN/initdb" -D "$PRIMARY" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    --pwfile="$WORK/pwfile" -E UTF8 --locale=C --no-sync >"$WORK/initdb.log" 2>&1 ||
    { cat "$WORK/initdb.log" >&2; die "initdb failed"; }
# fsync off as in benches/pgbench.sh; synchronous_commit stays on (the default): with it off a
# commit reaches the replica only after the WAL writer's next flush (up to 200 ms later).
cat >>"$PRIMARY/postgresql.conf" <<EOF

# pgshard read-your-writes benchmark
port = $PRIMARY_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK'
max_connections = 400
fsync = off
full_page_writes = off
shared_buffers = 128MB
password_encryption = 'scram-sha-256'
EOF
echo "host replication postgres 127.0.0.1/32 scram-sha-256" >>"$PRIMARY/pg_hba.conf"
as_user "$PGBIN/pg_ctl" -D "$PRIMARY" -l "$WORK/primary.log" -w start >/dev/null ||
    { tail -n 30 "$WORK/primary.log" >&2; die "the primary did not start"; }
UP+=("$PRIMARY")
as_user env PGPASSWORD=postgres "$PGBIN/pg_basebackup" -h 127.0.0.1 -p "$PRIMARY_PORT" \
    -U postgres -D "$REPLICA" -R -X stream >"$WORK/basebackup.log" 2>&1 ||
    { cat "$WORK/basebackup.log" >&2; die "pg_basebackup failed"; }
cat >>"$REPLICA/postgresql.conf" <<EOF
port = $REPLICA_PORT
EOF
as_user "$PGBIN/pg_ctl" -D "$REPLICA" -l "$WORK/replica.log" -w start >/dev/null ||
    { tail -n 30 "$WORK/replica.log" >&2; die "the replica did not start"; }
UP+=("$REPLICA")

psql_at() { # port database sql...
    local port=$1 db=$2
    shift 2
    PGPASSWORD=postgres psql -X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" \
        -U postgres -d "$db" "$@"
}
psql_at "$PRIMARY_PORT" postgres -c "CREATE ROLE app LOGIN PASSWORD 'app'" \
    -c "CREATE DATABASE pgbench OWNER app"
export PGUSER=app PGPASSWORD=app PGHOST=127.0.0.1
log "pgbench -i -s $SCALE"
pgbench -i -q -s "$SCALE" -p "$PRIMARY_PORT" pgbench >"$WORK/pgbench-init.log" 2>&1 ||
    { cat "$WORK/pgbench-init.log" >&2; die "pgbench -i failed"; }
caught_up() {
    local want
    want=$(psql_at "$PRIMARY_PORT" postgres -c "SELECT pg_current_wal_lsn()")
    for _ in $(seq 1 600); do
        [[ $(psql_at "$REPLICA_PORT" postgres -c "SELECT pg_last_wal_replay_lsn() >= '$want'") == t ]] &&
            return 0
        sleep 0.1
    done
    die "the replica did not catch up"
}
caught_up

# ---------------------------------------------------------------------------------------------
# The two proxies
# ---------------------------------------------------------------------------------------------

# start_pgshard NAME PORT READ_YOUR_WRITES: sets PGSHARD_PID.
start_pgshard() {
    cat >"$WORK/$1.toml" <<EOF
[server]
listen = "127.0.0.1:$2"
database = "pgbench"
pool_mode = "transaction"

[pool]
size = $POOL_SIZE
checkout_timeout_ms = 30000

[[users]]
name = "app"
password = "app"

[sharding]
read_your_writes = $3
replay_check_interval_ms = $INTERVAL

[[shards]]
name = "s0"
primary = "127.0.0.1:$PRIMARY_PORT"
replicas = ["127.0.0.1:$REPLICA_PORT"]
EOF
    NO_COLOR=1 "$PGSHARD" serve --config "$WORK/$1.toml" >>"$WORK/$1.log" 2>&1 &
    PGSHARD_PID=$!
    PIDS+=("$PGSHARD_PID")
    wait_port "$2" "pgshard ($1)"
}
free_port ON_PORT
free_port OFF_PORT
start_pgshard on "$ON_PORT" true
ON_PID=$PGSHARD_PID
start_pgshard off "$OFF_PORT" false
OFF_PID=$PGSHARD_PID
log "primary :$PRIMARY_PORT, replica :$REPLICA_PORT, pgshard on :$ON_PORT (pid $ON_PID), off :$OFF_PORT (pid $OFF_PID)"

cat >"$WORK/update.sql" <<'EOF'
\set aid random(1, 100000 * :scale)
\set delta random(-5000, 5000)
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
EOF
# The read checks its own write: each client updates accounts of its own (so no other client
# changes them in between), and a balance read back that is not the one the UPDATE returned is
# counted in the sequence ryw_stale (nextval: a volatile call, so it runs on the primary).
cat >"$WORK/write-read.sql" <<'EOF'
\set aid 1 + :client_id * 10000 + random(0, 9999)
\set delta random(-5000, 5000)
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid RETURNING abalance AS written
\gset
SELECT abalance AS seen FROM pgbench_accounts WHERE aid = :aid
\gset
\if :written != :seen
SELECT nextval('ryw_stale');
\endif
EOF
psql_at "$PRIMARY_PORT" pgbench -c "CREATE SEQUENCE ryw_stale" -c "ALTER SEQUENCE ryw_stale OWNER TO app"
stale_count() {
    psql_at "$PRIMARY_PORT" pgbench -c "SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM ryw_stale"
}

workload_args() {
    case $1 in
    select-only) echo "-S" ;;
    mixed) echo "-b select-only@9 -f $WORK/update.sql@1" ;;
    mixed-1%) echo "-b select-only@99 -f $WORK/update.sql@1" ;;
    write-read) echo "-f $WORK/write-read.sql" ;;
    esac
}

# "utime stime" of a process, in clock ticks.
proc_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
replica_xacts() { psql_at "$REPLICA_PORT" postgres -c "SELECT xact_commit FROM pg_stat_database WHERE datname = 'pgbench'"; }
primary_xacts() { psql_at "$PRIMARY_PORT" postgres -c "SELECT xact_commit FROM pg_stat_database WHERE datname = 'pgbench'"; }

declare -A TPS CPU REPLICA_SHARE STALE LAG
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# run KEY MODE PORT PID WORKLOAD PROTOCOL: one pgbench run; its tps, pgshard's CPU per
# transaction, the replica's share of the transactions and the stale reads counted.
run() {
    local key=$1 port=$3 pid=$4 workload=$5 proto=$6
    local out=$WORK/${key//\//-}.out err=$WORK/${key//\//-}.err
    local t0 r0 p0 s0 t1 r1 p1 s1 txns
    # shellcheck disable=SC2046
    t0=$(proc_ticks "$pid") r0=$(replica_xacts) p0=$(primary_xacts) s0=$(stale_count)
    # The replica's replay lag halfway through the run (pg_stat_replication.replay_lag).
    (sleep $((DURATION / 2)) && psql_at "$PRIMARY_PORT" postgres \
        -c "SELECT coalesce(round(extract(epoch FROM replay_lag) * 1000, 1)::text, '0') FROM pg_stat_replication" \
        >"$WORK/lag.out" 2>/dev/null) &
    local lag_pid=$!
    # shellcheck disable=SC2046
    pgbench -n $(workload_args "$workload") -M "$proto" -c "$CLIENTS" -j 2 -T "$DURATION" \
        -p "$port" pgbench >"$out" 2>"$err" || true
    wait "$lag_pid" || true
    LAG[$key]=$(head -n1 "$WORK/lag.out")
    t1=$(proc_ticks "$pid") r1=$(replica_xacts) p1=$(primary_xacts) s1=$(stale_count)
    TPS[$key]=$(sed -nE 's/^tps = ([0-9.]+).*/\1/p' "$out" | head -n1)
    txns=$(sed -nE 's/^number of transactions actually processed: ([0-9]+).*/\1/p' "$out" | head -n1)
    STALE[$key]=$((s1 - s0))
    CPU[$key]=$(awk -v t="$((t1 - t0))" -v hz="$CLK_TCK" -v n="${txns:-0}" \
        'BEGIN { if (n > 0) printf "%.1f", t * 1e6 / hz / n; else print "n/a" }')
    REPLICA_SHARE[$key]=$(awk -v r="$((r1 - r0))" -v p="$((p1 - p0))" \
        'BEGIN { if (r + p > 0) printf "%.0f%%", 100 * r / (r + p); else print "n/a" }')
    log "$key: tps ${TPS[$key]:-?}, pgshard CPU ${CPU[$key]} µs/txn, replica ran ${REPLICA_SHARE[$key]}, stale reads ${STALE[$key]}, replay lag ${LAG[$key]:-?} ms"
    caught_up
    sleep 1
}

for workload in "${WORKLOADS[@]}"; do
    for proto in "${PROTOCOLS[@]}"; do
        for r in $(seq 1 "$REPEAT"); do
            # Alternate which mode runs first.
            if ((r % 2)); then order=(on off); else order=(off on); fi
            for mode in "${order[@]}"; do
                if [[ $mode == on ]]; then port=$ON_PORT pid=$ON_PID; else port=$OFF_PORT pid=$OFF_PID; fi
                run "$workload/$proto/$mode#$r" "$mode" "$port" "$pid" "$workload" "$proto"
            done
        done
    done
done

# median_run KEY: the number of the run of KEY with the median tps.
median_run() {
    local key=$1
    for r in $(seq 1 "$REPEAT"); do echo "${TPS[$key#$r]:-0} $r"; done |
        sort -n | sed -n "$(((REPEAT + 1) / 2))p" | cut -d' ' -f2
}

OUT=$RESULTS/read_your_writes.md
mkdir -p "$RESULTS"
{
    echo "Run of $(date -u '+%Y-%m-%d %H:%M') UTC, commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?'),"
    echo "$(nproc) cores, load average before $LOAD_BEFORE; pgbench -c $CLIENTS -j 2 -T $DURATION, scale $SCALE;"
    echo "replay_check_interval_ms = $INTERVAL;"
    echo "medians (by tps) of $REPEAT alternating runs."
    echo
    echo "| workload | protocol | on: tps | off: tps | on/off | on: µs CPU/txn | off: µs CPU/txn | on: replica share | off: replica share | stale reads on / off | replay lag on / off (ms) |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
    for workload in "${WORKLOADS[@]}"; do
        for proto in "${PROTOCOLS[@]}"; do
            on=$(median_run "$workload/$proto/on") off=$(median_run "$workload/$proto/off")
            kon="$workload/$proto/on#$on" koff="$workload/$proto/off#$off"
            stale_on=0 stale_off=0
            for r in $(seq 1 "$REPEAT"); do
                stale_on=$((stale_on + STALE[$workload/$proto/on#$r]))
                stale_off=$((stale_off + STALE[$workload/$proto/off#$r]))
            done
            ratio=$(awk -v a="${TPS[$kon]:-0}" -v b="${TPS[$koff]:-0}" 'BEGIN { if (b > 0) printf "%.2f×", a / b; else print "n/a" }')
            echo "| $workload | $proto | ${TPS[$kon]%.*} | ${TPS[$koff]%.*} | $ratio | ${CPU[$kon]} | ${CPU[$koff]} | ${REPLICA_SHARE[$kon]} | ${REPLICA_SHARE[$koff]} | $stale_on / $stale_off | ${LAG[$kon]:-?} / ${LAG[$koff]:-?} |"
        done
    done
} | tee "$OUT"
log "written to $OUT"

#!/usr/bin/env bash
# End-to-end benchmark: pgbench select-only directly against PostgreSQL, through PgBouncer and
# through pgshard, in one run against the same throw-away cluster; then pgshard with routing on
# (two shards, every statement parsed and routed by aid) against pgshard with routing off (one
# shard, statements forwarded unparsed); then the resident memory of 2,000 idle client connections.
#
# Usage (as root on a fresh machine, or as a user who already has pgbouncer installed):
#   DURATION=15 bash benches/pgbench.sh
# Knobs: DURATION (s per pgbench run, 15), REPEAT (runs per cell, median reported, 1), SCALE (pgbench -i -s, 10), POOL_SIZE (20),
#        IDLE_CLIENTS (2000), PGBIN (/usr/lib/postgresql/15/bin), BENCH_OS_USER (pgshard_pg),
#        PGSHARD_THREADS (pgshard serve --threads; default one worker per core),
#        ROUTING (1; 0 skips the routing on/off comparison of issue 3),
#        PROTOCOLS ("simple prepared"), IDLE (1; 0 skips the idle-client memory run),
#        SYSCALLS (1: system calls per transaction of each proxy under strace, 4 clients, simple;
#        0 skips it),
#        BASELINE_BIN (a pgshard binary of another build, e.g. the commit before a change: it runs
#        as a fourth target in the same rotation, and a before/after table is added),
#        METRICS (1: the pgshard target serves [metrics] on a free port, so its numbers include
#        recording the metrics; 0 by default),
#        CONNECT (1: also `pgbench -S -C -c 16`, a new connection and SCRAM login per
#        transaction, against every target; 0 skips it),
#        PGSHARD_SERVER_TOML (lines added to the [server] section of the pgshard target only,
#        not the baseline's, e.g. 'listen_backlog = 8192'),
#        FLOORS (1: two floors, benches/floor.rs, join the simple-protocol rotation: pgshard's
#        transport and runtime without its session, and one mio loop as PgBouncer's; 0 skips),
#        FORWARDER (1: PgBouncer in session mode, each client on a server connection of its own
#        and its bytes forwarded with no pooling work, joins the 16-client rotations of both
#        protocols: what forwarding alone costs, the reference for the prepared bar; 0 skips).
# Prints markdown tables and writes them to bench-results/latest.md (logs in bench-results/logs/).
set -euo pipefail

DURATION=${DURATION:-15}
REPEAT=${REPEAT:-1}
SCALE=${SCALE:-10}
POOL_SIZE=${POOL_SIZE:-20}
IDLE_CLIENTS=${IDLE_CLIENTS:-2000}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
BENCH_OS_USER=${BENCH_OS_USER:-pgshard_pg}
PGSHARD_THREADS=${PGSHARD_THREADS:-}
ROUTING=${ROUTING:-1}
IDLE=${IDLE:-1}
SYSCALLS=${SYSCALLS:-1}
BASELINE_BIN=${BASELINE_BIN:-}
METRICS=${METRICS:-0}
CONNECT=${CONNECT:-1}
PGSHARD_SERVER_TOML=${PGSHARD_SERVER_TOML:-}
FLOORS=${FLOORS:-1}
FORWARDER=${FORWARDER:-1}
CLIENT_COUNTS=(16 200)
read -r -a PROTOCOLS <<<"${PROTOCOLS:-simple prepared}"
TARGETS=(direct pgbouncer pgshard)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS=$ROOT/bench-results
CLK_TCK=$(getconf CLK_TCK)

log() { printf '[pgbench.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------
# Prerequisites
# ---------------------------------------------------------------------------------------------

[[ -x $PGBIN/initdb ]] || die "no PostgreSQL binaries in $PGBIN (set PGBIN)"
command -v pgbench >/dev/null || die "pgbench not on PATH (Debian: postgresql-client-15)"
if [[ ${SYSCALLS:-1} -eq 1 ]] && ! command -v strace >/dev/null; then
    [[ $(id -u) -eq 0 ]] || die "strace is not installed (SYSCALLS=0 skips the system-call count)"
    apt-get install -y -qq strace >&2 || { apt-get update -qq >&2 && apt-get install -y -qq strace >&2; }
fi

# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"
find_pgbouncer
setup_bench_user
# 2,000 idle clients plus 3,000 allowed PgBouncer clients need file descriptors.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# ---------------------------------------------------------------------------------------------
# Cleanup: whatever was started is stopped, the work directory removed, logs kept.
# ---------------------------------------------------------------------------------------------

WORK=$(mktemp -d /tmp/pgshard-bench.XXXXXX)
chmod 755 "$WORK"
if [[ $(id -u) -eq 0 ]]; then chown "$BENCH_OS_USER:" "$WORK"; fi
PIDS=()          # processes we started directly (pgshard, idle clients)
CLUSTER_UP=0
trap bench_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------------

cd "$ROOT"
log "building (cargo build --release, idle_clients bench binary)"
cargo build --release --quiet
PGSHARD=$ROOT/target/release/pgshard
IDLE_BIN=$(cargo bench --quiet --no-run --bench idle_clients --message-format=json 2>/dev/null |
    grep -o '"executable":"[^"]*idle_clients[^"]*"' | tail -n1 | cut -d'"' -f4)
[[ -x $IDLE_BIN ]] || die "could not build benches/idle_clients.rs"
if [[ $FLOORS -eq 1 ]]; then
    FLOOR_BIN=$(cargo bench --quiet --no-run --bench floor --message-format=json 2>/dev/null |
        grep -o '"executable":"[^"]*floor[^"]*"' | tail -n1 | cut -d'"' -f4)
    [[ -x $FLOOR_BIN ]] || die "could not build benches/floor.rs"
fi

# ---------------------------------------------------------------------------------------------
# PostgreSQL 15: a throw-away cluster
# ---------------------------------------------------------------------------------------------

TWO_SHARD_DBS=$ROUTING start_bench_cluster

# ---------------------------------------------------------------------------------------------
# The proxies
# ---------------------------------------------------------------------------------------------

if [[ $ROUTING -eq 1 ]]; then
    # Each shard keeps only its own accounts, compacted, so the two shards together hold the
    # same data as the one database of the routing-off run, not twice as much.
    LOCATE_CFG=$WORK/locate.toml
    {
        printf '[server]\nlisten = "127.0.0.1:0"\ndatabase = "pgbench"\n\n'
        printf '[[users]]\nname = "app"\npassword = "app"\n\n'
        echo "$TWO_SHARDS"
    } >"$LOCATE_CFG"
    log "keeping each shard's own accounts (pgshard locate --stdin over $((SCALE * 100000)) aids)"
    seq 1 $((SCALE * 100000)) | "$PGSHARD" locate --config "$LOCATE_CFG" --stdin >"$WORK/aid-shards.tsv"
    for s in 0 1; do
        awk -F'\t' -v shard="s$s" '$3 == shard {print $1}' "$WORK/aid-shards.tsv" >"$WORK/aids-s$s.txt"
        psql -X -q -v ON_ERROR_STOP=1 -h "$WORK" -p "$PG_PORT" -U postgres -d "pgbench_s$s" \
            -c "CREATE TEMP TABLE keep (aid int PRIMARY KEY)" \
            -c "\\copy keep FROM '$WORK/aids-s$s.txt'" \
            -c "DELETE FROM pgbench_accounts a WHERE NOT EXISTS (SELECT 1 FROM keep k WHERE k.aid = a.aid)" \
            -c "VACUUM FULL ANALYZE pgbench_accounts"
    done
fi

free_port BOUNCER_PORT
free_port SHARD_PORT
start_pgshard pgshard "$SHARD_PORT" "$POOL_SIZE" "$ONE_SHARD" "$PGSHARD" "$PGSHARD_SERVER_TOML"
MAIN_SHARD_PID=$PGSHARD_PID
start_pgbouncer
log "PostgreSQL :$PG_PORT, PgBouncer :$BOUNCER_PORT (pid $BOUNCER_PID), pgshard :$SHARD_PORT (pid $MAIN_SHARD_PID)"

# The floors (simple protocol only: they forward prepared statements to whichever connection).
FLOOR_TARGETS=()
declare -A FLOOR_PORT FLOOR_PID
if [[ $FLOORS -eq 1 ]]; then
    for mode in tokio mio; do
        free_port port
        # Its own session, as PgBouncer's and pgshard's (benches/lib.sh, start_pgshard).
        FLOOR_MODE=$mode LISTEN=127.0.0.1:$port SERVER=127.0.0.1:$PG_PORT POOL=$POOL_SIZE \
            setsid "$FLOOR_BIN" >>"$WORK/floor-$mode.log" 2>&1 &
        FLOOR_PID[floor_$mode]=$! FLOOR_PORT[floor_$mode]=$port
        PIDS+=("$!")
        wait_port "$port" "floor ($mode)"
        FLOOR_TARGETS+=("floor_$mode")
    done
    log "floors: tokio :${FLOOR_PORT[floor_tokio]}, mio :${FLOOR_PORT[floor_mio]}"
fi
# PgBouncer in session mode: a client keeps one server connection from its login on (the pool
# holds more than the 16 clients it serves), so it forwards bytes and does no pooling work.
FORWARDER_PORT= FORWARDER_PID=-
if [[ $FORWARDER -eq 1 ]]; then
    [[ $POOL_SIZE -ge 16 ]] || die "FORWARDER=1 needs POOL_SIZE ≥ 16 (each of 16 clients keeps a server connection)"
    free_port FORWARDER_PORT
    start_pgbouncer pgbouncer-session session "$FORWARDER_PORT"
    FORWARDER_PID=$NAMED_BOUNCER_PID
    log "forwarder: PgBouncer in session mode :$FORWARDER_PORT (pid $FORWARDER_PID)"
fi
BASELINE_PORT= BASELINE_PID=-
if [[ -n $BASELINE_BIN ]]; then
    [[ -x $BASELINE_BIN ]] || die "BASELINE_BIN $BASELINE_BIN is not an executable"
    free_port BASELINE_PORT
    start_pgshard baseline "$BASELINE_PORT" "$POOL_SIZE" "$ONE_SHARD" "$BASELINE_BIN"
    BASELINE_PID=$PGSHARD_PID
    TARGETS+=(baseline)
    log "baseline pgshard ($BASELINE_BIN) :$BASELINE_PORT (pid $BASELINE_PID)"
fi

# ---------------------------------------------------------------------------------------------
# pgbench runs
# ---------------------------------------------------------------------------------------------

mkdir -p "$WORK/runs"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
declare -A TPS LAT FAILED ABORTED TXNS CPU_US USER_US SYS_US CSW STATUS TXNS_ALL

# The pgbench options of a protocol: simple, prepared, or connect (simple, a new connection and
# SCRAM login per transaction).
protocol_args() { if [[ $1 == connect ]]; then echo "-M simple -C"; else echo "-M $1"; fi; }
scenario_cell() { # clients/protocol
    local clients=${1%/*} proto=${1#*/}
    if [[ $proto == connect ]]; then echo "-S -c $clients -C"; else echo "-S -c $clients -M $proto"; fi
}
SCENARIOS=()
for clients in "${CLIENT_COUNTS[@]}"; do
    for proto in "${PROTOCOLS[@]}"; do SCENARIOS+=("$clients/$proto"); done
done
[[ $CONNECT -eq 1 ]] && SCENARIOS+=("16/connect")

# run_pgbench TARGET PORT PROXY_PID CLIENTS PROTOCOL [KEY]: one run, results stored under KEY.
run_pgbench() {
    local target=$1 port=$2 pid=$3 clients=$4 proto=$5 key=${6:-$1/$4/$5}
    local file=${key//\//-}
    local out="$WORK/runs/${file/\#/-run}.out" err="$WORK/runs/${file/\#/-run}.err"
    local before="0 0 0" after="0 0 0" rc=0
    [[ $pid != - ]] && before=$(proc_sample "$pid")
    timeout --signal=INT --kill-after=10 $((DURATION + 60)) \
        pgbench -n -S $(protocol_args "$proto") -c "$clients" -j 2 -T "$DURATION" -p "$port" pgbench \
        >"$out" 2>"$err" || rc=$?
    [[ $pid != - ]] && after=$(proc_sample "$pid")
    TPS[$key]=$(sed -nE 's/^tps = ([0-9.]+).*/\1/p' "$out" | head -n1)
    LAT[$key]=$(sed -nE 's/^latency average = ([0-9.]+) ms/\1/p' "$out" | head -n1)
    FAILED[$key]=$(sed -nE 's/^number of failed transactions: ([0-9]+).*/\1/p' "$out" | head -n1)
    TXNS[$key]=$(sed -nE 's/^number of transactions actually processed: ([0-9]+).*/\1/p' "$out" | head -n1)
    ABORTED[$key]=$(grep -c 'aborted in command' "$err" || true)
    : "${FAILED[$key]:=0}" "${TXNS[$key]:=0}"
    if [[ $pid != - ]] && ! kill -0 "$pid" 2>/dev/null; then
        STATUS[$key]=crashed
        log "$target (pid $pid) is gone after $key; its log ends (all logs: $RESULTS/logs/):"
        tail -n 20 "$WORK"/pgshard*.log "$WORK/pgbouncer.log" 2>/dev/null | sed 's/^/    /' >&2
    elif [[ $rc -eq 124 || $rc -eq 137 ]]; then
        STATUS[$key]=hang
    elif [[ -z ${TPS[$key]} ]]; then
        STATUS[$key]=fail
    elif [[ ${ABORTED[$key]} -gt 0 ]]; then
        STATUS[$key]=aborted
    else
        STATUS[$key]=ok
    fi
    CPU_US[$key]= USER_US[$key]= SYS_US[$key]= CSW[$key]=
    if [[ $pid != - && ${TXNS[$key]} -gt 0 ]]; then
        read -r CPU_US[$key] USER_US[$key] SYS_US[$key] CSW[$key] < <(
            awk -v b="$before" -v a="$after" -v hz="$CLK_TCK" -v n="${TXNS[$key]}" 'BEGIN {
                split(b, x); split(a, y); us = 1e6 / hz / n
                printf "%.1f %.1f %.1f %.2f\n", (y[1] - x[1] + y[2] - x[2]) * us,
                    (y[1] - x[1]) * us, (y[2] - x[2]) * us, (y[3] - x[3]) / n }')
    fi
    log "$key: status ${STATUS[$key]}, tps ${TPS[$key]:-?}, latency ${LAT[$key]:-?} ms," \
        "failed ${FAILED[$key]}, aborted clients ${ABORTED[$key]}, proxy CPU ${CPU_US[$key]:-n/a} µs/txn"
    if [[ ${STATUS[$key]} != ok ]]; then
        head -n 5 "$err" | sed 's/^/    /' >&2
    fi
    sleep 1
}

# pick_median KEY: KEY gets the values of its median run (by tps) of KEY#1..KEY#REPEAT, and the
# errors of all of them; a run that was not ok makes KEY not ok.
pick_median() {
    local key=$1 r best
    best=$(for r in $(seq 1 "$REPEAT"); do echo "${TPS[$key#$r]:-0} $r"; done |
        sort -n | sed -n "$(((REPEAT + 1) / 2))p" | cut -d' ' -f2)
    TPS[$key]=${TPS[$key#$best]} LAT[$key]=${LAT[$key#$best]} TXNS[$key]=${TXNS[$key#$best]}
    CPU_US[$key]=${CPU_US[$key#$best]} USER_US[$key]=${USER_US[$key#$best]}
    SYS_US[$key]=${SYS_US[$key#$best]} CSW[$key]=${CSW[$key#$best]} STATUS[$key]=ok FAILED[$key]=0 ABORTED[$key]=0
    for r in $(seq 1 "$REPEAT"); do
        FAILED[$key]=$((FAILED[$key] + FAILED[$key#$r]))
        ABORTED[$key]=$((ABORTED[$key] + ABORTED[$key#$r]))
        [[ ${STATUS[$key#$r]} != ok && ${STATUS[$key]} == ok ]] && STATUS[$key]=${STATUS[$key#$r]}
    done
    return 0
}

for s in "${SCENARIOS[@]}"; do
    clients=${s%/*} proto=${s#*/}
    in_rotation=("${TARGETS[@]}")
    [[ $proto == simple ]] && in_rotation+=("${FLOOR_TARGETS[@]}")
    [[ $FORWARDER -eq 1 && $clients -eq 16 && $proto != connect ]] && in_rotation+=(forwarder)
    for r in $(seq 1 "$REPEAT"); do
        # Rotate the order, so no target always runs first after a pause or last in a row.
        n=${#in_rotation[@]}
        for i in $(seq 0 $((n - 1))); do
            t=${in_rotation[$(((i + r - 1) % n))]}
            case $t in
                direct) run_pgbench direct "$PG_PORT" - "$clients" "$proto" "direct/$s#$r" ;;
                pgbouncer) run_pgbench pgbouncer "$BOUNCER_PORT" "$BOUNCER_PID" "$clients" "$proto" "pgbouncer/$s#$r" ;;
                pgshard) run_pgbench pgshard "$SHARD_PORT" "$MAIN_SHARD_PID" "$clients" "$proto" "pgshard/$s#$r" ;;
                baseline) run_pgbench baseline "$BASELINE_PORT" "$BASELINE_PID" "$clients" "$proto" "baseline/$s#$r" ;;
                forwarder) run_pgbench forwarder "$FORWARDER_PORT" "$FORWARDER_PID" "$clients" "$proto" "forwarder/$s#$r" ;;
                floor_*) run_pgbench "$t" "${FLOOR_PORT[$t]}" "${FLOOR_PID[$t]}" "$clients" "$proto" "$t/$s#$r" ;;
            esac
        done
    done
    for t in "${in_rotation[@]}"; do pick_median "$t/$s"; done
done
if [[ $METRICS -eq 1 ]]; then
    # What the pgshard target recorded over the runs above, as Prometheus would scrape it.
    mkdir -p "$RESULTS/logs"
    { exec 3<>"/dev/tcp/127.0.0.1/$METRICS_PORT" && printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3 &&
        cat <&3; } >"$RESULTS/logs/metrics.txt" 2>/dev/null || log "could not scrape pgshard's /metrics"
    log "pgshard statements: $(grep -h '^pgshard_statements_total{route="single_shard"}' "$RESULTS/logs/metrics.txt" || echo none)"
fi

# The prepared-statement bar: 50 clients, -M prepared, through a pool of 2 server connections.
free_port SMALL_PORT
start_pgshard pgshard-pool2 "$SMALL_PORT" 2 "$ONE_SHARD" "$PGSHARD" "$PGSHARD_SERVER_TOML"
SMALL_PID=$PGSHARD_PID
run_pgbench pgshard "$SMALL_PORT" "$SMALL_PID" 50 prepared "pool2#1"
REPEAT=1 pick_median pool2
stop_pid "$SMALL_PID"

# ---------------------------------------------------------------------------------------------
# Routing on vs routing off (issue 3): the one-shard pgshard above against a two-shard pgshard
# ---------------------------------------------------------------------------------------------

# commits_per_db: "pgbench_s0-commits pgbench_s1-commits" from pg_stat_database.
commits_per_db() {
    psql_super -At -F' ' -c "SELECT coalesce(sum(xact_commit) FILTER (WHERE datname = 'pgbench_s0'), 0),
        coalesce(sum(xact_commit) FILTER (WHERE datname = 'pgbench_s1'), 0) FROM pg_stat_database"
}

declare -A COMMITS_S0 COMMITS_S1
VERIFY_ROWS=()
VERIFY_BAD=0
# Both shards are databases of the one cluster the routing-off pgshard uses, so each gets half its
# pool: the same number of server connections (PostgreSQL backends on the same two cores) either
# way. With the whole pool per shard, routing on ran up to twice the backends, and that alone cost
# 0.82-0.88x routing off at equal proxy CPU (README, 2026-12-05).
ROUTE_POOL_SIZE=$(((POOL_SIZE + 1) / 2))
if [[ $ROUTING -eq 1 ]]; then
    free_port ROUTE_PORT
    start_pgshard pgshard-routing "$ROUTE_PORT" "$ROUTE_POOL_SIZE" "$TWO_SHARDS" "$PGSHARD" "$PGSHARD_SERVER_TOML"
    ROUTE_PID=$PGSHARD_PID
    log "routing: pgshard with two shards :$ROUTE_PORT (pid $ROUTE_PID) vs one shard :$SHARD_PORT"
    for proto in "${PROTOCOLS[@]}"; do
        COMMITS_S0[$proto]=0 COMMITS_S1[$proto]=0
        for r in $(seq 1 "$REPEAT"); do
            # Alternate which one runs first.
            for i in 0 1; do
                if [[ $(((i + r - 1) % 2)) -eq 0 ]]; then
                    run_pgbench pgshard "$SHARD_PORT" "$MAIN_SHARD_PID" 16 "$proto" "routing-off/$proto#$r"
                else
                    read -r c0 c1 < <(commits_per_db)
                    run_pgbench pgshard "$ROUTE_PORT" "$ROUTE_PID" 16 "$proto" "routing-on/$proto#$r"
                    # Busy backends flush their statistics when they can take the lock, else some
                    # 10 s later: wait until the commits cover pgbench's transactions (at most 20 s).
                    for w in $(seq 1 40); do
                        read -r d0 d1 < <(commits_per_db)
                        if [[ $((d0 - c0 + d1 - c1)) -ge ${TXNS[routing-on/$proto#$r]} ]]; then break; fi
                        sleep 0.5
                    done
                    COMMITS_S0[$proto]=$((COMMITS_S0[$proto] + d0 - c0))
                    COMMITS_S1[$proto]=$((COMMITS_S1[$proto] + d1 - c1))
                fi
            done
        done
        pick_median "routing-off/$proto"
        pick_median "routing-on/$proto"
        TXNS_ALL[$proto]=0
        for r in $(seq 1 "$REPEAT"); do TXNS_ALL[$proto]=$((TXNS_ALL[$proto] + TXNS[routing-on/$proto#$r])); done
    done

    # Where a few keys were served: pgshard locate's shard against the database that answered.
    n0=0 n1=0
    for aid in $(seq 1 100); do
        loc=$("$PGSHARD" locate --config "$WORK/pgshard-routing.toml" "$aid")
        slot=$(sed -nE 's/.* slot ([0-9]+) .*/\1/p' <<<"$loc")
        shard=$(sed -nE 's/.* shard ([^ ]+)$/\1/p' <<<"$loc")
        case $shard in
            s0) [[ $n0 -lt 3 ]] || continue; n0=$((n0 + 1)) ;;
            s1) [[ $n1 -lt 3 ]] || continue; n1=$((n1 + 1)) ;;
            *) die "pgshard locate said: $loc" ;;
        esac
        got=$(PGPORT=$ROUTE_PORT psql -X -q -At -d pgbench \
            -c "SELECT current_database() FROM pgbench_accounts WHERE aid = $aid" 2>&1 | head -n1) || true
        if [[ $got == "pgbench_$shard" ]]; then
            seen="as located"
        else
            seen="NOT as located" VERIFY_BAD=$((VERIFY_BAD + 1))
        fi
        VERIFY_ROWS+=("| $aid | $slot | $shard | pgbench_$shard | ${got:-(nothing)} | $seen |")
        log "routing check: aid $aid → slot $slot → $shard, answered from ${got:-(nothing)}: $seen"
        if [[ $n0 -ge 3 && $n1 -ge 3 ]]; then break; fi
    done
    [[ $n0 -ge 1 && $n1 -ge 1 ]] || { VERIFY_BAD=$((VERIFY_BAD + 1)); log "routing check: aids 1-100 did not cover both shards"; }
    stop_pid "$ROUTE_PID"
fi

# ---------------------------------------------------------------------------------------------
# Idle clients: resident memory per connection, each proxy freshly started
# ---------------------------------------------------------------------------------------------

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

if [[ $SYSCALLS -eq 1 ]]; then
    syscall_count pgbouncer "$BOUNCER_PORT" "$BOUNCER_PID"
    syscall_count pgshard "$SHARD_PORT" "$MAIN_SHARD_PID"
    [[ $BASELINE_PID == - ]] || syscall_count baseline "$BASELINE_PORT" "$BASELINE_PID"
fi

stop_pid "$MAIN_SHARD_PID"
[[ $BASELINE_PID == - ]] || stop_pid "$BASELINE_PID"
for t in "${FLOOR_TARGETS[@]}"; do stop_pid "${FLOOR_PID[$t]}"; done
stop_pgbouncer

# idle_test NAME PORT PID: opens IDLE_CLIENTS connections, sets IDLE_KIB[NAME] and IDLE_OPEN[NAME].
declare -A IDLE_BEFORE IDLE_AFTER IDLE_KIB IDLE_OPEN
idle_test() {
    local name=$1 port=$2 pid=$3 i
    # One served client first, so the baseline includes a warm pool and runtime.
    PGPORT=$port psql -X -q -d pgbench -c 'SELECT 1' >/dev/null
    sleep 1
    IDLE_BEFORE[$name]=$(rss_kib "$pid")
    rm -f "$WORK/idle-$name.out"
    PGPORT=$port PGDATABASE=pgbench COUNT=$IDLE_CLIENTS \
        "$IDLE_BIN" >"$WORK/idle-$name.out" 2>"$WORK/idle-$name.log" &
    local idle_pid=$!
    PIDS+=("$idle_pid")
    for i in $(seq 1 1200); do
        grep -q '^ready' "$WORK/idle-$name.out" 2>/dev/null && break
        kill -0 "$idle_pid" 2>/dev/null || break
        sleep 0.1
    done
    grep -q '^ready' "$WORK/idle-$name.out" || { cat "$WORK/idle-$name.log" >&2; die "idle clients for $name never got ready"; }
    IDLE_OPEN[$name]=$(awk '/^ready/ { print $2 }' "$WORK/idle-$name.out")
    sleep 2
    IDLE_AFTER[$name]=$(rss_kib "$pid")
    IDLE_KIB[$name]=$(awk -v a="${IDLE_AFTER[$name]}" -v b="${IDLE_BEFORE[$name]}" -v n="${IDLE_OPEN[$name]}" \
        'BEGIN { if (n > 0) printf "%.1f", (a - b) / n; else print "n/a" }')
    stop_pid "$idle_pid"
    log "idle $name: ${IDLE_OPEN[$name]} open, RSS ${IDLE_BEFORE[$name]} → ${IDLE_AFTER[$name]} KiB," \
        "${IDLE_KIB[$name]} KiB per connection"
}

if [[ $IDLE -eq 1 ]]; then
    free_port IDLE_PORT
    start_pgshard pgshard-idle "$IDLE_PORT" "$POOL_SIZE" "$ONE_SHARD" "$PGSHARD" "$PGSHARD_SERVER_TOML"
    IDLE_SHARD_PID=$PGSHARD_PID
    idle_test pgshard "$IDLE_PORT" "$IDLE_SHARD_PID"
    stop_pid "$IDLE_SHARD_PID"
    start_pgbouncer
    idle_test pgbouncer "$BOUNCER_PORT" "$BOUNCER_PID"
    stop_pgbouncer
else
    for p in pgshard pgbouncer; do IDLE_OPEN[$p]=skipped IDLE_BEFORE[$p]=n/a IDLE_AFTER[$p]=n/a IDLE_KIB[$p]=n/a; done
fi

# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

# tps cell: the number, or why there is none.
tps_cell() {
    case ${STATUS[$1]} in
        ok) printf '%.0f' "${TPS[$1]}" ;;
        aborted) printf 'n/a (%s clients aborted)' "${ABORTED[$1]}" ;;
        *) printf '%s' "${STATUS[$1]}" ;;
    esac
}
verdict() { # value bar [le]: "met" when value ≥ bar (or ≤ bar with "le")
    local v=${1%×}
    [[ $v =~ ^[0-9.]+$ ]] || { printf 'NOT met'; return 0; }
    awk -v v="$v" -v b="$2" -v op="${3:-ge}" 'BEGIN { ok = (op == "le") ? v <= b : v >= b; printf ok ? "met" : "NOT met" }'
}
cpu_cell() { # key: proxy CPU per transaction, only for runs without errors
    if [[ ${STATUS[$1]} == ok && -n ${CPU_US[$1]} ]]; then printf '%s' "${CPU_US[$1]}"; else printf 'n/a'; fi
}
ratio() { # key_a key_b
    if [[ ${STATUS[$1]} == ok && ${STATUS[$2]} == ok ]]; then
        awk -v a="${TPS[$1]}" -v b="${TPS[$2]}" 'BEGIN { printf "%.2f×", a / b }'
    else
        printf 'n/a'
    fi
}
errors_cell() { # scenario suffix
    local t parts=()
    for t in "${TARGETS[@]}"; do
        local k=$t/$1 e
        e=$((FAILED[$k] + ABORTED[$k]))
        [[ ${STATUS[$k]} == hang || ${STATUS[$k]} == fail || ${STATUS[$k]} == crashed ]] && e=${STATUS[$k]}
        parts+=("$t $e")
    done
    local IFS=,
    printf '%s' "${parts[*]}" | sed 's/,/, /g'
}

{
    echo "## pgshard benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (dirty)'), $(nproc) cores ($(sed -nE 's/^model name\s*: //p' /proc/cpuinfo | head -n1)), $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM"
    echo "- $("$PGBIN/postgres" --version), $("$PGBOUNCER" --version | head -n1), pgbench scale $SCALE, ${DURATION} s per run (median of $REPEAT), -j 2, select-only (-S)"
    echo "- pool size $POOL_SIZE server connections for PgBouncer and pgshard, transaction mode, SCRAM client auth; pgshard worker threads: ${PGSHARD_THREADS:-one per core}, PgBouncer: one"
    echo "- errors = failed transactions + clients that pgbench aborted"
    echo "- load average before the pgbench runs: $LOAD_BEFORE; after: $LOAD_AFTER (other work on the machine skews every number)"
    echo
    echo "| scenario | direct tps | pgbouncer tps | pgshard tps | pgshard/pgbouncer | pgshard/direct | pgshard µs CPU/txn | pgbouncer µs CPU/txn | errors |"
    echo "|---|---|---|---|---|---|---|---|---|"
    for s in "${SCENARIOS[@]}"; do
        echo "| $(scenario_cell "$s") | $(tps_cell "direct/$s") | $(tps_cell "pgbouncer/$s") | $(tps_cell "pgshard/$s") | $(ratio "pgshard/$s" "pgbouncer/$s") | $(ratio "pgshard/$s" "direct/$s") | $(cpu_cell "pgshard/$s") | $(cpu_cell "pgbouncer/$s") | $(errors_cell "$s") |"
    done
    echo
    echo "Average latency (ms):"
    echo
    echo "| scenario | direct | pgbouncer | pgshard |"
    echo "|---|---|---|---|"
    for s in "${SCENARIOS[@]}"; do
        echo "| $(scenario_cell "$s") | ${LAT[direct/$s]:-n/a} | ${LAT[pgbouncer/$s]:-n/a} | ${LAT[pgshard/$s]:-n/a} |"
    done
    echo
    echo "Proxy CPU per transaction, split (from /proc: user, system, context switches of all threads):"
    echo
    echo "| scenario | proxy | user µs/txn | system µs/txn | context switches/txn |"
    echo "|---|---|---|---|---|"
    for s in "${SCENARIOS[@]}"; do
        for t in pgbouncer pgshard; do
            k=$t/$s
            [[ ${STATUS[$k]} == ok ]] || continue
            echo "| $(scenario_cell "$s") | $t | ${USER_US[$k]} | ${SYS_US[$k]} | ${CSW[$k]} |"
        done
    done
    echo
    if [[ -n $BASELINE_BIN ]]; then
        echo "This build against a baseline build ($BASELINE_BIN), same run, same rotation:"
        echo
        echo "| scenario | baseline tps | pgshard tps | pgshard/baseline | baseline/pgbouncer | pgshard/pgbouncer | baseline µs CPU/txn | pgshard µs CPU/txn | baseline csw/txn | pgshard csw/txn |"
        echo "|---|---|---|---|---|---|---|---|---|---|"
        for s in "${SCENARIOS[@]}"; do
            echo "| $(scenario_cell "$s") | $(tps_cell "baseline/$s") | $(tps_cell "pgshard/$s") | $(ratio "pgshard/$s" "baseline/$s") | $(ratio "baseline/$s" "pgbouncer/$s") | $(ratio "pgshard/$s" "pgbouncer/$s") | $(cpu_cell "baseline/$s") | $(cpu_cell "pgshard/$s") | ${CSW[baseline/$s]:-n/a} | ${CSW[pgshard/$s]:-n/a} |"
        done
        echo
    fi
    if [[ ${#FLOOR_TARGETS[@]} -gt 0 ]]; then
        echo "Floors (benches/floor.rs), same run, same rotation, simple protocol: floor_tokio is pgshard's runtime, transport and server connections without its session (a task per client, frames forwarded unread, a connection released at ReadyForQuery); floor_mio is one mio loop as PgBouncer's libevent loop. Neither authenticates its clients:"
        echo
        echo "| scenario | proxy | tps | /pgbouncer | user µs/txn | system µs/txn | context switches/txn |"
        echo "|---|---|---|---|---|---|---|"
        for s in "${SCENARIOS[@]}"; do
            [[ ${s#*/} == simple ]] || continue
            for t in pgbouncer floor_mio floor_tokio pgshard; do
                k=$t/$s
                [[ ${STATUS[$k]:-} == ok ]] || continue
                echo "| $(scenario_cell "$s") | $t | $(tps_cell "$k") | $(ratio "$k" "pgbouncer/$s") | ${USER_US[$k]} | ${SYS_US[$k]} | ${CSW[$k]} |"
            done
        done
        echo
    fi
    if [[ $FORWARDER -eq 1 ]]; then
        echo "Forwarding alone, same run, same rotation: PgBouncer in session mode (each client on a server connection of its own from its login, bytes forwarded, no pooling work) against pgshard (transaction pooling):"
        echo
        echo "| scenario | forwarder tps | forwarder/direct | pgshard/direct | pgshard/forwarder | forwarder µs CPU/txn (user + system) | pgshard µs CPU/txn (user + system) |"
        echo "|---|---|---|---|---|---|---|"
        for s in "${SCENARIOS[@]}"; do
            [[ ${STATUS[forwarder/$s]:-} == ok ]] || continue
            echo "| $(scenario_cell "$s") | $(tps_cell "forwarder/$s") | $(ratio "forwarder/$s" "direct/$s") | $(ratio "pgshard/$s" "direct/$s") | $(ratio "pgshard/$s" "forwarder/$s") | $(cpu_cell "forwarder/$s") (${USER_US[forwarder/$s]} + ${SYS_US[forwarder/$s]}) | $(cpu_cell "pgshard/$s") (${USER_US[pgshard/$s]} + ${SYS_US[pgshard/$s]}) |"
        done
        echo
    fi
    if [[ $SYSCALLS -eq 1 ]]; then
        echo "System calls per transaction (strace -c, \`pgbench -S -M simple -c 4\`, 5 s; reads = read/recvfrom/recvmsg/readv, writes = write/sendto/sendmsg/writev, waits = epoll_wait/poll):"
        echo
        echo "| proxy | reads/txn | writes/txn | waits/txn | futex/txn | all system calls/txn |"
        echo "|---|---|---|---|---|---|"
        for p in pgbouncer pgshard baseline; do
            [[ -n ${SYSCALL_ROWS[$p]:-} ]] && echo "${SYSCALL_ROWS[$p]}"
        done
        echo
    fi
    echo "pgshard, pool of 2, \`pgbench -S -M prepared -c 50\`: status ${STATUS[pool2]}, tps $(tps_cell pool2), failed ${FAILED[pool2]}, aborted clients ${ABORTED[pool2]}, $(cpu_cell pool2) µs CPU/txn"
    echo
    if [[ $ROUTING -eq 1 ]]; then
        echo "Routing on vs off (issue 3), \`pgbench -S -c 16 -j 2\`, alternating, ${DURATION} s each (median of $REPEAT): routing off is the pgshard above (one shard, reads from its primary: statements forwarded unparsed); routing on is a second pgshard with two shards, \`pgbench_s0\` (slots 0-2047) and \`pgbench_s1\` (2048-4095), databases on the same cluster, each holding only the \`pgbench_accounts\` rows its slots own (compacted, so both together hold what the one database holds), sharded by \`aid\` (every statement parsed and routed), pool size $ROUTE_POOL_SIZE per shard (both shards together hold as many server connections as the one shard of routing off):"
        echo
        echo "| protocol | routing off tps | routing on tps | on/off | routing off µs CPU/txn | routing on µs CPU/txn | errors |"
        echo "|---|---|---|---|---|---|---|"
        for proto in "${PROTOCOLS[@]}"; do
            eo=$((FAILED[routing-off/$proto] + ABORTED[routing-off/$proto]))
            en=$((FAILED[routing-on/$proto] + ABORTED[routing-on/$proto]))
            [[ ${STATUS[routing-off/$proto]} =~ ^(hang|fail|crashed)$ ]] && eo=${STATUS[routing-off/$proto]}
            [[ ${STATUS[routing-on/$proto]} =~ ^(hang|fail|crashed)$ ]] && en=${STATUS[routing-on/$proto]}
            echo "| $proto | $(tps_cell "routing-off/$proto") | $(tps_cell "routing-on/$proto") | $(ratio "routing-on/$proto" "routing-off/$proto") | $(cpu_cell "routing-off/$proto") | $(cpu_cell "routing-on/$proto") | off $eo, on $en |"
        done
        echo
        echo "Transactions committed in each shard database during the routing-on runs (pg_stat_database, which also counts pgshard's health checks; pgbench's -S transaction is one statement):"
        echo
        echo "| protocol | pgbench transactions | pgbench_s0 commits | pgbench_s1 commits |"
        echo "|---|---|---|---|"
        for proto in "${PROTOCOLS[@]}"; do
            echo "| $proto | ${TXNS_ALL[$proto]} | ${COMMITS_S0[$proto]} | ${COMMITS_S1[$proto]} |"
        done
        echo
        echo "Served by (simple query through the routing-on pgshard, \`SELECT current_database() FROM pgbench_accounts WHERE aid = N\`, against \`pgshard locate\`):"
        echo
        echo "| aid | slot | located shard | its database | answered from | |"
        echo "|---|---|---|---|---|---|"
        printf '%s\n' "${VERIFY_ROWS[@]}"
        echo
    fi
    echo "Idle clients (freshly started proxy, one served client before the baseline):"
    echo
    echo "| proxy | idle connections | RSS before KiB | RSS after KiB | KiB per idle connection |"
    echo "|---|---|---|---|---|"
    for p in pgshard pgbouncer; do
        echo "| $p | ${IDLE_OPEN[$p]} | ${IDLE_BEFORE[$p]} | ${IDLE_AFTER[$p]} | ${IDLE_KIB[$p]} |"
    done
    echo
    echo "Bars (issue 2), this run:"
    echo
    for clients in "${CLIENT_COUNTS[@]}"; do
        s=$clients/simple
        echo "- simple -c $clients, pgshard ≥ 1.0× PgBouncer: $(verdict "$(ratio "pgshard/$s" "pgbouncer/$s")" 1.0) ($(ratio "pgshard/$s" "pgbouncer/$s"))"
    done
    for clients in "${CLIENT_COUNTS[@]}"; do
        s=$clients/prepared
        e=$((FAILED[pgshard/$s] + ABORTED[pgshard/$s]))
        v=$(verdict "$(ratio "pgshard/$s" "direct/$s")" 0.55)
        [[ $e -eq 0 ]] || v="NOT met"
        echo "- prepared -c $clients, 0 errors and pgshard ≥ 0.55× direct: $v ($e errors, $(ratio "pgshard/$s" "direct/$s"))"
    done
    e=$((FAILED[pool2] + ABORTED[pool2]))
    echo "- prepared -c 50 through a pool of 2, 0 errors: $([[ ${STATUS[pool2]} == ok && $e -eq 0 ]] && echo met || echo "NOT met") ($e errors)"
    echo "- ≤ 16 KiB per idle client connection: $(verdict "${IDLE_KIB[pgshard]}" 16 le) (${IDLE_KIB[pgshard]} KiB)"
    echo
    echo "Bars (issue 11), this run:"
    echo
    for s in "${SCENARIOS[@]}"; do
        [[ $s == */simple || $s == */connect ]] || continue
        echo "- $(scenario_cell "$s"), pgshard ≥ 1.0× PgBouncer: $(verdict "$(ratio "pgshard/$s" "pgbouncer/$s")" 1.0) ($(ratio "pgshard/$s" "pgbouncer/$s")); CPU per transaction ≤ PgBouncer's: $(verdict "$(cpu_cell "pgshard/$s")" "$(cpu_cell "pgbouncer/$s")" le) ($(cpu_cell "pgshard/$s") against $(cpu_cell "pgbouncer/$s") µs)"
    done
    if [[ -n ${TPS[pgshard/16/prepared]:-} ]]; then
        echo "- -S -c 16 -M prepared, pgshard ≥ 0.6× direct: $(verdict "$(ratio pgshard/16/prepared direct/16/prepared)" 0.6) ($(ratio pgshard/16/prepared direct/16/prepared)$([[ -n ${TPS[forwarder/16/prepared]:-} ]] && echo "; forwarding alone: $(ratio forwarder/16/prepared direct/16/prepared)"))"
    fi
    if [[ $ROUTING -eq 1 ]]; then
        echo
        echo "Bars (issue 3), this run:"
        echo
        for proto in "${PROTOCOLS[@]}"; do
            rt=$(ratio "routing-on/$proto" "routing-off/$proto")
            echo "- $proto -c 16, routing on ≥ 0.9× routing off: $(verdict "$rt" 0.9) ($rt)"
        done
        echo "- keys served by the shard \`pgshard locate\` names: $([[ $VERIFY_BAD -eq 0 ]] && echo "all ${#VERIFY_ROWS[@]}" || echo "NOT all ($VERIFY_BAD wrong)")"
    fi
} >"$WORK/report.md"

mkdir -p "$RESULTS"
cp "$WORK/report.md" "$RESULTS/latest.md"
cat "$WORK/report.md"
log "written to bench-results/latest.md"

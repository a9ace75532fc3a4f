#!/usr/bin/env bash
# End-to-end benchmark of cross-shard reads (issue 4): two PostgreSQL 15 primaries as two shards
# behind pgshard, a table `big` of ROWS rows split over them and a table `small` of SMALL_ROWS.
#
# 1. Proxy memory of scatter-gather reads: pgshard's peak RSS (VmHWM, reset before each query
#    through /proc/PID/clear_refs) and the largest VmRSS sampled every 10 ms while the query runs,
#    for ORDER BY ... LIMIT 10, for all rows concatenated, for all rows k-way merged (ORDER BY
#    without LIMIT), read by psql, and for all rows read by a deliberately slow client.
# 2. Fan-out latency: `SELECT count(*)` (and ORDER BY ... LIMIT 10) with pgbench -c 1, directly
#    against each shard's server and through pgshard, in the same run; ratio pgshard / slower shard.
#
# Placement is NOT by hash: each shard is loaded directly with half of the ids (generate_series),
# which makes no difference to keyless reads, the only ones measured here.
#
# Usage (as root, or as a user who can run initdb):
#   bash benches/scatter.sh
# Knobs: ROWS (rows in `big`, 1000000), SMALL_ROWS (rows in `small`, 1000), DURATION (s per
#        pgbench latency cell, 5), REPEAT (latency runs per cell, alternating order, median
#        reported, 1), PAD (bytes of text per row, 64), PARALLEL_WORKERS
#        (max_parallel_workers_per_gather on the shards, 0: one core per shard query, as if each
#        shard had its own machine), SLOW_READ_KIB / SLOW_SLEEP_MS (slow client: reads this much,
#        then sleeps, 64 / 2), PGBIN (/usr/lib/postgresql/15/bin), BENCH_OS_USER (pgshard_pg),
#        PGSHARD_THREADS (pgshard serve --threads; default one worker per core).
# Prints a markdown report and writes it to bench-results/scatter.md (logs in
# bench-results/scatter-logs/).
set -euo pipefail

ROWS=${ROWS:-1000000}
SMALL_ROWS=${SMALL_ROWS:-1000}
DURATION=${DURATION:-5}
REPEAT=${REPEAT:-1}
PAD=${PAD:-64}
PARALLEL_WORKERS=${PARALLEL_WORKERS:-0}
SLOW_READ_KIB=${SLOW_READ_KIB:-64}
SLOW_SLEEP_MS=${SLOW_SLEEP_MS:-2}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
BENCH_OS_USER=${BENCH_OS_USER:-pgshard_pg}
PGSHARD_THREADS=${PGSHARD_THREADS:-}
QUERY_TIMEOUT=${QUERY_TIMEOUT:-300}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS=$ROOT/bench-results

log() { printf '[scatter.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------------------------------------
# Prerequisites
# ---------------------------------------------------------------------------------------------

[[ -x $PGBIN/initdb ]] || die "no PostgreSQL binaries in $PGBIN (set PGBIN)"
command -v pgbench >/dev/null || die "pgbench not on PATH (Debian: postgresql-client-15)"
command -v psql >/dev/null || die "psql not on PATH (Debian: postgresql-client-15)"
command -v python3 >/dev/null || die "python3 not on PATH (the slow client is a Python script)"
(( ROWS >= 2 && SMALL_ROWS >= 2 )) || die "ROWS and SMALL_ROWS must be at least 2"

if [[ $(id -u) -eq 0 ]]; then
    id -u "$BENCH_OS_USER" >/dev/null 2>&1 ||
        useradd --system --no-create-home --shell /usr/sbin/nologin "$BENCH_OS_USER" ||
        id -u "$BENCH_OS_USER" >/dev/null 2>&1 || die "cannot create OS user $BENCH_OS_USER"
    as_user() { runuser -u "$BENCH_OS_USER" -- "$@"; }
else
    as_user() { "$@"; }
fi

# ---------------------------------------------------------------------------------------------
# Cleanup: whatever was started is stopped, the work directory removed, logs kept.
# ---------------------------------------------------------------------------------------------

WORK=$(mktemp -d /tmp/pgshard-scatter.XXXXXX)
chmod 755 "$WORK"
if [[ $(id -u) -eq 0 ]]; then chown "$BENCH_OS_USER:" "$WORK"; fi
PIDS=()       # processes we started directly (pgshard, samplers)
CLUSTERS=()   # data directories of running clusters

cleanup() {
    local rc=$? pid dir
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    for dir in "${CLUSTERS[@]}"; do
        as_user "$PGBIN/pg_ctl" -D "$dir" -m immediate -w stop >/dev/null 2>&1 || true
    done
    rm -rf "$RESULTS/scatter-logs"
    mkdir -p "$RESULTS/scatter-logs"
    cp "$WORK"/*.log "$WORK"/*.out "$WORK"/*.toml "$RESULTS/scatter-logs/" 2>/dev/null || true
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

# proc_kib PID FIELD: a /proc/PID/status field in KiB (VmRSS, VmHWM).
proc_kib() { awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status"; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# ---------------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------------

cd "$ROOT"
log "building (cargo build --release)"
cargo build --release --quiet
PGSHARD=$ROOT/target/release/pgshard

# ---------------------------------------------------------------------------------------------
# PostgreSQL 15: two throw-away primaries, one per shard
# ---------------------------------------------------------------------------------------------

echo app >"$WORK/pwfile"
if [[ $(id -u) -eq 0 ]]; then chown "$BENCH_OS_USER:" "$WORK/pwfile"; fi
PG_PORTS=()

# start_cluster N: initdb and start shard N's primary on a free port (PG_PORTS[N]).
start_cluster() {
    local n=$1 dir=$WORK/data$1 port
    free_port port
    PG_PORTS[$n]=$port
    log "initdb shard s$n in $dir, port $port"
    as_user "$PGBIN/initdb" -D "$dir" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
        --pwfile="$WORK/pwfile" -E UTF8 --locale=C --no-sync >"$WORK/initdb$n.log" 2>&1 ||
        { cat "$WORK/initdb$n.log" >&2; die "initdb failed"; }
    cat >>"$dir/postgresql.conf" <<EOF

# pgshard scatter benchmark
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK'
max_connections = 100
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 256MB
max_parallel_workers_per_gather = $PARALLEL_WORKERS
password_encryption = 'scram-sha-256'
log_connections = on
EOF
    as_user "$PGBIN/pg_ctl" -D "$dir" -l "$WORK/postgresql$n.log" -w start >/dev/null ||
        { tail -n 30 "$WORK/postgresql$n.log" >&2; die "PostgreSQL (shard s$n) did not start"; }
    CLUSTERS+=("$dir")
}

psql_super() { # N args...: psql as the superuser on shard N's primary, over its Unix socket
    local n=$1
    shift
    psql -X -q -v ON_ERROR_STOP=1 -h "$WORK" -p "${PG_PORTS[$n]}" -U postgres "$@"
}

# load_shard N: the tables and shard N's half of the rows (ids by halves, not by hash).
load_shard() {
    local n=$1 half=$((ROWS / 2)) small_half=$((SMALL_ROWS / 2)) lo hi slo shi
    if [[ $n -eq 0 ]]; then
        lo=1 hi=$half slo=1 shi=$small_half
    else
        lo=$((half + 1)) hi=$ROWS slo=$((small_half + 1)) shi=$SMALL_ROWS
    fi
    log "loading shard s$n: big ids $lo-$hi, small ids $slo-$shi"
    psql_super "$n" -d postgres -c "CREATE ROLE app LOGIN PASSWORD 'app'" -c "CREATE DATABASE bench OWNER app"
    # v is a permutation of the ids (48271 is invertible modulo the prime 2^31-1): unique, so
    # every ORDER BY v has one right answer.
    psql_super "$n" -d bench <<EOF
SET ROLE app;
CREATE TABLE big (id bigint PRIMARY KEY, v bigint NOT NULL, pad text NOT NULL);
CREATE TABLE small (id bigint PRIMARY KEY, v bigint NOT NULL, pad text NOT NULL);
INSERT INTO big SELECT g, g * 48271 % 2147483647, lpad(g::text, $PAD, 'x') FROM generate_series($lo::bigint, $hi) g;
INSERT INTO small SELECT g, g * 48271 % 2147483647, lpad(g::text, $PAD, 'x') FROM generate_series($slo::bigint, $shi) g;
VACUUM (ANALYZE, FREEZE) big;
VACUUM (ANALYZE, FREEZE) small;
EOF
    # Warm the cache (the table fits in shared_buffers).
    psql_super "$n" -d bench -At -c "SELECT count(*) FROM big" -c "SELECT sum(length(pad)) FROM big" >/dev/null
}

start_cluster 0
start_cluster 1
load_shard 0
load_shard 1

# ---------------------------------------------------------------------------------------------
# pgshard: two shards, reads from the primaries
# ---------------------------------------------------------------------------------------------

free_port SHARD_PORT
cat >"$WORK/pgshard.toml" <<EOF
[server]
listen = "127.0.0.1:$SHARD_PORT"
database = "bench"
pool_mode = "transaction"
# Clients connect once per measurement; trust keeps the slow client (a bare-protocol script)
# short. pgshard still authenticates to the servers with SCRAM.
auth_method = "trust"

[pool]
size = 4
checkout_timeout_ms = 30000

[[users]]
name = "app"
password = "app"

[sharding]
key_column = "id"
key_type = "bigint"

[[sharding.tables]]
name = "big"

[[sharding.tables]]
name = "small"

[[shards]]
name = "s0"
primary = "127.0.0.1:${PG_PORTS[0]}"
slots = "0-2047"
read_from = "primary"

[[shards]]
name = "s1"
primary = "127.0.0.1:${PG_PORTS[1]}"
slots = "2048-4095"
read_from = "primary"
EOF
"$PGSHARD" check --config "$WORK/pgshard.toml" >"$WORK/pgshard-check.out" 2>&1 ||
    { cat "$WORK/pgshard-check.out" >&2; die "pgshard check refused the config"; }
# Its own session, as PgBouncer's (benches/lib.sh, start_pgshard).
NO_COLOR=1 setsid "$PGSHARD" serve --config "$WORK/pgshard.toml" ${PGSHARD_THREADS:+--threads "$PGSHARD_THREADS"} \
    >>"$WORK/pgshard.log" 2>&1 &
PGSHARD_PID=$!
PIDS+=("$PGSHARD_PID")
wait_port "$SHARD_PORT" pgshard
RSS_START=$(proc_kib "$PGSHARD_PID" VmRSS)
log "shards :${PG_PORTS[0]} and :${PG_PORTS[1]}, pgshard :$SHARD_PORT (pid $PGSHARD_PID), RSS $RSS_START KiB"

export PGUSER=app PGPASSWORD=app PGHOST=127.0.0.1 PGDATABASE=bench
q_shard() { PGPORT=${PG_PORTS[$1]} psql -X -q -At -v ON_ERROR_STOP=1 -c "$2"; }
q_proxy() { PGPORT=$SHARD_PORT psql -X -q -At -v ON_ERROR_STOP=1 -c "$1"; }
pgshard_alive() { kill -0 "$PGSHARD_PID" 2>/dev/null; }

# ---------------------------------------------------------------------------------------------
# Answers: through pgshard equal to the shards' rows combined
# ---------------------------------------------------------------------------------------------

TOP10="SELECT id, v FROM big ORDER BY v LIMIT 10"
CHECKS=()
CHECK_BAD=0
check() { # name got want
    if [[ $2 == "$3" ]]; then
        CHECKS+=("- $1: equal")
    else
        CHECKS+=("- $1: **DIFFERENT** (pgshard: $(head -c 200 <<<"$2" | tr '\n' ' '); shards: $(head -c 200 <<<"$3" | tr '\n' ' '))")
        CHECK_BAD=$((CHECK_BAD + 1))
    fi
}
check "count(*) FROM big = $ROWS" "$(q_proxy 'SELECT count(*) FROM big' 2>&1 || true)" "$ROWS"
check "count(*) FROM small = $SMALL_ROWS" "$(q_proxy 'SELECT count(*) FROM small' 2>&1 || true)" "$SMALL_ROWS"
check "ORDER BY v LIMIT 10 = top 10 of both shards' top 10" "$(q_proxy "$TOP10" 2>&1 || true)" \
    "$({ q_shard 0 "$TOP10"; q_shard 1 "$TOP10"; } | sort -t'|' -k2,2n | head -n 10)"
log "answers: ${#CHECKS[@]} checked, $CHECK_BAD different"

# ---------------------------------------------------------------------------------------------
# 1. Proxy memory
# ---------------------------------------------------------------------------------------------

cat >"$WORK/slow_client.py" <<'EOF'
# A client that reads a simple-query result slowly: reads READ bytes, sleeps SLEEP s, repeats.
# Bare protocol (pgshard uses trust here); prints the number of DataRows, or exits 1 on an error.
import os, socket, struct, sys, time
port, query, read, sleep = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
s = socket.create_connection(("127.0.0.1", port))
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
params = b"user\0app\0database\0bench\0\0"
s.sendall(struct.pack("!ii", 8 + len(params), 196608) + params)
buf, rows, sent, done = b"", 0, False, False
while not done:
    chunk = s.recv(read)
    if not chunk:
        sys.exit("connection closed")
    buf += chunk
    pos = 0
    while len(buf) - pos >= 5:
        kind, length = buf[pos:pos + 1], struct.unpack("!i", buf[pos + 1:pos + 5])[0]
        if len(buf) - pos < 1 + length:
            break
        body = buf[pos + 5:pos + 1 + length]
        pos += 1 + length
        if kind == b"D":
            rows += 1
        elif kind == b"E":
            sys.exit("error: " + body.decode(errors="replace"))
        elif kind == b"Z":
            if sent:
                done = True
            else:
                q = query.encode() + b"\0"
                s.sendall(b"Q" + struct.pack("!i", 4 + len(q)) + q)
                sent = True
    buf = buf[pos:]
    if sent:
        time.sleep(sleep)
s.sendall(b"X\0\0\0\4")
print(rows)
EOF

# rss_sampler PID OUT: writes the largest VmRSS seen every 10 ms to OUT when OUT.stop appears.
rss_sampler() {
    local pid=$1 out=$2 max=0 k v _
    while [[ ! -e $out.stop ]]; do
        while read -r k v _; do
            if [[ $k == VmRSS: ]]; then
                ((v > max)) && max=$v
                break
            fi
        done <"/proc/$pid/status" || break
        sleep 0.01
    done
    echo "$max" >"$out"
}

declare -A MEM_Q MEM_CLIENT MEM_HWM MEM_SAMPLED MEM_BEFORE MEM_AFTER MEM_ROWS MEM_SECS MEM_STATUS
MEM_CASES=()
HWM_RESET=1
# measure_mem NAME QUERY WANT_ROWS CLIENT: runs QUERY through pgshard with CLIENT (psql or slow),
# records the peak RSS (VmHWM since a reset), the largest sampled VmRSS and the rows received.
measure_mem() {
    local name=$1 query=$2 want=$3 client=$4 out=$WORK/mem-$1 rc=0 t0 t1 rows
    MEM_CASES+=("$name")
    MEM_Q[$name]=$query MEM_CLIENT[$name]=$client
    sleep 1
    MEM_BEFORE[$name]=$(proc_kib "$PGSHARD_PID" VmRSS)
    # "5" resets the peak resident set size (VmHWM) to the current RSS (Linux >= 4.0).
    { echo 5 >"/proc/$PGSHARD_PID/clear_refs"; } 2>/dev/null || HWM_RESET=0
    rm -f "$out" "$out.stop"
    rss_sampler "$PGSHARD_PID" "$out" &
    local sampler=$!
    t0=$(date +%s.%N)
    if [[ $client == psql ]]; then
        rows=$(set -o pipefail; timeout "$QUERY_TIMEOUT" psql -X -q -At -v ON_ERROR_STOP=1 -p "$SHARD_PORT" \
            -c "$query" 2>"$out.err" | wc -l) || rc=$?
    else
        rows=$(timeout "$QUERY_TIMEOUT" python3 "$WORK/slow_client.py" "$SHARD_PORT" "$query" \
            $((SLOW_READ_KIB * 1024)) "$(awk -v m="$SLOW_SLEEP_MS" 'BEGIN { print m / 1000 }')" \
            2>"$out.err") || rc=$?
    fi
    t1=$(date +%s.%N)
    touch "$out.stop"
    wait "$sampler" || true
    MEM_SAMPLED[$name]=$(cat "$out")
    MEM_HWM[$name]=$(proc_kib "$PGSHARD_PID" VmHWM 2>/dev/null || echo 0)
    MEM_AFTER[$name]=$(proc_kib "$PGSHARD_PID" VmRSS 2>/dev/null || echo 0)
    MEM_ROWS[$name]=${rows:-0}
    MEM_SECS[$name]=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
    if ! pgshard_alive; then
        MEM_STATUS[$name]=crashed
    elif [[ $rc -eq 124 ]]; then
        MEM_STATUS[$name]="hang (> ${QUERY_TIMEOUT} s)"
    elif [[ $rc -ne 0 ]]; then
        MEM_STATUS[$name]="failed: $(head -c 200 "$out.err" | tr '\n' ' ')"
    elif [[ ${MEM_ROWS[$name]} -ne $want ]]; then
        MEM_STATUS[$name]="${MEM_ROWS[$name]} rows, expected $want"
    else
        MEM_STATUS[$name]=ok
    fi
    log "memory $name: ${MEM_STATUS[$name]}, ${MEM_ROWS[$name]} rows in ${MEM_SECS[$name]} s," \
        "RSS ${MEM_BEFORE[$name]} → ${MEM_AFTER[$name]} KiB, peak ${MEM_HWM[$name]} KiB, sampled max ${MEM_SAMPLED[$name]} KiB"
    pgshard_alive || die "pgshard is gone; its log ends: $(tail -n 5 "$WORK/pgshard.log")"
}

measure_mem top10 "$TOP10" 10 psql
measure_mem all-concat "SELECT id, v, pad FROM big" "$ROWS" psql
measure_mem all-merged "SELECT id, v, pad FROM big ORDER BY v" "$ROWS" psql
measure_mem all-slow "SELECT id, v, pad FROM big" "$ROWS" slow
measure_mem top10-after "$TOP10" 10 psql
[[ $HWM_RESET -eq 1 ]] || log "could not reset VmHWM (/proc/PID/clear_refs): peaks are since pgshard started"

# ---------------------------------------------------------------------------------------------
# 2. Fan-out latency: pgbench -c 1, directly against each shard and through pgshard
# ---------------------------------------------------------------------------------------------

declare -A LAT TXNS LSTATUS CPU_US LOGINS
QUERIES=(count-big count-small top10-big point-small)
declare -A QTEXT=(
    [count-big]="SELECT count(*) FROM big;"
    [count-small]="SELECT count(*) FROM small;"
    [top10-big]="SELECT id, v FROM big ORDER BY v LIMIT 10;"
    [point-small]="SELECT count(*) FROM small WHERE id = 1;"
)
for q in "${QUERIES[@]}"; do echo "${QTEXT[$q]}" >"$WORK/$q.sql"; done
CLK_TCK=$(getconf CLK_TCK)
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# pgbench_bg QUERY PORT KEY: starts pgbench -c 1 in the background (sets BG_PID).
pgbench_bg() {
    local out=$WORK/lat-${3//[\/#]/-}.out
    timeout --signal=INT --kill-after=10 $((DURATION + 60)) \
        pgbench -n -c 1 -T "$DURATION" -f "$WORK/$1.sql" -p "$2" bench >"$out" 2>&1 &
    BG_PID=$!
}
# pgbench_result KEY RC: parses the run's output.
pgbench_result() {
    local key=$1 rc=$2 out=$WORK/lat-${1//[\/#]/-}.out
    LAT[$key]=$(sed -nE 's/^latency average = ([0-9.]+) ms/\1/p' "$out" | head -n1)
    TXNS[$key]=$(sed -nE 's/^number of transactions actually processed: ([0-9]+).*/\1/p' "$out" | head -n1)
    if [[ $rc -eq 124 ]]; then
        LSTATUS[$key]=hang
    elif [[ $rc -ne 0 || -z ${LAT[$key]} ]] || grep -q 'aborted\|ERROR' "$out"; then
        LSTATUS[$key]=fail
    else
        LSTATUS[$key]=ok
    fi
    log "latency $key: ${LSTATUS[$key]}, ${LAT[$key]:-?} ms average over ${TXNS[$key]:-?} queries"
}

# server_logins: connections authorized so far on both shards (log_connections).
server_logins() { cat "$WORK"/postgresql[01].log | grep -c 'connection authorized' || true; }

run_latency() { # query port key: one pgbench run; for pgshard's port also its CPU per query and
    # the server connections opened during it
    local rc=0 before after logins
    logins=$(server_logins)
    before=$(cpu_ticks "$PGSHARD_PID")
    pgbench_bg "$1" "$2" "$3"
    wait "$BG_PID" || rc=$?
    after=$(cpu_ticks "$PGSHARD_PID")
    pgbench_result "$3" "$rc"
    if [[ $2 == "$SHARD_PORT" && ${TXNS[$3]:-0} -gt 0 ]]; then
        CPU_US[$3]=$(awk -v t=$((after - before)) -v hz="$CLK_TCK" -v n="${TXNS[$3]}" 'BEGIN { printf "%.0f", t * 1e6 / hz / n }')
        LOGINS[$3]=$(($(server_logins) - logins))
    fi
}

# run_both QUERY KEY: the control: both shards queried directly at the same time, one pgbench
# each, as pgshard's fan-out does; KEY gets the slower one's mean latency.
run_both() {
    local rc0=0 rc1=0 p0 p1
    pgbench_bg "$1" "${PG_PORTS[0]}" "$2-s0"
    p0=$BG_PID
    pgbench_bg "$1" "${PG_PORTS[1]}" "$2-s1"
    p1=$BG_PID
    wait "$p0" || rc0=$?
    wait "$p1" || rc1=$?
    pgbench_result "$2-s0" "$rc0"
    pgbench_result "$2-s1" "$rc1"
    LSTATUS[$2]=ok LAT[$2]=
    if [[ ${LSTATUS[$2-s0]} != ok || ${LSTATUS[$2-s1]} != ok ]]; then
        LSTATUS[$2]=fail
    else
        LAT[$2]=$(awk -v a="${LAT[$2-s0]}" -v b="${LAT[$2-s1]}" 'BEGIN { print (a > b ? a : b) }')
    fi
}

pick_median() { # key: the median of REPEAT runs by latency
    local key=$1 r best
    best=$(for r in $(seq 1 "$REPEAT"); do echo "${LAT[$key#$r]:-0} $r"; done |
        sort -n | sed -n "$(((REPEAT + 1) / 2))p" | cut -d' ' -f2)
    LAT[$key]=${LAT[$key#$best]} TXNS[$key]=${TXNS[$key#$best]:-} CPU_US[$key]=${CPU_US[$key#$best]:-} LSTATUS[$key]=ok
    LOGINS[$key]=${LOGINS[$key#$best]:-}
    for r in $(seq 1 "$REPEAT"); do
        [[ ${LSTATUS[$key#$r]} != ok ]] && LSTATUS[$key]=${LSTATUS[$key#$r]}
    done
    return 0
}

TARGETS=(s0 s1 both pgshard)
for q in "${QUERIES[@]}"; do
    for r in $(seq 1 "$REPEAT"); do
        # Rotate the order, so no target always runs first.
        for i in 0 1 2 3; do
            case $(((i + r - 1) % 4)) in
                0) run_latency "$q" "${PG_PORTS[0]}" "$q/s0#$r" ;;
                1) run_latency "$q" "${PG_PORTS[1]}" "$q/s1#$r" ;;
                2) run_both "$q" "$q/both#$r" ;;
                3) run_latency "$q" "$SHARD_PORT" "$q/pgshard#$r" ;;
            esac
        done
    done
    for t in "${TARGETS[@]}"; do pick_median "$q/$t"; done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
RSS_END=$(proc_kib "$PGSHARD_PID" VmRSS)

# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------

lat_ratio() { # query: pgshard / max(s0, s1), or why there is none
    local q=$1
    if [[ ${LSTATUS[$q/s0]} == ok && ${LSTATUS[$q/s1]} == ok && ${LSTATUS[$q/pgshard]} == ok ]]; then
        awk -v a="${LAT[$q/s0]}" -v b="${LAT[$q/s1]}" -v p="${LAT[$q/pgshard]}" \
            'BEGIN { m = a > b ? a : b; printf "%.2f×", p / m }'
    else
        printf 'n/a'
    fi
}
lat_cell() { if [[ ${LSTATUS[$1]} == ok ]]; then printf '%s' "${LAT[$1]}"; else printf '%s' "${LSTATUS[$1]}"; fi; }
verdict() { # value bar op(le|lt)
    local v=${1%×}
    [[ $v =~ ^[0-9.]+$ ]] || { printf 'NOT met'; return 0; }
    awk -v v="$v" -v b="$2" -v op="$3" 'BEGIN { ok = (op == "lt") ? v < b : v <= b; printf ok ? "met" : "NOT met" }'
}

{
    echo "## pgshard cross-shard read benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (dirty)'), $(nproc) cores ($(sed -nE 's/^model name\s*: //p' /proc/cpuinfo | head -n1)), $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM, shared by both shards, pgshard and the clients"
    echo "- $("$PGBIN/postgres" --version); two primaries (shards s0, s1), shared_buffers 256MB, max_parallel_workers_per_gather $PARALLEL_WORKERS; pgshard reads from the primaries (\`read_from = \"primary\"\`), pool size 4, worker threads: ${PGSHARD_THREADS:-one per core}"
    echo "- \`big\`: $ROWS rows (id bigint, v bigint, pad text of $PAD bytes), \`small\`: $SMALL_ROWS rows; each shard loaded directly with half of the ids (placement is NOT by hash: irrelevant for the keyless reads measured here)"
    echo
    echo "Answers through pgshard against the shards' own rows:"
    echo
    printf '%s\n' "${CHECKS[@]}"
    echo
    echo "### Proxy memory"
    echo
    echo "pgshard RSS: $(mib "$RSS_START") MiB after start, $(mib "$RSS_END") MiB at the end. Peak = VmHWM $([[ $HWM_RESET -eq 1 ]] && echo "reset (clear_refs) just before each query" || echo "since start (reset not possible)"); sampled = largest VmRSS read every 10 ms during the query. Slow client: reads ${SLOW_READ_KIB} KiB, sleeps ${SLOW_SLEEP_MS} ms, 64 KiB receive buffer."
    echo
    echo "| query (client) | status | rows | seconds | RSS before MiB | peak MiB | sampled max MiB | RSS after MiB |"
    echo "|---|---|---|---|---|---|---|---|"
    for c in "${MEM_CASES[@]}"; do
        echo "| \`${MEM_Q[$c]}\` (${MEM_CLIENT[$c]}) | ${MEM_STATUS[$c]} | ${MEM_ROWS[$c]} | ${MEM_SECS[$c]} | $(mib "${MEM_BEFORE[$c]}") | $(mib "${MEM_HWM[$c]}") | $(mib "${MEM_SAMPLED[$c]}") | $(mib "${MEM_AFTER[$c]}") |"
    done
    echo
    echo "### Fan-out latency"
    echo
    echo "\`pgbench -n -c 1 -T $DURATION -f query.sql\` (simple protocol), mean latency in ms (median of $REPEAT alternating runs); load average before: $LOAD_BEFORE, after: $LOAD_AFTER."
    echo
    echo "| query | s0 direct | s1 direct | s0 + s1 direct, concurrently (slower) | pgshard | pgshard / slower shard | pgshard / concurrent direct | pgshard − slower shard ms | pgshard CPU µs/query | server logins during the pgshard run |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    for q in "${QUERIES[@]}"; do
        diff=n/a
        if [[ $(lat_ratio "$q") != n/a ]]; then
            diff=$(awk -v a="${LAT[$q/s0]}" -v b="${LAT[$q/s1]}" -v p="${LAT[$q/pgshard]}" \
                'BEGIN { m = a > b ? a : b; printf "%.3f", p - m }')
        fi
        both=n/a
        if [[ ${LSTATUS[$q/both]} == ok && ${LSTATUS[$q/pgshard]} == ok ]]; then
            both=$(awk -v a="${LAT[$q/both]}" -v p="${LAT[$q/pgshard]}" 'BEGIN { printf "%.2f×", p / a }')
        fi
        echo "| \`${QTEXT[$q]%;}\` | $(lat_cell "$q/s0") | $(lat_cell "$q/s1") | $(lat_cell "$q/both") | $(lat_cell "$q/pgshard") | $(lat_ratio "$q") | $both | $diff | ${CPU_US[$q/pgshard]:-n/a} | ${LOGINS[$q/pgshard]:-n/a} |"
    done
    echo
    echo "The last query has its key: pgshard routes it to one shard (a baseline for the proxy's own round trip). \"Concurrently\" runs one pgbench per shard at the same time, directly: the fan-out's cost on this machine without pgshard (both shards share its cores)."
    echo
    echo "### Bars (issue 4), this run"
    echo
    echo "- ORDER BY v LIMIT 10 over $ROWS rows, pgshard peak RSS < 64 MiB: $([[ ${MEM_STATUS[top10]} == ok ]] && verdict "$(mib "${MEM_HWM[top10]}")" 64 lt || echo "NOT met (${MEM_STATUS[top10]})") ($(mib "${MEM_HWM[top10]}") MiB)"
    echo "- count(*) over $ROWS rows within 1.3× the slower shard: $(verdict "$(lat_ratio count-big)" 1.3 le) ($(lat_ratio count-big))"
    echo "- answers equal: $([[ $CHECK_BAD -eq 0 ]] && echo "all ${#CHECKS[@]}" || echo "NOT all ($CHECK_BAD different)")"
} >"$WORK/report.md"

mkdir -p "$RESULTS"
cp "$WORK/report.md" "$RESULTS/scatter.md"
cat "$WORK/report.md"
log "written to bench-results/scatter.md"

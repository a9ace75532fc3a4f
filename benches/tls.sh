#!/usr/bin/env bash
# TLS benchmark: `pgbench -S -c 16` with and without TLS, direct to PostgreSQL (ssl = on) and
# through pgshard, in one run against the same throw-away cluster, repetitions alternating
# between the targets; medians reported. The bar (issue 10): pgshard's TLS/plain ratio at
# ≥ 0.9× PostgreSQL's own TLS/plain ratio.
#
# Targets: direct-plain, direct-tls (PostgreSQL itself); pgshard-plain, pgshard-tls (one pgshard,
# server.tls_mode = "allow", plain to the server: the client leg only, as direct-tls measures
# PostgreSQL's one TLS leg); pgshard-tls-both (a second pgshard, TLS to the client and
# [backend_tls] verify-full to the server); baseline-plain (BASELINE_BIN, if given: a pgshard
# binary of another build, e.g. before TLS, to compare the plain path).
#
# Usage: DURATION=5 bash benches/tls.sh
# Knobs: DURATION (s per run, 10), REPEAT (runs per target, median reported, 3), SCALE (10),
#        CLIENTS (16), POOL_SIZE (20), PROTOCOL (simple), PGBIN, BENCH_OS_USER (pgshard_pg),
#        BASELINE_BIN.
# Prints a markdown table and writes it to bench-results/tls.md (logs in bench-results/tls-logs/).
set -euo pipefail

DURATION=${DURATION:-10}
REPEAT=${REPEAT:-3}
SCALE=${SCALE:-10}
CLIENTS=${CLIENTS:-16}
POOL_SIZE=${POOL_SIZE:-20}
PROTOCOL=${PROTOCOL:-simple}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
BENCH_OS_USER=${BENCH_OS_USER:-pgshard_pg}
BASELINE_BIN=${BASELINE_BIN:-}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS=$ROOT/bench-results
CLK_TCK=$(getconf CLK_TCK)

log() { printf '[tls.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ -x $PGBIN/initdb ]] || die "no PostgreSQL binaries in $PGBIN (set PGBIN)"
command -v pgbench >/dev/null || die "pgbench not on PATH (Debian: postgresql-client-15)"
command -v openssl >/dev/null || die "openssl not on PATH (Debian: openssl)"
[[ -z $BASELINE_BIN || -x $BASELINE_BIN ]] || die "BASELINE_BIN $BASELINE_BIN is not an executable"

if [[ $(id -u) -eq 0 ]]; then
    id -u "$BENCH_OS_USER" >/dev/null 2>&1 ||
        useradd --system --no-create-home --shell /usr/sbin/nologin "$BENCH_OS_USER" ||
        id -u "$BENCH_OS_USER" >/dev/null 2>&1 || die "cannot create OS user $BENCH_OS_USER"
    as_user() { runuser -u "$BENCH_OS_USER" -- "$@"; }
else
    as_user() { "$@"; }
fi

WORK=$(mktemp -d /tmp/pgshard-tls-bench.XXXXXX)
chmod 755 "$WORK"
[[ $(id -u) -ne 0 ]] || chown "$BENCH_OS_USER:" "$WORK"
PGDATA=$WORK/data
PIDS=()
CLUSTER_UP=0

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ $CLUSTER_UP -eq 1 ]]; then
        as_user "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$RESULTS/tls-logs"
    mkdir -p "$RESULTS/tls-logs"
    cp "$WORK"/*.log "$RESULTS/tls-logs/" 2>/dev/null || true
    cp -r "$WORK/runs" "$RESULTS/tls-logs/" 2>/dev/null || true
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
# A CA and a certificate for 127.0.0.1, used by PostgreSQL and pgshard alike
# ---------------------------------------------------------------------------------------------

log "making a CA and a server certificate (openssl)"
{
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
        -subj "/CN=pgshard bench CA" -keyout "$WORK/ca.key" -out "$WORK/ca.pem"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -subj "/CN=127.0.0.1" -keyout "$WORK/server.key" -out "$WORK/server.csr"
    printf 'subjectAltName = IP:127.0.0.1, DNS:localhost\n' >"$WORK/san.ext"
    openssl x509 -req -in "$WORK/server.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" \
        -CAcreateserial -days 2 -extfile "$WORK/san.ext" -out "$WORK/server.pem"
} >"$WORK/openssl.log" 2>&1 || { cat "$WORK/openssl.log" >&2; die "openssl failed"; }

# ---------------------------------------------------------------------------------------------
# PostgreSQL 15 with ssl = on
# ---------------------------------------------------------------------------------------------

free_port PG_PORT
log "initdb in $PGDATA, port $PG_PORT, ssl = on"
echo postgres >"$WORK/pwfile"
[[ $(id -u) -ne 0 ]] || chown "$BENCH_OS_USER:" "$WORK/pwfile"
as_user "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    --pwfile="$WORK/pwfile" -E UTF8 --locale=C --no-sync >"$WORK/initdb.log" 2>&1 ||
    { cat "$WORK/initdb.log" >&2; die "initdb failed"; }
cp "$WORK/server.pem" "$PGDATA/server.crt"
cp "$WORK/server.key" "$PGDATA/server.key"
chmod 600 "$PGDATA/server.key"
[[ $(id -u) -ne 0 ]] || chown "$BENCH_OS_USER:" "$PGDATA/server.crt" "$PGDATA/server.key"
cat >>"$PGDATA/postgresql.conf" <<EOF

# pgshard TLS benchmark
port = $PG_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 128MB
password_encryption = 'scram-sha-256'
ssl = on
EOF
as_user "$PGBIN/pg_ctl" -D "$PGDATA" -l "$WORK/postgresql.log" -w start >/dev/null ||
    { tail -n 30 "$WORK/postgresql.log" >&2; die "PostgreSQL did not start"; }
CLUSTER_UP=1

psql -X -q -v ON_ERROR_STOP=1 -h "$WORK" -p "$PG_PORT" -U postgres -d postgres \
    -c "CREATE ROLE app LOGIN PASSWORD 'app'" -c "CREATE DATABASE pgbench OWNER app"
export PGUSER=app PGPASSWORD=app PGHOST=127.0.0.1
log "pgbench -i -s $SCALE"
PGSSLMODE=disable pgbench -i -q -s "$SCALE" -p "$PG_PORT" pgbench >"$WORK/pgbench-init.log" 2>&1 ||
    { cat "$WORK/pgbench-init.log" >&2; die "pgbench -i failed"; }

# ---------------------------------------------------------------------------------------------
# pgshard: one with TLS to clients only, one with TLS on both sides
# ---------------------------------------------------------------------------------------------

# start_pgshard NAME PORT BINARY EXTRA_SERVER_TOML BACKEND_TLS_TOML: sets PGSHARD_PID.
start_pgshard() {
    local name=$1 port=$2 binary=$3 server_extra=$4 backend=$5
    cat >"$WORK/$name.toml" <<EOF
[server]
listen = "127.0.0.1:$port"
database = "pgbench"
pool_mode = "transaction"
$server_extra

[pool]
size = $POOL_SIZE

[[users]]
name = "app"
password = "app"

$backend

[[shards]]
name = "s0"
primary = "127.0.0.1:$PG_PORT"
read_from = "primary"
EOF
    # Its own session, as PgBouncer's (benches/lib.sh, start_pgshard).
    NO_COLOR=1 setsid "$binary" serve --config "$WORK/$name.toml" >>"$WORK/$name.log" 2>&1 &
    PGSHARD_PID=$!
    PIDS+=("$PGSHARD_PID")
    wait_port "$port" "pgshard ($name)"
}

CLIENT_TLS="tls_cert = \"$WORK/server.pem\"
tls_key = \"$WORK/server.key\"
tls_mode = \"allow\""
free_port SHARD_PORT
start_pgshard pgshard "$SHARD_PORT" "$PGSHARD" "$CLIENT_TLS" ""
SHARD_PID=$PGSHARD_PID
free_port BOTH_PORT
start_pgshard pgshard-both "$BOTH_PORT" "$PGSHARD" "$CLIENT_TLS" \
    "[backend_tls]
mode = \"verify-full\"
ca = \"$WORK/ca.pem\""
BOTH_PID=$PGSHARD_PID
# target → "port pid sslmode"
declare -A TARGET=(
    [direct-plain]="$PG_PORT - disable"
    [direct-tls]="$PG_PORT - require"
    [pgshard-plain]="$SHARD_PORT $SHARD_PID disable"
    [pgshard-tls]="$SHARD_PORT $SHARD_PID require"
    [pgshard-tls-both]="$BOTH_PORT $BOTH_PID require"
)
ORDER=(direct-plain direct-tls pgshard-plain pgshard-tls pgshard-tls-both)
if [[ -n $BASELINE_BIN ]]; then
    free_port BASE_PORT
    start_pgshard baseline "$BASE_PORT" "$BASELINE_BIN" "" ""
    TARGET[baseline-plain]="$BASE_PORT $PGSHARD_PID disable"
    ORDER+=(baseline-plain)
fi

# The TLS targets really are TLS, and the plain ones plain (as the server sees its clients).
PGSSLMODE=verify-full PGSSLROOTCERT=$WORK/ca.pem psql -X -q -At -p "$SHARD_PORT" -d pgbench \
    -c 'SELECT 1' >/dev/null || die "pgshard does not serve TLS with verify-full"
ssl_seen=$(PGSSLMODE=require psql -X -q -At -p "$BOTH_PORT" -d pgbench \
    -c 'SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()')
[[ $ssl_seen == t ]] || die "pgshard-both's server connection is not TLS ($ssl_seen)"

# cpu_ticks PID: user + system clock ticks of a process.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# ---------------------------------------------------------------------------------------------
# Runs, alternating
# ---------------------------------------------------------------------------------------------

mkdir -p "$WORK/runs"
declare -A RUNS_TPS RUNS_CPU
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for rep in $(seq 1 "$REPEAT"); do
    for t in "${ORDER[@]}"; do
        read -r port pid sslmode <<<"${TARGET[$t]}"
        out=$WORK/runs/$t-$rep.out
        before=0
        [[ $pid == - ]] || before=$(cpu_ticks "$pid")
        PGSSLMODE=$sslmode timeout --signal=INT --kill-after=10 $((DURATION + 60)) \
            pgbench -n -S -M "$PROTOCOL" -c "$CLIENTS" -j 2 -T "$DURATION" -p "$port" pgbench \
            >"$out" 2>"$WORK/runs/$t-$rep.err" || die "pgbench against $t failed: $(tail -n 3 "$WORK/runs/$t-$rep.err")"
        tps=$(sed -nE 's/^tps = ([0-9.]+).*/\1/p' "$out" | head -n1)
        txns=$(sed -nE 's/^number of transactions actually processed: ([0-9]+).*/\1/p' "$out")
        failed=$(sed -nE 's/^number of failed transactions: ([0-9]+).*/\1/p' "$out")
        [[ ${failed:-0} -eq 0 && -n $tps ]] || die "$t run $rep: ${failed:-?} failed transactions"
        cpu=n/a
        if [[ $pid != - ]]; then
            cpu=$(awk -v a="$before" -v b="$(cpu_ticks "$pid")" -v hz="$CLK_TCK" -v n="$txns" \
                'BEGIN { printf "%.1f", (b - a) * 1e6 / hz / n }')
        fi
        RUNS_TPS[$t]+="$tps "
        RUNS_CPU[$t]+="$cpu "
        log "$t run $rep: $tps tps, pgshard CPU $cpu µs/txn"
        sleep 1
    done
done
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : v[NR / 2] }'; }
declare -A TPS CPU
for t in "${ORDER[@]}"; do
    TPS[$t]=$(median <<<"${RUNS_TPS[$t]}")
    CPU[$t]=$( [[ ${RUNS_CPU[$t]} == *n/a* ]] && echo n/a || median <<<"${RUNS_CPU[$t]}")
done
div() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
DIRECT_RATIO=$(div "${TPS[direct-tls]}" "${TPS[direct-plain]}")
SHARD_RATIO=$(div "${TPS[pgshard-tls]}" "${TPS[pgshard-plain]}")
BOTH_RATIO=$(div "${TPS[pgshard-tls-both]}" "${TPS[pgshard-plain]}")
RELATIVE=$(div "$SHARD_RATIO" "$DIRECT_RATIO")
VERDICT=$(awk -v r="$RELATIVE" 'BEGIN { print (r >= 0.9) ? "met" : "NOT met" }')

{
    echo "## TLS benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (dirty)'), $(nproc) cores, $("$PGBIN/postgres" --version)"
    echo "- \`pgbench -n -S -M $PROTOCOL -c $CLIENTS -j 2\`, scale $SCALE, ${DURATION} s per run, median of $REPEAT runs per target, targets alternating; TLS clients use sslmode=require (TLS 1.3, P-256 certificate)"
    echo "- pgshard: transaction mode, pool size $POOL_SIZE; load average before: $LOAD_BEFORE, after: $LOAD_AFTER"
    echo
    echo "| target | tps (median) | runs | pgshard µs CPU/txn (median) |"
    echo "|---|---|---|---|"
    for t in "${ORDER[@]}"; do
        echo "| $t | ${TPS[$t]} | ${RUNS_TPS[$t]% } | ${CPU[$t]} |"
    done
    echo
    echo "- PostgreSQL TLS/plain: ${DIRECT_RATIO}×"
    echo "- pgshard TLS/plain (client leg): ${SHARD_RATIO}×; with TLS to the server too: ${BOTH_RATIO}×"
    echo "- bar, pgshard's ratio ≥ 0.9× PostgreSQL's: $VERDICT (${RELATIVE}×)"
} >"$WORK/report.md"
mkdir -p "$RESULTS"
cp "$WORK/report.md" "$RESULTS/tls.md"
cat "$WORK/report.md"
log "written to bench-results/tls.md"

#!/usr/bin/env bash
# Memory per idle client and connection storms, pgshard against PgBouncer in one run, each proxy
# freshly started for each measurement, against one throw-away PostgreSQL 15 cluster:
#
# - idle: IDLE_CLIENTS connections opened CONCURRENCY_IDLE at a time (each: SCRAM login, one
#   `SELECT 1`, then idle); resident memory per idle connection = (RSS with them - RSS before) / n.
# - storm: STORM_CLIENTS connections opened all at once (same steps); time until every one is
#   connected (or failed), failures by SQLSTATE (or `timeout` / `io`), the proxy's peak RSS
#   (VmHWM) and its RSS with all of them open.
#
# Usage (as root, or as a user with pgbouncer installed and a high enough open-files limit):
#   bash benches/storm.sh
# Knobs: IDLE_CLIENTS (2000), CONCURRENCY_IDLE (64), STORM_CLIENTS (10000), POOL_SIZE (20),
#        REPEAT (1: runs per cell, median reported), PHASES ("idle storm"),
#        CONNECT_TIMEOUT_SECS (120: the client's limit per connection; pgshard's
#        server.startup_timeout_ms is raised to match), PGSHARD_THREADS (pgshard serve --threads),
#        BASELINE_BIN (a pgshard binary of another build, measured as a third proxy),
#        PGBIN (/usr/lib/postgresql/15/bin), BENCH_OS_USER (pgshard_pg).
# Prints a markdown report and writes it to bench-results/storm.md.
set -euo pipefail

IDLE_CLIENTS=${IDLE_CLIENTS:-2000}
CONCURRENCY_IDLE=${CONCURRENCY_IDLE:-64}
STORM_CLIENTS=${STORM_CLIENTS:-10000}
POOL_SIZE=${POOL_SIZE:-20}
REPEAT=${REPEAT:-1}
CONNECT_TIMEOUT_SECS=${CONNECT_TIMEOUT_SECS:-120}
PGSHARD_THREADS=${PGSHARD_THREADS:-}
BASELINE_BIN=${BASELINE_BIN:-}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
BENCH_OS_USER=${BENCH_OS_USER:-pgshard_pg}
read -r -a PHASES <<<"${PHASES:-idle storm}"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS=$ROOT/bench-results

log() { printf '[storm.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ -x $PGBIN/initdb ]] || die "no PostgreSQL binaries in $PGBIN (set PGBIN)"
PGBOUNCER=$(command -v pgbouncer || true)
[[ -z $PGBOUNCER && -x /usr/sbin/pgbouncer ]] && PGBOUNCER=/usr/sbin/pgbouncer
[[ -n $PGBOUNCER ]] || die "pgbouncer is not installed (Debian: apt-get install pgbouncer)"

# A storm needs a descriptor per client in the client process and in the proxy (twice that, and
# more, for the whole run): raise the hard limit too when allowed (root).
WANT_FDS=$((STORM_CLIENTS * 2 + 4096))
ulimit -Hn "$WANT_FDS" 2>/dev/null || true
ulimit -n "$WANT_FDS" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
[[ $(ulimit -n) -ge $((STORM_CLIENTS + 1024)) ]] ||
    die "open-files limit $(ulimit -n) is too low for $STORM_CLIENTS clients (run as root or raise it)"

if [[ $(id -u) -eq 0 ]]; then
    id -u "$BENCH_OS_USER" >/dev/null 2>&1 ||
        useradd --system --no-create-home --shell /usr/sbin/nologin "$BENCH_OS_USER" ||
        id -u "$BENCH_OS_USER" >/dev/null 2>&1 || die "cannot create OS user $BENCH_OS_USER"
    # runuser's PAM session resets the open-files limits: raise them again inside.
    as_user() {
        runuser -u "$BENCH_OS_USER" -- sh -c "ulimit -Hn $(ulimit -Hn); ulimit -n $(ulimit -n) && exec \"\$@\"" sh "$@"
    }
else
    as_user() { "$@"; }
fi

WORK=$(mktemp -d /tmp/pgshard-storm.XXXXXX)
chmod 755 "$WORK"
if [[ $(id -u) -eq 0 ]]; then chown "$BENCH_OS_USER:" "$WORK"; fi
PGDATA=$WORK/data
PIDS=()
CLUSTER_UP=0
cleanup() {
    local rc=$? pid
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    [[ -f $WORK/pgbouncer.pid ]] && kill -TERM "$(cat "$WORK/pgbouncer.pid")" 2>/dev/null || true
    if [[ $CLUSTER_UP -eq 1 ]]; then
        as_user "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$RESULTS/storm-logs"
    mkdir -p "$RESULTS/storm-logs"
    cp "$WORK"/*.log "$WORK"/*.out "$RESULTS/storm-logs/" 2>/dev/null || true
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

status_kib() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }

cd "$ROOT"
log "building (cargo build --release, idle_clients bench binary)"
cargo build --release --quiet
PGSHARD=$ROOT/target/release/pgshard
CLIENT_BIN=$(cargo bench --quiet --no-run --bench idle_clients --message-format=json 2>/dev/null |
    grep -o '"executable":"[^"]*idle_clients[^"]*"' | tail -n1 | cut -d'"' -f4)
[[ -x $CLIENT_BIN ]] || die "could not build benches/idle_clients.rs"

free_port PG_PORT
log "initdb in $PGDATA, port $PG_PORT"
echo postgres >"$WORK/pwfile"
if [[ $(id -u) -eq 0 ]]; then chown "$BENCH_OS_USER:" "$WORK/pwfile"; fi
as_user "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
    --pwfile="$WORK/pwfile" -E UTF8 --locale=C --no-sync >"$WORK/initdb.log" 2>&1 ||
    { cat "$WORK/initdb.log" >&2; die "initdb failed"; }
cat >>"$PGDATA/postgresql.conf" <<EOF
port = $PG_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK'
max_connections = 200
fsync = off
password_encryption = 'scram-sha-256'
EOF
as_user "$PGBIN/pg_ctl" -D "$PGDATA" -l "$WORK/postgresql.log" -w start >/dev/null ||
    { tail -n 30 "$WORK/postgresql.log" >&2; die "PostgreSQL did not start"; }
CLUSTER_UP=1
psql -X -q -v ON_ERROR_STOP=1 -h "$WORK" -p "$PG_PORT" -U postgres -d postgres \
    -c "CREATE ROLE app LOGIN PASSWORD 'app'" -c "CREATE DATABASE app OWNER app"
export PGUSER=app PGPASSWORD=app PGHOST=127.0.0.1 PGDATABASE=app

MAX_CLIENTS=$((STORM_CLIENTS + 1000))

# start_proxy NAME: starts a fresh proxy (pgshard, baseline or pgbouncer); sets PROXY_PID, PROXY_PORT.
start_proxy() {
    local name=$1 binary=$PGSHARD
    free_port PROXY_PORT
    if [[ $name == pgbouncer ]]; then
        printf '"app" "app"\n' >"$WORK/userlist.txt"
        cat >"$WORK/pgbouncer.ini" <<EOF
[databases]
app = host=127.0.0.1 port=$PG_PORT dbname=app

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PROXY_PORT
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $WORK/userlist.txt
pool_mode = transaction
default_pool_size = $POOL_SIZE
max_client_conn = $MAX_CLIENTS
max_db_connections = 0
listen_backlog = 4096
ignore_startup_parameters = extra_float_digits
logfile = $WORK/pgbouncer.log
pidfile = $WORK/pgbouncer.pid
log_connections = 0
log_disconnections = 0
EOF
        if [[ $(id -u) -eq 0 ]]; then chown "$BENCH_OS_USER:" "$WORK/userlist.txt" "$WORK/pgbouncer.ini"; fi
        rm -f "$WORK/pgbouncer.pid"
        as_user "$PGBOUNCER" -d "$WORK/pgbouncer.ini" || die "pgbouncer did not start"
        wait_port "$PROXY_PORT" pgbouncer
        PROXY_PID=$(cat "$WORK/pgbouncer.pid")
        return
    fi
    [[ $name == baseline ]] && binary=$BASELINE_BIN
    cat >"$WORK/$name.toml" <<EOF
[server]
listen = "127.0.0.1:$PROXY_PORT"
database = "app"
pool_mode = "transaction"
max_client_connections = $MAX_CLIENTS
startup_timeout_ms = $((CONNECT_TIMEOUT_SECS * 1000))

[pool]
size = $POOL_SIZE
checkout_timeout_ms = $((CONNECT_TIMEOUT_SECS * 1000))

[[users]]
name = "app"
password = "app"

[[shards]]
name = "s0"
primary = "127.0.0.1:$PG_PORT"
read_from = "primary"
EOF
    # Its own session, as PgBouncer's (benches/lib.sh, start_pgshard).
    NO_COLOR=1 setsid "$binary" serve --config "$WORK/$name.toml" ${PGSHARD_THREADS:+--threads "$PGSHARD_THREADS"} \
        >>"$WORK/$name.log" 2>&1 &
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    wait_port "$PROXY_PORT" "pgshard ($name)"
}

stop_proxy() { # name
    kill -TERM "$PROXY_PID" 2>/dev/null || true
    local i
    for i in $(seq 1 200); do
        kill -0 "$PROXY_PID" 2>/dev/null || break
        sleep 0.05
    done
    kill -KILL "$PROXY_PID" 2>/dev/null || true
    [[ $1 == pgbouncer ]] || wait "$PROXY_PID" 2>/dev/null || true
    rm -f "$WORK/pgbouncer.pid"
}

# open_clients NAME COUNT CONCURRENCY: runs the client until its `ready` line; sets OPENED,
# FAILED, TOOK_MS, ERRORS, CLIENT_PID (still holding its connections).
open_clients() {
    local name=$1 count=$2 concurrency=$3 i
    local out=$WORK/clients-$name.out
    rm -f "$out"
    PGPORT=$PROXY_PORT COUNT=$count CONCURRENCY=$concurrency CONNECT_TIMEOUT_SECS=$CONNECT_TIMEOUT_SECS \
        "$CLIENT_BIN" >"$out" 2>>"$WORK/clients-$name.log" &
    CLIENT_PID=$!
    PIDS+=("$CLIENT_PID")
    for i in $(seq 1 $((CONNECT_TIMEOUT_SECS * 20 + 1200))); do
        grep -q '^ready' "$out" 2>/dev/null && break
        kill -0 "$CLIENT_PID" 2>/dev/null || break
        sleep 0.05
    done
    grep -q '^ready' "$out" || { tail -n 5 "$WORK/clients-$name.log" >&2; die "the clients of $name never got ready"; }
    read -r _ OPENED FAILED TOOK_MS < <(grep '^ready' "$out")
    ERRORS=$(sed -n 's/^errors //p' "$out")
    ERRORS=${ERRORS:-none}
}

declare -A IDLE_KIB IDLE_ROW STORM_MS STORM_ROW
idle_run() { # name run
    local name=$1 r=$2 before after
    start_proxy "$name"
    psql -X -q -p "$PROXY_PORT" -c 'SELECT 1' >/dev/null # a warm pool and runtime in the baseline
    sleep 1
    before=$(status_kib "$PROXY_PID" VmRSS)
    open_clients "$name" "$IDLE_CLIENTS" "$CONCURRENCY_IDLE"
    sleep 2
    after=$(status_kib "$PROXY_PID" VmRSS)
    stop_pid_quiet "$CLIENT_PID"
    stop_proxy "$name"
    IDLE_KIB[$name#$r]=$(awk -v a="$after" -v b="$before" -v n="$OPENED" 'BEGIN { printf "%.2f", n ? (a - b) / n : 0 }')
    IDLE_ROW[$name#$r]="| $name | $OPENED | $FAILED | $before | $after | ${IDLE_KIB[$name#$r]} |"
    log "idle $name #$r: $OPENED open, $FAILED failed ($ERRORS), RSS $before → $after KiB, ${IDLE_KIB[$name#$r]} KiB per client"
}

storm_run() { # name run
    local name=$1 r=$2 before held peak
    start_proxy "$name"
    psql -X -q -p "$PROXY_PORT" -c 'SELECT 1' >/dev/null
    sleep 1
    before=$(status_kib "$PROXY_PID" VmRSS)
    open_clients "$name" "$STORM_CLIENTS" "$STORM_CLIENTS"
    sleep 1
    held=$(status_kib "$PROXY_PID" VmRSS)
    peak=$(status_kib "$PROXY_PID" VmHWM)
    stop_pid_quiet "$CLIENT_PID"
    stop_proxy "$name"
    STORM_MS[$name#$r]=$TOOK_MS
    STORM_ROW[$name#$r]="| $name | $STORM_CLIENTS | $OPENED | $ERRORS | $TOOK_MS | $before | $peak | $held |"
    log "storm $name #$r: $OPENED of $STORM_CLIENTS connected in $TOOK_MS ms, errors: $ERRORS, RSS $before KiB before, peak $peak, held $held"
}

stop_pid_quiet() {
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
    sleep 1
}

# median_key ARRAY-NAME NAME: the NAME#r key whose value is the median of the runs.
median_key() {
    local -n values=$1
    local r
    for r in $(seq 1 "$REPEAT"); do echo "${values[$2#$r]} $r"; done |
        sort -n | sed -n "$(((REPEAT + 1) / 2))p" | awk -v n="$2" '{ print n "#" $2 }'
}

PROXIES=(pgshard pgbouncer)
[[ -n $BASELINE_BIN ]] && PROXIES+=(baseline)
for phase in "${PHASES[@]}"; do
    for r in $(seq 1 "$REPEAT"); do
        n=${#PROXIES[@]}
        for i in $(seq 0 $((n - 1))); do
            p=${PROXIES[$(((i + r - 1) % n))]}
            case $phase in
                idle) idle_run "$p" "$r" ;;
                storm) storm_run "$p" "$r" ;;
                *) die "unknown phase $phase" ;;
            esac
        done
    done
done

{
    echo "## Memory and connection storms, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (dirty)'), $(nproc) cores, $("$PGBIN/postgres" --version), $("$PGBOUNCER" --version | head -n1)"
    echo "- pool size $POOL_SIZE, transaction mode, SCRAM client auth; pgshard worker threads: ${PGSHARD_THREADS:-one per core}; each proxy freshly started per run, median of $REPEAT"
    echo "- load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    if [[ " ${PHASES[*]} " == *" idle "* ]]; then
        echo "Idle clients ($IDLE_CLIENTS opened $CONCURRENCY_IDLE at a time; SCRAM login, one \`SELECT 1\`, then idle):"
        echo
        echo "| proxy | idle connections | failed | RSS before KiB | RSS with them KiB | KiB per idle client |"
        echo "|---|---|---|---|---|---|"
        for p in "${PROXIES[@]}"; do echo "${IDLE_ROW[$(median_key IDLE_KIB "$p")]}"; done
        echo
    fi
    if [[ " ${PHASES[*]} " == *" storm "* ]]; then
        echo "Connection storm ($STORM_CLIENTS clients connecting at once; SCRAM login, one \`SELECT 1\`, then held):"
        echo
        echo "| proxy | clients | connected | errors | ms until all done | RSS before KiB | peak RSS KiB | RSS holding them KiB |"
        echo "|---|---|---|---|---|---|---|---|"
        for p in "${PROXIES[@]}"; do echo "${STORM_ROW[$(median_key STORM_MS "$p")]}"; done
        echo
    fi
} >"$WORK/report.md"
mkdir -p "$RESULTS"
cp "$WORK/report.md" "$RESULTS/storm.md"
cat "$WORK/report.md"
log "written to bench-results/storm.md"

#!/usr/bin/env bash
# PostgreSQL's own regression suite as a conformance test of pgshard: the serial schedule of the
# installed PostgreSQL 15 runs three times, each on a fresh copy of one throw-away cluster:
# directly, through pgshard in session mode and through pgshard in transaction mode (one shard).
# Each test's result (ok / FAILED) through pgshard is compared with the direct run; every
# difference must be listed, with its reason, in tests/conformance/expected-differences.txt.
#
# Usage (as root on a fresh Debian machine; as another user once the cache below is filled):
#   bash tests/conformance/pg_regress.sh                    # run, compare, check the expected list
#   bash tests/conformance/pg_regress.sh --update-expected  # rewrite the list from this run
# --update-expected keeps the reason of every listed difference that still differs and writes
# `TODO` for new ones; a list containing TODO is refused, so reasons are written by hand.
# --compare-only compares the runs kept in target/conformance again (e.g. with --update-expected)
# without running anything. --modes "session transaction" runs only some modes (direct always
# runs). TESTS="temp prepare" runs those tests instead of the schedule (quick checks; the
# expected list is checked for them only).
#
# Knobs (environment): PGBIN (/usr/lib/postgresql/15/bin), REGRESS_OS_USER (pgshard_pg),
#   PGSHARD_BIN (a built pgshard; default: cargo build --release),
#   SESSION_POOL_SIZE (pool.size in session mode, 4: psql's \c holds two connections at once),
#   TRANSACTION_POOL_SIZE (pool.size in transaction mode, 4; before clients were pinned to their
#   server connection by temp tables and the like, a pool above 1 made temp-table tests differ
#   from run to run),
#   TEST_TIMEOUT (s one test may run before its psql is ended and the test fails, 300),
#   PGSHARD_REGRESS_CACHE (where sources and regress.so are kept: /var/cache/pgshard-regress as
#   root, else $XDG_CACHE_HOME/pgshard-regress).
# The suite comes from `apt-get source postgresql-15=<installed version>` (a deb-src entry is
# added if missing) and regress.so is built with pgxs from postgresql-server-dev-15 pinned to the
# installed server version: the install is refused if apt would upgrade, downgrade or remove
# anything else. Nothing fetched or built goes into the repository.
# Output: a table on stdout; per-mode regression.out / regression.diffs / results/ and the table
# (summary.md) in target/conformance/. Exit 0 when the differences are exactly the listed ones.
set -euo pipefail

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
REGRESS_OS_USER=${REGRESS_OS_USER:-pgshard_pg}
SESSION_POOL_SIZE=${SESSION_POOL_SIZE:-4}
TRANSACTION_POOL_SIZE=${TRANSACTION_POOL_SIZE:-4}
TEST_TIMEOUT=${TEST_TIMEOUT:-300}
TESTS=${TESTS:-}
PGSHARD_BIN=${PGSHARD_BIN:-}
PG_REGRESS=$(dirname "$PGBIN")/lib/pgxs/src/test/regress/pg_regress

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
EXPECTED=$HERE/expected-differences.txt
RESULTS=$ROOT/target/conformance
UPDATE=0
COMPARE_ONLY=0
MODES=(session transaction)

log() { printf '[pg_regress.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 2; }

while [[ $# -gt 0 ]]; do
    case $1 in
    --update-expected) UPDATE=1 ;;
    --compare-only) COMPARE_ONLY=1 ;;
    --modes) read -r -a MODES <<<"$2"; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
    esac
    shift
done
for m in "${MODES[@]}"; do [[ $m == session || $m == transaction ]] || die "unknown mode $m"; done

START=$SECONDS
if [[ $COMPARE_ONLY -eq 1 ]]; then
    PREPARED=$START
    # shellcheck source=tests/conformance/compare.sh
    source "$HERE/compare.sh"
    compare_and_report
    exit 0
fi
[[ -x $PGBIN/initdb ]] || die "no PostgreSQL binaries in $PGBIN (set PGBIN)"
[[ -x $PG_REGRESS ]] || die "no pg_regress at $PG_REGRESS (Debian: postgresql-client-15)"
PG_VERSION=$(dpkg-query -W -f='${Version}' postgresql-15 2>/dev/null) ||
    die "postgresql-15 is not installed as a Debian package; this script fetches its sources with apt"
UPSTREAM=${PG_VERSION%%-*}
if [[ $(id -u) -eq 0 ]]; then
    CACHE_BASE=${PGSHARD_REGRESS_CACHE:-/var/cache/pgshard-regress}
else
    CACHE_BASE=${PGSHARD_REGRESS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pgshard-regress}
fi
CACHE=$CACHE_BASE/$PG_VERSION
SUITE=$CACHE/postgresql-15-$UPSTREAM/src/test/regress
LIBDIR=$CACHE/lib

# shellcheck source=tests/conformance/fetch.sh
source "$HERE/fetch.sh"
fetch_suite
build_regress_lib

if [[ -z $PGSHARD_BIN ]]; then
    log "building pgshard (cargo build --release)"
    (cd "$ROOT" && cargo build --release --quiet)
    PGSHARD_BIN=$ROOT/target/release/pgshard
fi
[[ -x $PGSHARD_BIN ]] || die "no pgshard binary at $PGSHARD_BIN"
PREPARED=$SECONDS

# ---------------------------------------------------------------------------------------------
# Throw-away clusters, run as an unprivileged user when we are root (PostgreSQL refuses root)
# ---------------------------------------------------------------------------------------------

if [[ $(id -u) -eq 0 ]]; then
    id -u "$REGRESS_OS_USER" >/dev/null 2>&1 ||
        useradd --system --no-create-home --shell /usr/sbin/nologin "$REGRESS_OS_USER" ||
        id -u "$REGRESS_OS_USER" >/dev/null 2>&1 || die "cannot create OS user $REGRESS_OS_USER"
    as_user() { runuser -u "$REGRESS_OS_USER" -- "$@"; }
else
    as_user() { "$@"; }
fi

WORK=$(mktemp -d /tmp/pgshard-regress.XXXXXX)
chmod 755 "$WORK"
[[ $(id -u) -eq 0 ]] && chown "$REGRESS_OS_USER:" "$WORK"
PIDS=()
DATADIRS=()

cleanup() {
    local rc=$? pid d
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    for d in "${DATADIRS[@]}"; do
        [[ -f $d/postmaster.pid ]] && as_user "$PGBIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1
    done
    rm -rf "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

log "initdb (template cluster)"
as_user "$PGBIN/initdb" -D "$WORK/template" -U postgres --auth=trust -E UTF8 --locale=C --no-sync \
    >"$WORK/initdb.log" 2>&1 || { cat "$WORK/initdb.log" >&2; die "initdb failed"; }

# start_cluster NAME: a fresh copy of the template cluster in $WORK/NAME/data, with database
# `regression` created as pg_regress itself creates it; sets PG_PORT.
start_cluster() {
    local name=$1 data=$WORK/$1/data
    free_port PG_PORT
    as_user mkdir -p "$WORK/$name"
    as_user cp -a "$WORK/template" "$data"
    cat >>"$data/postgresql.conf" <<EOF

# pgshard conformance run
port = $PG_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK/$name'
fsync = off
synchronous_commit = off
full_page_writes = off
max_prepared_transactions = 10
log_line_prefix = '%m [%p] %q%a '
EOF
    DATADIRS+=("$data")
    as_user "$PGBIN/pg_ctl" -D "$data" -l "$WORK/$name/postgresql.log" -w start >/dev/null ||
        { tail -n 30 "$WORK/$name/postgresql.log" >&2; die "PostgreSQL did not start"; }
    local db=regression
    psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres \
        -c "CREATE DATABASE $db TEMPLATE=template0" \
        -c "ALTER DATABASE $db SET lc_messages TO 'C'" -c "ALTER DATABASE $db SET lc_monetary TO 'C'" \
        -c "ALTER DATABASE $db SET lc_numeric TO 'C'" -c "ALTER DATABASE $db SET lc_time TO 'C'" \
        -c "ALTER DATABASE $db SET bytea_output TO 'hex'" \
        -c "ALTER DATABASE $db SET timezone_abbreviations TO 'Default'" >/dev/null
}

# start_pgshard MODE: pgshard in front of the current cluster, one shard, pool_mode MODE, clients
# authenticated with trust as the bootstrap superuser; sets PROXY_PORT.
start_pgshard() {
    local mode=$1 size=$SESSION_POOL_SIZE
    [[ $mode == transaction ]] && size=$TRANSACTION_POOL_SIZE
    echo "$size" >"$WORK/$mode/pool_size"
    free_port PROXY_PORT
    cat >"$WORK/$mode/pgshard.toml" <<EOF
[server]
listen = "127.0.0.1:$PROXY_PORT"
database = "regression"
pool_mode = "$mode"
auth_method = "trust"

[pool]
size = $size

[[users]]
name = "postgres"
password = "postgres"

[[shards]]
name = "s0"
primary = "127.0.0.1:$PG_PORT"
read_from = "primary"
EOF
    "$PGSHARD_BIN" serve --config "$WORK/$mode/pgshard.toml" >"$WORK/$mode/pgshard.log" 2>&1 &
    PIDS+=($!)
    wait_port "$PROXY_PORT" "pgshard ($mode)"
}

# watchdog PID: ends any psql below PID that has run longer than TEST_TIMEOUT seconds (the test
# then fails and pg_regress goes on with the next one).
watchdog() {
    local root=$1 victims
    while kill -0 "$root" 2>/dev/null; do
        victims=$(ps -e -o pid=,ppid=,etimes=,comm= | awk -v root="$root" -v limit="$TEST_TIMEOUT" '
            { parent[$1] = $2; age[$1] = $3; cmd[$1] = $4 }
            END {
                for (p in cmd) {
                    if (cmd[p] != "psql" || age[p] <= limit) continue
                    for (q = parent[q = p]; q > 1; q = parent[q]) if (q == root) { print p; break }
                }
            }')
        for v in $victims; do
            log "a test ran longer than ${TEST_TIMEOUT}s: ending its psql (pid $v)"
            kill -TERM "$v" 2>/dev/null || true
        done
        sleep 5
    done
}

# run_suite NAME PORT: pg_regress over TCP on PORT; output in $WORK/NAME/out.
run_suite() {
    local name=$1 port=$2 out=$WORK/$1/out t0=$SECONDS pid
    local what=(--schedule="$SUITE/parallel_schedule")
    # shellcheck disable=SC2206
    [[ -n $TESTS ]] && what=($TESTS)
    as_user mkdir -p "$out"
    log "running the suite: $name"
    as_user "$PG_REGRESS" --inputdir="$SUITE" --outputdir="$out" --bindir="$PGBIN" --dlpath="$LIBDIR" \
        --max-connections=1 --use-existing --host=127.0.0.1 --port="$port" --user=postgres \
        --dbname=regression "${what[@]}" >"$WORK/$name/stdout" 2>"$WORK/$name/stderr" &
    pid=$!
    watchdog "$pid" &
    local wd=$!
    wait "$pid" || true
    wait "$wd" 2>/dev/null || true
    # "test name ... ok  12 ms", "     name ... FAILED  12 ms", "... failed (ignored)"
    sed -nE 's/^(test )? *([A-Za-z0-9_.-]+) +\.\.\. (ok|FAILED|failed \(ignored\)).*/\2 \3/p' \
        "$WORK/$name/stdout" | sed 's/ failed (ignored)$/ ok/' >"$WORK/$name/status"
    [[ -s $WORK/$name/status ]] || { cat "$WORK/$name/stdout" "$WORK/$name/stderr" >&2; die "pg_regress ran no test ($name)"; }
    echo $((SECONDS - t0)) >"$WORK/$name/seconds"
    log "$name: $(wc -l <"$WORK/$name/status") tests, $(grep -c ' FAILED$' "$WORK/$name/status" || true) failed, $((SECONDS - t0))s"
}

keep_results() {
    local name=$1
    rm -rf "${RESULTS:?}/$name"
    mkdir -p "$RESULTS/$name"
    echo "$PG_VERSION" >"$RESULTS/$name/version"
    cp -r "$WORK/$name/out/." "$WORK/$name/stdout" "$WORK/$name/status" "$WORK/$name/seconds" \
        "$WORK/$name/postgresql.log" "$RESULTS/$name/" 2>/dev/null || true
    cp "$WORK/$name/pgshard.log" "$WORK/$name/pgshard.toml" "$WORK/$name/pool_size" "$RESULTS/$name/" \
        2>/dev/null || true
}
stop_cluster() {
    as_user "$PGBIN/pg_ctl" -D "$WORK/$1/data" -m fast -w stop >/dev/null
}

start_cluster direct
run_suite direct "$PG_PORT"
stop_cluster direct
keep_results direct
for mode in "${MODES[@]}"; do
    start_cluster "$mode"
    start_pgshard "$mode"
    run_suite "$mode" "$PROXY_PORT"
    kill -TERM "${PIDS[-1]}" && wait "${PIDS[-1]}" 2>/dev/null || true
    unset 'PIDS[-1]'
    stop_cluster "$mode"
    keep_results "$mode"
done

# ---------------------------------------------------------------------------------------------
# Compare with the direct run, print the table, check the expected differences
# ---------------------------------------------------------------------------------------------

# shellcheck source=tests/conformance/compare.sh
source "$HERE/compare.sh"
compare_and_report

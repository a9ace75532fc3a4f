#!/usr/bin/env bash
# Instructions per transaction (valgrind --tool=callgrind), system calls (strace -c -f) and
# context switches per transaction of pgshard (routing off: one shard, statements forwarded
# unparsed; routing on: two shards, every statement routed) and PgBouncer on a fixed pgbench -S
# workload. Instruction counts repeat to within a percent between runs, where wall-clock numbers
# on a shared machine move by ±20%: compare builds here first, confirm with benches/pgbench.sh.
#
# Usage: bash benches/callgrind.sh          (as root on a fresh machine, like benches/pgbench.sh)
# Knobs: LO / HI (pgbench -t of the short and the long measured run, 50 / 250; each runs in a
#        fresh proxy after a warm-up run of WARMUP (20) transactions per client; the cost per
#        transaction is the difference of the two runs' instructions over the difference of
#        their transactions, so logins, startup and the pool's warm-up cancel out; CONNECT_LO /
#        CONNECT_HI, 2 / 10, for -C),
#        REPEAT (3: the median of REPEAT differences is reported; the multi-threaded runtime's
#        idle workers make single runs vary by ±15%), CLIENTS (16), POOL_SIZE (20), SCALE (1),
#        TOP (25 functions listed per profile, from the last repetition),
#        PGSHARD_BIN (default: cargo build --release), TARGETS ("off on pgbouncer"),
#        PROTOCOLS ("simple prepared"; PgBouncer 1.18 runs simple only), CONNECT (1: also
#        `pgbench -C`, a new SCRAM login per transaction, simple), NATIVE (1: also system calls
#        and context switches per transaction without valgrind), EXTRA_SERVER_TOML (added to
#        pgshard's [server] section, e.g. 'listen_backlog = 8192'), KEEP (a directory: the raw
#        callgrind profiles of every run are moved there, for callgrind_annotate
#        --tree=caller; default: removed).
# Prints markdown and writes it to bench-results/callgrind.md; per-transaction profiles in
# bench-results/callgrind/.
set -euo pipefail

LO=${LO:-50}
HI=${HI:-250}
WARMUP=${WARMUP:-20}
CONNECT_LO=${CONNECT_LO:-2}
CONNECT_HI=${CONNECT_HI:-10}
CLIENTS=${CLIENTS:-16}
POOL_SIZE=${POOL_SIZE:-20}
SCALE=${SCALE:-1}
TOP=${TOP:-25}
REPEAT=${REPEAT:-3}
CONNECT=${CONNECT:-1}
NATIVE=${NATIVE:-1}
EXTRA_SERVER_TOML=${EXTRA_SERVER_TOML:-}
KEEP=${KEEP:-}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
BENCH_OS_USER=${BENCH_OS_USER:-pgshard_pg}
read -r -a TARGETS <<<"${TARGETS:-off on pgbouncer}"
read -r -a PROTOCOLS <<<"${PROTOCOLS:-simple prepared}"

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RESULTS=$ROOT/bench-results

log() { printf '[callgrind.sh %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

command -v valgrind >/dev/null || die "valgrind is not installed (Debian: valgrind)"
command -v strace >/dev/null || die "strace is not installed (Debian: strace)"
command -v pgbench >/dev/null || die "pgbench not on PATH (Debian: postgresql-client-15)"

# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"
find_pgbouncer
setup_bench_user

WORK=$(mktemp -d /tmp/pgshard-callgrind.XXXXXX)
chmod 755 "$WORK"
if [[ $(id -u) -eq 0 ]]; then chown "$BENCH_OS_USER:" "$WORK"; fi
PIDS=()
CLUSTER_UP=0
trap bench_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cd "$ROOT"
if [[ -n ${PGSHARD_BIN:-} ]]; then
    PGSHARD=$PGSHARD_BIN
else
    log "building (cargo build --release)"
    cargo build --release --quiet
    PGSHARD=$ROOT/target/release/pgshard
fi

rm -rf "$RESULTS/callgrind"
TWO_SHARD_DBS=1 start_bench_cluster
# The proxies' own logins to PostgreSQL without SCRAM: each costs 4096 rounds of HMAC (~50 M
# instructions, pgshard derives the keys per server connection), and a pool that opens one more
# connection in one run than in the other would swamp the difference. Clients still log in to
# the proxies with SCRAM.
sed -i -E 's/^(host.*)scram-sha-256$/\1trust/' "$PGDATA/pg_hba.conf"
psql_super -c "SELECT pg_reload_conf()" >/dev/null
free_port BOUNCER_PORT

# start_target TARGET WRAP...: starts pgshard (routing off / on) or PgBouncer under WRAP (may be
# empty); sets PORT and PID.
start_target() {
    local target=$1
    shift
    case $target in
        pgbouncer)
            BOUNCER_WRAP=("$@")
            start_pgbouncer
            PORT=$BOUNCER_PORT PID=$BOUNCER_PID
            ;;
        off | on)
            local shards=$ONE_SHARD
            [[ $target == on ]] && shards=$TWO_SHARDS
            PGSHARD_WRAP=("$@")
            free_port PORT
            start_pgshard "pgshard-$target" "$PORT" "$POOL_SIZE" "$shards" "$PGSHARD" "$EXTRA_SERVER_TOML" "$POOL_TOML"
            PID=$PGSHARD_PID
            ;;
    esac
}
stop_target() {
    if [[ $1 == pgbouncer ]]; then stop_pgbouncer; else stop_pid "$PID"; fi
}

# pgbench_t PORT TXNS_PER_CLIENT ARGS...: one fixed-size pgbench run; fails on errors.
pgbench_t() {
    local port=$1 t=$2
    shift 2
    local out
    out=$(pgbench -n -c "$CLIENTS" -j 2 -t "$t" "$@" -p "$port" pgbench 2>&1) ||
        { echo "$out" >&2; die "pgbench $* failed"; }
    grep -q 'number of failed transactions: 0' <<<"$out" ||
        { echo "$out" >&2; die "pgbench $* had failed transactions"; }
}

# Health checks rare: they follow the clock, and valgrind's runs last longer the more
# transactions they serve.
POOL_TOML='health_check_interval_ms = 600000'

CG_OPTS=(valgrind --tool=callgrind --dump-instr=no --collect-jumps=no --vgdb=no)

# The instructions of a callgrind profile (its "summary:" or "totals:" line).
profile_ir() { awk '/^(summary|totals):/ { print $2; exit }' "$1"; }

# profile TARGET PROTO T ARGS...: a fresh proxy under callgrind serves a warm-up run (logins, the
# pool) and a run of T transactions per client, then stops; prints the profile's file name.
profile() {
    local target=$1 proto=$2 t=$3
    shift 3
    start_target "$target" "${CG_OPTS[@]}" --callgrind-out-file="$WORK/cg.$target-$proto-$t.%p.out"
    pgbench_t "$PORT" "$WARMUP" "$@"
    pgbench_t "$PORT" "$t" "$@"
    stop_target "$target"
    local f i
    for i in $(seq 1 100); do
        f=$(ls "$WORK"/cg."$target-$proto-$t".*.out 2>/dev/null | head -n1)
        [[ -n $f ]] && break
        sleep 0.2
    done
    [[ -n $f ]] || die "$target under callgrind wrote no profile"
    echo "$f"
}

# measure TARGET PROTO ARGS...: instructions per transaction from two fresh runs (LO and HI).
declare -A IR_TXN
measure() {
    local target=$1 proto=$2 lo hi r values=()
    shift 2
    mkdir -p "$RESULTS/callgrind"
    for r in $(seq 1 "$REPEAT"); do
        lo=$(profile "$target" "$proto" "$LO" "$@")
        hi=$(profile "$target" "$proto" "$HI" "$@")
        local inclusive
        for inclusive in yes no; do
            ALL=1 TOP=100000 per_txn_profile "$lo" "$hi" $((CLIENTS * (HI - LO))) $inclusive \
                >"$WORK/per-txn-$inclusive.txt"
        done
        # Left out: the metrics clock's calibration (quanta), run once per process for a fixed
        # wall time, so its instruction count varies from run to run under valgrind by ~10 M.
        values+=("$(awk '
            / PROGRAM TOTALS$/ { total = $1 }
            / quanta::Calibration::calibrate$/ { once = $1 }
            END { printf "%.0f", total - once }' "$WORK/per-txn-yes.txt")")
        if [[ -n $KEEP ]]; then
            mkdir -p "$KEEP"
            mv "$lo" "$hi" "$KEEP/"
        else
            rm -f "$lo" "$hi"
        fi
    done
    for inclusive in yes no; do
        awk '$1 > 0' "$WORK/per-txn-$inclusive.txt" | sed -n "1,${TOP}p" \
            >"$RESULTS/callgrind/$target-$proto-inclusive-$inclusive.txt"
    done
    IR_TXN[$target/$proto]=$(printf '%s\n' "${values[@]}" | sort -n | sed -n "$(((REPEAT + 1) / 2))p")
    log "$target $proto: ${IR_TXN[$target/$proto]} instructions per transaction (median of ${values[*]})"
}

# per_txn_profile LO_PROFILE HI_PROFILE TXNS INCLUSIVE: the top TOP functions by instructions
# per transaction: each function's cost in the HI run minus the LO run, over TXNS (start-up work
# such as SCRAM's key derivation cancels out).
per_txn_profile() {
    local f
    for f in "$1" "$2"; do
        callgrind_annotate --auto=no --inclusive="$4" --threshold=100 "$f" 2>/dev/null |
            sed -nE 's/^ *([0-9,]+) \( *[0-9.]+%\) +(.*)$/\1\t\2/p' |
            sed -E 's/\t[^ \t]*\.(rs|c|h|S|cc):/\t/; s/\t\?\?\?:/\t/; s/ \[[^]]*\]$//'
        echo "--"
    done | awk -F'\t' -v n="$3" -v all="${ALL:-0}" '
        $0 == "--" { part++; next }
        { gsub(",", "", $1) }
        part == 0 { lo[$2] += $1; next }
        { hi[$2] += $1 }
        END { for (k in hi) { d = hi[k] - lo[k]; if (d > 0 || all) printf "%10.1f  %s\n", d / n, k } }' |
        sort -g -r | sed -n "1,${TOP}p"
}

# native TARGET: context switches and CPU per transaction without valgrind (-c CLIENTS, simple),
# and system calls per transaction under strace.
declare -A CSW_TXN CPU_TXN
native() {
    local target=$1 before after n=$((CLIENTS * HI * 4))
    start_target "$target"
    pgbench_t "$PORT" "$LO" -S
    before=$(proc_sample "$PID")
    pgbench_t "$PORT" $((HI * 4)) -S
    after=$(proc_sample "$PID")
    read -r CPU_TXN[$target] CSW_TXN[$target] < <(awk -v b="$before" -v a="$after" -v n="$n" \
        -v hz="$(getconf CLK_TCK)" 'BEGIN { split(b, x); split(a, y)
            printf "%.1f %.2f\n", (y[1] - x[1] + y[2] - x[2]) * 1e6 / hz / n, (y[3] - x[3]) / n }')
    syscall_count "$target" "$PORT" "$PID" -S -M simple -c "$CLIENTS" -j 2
    if [[ $CONNECT -eq 1 && $target != on ]]; then
        syscall_count "$target-C" "$PORT" "$PID" -S -M simple -C -c "$CLIENTS" -j 2
    fi
    stop_target "$target"
}

for target in "${TARGETS[@]}"; do
    for proto in "${PROTOCOLS[@]}"; do
        [[ $target == pgbouncer && $proto == prepared ]] && continue
        measure "$target" "$proto" -S -M "$proto"
    done
    if [[ $CONNECT -eq 1 && $target != on ]]; then
        WARMUP=$CONNECT_LO LO=$CONNECT_LO HI=$CONNECT_HI measure "$target" connect -S -M simple -C
    fi
    [[ $NATIVE -eq 1 ]] && native "$target"
done

name() { case $1 in off) echo "pgshard, routing off" ;; on) echo "pgshard, routing on" ;; *) echo "PgBouncer 1.18" ;; esac; }
{
    echo "## Instructions per transaction, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    echo "- commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet 2>/dev/null || echo ' (dirty)'), $("$PGBOUNCER" --version | head -n1)"
    echo "- \`pgbench -S -c $CLIENTS -j 2\`, pool $POOL_SIZE, transaction mode, SCRAM; (Ir of -t $HI − Ir of -t $LO) / ($CLIENTS × $((HI - LO))) transactions, whole proxy process"
    echo
    header="| proxy |" sep="|---|"
    for proto in "${PROTOCOLS[@]}"; do header+=" $proto Ir/txn |" sep+="---|"; done
    echo "$header -C (a new login per transaction) Ir/txn |"
    echo "$sep---|"
    for target in "${TARGETS[@]}"; do
        row="| $(name "$target") |"
        for proto in "${PROTOCOLS[@]}"; do row+=" ${IR_TXN[$target/$proto]:-n/a} |"; done
        row+=" ${IR_TXN[$target/connect]:-n/a} |"
        echo "$row"
    done
    if [[ $NATIVE -eq 1 ]]; then
        echo
        echo "Without valgrind, \`-S -M simple -c $CLIENTS\`: proxy CPU and context switches per transaction (/proc), system calls per transaction (strace -c -f, 5 s):"
        echo
        echo "| proxy | CPU µs/txn | context switches/txn |"
        echo "|---|---|---|"
        for target in "${TARGETS[@]}"; do echo "| $(name "$target") | ${CPU_TXN[$target]} | ${CSW_TXN[$target]} |"; done
        echo
        echo "| proxy | reads/txn | writes/txn | waits/txn | futex/txn | all system calls/txn |"
        echo "|---|---|---|---|---|---|"
        for target in "${TARGETS[@]}"; do echo "${SYSCALL_ROWS[$target]}"; done
        if [[ $CONNECT -eq 1 ]]; then
            echo
            echo "The same with \`-C\` (per transaction: a new connection, its SCRAM login, one statement):"
            echo
            echo "| proxy | reads/txn | writes/txn | waits/txn | futex/txn | all system calls/txn |"
            echo "|---|---|---|---|---|---|"
            for target in "${TARGETS[@]}"; do [[ -n ${SYSCALL_ROWS[$target-C]:-} ]] && echo "${SYSCALL_ROWS[$target-C]}"; done
        fi
    fi
    for f in "$RESULTS"/callgrind/*-inclusive-*.txt; do
        [[ -s $f ]] || continue
        echo
        echo "Top $TOP by $(case $f in *-yes.txt) echo inclusive ;; *) echo self ;; esac) cost, $(basename "$f" .txt) (instructions per transaction: the -t $HI run minus the -t $LO run, over their difference in transactions):"
        echo
        echo '```'
        cat "$f"
        echo '```'
    done
} >"$WORK/report.md"
mkdir -p "$RESULTS"
cp "$WORK/report.md" "$RESULTS/callgrind.md"
cat "$WORK/report.md"

# Shell helpers shared by the end-to-end benchmark scripts (sourced, not run): free loopback
# ports and waiting for a listener. The sourcing script defines log and die first.

# free_port VAR: sets VAR to a TCP port below 32768 that nothing listens on and this script has
# not handed out before.
used_ports=" "
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 12000))
        [[ $used_ports == *" $p "* ]] && continue
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            used_ports+="$p "
            printf -v "$1" '%s' "$p"
            return
        fi
    done
}

wait_port() { # port what
    local i
    for i in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    die "$2 did not start listening on port $1"
}

# ---------------------------------------------------------------------------------------------
# The pgbench comparison's setup, shared by benches/pgbench.sh and benches/callgrind.sh: an
# unprivileged user, one throw-away PostgreSQL 15 cluster with pgbench data, pgshard and PgBouncer
# in transaction mode with SCRAM. The sourcing script sets WORK, PGBIN, SCALE, POOL_SIZE,
# BENCH_OS_USER, PGSHARD and PIDS=() first. PGSHARD_WRAP / BOUNCER_WRAP (arrays, empty by
# default) are commands the proxy runs under (valgrind).
# ---------------------------------------------------------------------------------------------

PGSHARD_WRAP=()
BOUNCER_WRAP=()

# find_pgbouncer: sets PGBOUNCER (installs Debian's package as root if missing) and stops a
# system PgBouncer the package may have started.
find_pgbouncer() {
    PGBOUNCER=$(command -v pgbouncer || true)
    [[ -z $PGBOUNCER && -x /usr/sbin/pgbouncer ]] && PGBOUNCER=/usr/sbin/pgbouncer
    if [[ -z $PGBOUNCER ]]; then
        [[ $(id -u) -eq 0 ]] || die "pgbouncer is not installed and installing it needs root"
        log "installing pgbouncer"
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >&2
        PGBOUNCER=/usr/sbin/pgbouncer
    fi
    if [[ $(id -u) -eq 0 ]]; then
        if command -v systemctl >/dev/null && [[ -d /run/systemd/system ]]; then
            systemctl disable --now pgbouncer >/dev/null 2>&1 || true
        fi
        if [[ -x /etc/init.d/pgbouncer ]]; then
            /etc/init.d/pgbouncer stop >/dev/null 2>&1 || true
        fi
    fi
}

# setup_bench_user: defines as_user, which runs a command as BENCH_OS_USER when we are root.
setup_bench_user() {
    if [[ $(id -u) -eq 0 ]]; then
        id -u "$BENCH_OS_USER" >/dev/null 2>&1 ||
            useradd --system --no-create-home --shell /usr/sbin/nologin "$BENCH_OS_USER" ||
            id -u "$BENCH_OS_USER" >/dev/null 2>&1 || die "cannot create OS user $BENCH_OS_USER"
        # runuser's PAM session resets the soft open-files limit to 1024: raise it again inside.
        as_user() { runuser -u "$BENCH_OS_USER" -- sh -c "ulimit -n $(ulimit -n) && exec \"\$@\"" sh "$@"; }
    else
        as_user() { "$@"; }
    fi
}

# bench_cleanup: the EXIT trap: stops whatever was started, removes WORK, keeps the logs.
bench_cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ -f $WORK/pgbouncer.pid ]]; then
        kill -TERM "$(cat "$WORK/pgbouncer.pid")" 2>/dev/null || true
    fi
    if [[ ${CLUSTER_UP:-0} -eq 1 ]]; then
        as_user "$PGBIN/pg_ctl" -D "$PGDATA" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$RESULTS/logs"
    mkdir -p "$RESULTS/logs"
    cp "$WORK"/*.log "$WORK"/*.out "$RESULTS/logs/" 2>/dev/null || true
    cp -r "$WORK/runs" "$RESULTS/logs/" 2>/dev/null || true
    rm -rf "$WORK"
    exit "$rc"
}

# "utime stime context-switches" of a process: CPU in clock ticks, switches summed over threads.
proc_sample() {
    local ticks switches
    ticks=$(awk '{ print $14, $15 }' "/proc/$1/stat" 2>/dev/null) || ticks="0 0"
    switches=$(cat "/proc/$1"/task/*/status 2>/dev/null |
        awk '/^(non)?voluntary_ctxt_switches:/ { s += $2 } END { print s + 0 }')
    echo "$ticks $switches"
}
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }

psql_super() { psql -X -q -v ON_ERROR_STOP=1 -h "$WORK" -p "$PG_PORT" -U postgres -d postgres "$@"; }

# start_bench_cluster: initdb, start and fill a PostgreSQL cluster in $WORK/data (role app,
# password app, database pgbench at scale SCALE); sets PG_PORT, PGDATA, CLUSTER_UP, ONE_SHARD and
# TWO_SHARDS (the [[shards]] sections of the routing-off and routing-on pgshard) and exports
# PGUSER, PGPASSWORD, PGHOST for pgbench. With TWO_SHARD_DBS=1 also pgbench_s0 and pgbench_s1.
# EXTRA_PG_CONF (lines) is appended to postgresql.conf.
start_bench_cluster() {
    free_port PG_PORT
    PGDATA=$WORK/data
    log "initdb in $PGDATA, port $PG_PORT"
    echo postgres >"$WORK/pwfile"
    if [[ $(id -u) -eq 0 ]]; then chown "$BENCH_OS_USER:" "$WORK/pwfile"; fi
    as_user "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
        --pwfile="$WORK/pwfile" -E UTF8 --locale=C --no-sync >"$WORK/initdb.log" 2>&1 ||
        { cat "$WORK/initdb.log" >&2; die "initdb failed"; }
    cat >>"$PGDATA/postgresql.conf" <<EOC

# pgshard benchmark
port = $PG_PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$WORK'
max_connections = 400
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = 128MB
password_encryption = 'scram-sha-256'
${EXTRA_PG_CONF:-}
EOC
    as_user "$PGBIN/pg_ctl" -D "$PGDATA" -l "$WORK/postgresql.log" -w start >/dev/null ||
        { tail -n 30 "$WORK/postgresql.log" >&2; die "PostgreSQL did not start"; }
    CLUSTER_UP=1
    psql_super -c "CREATE ROLE app LOGIN PASSWORD 'app'" -c "CREATE DATABASE pgbench OWNER app"
    export PGUSER=app PGPASSWORD=app PGHOST=127.0.0.1
    log "pgbench -i -s $SCALE"
    pgbench -i -q -s "$SCALE" -p "$PG_PORT" pgbench >"$WORK/pgbench-init.log" 2>&1 ||
        { cat "$WORK/pgbench-init.log" >&2; die "pgbench -i failed"; }
    if [[ ${TWO_SHARD_DBS:-0} -eq 1 ]]; then
        log "CREATE DATABASE pgbench_s0, pgbench_s1 TEMPLATE pgbench"
        psql_super -c "CREATE DATABASE pgbench_s0 OWNER app TEMPLATE pgbench" \
            -c "CREATE DATABASE pgbench_s1 OWNER app TEMPLATE pgbench"
    fi
    # One shard whose reads go to its primary: pgshard has nothing to decide and forwards
    # statements unparsed (routing off).
    ONE_SHARD=$(printf '[[shards]]\nname = "s0"\nprimary = "127.0.0.1:%s"\nread_from = "primary"\n' "$PG_PORT")
    # Two shards on this cluster as two databases, pgbench_accounts sharded by aid: every
    # statement is parsed and routed (routing on). No replicas, so the only difference is routing.
    TWO_SHARDS=$(cat <<EOC
[sharding]
key_column = "aid"
key_type = "bigint"

[[sharding.tables]]
name = "pgbench_accounts"

[[shards]]
name = "s0"
primary = "127.0.0.1:$PG_PORT"
database = "pgbench_s0"
slots = "0-2047"
read_from = "primary"

[[shards]]
name = "s1"
primary = "127.0.0.1:$PG_PORT"
database = "pgbench_s1"
slots = "2048-4095"
read_from = "primary"
EOC
)
}

# start_pgshard NAME PORT POOL_SIZE [SHARDS_TOML [BINARY [EXTRA_SERVER_TOML [EXTRA_POOL_TOML]]]]:
# starts a pgshard
# (under PGSHARD_WRAP) in transaction mode with the given [sharding]/[[shards]] sections (default:
# ONE_SHARD); sets PGSHARD_PID (the wrapper's pid when there is one: valgrind runs in place).
start_pgshard() {
    local name=$1 port=$2 size=$3 shards=${4:-$ONE_SHARD} binary=${5:-$PGSHARD} extra=${6:-} extra_pool=${7:-}
    local metrics=
    if [[ ${METRICS:-0} -eq 1 && $name == pgshard ]]; then
        free_port METRICS_PORT
        metrics=$(printf '[metrics]\nlisten = "127.0.0.1:%s"' "$METRICS_PORT")
    fi
    cat >"$WORK/$name.toml" <<EOC
[server]
listen = "127.0.0.1:$port"
database = "pgbench"
pool_mode = "transaction"
max_client_connections = 5000
$extra

[pool]
size = $size
checkout_timeout_ms = 30000
$extra_pool

[[users]]
name = "app"
password = "app"

$shards

$metrics
EOC
    # In a session of its own (`setsid`), as PgBouncer is (it daemonizes with -d) and as a
    # service would be: with the kernel's autogroup scheduling every session is a group that
    # gets its own share of the CPU, and a proxy left in the session of the pgbench that loads
    # it shares that group's share with pgbench and is preempted by it about twice as often
    # (README "The benchmark's own bias").
    NO_COLOR=1 setsid "${PGSHARD_WRAP[@]}" "$binary" serve --config "$WORK/$name.toml" \
        ${PGSHARD_THREADS:+--threads "$PGSHARD_THREADS"} >>"$WORK/$name.log" 2>&1 &
    PGSHARD_PID=$!
    PIDS+=("$PGSHARD_PID")
    wait_port "$port" "pgshard ($name)"
}

stop_pid() {
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# start_pgbouncer [NAME [POOL_MODE [PORT]]]: starts PgBouncer (under BOUNCER_WRAP) as the
# unprivileged user, by default in transaction mode on BOUNCER_PORT with its files named
# pgbouncer.*; sets BOUNCER_PID (for another NAME: that instance's pid, in NAMED_BOUNCER_PID, and
# it is stopped with the others at exit).
start_pgbouncer() {
    local name=${1:-pgbouncer} mode=${2:-transaction} port=${3:-$BOUNCER_PORT}
    # The role's SCRAM secret, as PostgreSQL stores it, not the password: PgBouncer would derive
    # the keys (4096 rounds of PBKDF2) at every login from a plain-text password, where pgshard
    # derives them once at start; with the secret both check a login with a few hashes.
    local secret
    secret=$(psql_super -At -c "SELECT rolpassword FROM pg_authid WHERE rolname = 'app'")
    printf '"app" "%s"\n' "$secret" >"$WORK/userlist.txt"
    cat >"$WORK/$name.ini" <<EOC
[databases]
pgbench = host=127.0.0.1 port=$PG_PORT dbname=pgbench

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $WORK/userlist.txt
pool_mode = $mode
default_pool_size = $POOL_SIZE
max_client_conn = 3000
max_db_connections = 0
ignore_startup_parameters = extra_float_digits
logfile = $WORK/$name.log
pidfile = $WORK/$name.pid
log_connections = 0
log_disconnections = 0
EOC
    if [[ $(id -u) -eq 0 ]]; then chown "$BENCH_OS_USER:" "$WORK/userlist.txt" "$WORK/$name.ini"; fi
    rm -f "$WORK/$name.pid"
    if [[ ${#BOUNCER_WRAP[@]} -gt 0 ]]; then
        # In the foreground, so that the wrapper (valgrind) stays with the process that serves.
        as_user "${BOUNCER_WRAP[@]}" "$PGBOUNCER" "$WORK/$name.ini" >>"$WORK/$name-wrapped.log" 2>&1 &
        PIDS+=("$!")
    else
        as_user "$PGBOUNCER" -d "$WORK/$name.ini" || die "pgbouncer ($name) did not start"
    fi
    wait_port "$port" "pgbouncer ($name)"
    local i
    for i in $(seq 1 100); do [[ -s $WORK/$name.pid ]] && break; sleep 0.1; done
    if [[ $name == pgbouncer ]]; then
        BOUNCER_PID=$(cat "$WORK/pgbouncer.pid")
    else
        NAMED_BOUNCER_PID=$(cat "$WORK/$name.pid")
        PIDS+=("$NAMED_BOUNCER_PID")
    fi
}

stop_pgbouncer() {
    kill -TERM "$BOUNCER_PID" 2>/dev/null || true
    local i
    for i in $(seq 1 600); do
        kill -0 "$BOUNCER_PID" 2>/dev/null || break
        sleep 0.05
    done
    rm -f "$WORK/pgbouncer.pid"
}

# syscall_count NAME PORT PID [PGBENCH_ARGS...]: system calls per transaction of the proxy PID
# under strace during 5 s of `pgbench -S -c 4` (simple protocol; PGBENCH_ARGS replace
# `-S -M simple -c 4 -j 1`); sets SYSCALL_ROWS[NAME] (the slowdown strace causes makes its tps
# meaningless; the counts per transaction are what it measures). Columns: reads, writes, waits,
# futex, all system calls.
declare -A SYSCALL_ROWS
syscall_count() {
    local name=$1 port=$2 pid=$3 out txns
    shift 3
    local args=("$@")
    [[ ${#args[@]} -gt 0 ]] || args=(-S -M simple -c 4 -j 1)
    strace -c -f -p "$pid" -o "$WORK/strace-$name" 2>/dev/null &
    local tracer=$!
    sleep 0.5
    out=$(pgbench -n "${args[@]}" -T 5 -p "$port" pgbench 2>/dev/null)
    kill -INT "$tracer" 2>/dev/null
    wait "$tracer" 2>/dev/null || true
    txns=$(sed -nE 's/^number of transactions actually processed: ([0-9]+).*/\1/p' <<<"$out")
    SYSCALL_ROWS[$name]=$(awk -v tx="${txns:-0}" -v name="$name" '
        NR > 2 && $NF != "total" && $4 ~ /^[0-9]+$/ { n[$NF] = $4; all += $4 }
        END {
            if (tx == 0) { print "| " name " | n/a | n/a | n/a | n/a | n/a |"; exit }
            reads = n["read"] + n["recvfrom"] + n["recvmsg"] + n["readv"]
            writes = n["write"] + n["sendto"] + n["sendmsg"] + n["writev"]
            waits = n["epoll_wait"] + n["epoll_pwait"] + n["poll"] + n["ppoll"]
            printf "| %s | %.2f | %.2f | %.2f | %.2f | %.2f |\n", name, reads / tx, writes / tx, waits / tx, n["futex"] / tx, all / tx
        }' "$WORK/strace-$name")
    log "system calls per transaction, $name: ${SYSCALL_ROWS[$name]}"
}

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

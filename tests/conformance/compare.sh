# Sourced by pg_regress.sh (not run): compares each mode's per-test results with the direct run,
# prints the table (also to $RESULTS/summary.md) and checks (or with UPDATE=1 rewrites) the list of
# expected differences, from the runs kept in $RESULTS. Expects: log, RESULTS, EXPECTED, MODES,
# UPDATE, COMPARE_ONLY, START, PREPARED.

DIFF_LINES=${DIFF_LINES:-25}

# diff_head NAME TEST: the first DIFF_LINES lines of TEST's diff in run NAME's regression.diffs.
diff_head() {
    { awk -v t="/results/$2.out" '/^diff / { p = (index($0, t) > 0); next } /^(---|\+\+\+) / { next } p' \
        "$RESULTS/$1/regression.diffs" 2>/dev/null || true; } | head -n "$DIFF_LINES" || true
}

# explain MODE TEST: why a difference is a difference, with the diff of the run that failed.
explain() {
    local mode=$1 test=$2 d=${DIRECT[$2]:-missing} m
    m=$(awk -v t="$2" '$1 == t { print $2 }' "$RESULTS/$mode/status")
    echo "  direct: ${d}, $mode: ${m:-missing}; diff in target/conformance/$([[ $m == FAILED ]] && echo "$mode" || echo direct)/regression.diffs:"
    if [[ $m == FAILED ]]; then diff_head "$mode" "$test"; else diff_head direct "$test"; fi | sed 's/^/    /' || true
}

compare_and_report() {
    declare -gA DIRECT=()
    declare -A listed=() differs=()
    local t s mode reason key
    while read -r t s; do DIRECT[$t]=$s; done <"$RESULTS/direct/status"
    local ran=" ${!DIRECT[*]} "
    # The list: "mode test reason...", # comments.
    if [[ -f $EXPECTED ]]; then
        while read -r mode t reason; do
            [[ -z $mode || $mode == \#* ]] && continue
            listed["$mode $t"]=$reason
        done <"$EXPECTED"
    fi

    local table errors=0 todo=()
    table=$(
        echo "| run | pool.size | tests | failed | differ from direct | listed | new | no longer differ | time |"
        echo "|---|---|---|---|---|---|---|---|---|"
        echo "| direct | | ${#DIRECT[@]} | $(grep -c ' FAILED$' "$RESULTS/direct/status" || true) | | | | | $(cat "$RESULTS/direct/seconds")s |"
    )
    local report=""
    for mode in "${MODES[@]}"; do
        local n=0 nlisted=0 new=() gone=()
        while read -r t s; do
            [[ ${DIRECT[$t]:-missing} == "$s" ]] && continue
            differs["$mode $t"]=1
            n=$((n + 1))
            if [[ -n ${listed["$mode $t"]+x} ]]; then nlisted=$((nlisted + 1)); else new+=("$t"); fi
        done <"$RESULTS/$mode/status"
        for t in "${!DIRECT[@]}"; do
            grep -q "^$t " "$RESULTS/$mode/status" && continue
            differs["$mode $t"]=1 && n=$((n + 1)) && new+=("$t")
        done
        for key in "${!listed[@]}"; do
            [[ ${key%% *} == "$mode" && $ran == *" ${key#* } "* && -z ${differs[$key]+x} ]] && gone+=("${key#* }")
        done
        table+=$'\n'"| $mode | $(cat "$RESULTS/$mode/pool_size") | $(wc -l <"$RESULTS/$mode/status") | $(grep -c ' FAILED$' "$RESULTS/$mode/status" || true) | $n | $nlisted | ${#new[@]} | ${#gone[@]} | $(cat "$RESULTS/$mode/seconds")s |"
        report+=$'\n'"$mode mode, tests whose result differs from the direct run:"
        while read -r t; do
            [[ -n $t ]] && report+=$'\n'"  $t: ${listed["$mode $t"]:-NOT LISTED}"
        done < <(printf '%s\n' "${!differs[@]}" | sed -n "s/^$mode //p" | sort)
        if [[ $UPDATE -eq 0 ]]; then
            for t in "${new[@]}"; do
                errors=$((errors + 1))
                echo "NEW DIFFERENCE ($mode mode): $t is not in $(basename "$EXPECTED")" >&2
                explain "$mode" "$t" >&2
            done
            for t in "${gone[@]}"; do
                errors=$((errors + 1))
                echo "NO LONGER DIFFERS ($mode mode): $t is listed in $(basename "$EXPECTED") but gives the direct run's result: remove it" >&2
            done
        fi
    done

    if [[ $UPDATE -eq 1 ]]; then
        write_expected differs listed
        listed=()
        while read -r mode t reason; do
            [[ -z $mode || $mode == \#* ]] && continue
            listed["$mode $t"]=$reason
        done <"$EXPECTED"
    fi
    for key in "${!listed[@]}"; do
        [[ ${listed[$key]} == TODO* ]] && todo+=("$key")
    done

    local elapsed=$((SECONDS - START))
    {
        echo "PostgreSQL $(cat "$RESULTS/direct/version") regression suite (serial schedule), direct vs through pgshard"
        if [[ $COMPARE_ONLY -eq 1 ]]; then
            echo "(one shard); compared again from target/conformance"
        else
            echo "(one shard); whole script ${elapsed}s, of which $((PREPARED - START))s fetching and building"
        fi
        echo
        echo "$table"
        echo "$report"
    } | tee "$RESULTS/summary.md"

    if [[ ${#todo[@]} -gt 0 ]]; then
        errors=$((errors + 1))
        echo "$(basename "$EXPECTED") has ${#todo[@]} reason(s) still TODO: write each by hand (read target/conformance/<mode>/regression.diffs):" >&2
        printf '  %s\n' "${todo[@]}" | sort >&2
    fi
    if [[ $errors -gt 0 ]]; then
        log "FAIL: the differences are not exactly the listed ones (see above)"
        exit 1
    fi
    log "OK: every difference is listed with its reason"
}

# write_expected DIFFERS LISTED: rewrites the list with the current differences of the modes run,
# keeping known reasons, TODO for new ones; entries of modes or tests not run are kept as they are.
write_expected() {
    local -n cur=$1 old=$2
    local key mode out
    out=$(
        for key in "${!cur[@]}"; do
            printf '%-11s %-20s %s\n' "${key%% *}" "${key#* }" "${old[$key]:-TODO}"
        done
        for key in "${!old[@]}"; do
            mode=${key%% *}
            [[ " ${MODES[*]} " == *" $mode "* && $ran == *" ${key#* } "* ]] ||
                printf '%-11s %-20s %s\n' "$mode" "${key#* }" "${old[$key]}"
        done
    )
    {
        sed -n '/^#/p' "$EXPECTED" 2>/dev/null || true
        echo "$out" | sed '/^$/d' | sort -k1,1 -k2,2
    } >"$EXPECTED.new"
    mv "$EXPECTED.new" "$EXPECTED"
    log "rewrote $EXPECTED"
}

# Sourced by pg_regress.sh (not run): gets the regression suite of the installed PostgreSQL 15
# (Debian source package of exactly the installed version) and builds regress.so with pgxs,
# caching both in $CACHE. Never upgrades, downgrades or removes an installed package.
# Expects: log, die, PGBIN, PG_VERSION, UPSTREAM, CACHE, SUITE, LIBDIR.

# The deb-src entry this script adds when the source package is not known to apt.
SRC_LIST=/etc/apt/sources.list.d/pgshard-regress-src.sources

have_source_version() {
    # Not grep -q: with pipefail, apt-cache killed by SIGPIPE would read as "not found".
    apt-cache showsrc postgresql-15 2>/dev/null | grep -x "Version: $PG_VERSION" >/dev/null
}

add_deb_src() {
    local codename
    codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
    [[ -n $codename ]] || die "cannot tell the Debian release (VERSION_CODENAME in /etc/os-release)"
    log "adding a deb-src entry for $codename ($SRC_LIST) and running apt-get update"
    cat >"$SRC_LIST" <<EOF
# Added by pgshard's tests/conformance/pg_regress.sh: source packages (PostgreSQL's regression suite).
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: $codename $codename-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: $codename-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    apt-get update -qq >&2
}

# fetch_suite: $SUITE holds src/test/regress of postgresql-15 $PG_VERSION.
fetch_suite() {
    [[ -f $SUITE/parallel_schedule ]] && return
    [[ $(id -u) -eq 0 ]] ||
        die "the regression suite is not cached in $CACHE; run this script once as root to fetch it"
    command -v dpkg-source >/dev/null || apt-get install -y -qq dpkg-dev >&2
    have_source_version || add_deb_src
    have_source_version ||
        die "apt knows no source package postgresql-15 $PG_VERSION (deb-src in $SRC_LIST)"
    log "apt-get source postgresql-15=$PG_VERSION into $CACHE"
    local tmp=$CACHE.tmp.$$
    rm -rf "$tmp" && mkdir -p "$tmp"
    (cd "$tmp" && apt-get source -qq postgresql-15="$PG_VERSION" >&2) ||
        die "apt-get source postgresql-15=$PG_VERSION failed"
    mkdir -p "$CACHE"
    rm -rf "$CACHE/postgresql-15-$UPSTREAM"
    mv "$tmp/postgresql-15-$UPSTREAM" "$CACHE/"
    rm -rf "$tmp"
    chmod -R a+rX "$CACHE_BASE"
    [[ -f $SUITE/parallel_schedule ]] || die "no src/test/regress/parallel_schedule in the source package"
}

# ensure_server_dev: postgresql-server-dev-15 of exactly the server's version.
ensure_server_dev() {
    local pkg=postgresql-server-dev-15 have sim bad
    have=$(dpkg-query -W -f='${db:Status-Status} ${Version}' "$pkg" 2>/dev/null || true)
    [[ $have == "installed $PG_VERSION" ]] && return
    [[ $(id -u) -eq 0 ]] || die "$pkg=$PG_VERSION is needed to build regress.so; install it as root"
    sim=$(apt-get -s install "$pkg=$PG_VERSION" 2>&1) || { echo "$sim" >&2; die "apt cannot install $pkg=$PG_VERSION"; }
    # "Inst pkg [old] (new ...)" is an upgrade or downgrade, "Remv" a removal: only our package
    # itself may change version.
    bad=$(echo "$sim" | grep -E '^(Inst [^ ]+ \[|Remv )' | grep -v "^Inst $pkg " || true)
    [[ -z $bad ]] || die "installing $pkg=$PG_VERSION would change installed packages: $bad"
    log "installing $pkg=$PG_VERSION (pinned to the server's version)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg=$PG_VERSION" >&2
}

# build_regress_lib: $LIBDIR holds regress.so (built from the suite's regress.c) and the contrib
# modules autoinc and refint the suite loads from the same directory (links to the installed ones).
build_regress_lib() {
    local pkglib
    pkglib=$("$PGBIN/pg_config" --pkglibdir)
    if [[ ! -f $LIBDIR/regress.so || $SUITE/regress.c -nt $LIBDIR/regress.so ]]; then
        ensure_server_dev
        log "building regress.so with pgxs"
        mkdir -p "$LIBDIR"
        cp "$SUITE/regress.c" "$LIBDIR/"
        cat >"$LIBDIR/Makefile" <<EOF
MODULES = regress
PG_CONFIG = $PGBIN/pg_config
PGXS := \$(shell \$(PG_CONFIG) --pgxs)
include \$(PGXS)
EOF
        # with_llvm=no: no JIT bitcode, so clang is not needed at build time.
        make -s -C "$LIBDIR" with_llvm=no >&2 || die "building regress.so failed"
        chmod -R a+rX "$CACHE_BASE"
    fi
    local m
    for m in autoinc refint; do
        [[ -f $pkglib/$m.so ]] || die "no $pkglib/$m.so (the suite needs contrib's $m)"
        [[ -e $LIBDIR/$m.so ]] || ln -s "$pkglib/$m.so" "$LIBDIR/$m.so"
    done
}

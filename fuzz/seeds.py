#!/usr/bin/env python3
"""Writes seed corpora for the fuzz targets to fuzz/seeds/<target>/ (generated, not committed).

Seeds are the messages real clients send, built byte for byte: psql and pgbench (simple and
prepared) sessions, a JDBC-like startup, SCRAM exchanges, COPY, and the server's answers (the
frame splitter cuts both directions); for the session target, whole client sessions after login
(transactions, pgshard's overrides, cross-shard reads and writes, COPY both ways, errors). The SQL seeds are pgbench's statements plus every SQL
string literal in the router's and the integration tests' sources.
"""

import hashlib
import os
import re
import shutil
import struct
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "fuzz", "seeds")


def cstr(s):
    return (s.encode() if isinstance(s, str) else s) + b"\0"


def msg(tag, body=b""):
    return tag + struct.pack("!i", len(body) + 4) + body


# --- client messages ---------------------------------------------------------------------------

def query(sql):
    return msg(b"Q", cstr(sql))


def parse(name, sql, types=()):
    return msg(b"P", cstr(name) + cstr(sql) + struct.pack("!h", len(types))
               + b"".join(struct.pack("!I", t) for t in types))


def bind_body(portal, stmt, values, formats=(), results=()):
    body = cstr(portal) + cstr(stmt) + struct.pack("!h", len(formats))
    body += b"".join(struct.pack("!h", f) for f in formats)
    body += struct.pack("!h", len(values))
    for v in values:
        body += struct.pack("!i", -1) if v is None else struct.pack("!i", len(v)) + v
    body += struct.pack("!h", len(results)) + b"".join(struct.pack("!h", f) for f in results)
    return body


def bind(*args, **kw):
    return msg(b"B", bind_body(*args, **kw))


def describe(kind, name):
    return msg(b"D", kind + cstr(name))


def close(kind, name):
    return msg(b"C", kind + cstr(name))


def execute(portal="", rows=0):
    return msg(b"E", cstr(portal) + struct.pack("!i", rows))


SYNC = msg(b"S")
FLUSH = msg(b"H")
TERMINATE = msg(b"X")

# --- server messages ---------------------------------------------------------------------------


def row_description(cols):
    body = struct.pack("!h", len(cols))
    for name, oid in cols:
        body += cstr(name) + struct.pack("!ihihih", 0, 0, oid, 8, -1, 0)
    return msg(b"T", body)


def data_row(vals):
    body = struct.pack("!h", len(vals))
    for v in vals:
        body += struct.pack("!i", -1) if v is None else struct.pack("!i", len(v)) + v
    return msg(b"D", body)


def command_complete(tag):
    return msg(b"C", cstr(tag))


def ready(status=b"I"):
    return msg(b"Z", status)


def error(code, text):
    return msg(b"E", b"SERROR\0" + b"C" + cstr(code) + b"M" + cstr(text) + b"\0")


# --- startup packets ---------------------------------------------------------------------------

def startup(params, minor=0):
    body = struct.pack("!i", (3 << 16) | minor)
    for k, v in params:
        body += cstr(k) + cstr(v)
    body += b"\0"
    return struct.pack("!i", len(body) + 4) + body


SSL_REQUEST = struct.pack("!ii", 8, 80877103)
GSSENC_REQUEST = struct.pack("!ii", 8, 80877104)


def cancel(pid, key):
    return struct.pack("!iiii", 16, 80877102, pid, key)


# --- pgbench's statements ----------------------------------------------------------------------

TPCB = [
    "BEGIN;",
    "UPDATE pgbench_accounts SET abalance = abalance + -4321 WHERE aid = 81234;",
    "SELECT abalance FROM pgbench_accounts WHERE aid = 81234;",
    "UPDATE pgbench_tellers SET tbalance = tbalance + -4321 WHERE tid = 7;",
    "UPDATE pgbench_branches SET bbalance = bbalance + -4321 WHERE bid = 1;",
    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
    "VALUES (7, 1, 81234, -4321, CURRENT_TIMESTAMP);",
    "END;",
]
TPCB_PREPARED = [
    "BEGIN;",
    "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2;",
    "SELECT abalance FROM pgbench_accounts WHERE aid = $1;",
    "UPDATE pgbench_tellers SET tbalance = tbalance + $1 WHERE tid = $2;",
    "UPDATE pgbench_branches SET bbalance = bbalance + $1 WHERE bid = $2;",
    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
    "VALUES ($1, $2, $3, $4, CURRENT_TIMESTAMP);",
    "END;",
]
SELECT_ONLY = "SELECT abalance FROM pgbench_accounts WHERE aid = 4242;"


def pgbench_prepared():
    """pgbench -M prepared: Parse/Describe... once, then Bind/Execute/Sync per statement."""
    out = b""
    for i, sql in enumerate(TPCB_PREPARED):
        nparams = sql.count("$")
        out += parse(f"P_{i}", sql) + describe(b"S", f"P_{i}") + SYNC
        values = [str(42 + n).encode() for n in range(nparams)]
        out += bind("", f"P_{i}", values) + execute() + SYNC
    return out


def psql_session():
    return (query("SELECT 1;") + query("select * from users where user_id = 42")
            + query("BEGIN") + query("SELECT now()") + query("COMMIT") + TERMINATE)


def server_answer():
    return (row_description([("abalance", 23)]) + data_row([b"-4321"]) + command_complete("SELECT 1")
            + ready() + msg(b"1") + msg(b"2") + msg(b"n") + command_complete("UPDATE 1")
            + ready(b"T") + error("42P01", 'relation "x" does not exist') + ready(b"E"))


def copy_in():
    return (query("COPY users (user_id, name) FROM STDIN") + msg(b"d", b"1\talice\n")
            + msg(b"d", b"42\tbob\n") + msg(b"c"))


def extended_batch():
    return (parse("", "SELECT * FROM users WHERE user_id = $1", [20])
            + bind("", "", [struct.pack("!q", 42)], [1], [1]) + describe(b"P", "")
            + execute("", 100) + FLUSH + close(b"S", "s1") + close(b"P", "p") + SYNC)


STREAMS = {
    "psql": psql_session(),
    "pgbench_simple": b"".join(query(s) for s in TPCB),
    "pgbench_select_only": query(SELECT_ONLY) * 3,
    "pgbench_prepared": pgbench_prepared(),
    "server": server_answer(),
    "copy": copy_in(),
    "extended": extended_batch(),
    "bad_length": b"Q\xff\xff\xff\xffSELECT",
    "huge_claim": b"d\x7f\xff\xff\xff" + b"x" * 20,
}

# --- whole sessions (after the StartupMessage the session target writes itself) ---------------

def copy_in_extended():
    """tokio-postgres's copy_in: Parse/Describe/Sync, then Bind/Execute/Sync and the data."""
    sql = "COPY users (user_id, name) FROM STDIN"
    return (parse("c1", sql) + describe(b"S", "c1") + SYNC + bind("", "c1", []) + execute() + SYNC
            + msg(b"d", b"1\tann\n2\tbob\n") + msg(b"c") + SYNC)


SESSIONS = {
    "select1": query("SELECT 1") + TERMINATE,
    "psql": psql_session(),
    "extended": extended_batch(),
    "extended_pipelined": (parse("", "SELECT * FROM users WHERE user_id = $1", [20])
                           + bind("", "", [b"42"]) + describe(b"P", "") + execute() + SYNC
                           + bind("", "", [b"7"]) + execute() + SYNC
                           + parse("s1", "SELECT name FROM users WHERE user_id = $1")
                           + bind("p1", "s1", [b"3"]) + execute("p1", 1) + FLUSH + execute("p1")
                           + close(b"P", "p1") + close(b"S", "s1") + SYNC),
    "pgbench_simple": b"".join(query(s) for s in TPCB),
    "pgbench_prepared": pgbench_prepared(),
    "transaction": (query("BEGIN") + query("SELECT * FROM users WHERE user_id = 1")
                    + query("UPDATE users SET name = 'x' WHERE user_id = 1") + query("COMMIT")),
    "transaction_extended": (parse("", "BEGIN") + bind("", "", []) + execute()
                             + parse("", "INSERT INTO users (user_id, name) VALUES ($1, $2)")
                             + bind("", "", [b"5", b"eve"]) + execute() + SYNC
                             + query("ROLLBACK")),
    "shard_key": (query("SET pgshard.shard_key = 42") + query("SELECT * FROM users")
                  + query("SET pgshard.shard = 's1'") + query("SELECT 1") + query("RESET ALL")
                  + query("/* pgshard: shard_key=7 */ SELECT * FROM users")),
    "scatter": (query("SELECT count(*) FROM users") + query("SELECT * FROM users ORDER BY name LIMIT 3")
                + parse("", "SELECT count(*) FROM users") + bind("", "", []) + execute() + SYNC),
    "split_insert": query("INSERT INTO users (user_id, name) VALUES (1, 'a'), (2, 'b'), (3, 'c')"),
    "copy_in": copy_in() + query("SELECT 1"),
    "copy_in_fail": (query("COPY users (user_id, name) FROM STDIN") + msg(b"d", b"1\tann\n")
                     + msg(b"f", cstr("client gave up")) + query("SELECT 1")),
    "copy_in_extended": copy_in_extended(),
    "copy_in_no_columns": query("COPY users FROM STDIN") + msg(b"d", b"1\tann\n") + msg(b"c"),
    # The server refuses the COPY (a column that does not exist, say).
    "copy_in_refused": query("COPY users (user_id, fuzz_error) FROM STDIN") + query("SELECT 1"),
    "copy_out": query("COPY users TO STDOUT") + query("COPY (SELECT 1) TO STDOUT"),
    "errors": (query("SELECT fuzz_error") + query("BEGIN") + query("SELECT fuzz_error")
               + query("SELECT 1") + query("ROLLBACK")
               + parse("", "SELECT fuzz_error") + bind("", "", []) + execute() + SYNC),
    "set_reset": query("SET TimeZone = 'Europe/Paris'") + query("RESET ALL") + query("DISCARD ALL"),
    "function_call": msg(b"F", struct.pack("!ih", 1234, 0) + struct.pack("!hh", 0, 0)),
    "unknown_tag": query("SELECT 1") + msg(b"?", b"junk") + query("SELECT 2"),
    "bad_length": query("SELECT 1") + b"Q\0\0\0\x02",
    "terminate": TERMINATE,
}

# --- SQL ---------------------------------------------------------------------------------------

SQL_EXTRA = [
    SELECT_ONLY,
    "SELECT 1",
    "/* pgshard: shard_key=42 */ SELECT * FROM users",
    "SET pgshard.shard_key = 42",
    "SET pgshard.shard = 's1'",
    "RESET ALL",
    "SELECT * FROM users WHERE user_id IN (1, 42) ORDER BY name LIMIT 10",
    "SELECT count(*), avg(v) FROM events GROUP BY kind HAVING sum(v) > 2",
    "INSERT INTO users (user_id, name) VALUES (1, 'a'), (42, 'b') RETURNING *",
    "COPY users (user_id, name) FROM STDIN WITH (FORMAT csv, HEADER)",
    "SELECT * FROM accounts WHERE email = 'alice@example.com'",
    "SELECT * FROM devices WHERE device_id = '550e8400-e29b-41d4-a716-446655440000'",
    "DO $$ BEGIN EXECUTE 'SET ROLE x'; END $$",
    "SELECT set_config('role', 'x', false)",
    "SELECT E'a\\'b', U&'d\\0061t', $tag$ x $tag$, \"Odd \"\"name\"",
]

RUST_STRING = re.compile(r'r#"(.*?)"#|"((?:[^"\\\n]|\\.)*)"', re.S)
SQL_START = re.compile(
    r"\s*(/\*|SELECT|INSERT|UPDATE|DELETE|WITH|BEGIN|START|COMMIT|ROLLBACK|END|SET|RESET|SHOW|"
    r"COPY|CREATE|DROP|ALTER|TRUNCATE|DO|CALL|EXECUTE|PREPARE|DECLARE|FETCH|LOCK|VALUES|TABLE|"
    r"DISCARD|SAVEPOINT|RELEASE|EXPLAIN|ANALYZE|VACUUM|GRANT)\b", re.I)


def unescape(s):
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t", "0": "\0"}.get(m.group(1), m.group(1)), s)


def sql_from_sources():
    found = []
    for base in ("src/router", "tests"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, base)):
            for f in sorted(files):
                if not f.endswith(".rs"):
                    continue
                text = open(os.path.join(dirpath, f), encoding="utf-8").read()
                for m in RUST_STRING.finditer(text):
                    s = m.group(1) if m.group(1) is not None else unescape(m.group(2))
                    if SQL_START.match(s) and len(s) < 4000:
                        found.append(s)
    return found


# --- writing -----------------------------------------------------------------------------------

def write(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    digest = hashlib.sha1(data).hexdigest()[:12]
    with open(os.path.join(d, f"{name}-{digest}"), "wb") as f:
        f.write(data)


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    # frame: [max selector, 4 chunk sizes, stream]; selector 6 = 8192 bytes, 7 = 1 GiB.
    for name, stream in STREAMS.items():
        for selector, chunks in [(7, b"\xff\xff\xff\xff"), (6, b"\x00\x04\x10\x3f"), (4, b"\x02\x07\x00\x20")]:
            write("frame", f"{name}-{selector}", bytes([selector]) + chunks + stream)

    # startup: [2 chunk sizes, packets..., SCRAM client-first \0 client-final]
    scram = (b"n,,n=,r=rOprNGfwEbeRWgbNEkqO\0"
             b"c=biws,r=rOprNGfwEbeRWgbNEkqOfuzznonce,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    startups = {
        "psql": startup([("user", "app"), ("database", "app"), ("application_name", "psql"),
                         ("client_encoding", "UTF8")]),
        "pgbench": startup([("user", "app"), ("database", "pgbench")]),
        "jdbc": startup([("user", "app"), ("database", "app"), ("client_encoding", "UTF8"),
                         ("DateStyle", "ISO"), ("TimeZone", "UTC"), ("extra_float_digits", "2"),
                         ("options", "-c search_path=a,b -cstatement_timeout=5s --work-mem=4MB")]),
        "minor2": startup([("user", "app"), ("_pq_.x", "1")], minor=2),
        "replication": startup([("user", "app"), ("replication", "true")]),
        "ssl_then_startup": SSL_REQUEST + startup([("user", "app")]),
        "gss": GSSENC_REQUEST,
        "cancel": cancel(1234, -5678),
        "protocol2": struct.pack("!ii", 9, 2 << 16) + b"\0",
    }
    for name, packet in startups.items():
        for chunks in (b"\xff\xff", b"\x03\x00"):
            write("startup", name, chunks + packet + scram)

    # extended: [tag, n, n indexes, body]
    ext = {
        "parse": (b"P", msg(b"P", cstr("P_1") + cstr(TPCB_PREPARED[1]) + struct.pack("!hII", 2, 23, 23))),
        "parse_untyped": (b"P", parse("", SELECT_ONLY)),
        "bind_text": (b"B", bind("", "P_1", [b"-4321", b"81234"])),
        "bind_binary": (b"B", bind("p", "s", [struct.pack("!q", 42), None], [1], [1, 0])),
        "bind_each": (b"B", bind("", "s", [b"1", struct.pack("!i", 7), b"x"], [0, 1, 0], [0])),
        "describe_s": (b"D", describe(b"S", "P_1")),
        "describe_p": (b"D", describe(b"P", "")),
        "close_s": (b"C", close(b"S", "s1")),
        "execute": (b"E", execute("p", 10)),
    }
    for name, (tag, frame) in ext.items():
        body = frame[5:]
        write("extended", name, tag + b"\x02\x01\x00" + body)
        write("extended", name + "-any", b"?\x00" + body)

    # session: [variant, client frames after the StartupMessage]; the variant's bit 0 picks one
    # shard or two, bit 1 closes the client right after its input.
    for name, stream in SESSIONS.items():
        for variant in (0, 1, 2, 3):
            write("session", f"{name}-{variant}", bytes([variant]) + stream)

    sqls = sql_from_sources() + TPCB + TPCB_PREPARED + SQL_EXTRA
    for i, s in enumerate(dict.fromkeys(sqls)):
        write("sql", f"s{i}", s.encode())
    for target in sorted(os.listdir(OUT)):
        print(f"{target}: {len(os.listdir(os.path.join(OUT, target)))} seeds", file=sys.stderr)


if __name__ == "__main__":
    main()

"""Cross-shard reads through pgshard with psycopg 3 (text results; unnamed and prepared
statements) and asyncpg (binary results, named statements), each compared with the same query
on one plain PostgreSQL holding all the rows.

Usage: scatter_drivers.py PROXY_DSN REFERENCE_DSN. Exits non-zero on any difference or error.
"""

import asyncio
import sys

import asyncpg
import psycopg

# (query, parameters, ordered): ordered queries are compared row by row, others as multisets.
QUERIES = [
    ("SELECT count(*), sum(amount), avg(amount) FROM diff_orders", (), True),
    ("SELECT status, count(*), avg(qty) FROM diff_orders WHERE qty >= %s GROUP BY status ORDER BY status", (2,), True),
    ("SELECT user_id, score FROM diff_users WHERE score > %s ORDER BY score DESC, user_id LIMIT 10 OFFSET 5", (10,), True),
    ("SELECT DISTINCT country FROM diff_users WHERE score < %s", (50,), False),
    ("SELECT user_id, name FROM diff_users WHERE active = %s AND score = %s", (True, 42), False),
    ("SELECT country, max(score), bool_or(active) FROM diff_users GROUP BY country HAVING count(*) > %s ORDER BY country NULLS FIRST", (100,), True),
]


def normalized(rows, ordered):
    rows = [tuple(r) for r in rows]
    return rows if ordered else sorted(rows, key=repr)


def run_psycopg(dsn, prepare):
    with psycopg.connect(dsn, autocommit=True) as conn:
        out = []
        for sql, params, ordered in QUERIES:
            out.append(normalized(conn.execute(sql, params, prepare=prepare).fetchall(), ordered))
        return out


async def run_asyncpg(dsn):
    conn = await asyncpg.connect(dsn)
    try:
        out = []
        for sql, params, ordered in QUERIES:
            numbered = sql
            for i in range(1, len(params) + 1):
                numbered = numbered.replace("%s", f"${i}", 1)
            out.append(normalized(await conn.fetch(numbered, *params), ordered))
        return out
    finally:
        await conn.close()


def compare(driver, got, want):
    failures = 0
    for (sql, _, _), g, w in zip(QUERIES, got, want):
        if g != w:
            failures += 1
            print(f"{driver}: {sql}\n  got  {g[:5]!r}\n  want {w[:5]!r}")
    return failures


def main():
    proxy, reference = sys.argv[1], sys.argv[2]
    failures = 0
    for prepare in (False, True):
        failures += compare(f"psycopg prepare={prepare}", run_psycopg(proxy, prepare), run_psycopg(reference, prepare))
    failures += compare("asyncpg", asyncio.run(run_asyncpg(proxy)), asyncio.run(run_asyncpg(reference)))
    if failures:
        sys.exit(1)
    print(f"{len(QUERIES)} queries equal through psycopg (unnamed, prepared) and asyncpg")


main()

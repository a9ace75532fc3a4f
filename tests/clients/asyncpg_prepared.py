"""Fifty concurrent asyncpg clients through pgshard. asyncpg prepares every statement it runs,
as a named statement, and relies on finding it again on its connection later. Each runs a few hundred parameterised queries, an explicitly prepared statement and a few
transactions against its own rows of TABLE (created here).

Usage: asyncpg_prepared.py DSN TABLE. Exits non-zero on any error or wrong result.
"""

import asyncio
import sys

import asyncpg

CLIENTS = 50
QUERIES = 200
TRANSACTIONS = 5


async def client(dsn: str, table: str, n: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        # The text differs between clients while asyncpg's statement names do not.
        variant = n % 7
        for i in range(QUERIES):
            row = await conn.fetchrow(
                f"SELECT $1::int + $2::int AS sum, $3::text AS tag, {variant} AS variant", n, i, f"c{n}"
            )
            if tuple(row) != (n + i, f"c{n}", variant):
                raise AssertionError(f"client {n}, query {i}: got {tuple(row)!r}")
        doubled = await conn.prepare("SELECT $1::bigint * 2")
        for i in range(20):
            value = await doubled.fetchval(n * 1000 + i)
            if value != 2 * (n * 1000 + i):
                raise AssertionError(f"client {n}: prepared statement returned {value!r}")
        for t in range(TRANSACTIONS):
            async with conn.transaction():
                await conn.execute(f"INSERT INTO {table} (client, seq) VALUES ($1, $2)", n, t)
                count = await conn.fetchval(f"SELECT count(*) FROM {table} WHERE client = $1", n)
                if count != t + 1:
                    raise AssertionError(f"client {n}, transaction {t}: count {count}")
    finally:
        await conn.close()


async def main() -> int:
    dsn, table = sys.argv[1], sys.argv[2]
    conn = await asyncpg.connect(dsn)
    await conn.execute(f"CREATE TABLE {table} (client int, seq int)")
    await conn.close()
    results = await asyncio.gather(
        *(client(dsn, table, n) for n in range(CLIENTS)), return_exceptions=True
    )
    failures = [(n, r) for n, r in enumerate(results) if isinstance(r, BaseException)]
    for n, failure in failures[:10]:
        print(f"client {n} failed: {failure!r}", file=sys.stderr)
    conn = await asyncpg.connect(dsn)
    rows = await conn.fetchval(f"SELECT count(*) FROM {table}")
    await conn.close()
    if failures:
        print(f"{len(failures)} of {CLIENTS} clients failed", file=sys.stderr)
        return 1
    if rows != CLIENTS * TRANSACTIONS:
        print(f"expected {CLIENTS * TRANSACTIONS} rows, found {rows}", file=sys.stderr)
        return 1
    print(f"ok: {CLIENTS} clients, {CLIENTS * QUERIES} queries, {rows} rows")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

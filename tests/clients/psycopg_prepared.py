"""Fifty concurrent psycopg 3 clients using server-side prepared statements through pgshard.

Half of the clients connect with prepare_threshold=0 (psycopg prepares every statement), the other
half keep the default threshold and pass prepare=True on each call. Each runs a few hundred
parameterised queries and a few transactions against its own rows of TABLE (created here).

Usage: psycopg_prepared.py DSN TABLE. Exits non-zero on any error or wrong result.
"""

import asyncio
import sys

import psycopg

CLIENTS = 50
QUERIES = 200
TRANSACTIONS = 5


async def client(dsn: str, table: str, n: int) -> None:
    explicit = n % 2 == 1
    options = {} if explicit else {"prepare_threshold": 0}
    prepare = True if explicit else None
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True, **options)
    async with conn:
        # The text differs between clients while psycopg's names (_pg3_0, ...) do not.
        variant = n % 7
        for i in range(QUERIES):
            cur = await conn.execute(
                f"SELECT %s::int + %s::int, %s::text, {variant} AS variant",
                (n, i, f"c{n}"),
                prepare=prepare,
            )
            row = await cur.fetchone()
            if row != (n + i, f"c{n}", variant):
                raise AssertionError(f"client {n}, query {i}: got {row!r}")
        for t in range(TRANSACTIONS):
            async with conn.transaction():
                await conn.execute(
                    f"INSERT INTO {table} (client, seq) VALUES (%s, %s)", (n, t), prepare=prepare
                )
                cur = await conn.execute(
                    f"SELECT count(*) FROM {table} WHERE client = %s", (n,), prepare=prepare
                )
                (count,) = await cur.fetchone()
                if count != t + 1:
                    raise AssertionError(f"client {n}, transaction {t}: count {count}")
        if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            raise AssertionError(f"client {n}: left in state {conn.info.transaction_status!r}")


async def main() -> int:
    dsn, table = sys.argv[1], sys.argv[2]
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        await conn.execute(f"CREATE TABLE {table} (client int, seq int)")
    results = await asyncio.gather(
        *(client(dsn, table, n) for n in range(CLIENTS)), return_exceptions=True
    )
    failures = [(n, r) for n, r in enumerate(results) if isinstance(r, BaseException)]
    for n, failure in failures[:10]:
        print(f"client {n} failed: {failure!r}", file=sys.stderr)
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
        cur = await conn.execute(f"SELECT count(*) FROM {table}")
        (rows,) = await cur.fetchone()
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

"""psycopg 3 and asyncpg through pgshard with sslmode=verify-full against the test CA.

Each driver connects, checks that its connection is encrypted, and runs a parameterised query.

Usage: tls_drivers.py PORT CA_FILE. Exits non-zero on any error or wrong result.
"""

import asyncio
import sys

import asyncpg
import psycopg


def check_psycopg(port: str, ca: str) -> None:
    conninfo = (
        f"host=127.0.0.1 port={port} dbname=app user=app password=app "
        f"sslmode=verify-full sslrootcert={ca}"
    )
    with psycopg.connect(conninfo) as conn:
        if not conn.pgconn.ssl_in_use:
            raise AssertionError("psycopg: the connection is not encrypted")
        row = conn.execute("SELECT %s::int + 1", (41,)).fetchone()
        if row != (42,):
            raise AssertionError(f"psycopg: got {row!r}")
    print("psycopg: verify-full ok")


async def check_asyncpg(port: str, ca: str) -> None:
    dsn = (
        f"postgresql://app:app@127.0.0.1:{port}/app"
        f"?sslmode=verify-full&sslrootcert={ca}"
    )
    conn = await asyncpg.connect(dsn)
    try:
        if conn._transport.get_extra_info("ssl_object") is None:
            raise AssertionError("asyncpg: the connection is not encrypted")
        value = await conn.fetchval("SELECT $1::int + 1", 41)
        if value != 42:
            raise AssertionError(f"asyncpg: got {value!r}")
    finally:
        await conn.close()
    print("asyncpg: verify-full ok")


def main() -> None:
    port, ca = sys.argv[1], sys.argv[2]
    check_psycopg(port, ca)
    asyncio.run(check_asyncpg(port, ca))


if __name__ == "__main__":
    main()

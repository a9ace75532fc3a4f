"""psycopg 3 clients passing TimeZone in their connection options see it reported in
ParameterStatus (conn.info.parameter_status) and applied to their queries, while sharing
server connections with a client that asked for another zone.

Usage: psycopg_timezone.py DSN. Exits non-zero on any wrong value.
"""

import sys

import psycopg

UTC_MIDNIGHT = "SELECT '2024-01-01 00:00:00+00'::timestamptz::text"


def check(what: str, got: object, expected: object) -> None:
    if got != expected:
        raise AssertionError(f"{what}: expected {expected!r}, got {got!r}")


def main() -> int:
    dsn = sys.argv[1]
    tokyo = psycopg.connect(dsn, options="-c TimeZone=Asia/Tokyo", autocommit=True)
    york = psycopg.connect(dsn, options="-c TimeZone=America/New_York", autocommit=True)
    check("Tokyo client's reported TimeZone", tokyo.info.parameter_status("TimeZone"), "Asia/Tokyo")
    check("New York client's reported TimeZone", york.info.parameter_status("TimeZone"), "America/New_York")
    for round in range(5):
        check(f"SHOW TimeZone, Tokyo, round {round}", tokyo.execute("SHOW TimeZone").fetchone()[0], "Asia/Tokyo")
        check(f"SHOW TimeZone, New York, round {round}", york.execute("SHOW TimeZone").fetchone()[0], "America/New_York")
        check("midnight UTC in Tokyo", tokyo.execute(UTC_MIDNIGHT).fetchone()[0], "2024-01-01 09:00:00+09")
        check("midnight UTC in New York", york.execute(UTC_MIDNIGHT).fetchone()[0], "2023-12-31 19:00:00-05")
    tokyo.close()
    york.close()
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())

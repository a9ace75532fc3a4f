//! A CancelRequest during cross-shard work (issue 8) reaches every shard: a reference-table write
//! (simple and extended protocol), a multi-row INSERT split per shard, a COPY FROM STDIN split
//! by key and a COPY TO STDOUT gathered from both shards each end with 57014 on every shard, no
//! shard keeps running the statement or keeps any of its rows, and the same client goes on
//! (cross-shard reads and writes reuse the pooled connections, so none was handed on dirty).
//!
//! Slow statements sleep in `pg_sleep` per row; every wait is bounded by [`HANG_GUARD`], far
//! below the sleep, so a cancel that reaches no server fails the test instead of stalling it.
//! Each test uses its own rows (and tables), marked by a string literal that
//! `pg_stat_activity` shows on each shard's primary, and its own `application_name`, which the
//! client's server connections carry (pgshard's own catalog queries, which may name the table
//! too, do not).

mod support;

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use support::Proxy;
use tokio_postgres::{Client, NoTls};

/// Bounds every wait. Not a performance bar: the statements sleep far longer than this.
const HANG_GUARD: Duration = Duration::from_secs(60);
/// Seconds each slow statement sleeps per row when nobody cancels it.
const SLEEP: u32 = 600;

/// A proxy over the two shards (with `tables` sharded by `user_id bigint`, created fresh on both
/// primaries with `columns`), a client of it with `application_name` = `app` (which pgshard gives
/// every server connection it uses, so they can be told apart from other tests' connections),
/// and a direct client to each shard's primary.
async fn setup(app: &str, tables: &[&str], columns: &str) -> (Proxy, Client, [Client; 2]) {
    let clusters = support::shard_clusters();
    let mut direct = Vec::new();
    for cluster in clusters {
        let client = support::connect_direct(cluster.primary_port()).await;
        for table in tables {
            client
                .batch_execute(&format!(
                    "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} ({columns})"
                ))
                .await
                .expect("creating the test table on a shard");
        }
        direct.push(client);
    }
    let proxy = support::start_proxy(&support::two_shard_config_with(clusters, tables)).await;
    let direct = direct.try_into().unwrap_or_else(|_| unreachable!());
    let url = format!("{}?application_name={app}", proxy.url("app", "app"));
    let (client, connection) = tokio_postgres::connect(&url, NoTls)
        .await
        .expect("connecting through the proxy");
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("client connection ended with an error: {e}");
        }
    });
    (proxy, client, direct)
}

/// How many of the client's server connections (`application_name` = `app`) sleep in
/// `pg_sleep` in a statement containing `marker` right now, on each shard's primary.
async fn asleep(direct: &[Client; 2], app: &str, marker: &str) -> [i64; 2] {
    let sql = "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' \
               AND wait_event = 'PgSleep' AND query LIKE '%' || $1 || '%' \
               AND application_name = $2";
    let mut counts = [0; 2];
    for (count, server) in counts.iter_mut().zip(direct) {
        *count = server
            .query_one(sql, &[&marker, &app])
            .await
            .unwrap()
            .get(0);
    }
    counts
}

/// Waits until the client's statement containing `marker` sleeps in `pg_sleep` on both shards'
/// primaries, so that a cancel lands inside it whenever the proxy forwards it (tokio-postgres's
/// `cancel_query` returns once the request is sent, before the proxy has acted on it).
async fn wait_asleep_everywhere(direct: &[Client; 2], app: &str, marker: &str) {
    let wait = async {
        while asleep(direct, app, marker).await.contains(&0) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(HANG_GUARD, wait)
        .await
        .unwrap_or_else(|_| panic!("{marker}: the statement never ran on both shards"));
}

/// The SQLSTATE of a failed statement.
fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.code().code().to_string())
        .unwrap_or_else(|| format!("not a server error: {e}"))
}

/// Runs `statement` (given the client) on a task, waits until it runs on both shards, sends the
/// client's CancelRequest and asserts that the statement fails with 57014 and that no shard
/// runs it any more. Gives the client back.
async fn cancel_while_running<F, Fut, T>(
    client: Client,
    direct: &[Client; 2],
    (app, marker): (&str, &str),
    statement: F,
) -> Client
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = (Client, Result<T, tokio_postgres::Error>)> + Send + 'static,
    T: std::fmt::Debug + Send + 'static,
{
    let token = client.cancel_token();
    let task = tokio::spawn(statement(client));
    wait_asleep_everywhere(direct, app, marker).await;
    token.cancel_query(NoTls).await.expect("sending the cancel");
    let (client, result) = tokio::time::timeout(HANG_GUARD, task)
        .await
        .unwrap_or_else(|_| panic!("{marker}: the cancelled statement is still running"))
        .unwrap();
    let err = result.expect_err("the statement was cancelled");
    assert_eq!(sqlstate(&err), "57014", "{marker}: {err}");
    assert_none_running(direct, app, marker).await;
    client
}

/// No server connection of the client's (`application_name` = `app`) runs a statement containing
/// `marker` any more on either shard's primary.
async fn assert_none_running(direct: &[Client; 2], app: &str, marker: &str) {
    let still = active_with(direct, app, marker).await;
    assert!(
        still.is_empty(),
        "{marker}: still running on the shards after the cancel:\n{still}"
    );
}

/// Which of the client's server connections (`application_name` = `app`; pgshard's own, such as
/// its catalog queries naming the table, are not the client's) run a statement containing
/// `marker` on each shard's primary, one line each (empty when none does): read in the same
/// snapshot that decides, so a failure names what it counted.
async fn active_with(direct: &[Client; 2], app: &str, marker: &str) -> String {
    let sql = "SELECT pid, backend_type, coalesce(application_name, ''), state, \
               coalesce(wait_event, ''), (now() - state_change)::text, query \
               FROM pg_stat_activity WHERE state = 'active' \
               AND query LIKE '%' || $1 || '%' AND application_name = $2";
    let mut out = String::new();
    for (shard, server) in direct.iter().enumerate() {
        for row in server.query(sql, &[&marker, &app]).await.unwrap() {
            let pid: i32 = row.get(0);
            let kind: String = row.get(1);
            let app: String = row.get(2);
            let state: String = row.get(3);
            let wait: String = row.get(4);
            let since: String = row.get(5);
            let query: String = row.get(6);
            out += &format!(
                "shard {shard}: pid {pid} {kind} app {app:?} {state} {wait} for {since}: {query}\n"
            );
        }
    }
    out
}

/// No server connection of the client's (`application_name` = `app`) is left inside a
/// transaction on either shard, and the same client still runs a plain query, a read of both
/// shards and a write on both shards through pooled connections.
async fn assert_usable(client: &Client, direct: &[Client; 2], app: &str) {
    for (i, server) in direct.iter().enumerate() {
        let stuck: i64 = server
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 \
                 AND state LIKE 'idle in transaction%'",
                &[&app],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(stuck, 0, "shard {i} has a connection left in a transaction");
    }
    let after = async {
        client
            .simple_query("SELECT 1")
            .await
            .expect("a query after");
        client
            .simple_query("SELECT count(*) FROM users WHERE user_id < 0")
            .await
            .expect("a read of both shards after");
        client
            .simple_query("UPDATE countries SET name = name WHERE code = 'cancel_none'")
            .await
            .expect("a write on both shards after");
    };
    tokio::time::timeout(HANG_GUARD, after)
        .await
        .expect("the client goes on after the cancel");
}

/// The `name` of country `code` on each shard's primary.
async fn country_names(direct: &[Client; 2], code: &str) -> Vec<Option<String>> {
    let mut names = Vec::new();
    for server in direct {
        let row = server
            .query_opt("SELECT name FROM countries WHERE code = $1", &[&code])
            .await
            .unwrap();
        names.push(row.map(|r| r.get(0)));
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_stops_a_reference_table_write_on_every_shard() {
    const APP: &str = "cancel_ref";
    let (_proxy, client, direct) = setup(APP, &[], "").await;
    let before = Some("before".to_string());
    for code in ["cancel_ref_simple", "cancel_ref_ext"] {
        client
            .simple_query(&format!(
                "INSERT INTO countries (code, name) VALUES ('{code}', 'before')"
            ))
            .await
            .expect("a reference row on both shards");
        assert_eq!(
            country_names(&direct, code).await,
            [before.clone(), before.clone()]
        );
    }
    // Simple protocol.
    let marker = "cancel_ref_simple";
    let sql = format!(
        "UPDATE countries SET name = 'after' WHERE code = '{marker}' \
         AND pg_sleep({SLEEP}) IS NOT NULL"
    );
    let client = cancel_while_running(client, &direct, (APP, marker), |client| async move {
        let result = client.simple_query(&sql).await;
        (client, result)
    })
    .await;
    assert_eq!(
        country_names(&direct, marker).await,
        [before.clone(), before.clone()]
    );
    assert_usable(&client, &direct, APP).await;
    // Extended protocol, with a parameter.
    let marker = "cancel_ref_ext";
    let sql = format!(
        "UPDATE countries SET name = 'after' WHERE code = $1 AND name <> '{marker}' \
         AND pg_sleep({SLEEP}) IS NOT NULL"
    );
    let client = cancel_while_running(client, &direct, (APP, marker), |client| async move {
        let result = client.execute(&sql, &[&marker]).await;
        (client, result)
    })
    .await;
    assert_eq!(
        country_names(&direct, marker).await,
        [before.clone(), before]
    );
    assert_usable(&client, &direct, APP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_stops_a_split_insert_on_every_shard() {
    const APP: &str = "cancel_split";
    let (_proxy, mut client, direct) = setup(APP, &[], "").await;
    let key_on = |shard: usize, from: i64| {
        (from..)
            .find(|&k| support::shard_of_id(k) == shard)
            .unwrap()
    };
    for (marker, from) in [
        ("cancel_split_simple", 81_000),
        ("cancel_split_ext", 82_000),
    ] {
        let keys = [key_on(0, from), key_on(1, from)];
        let value = format!("'{marker}' || pg_sleep({SLEEP})::text");
        client = if marker.ends_with("simple") {
            let sql = format!(
                "INSERT INTO users (user_id, name) VALUES ({}, {value}), ({}, {value})",
                keys[0], keys[1]
            );
            cancel_while_running(client, &direct, (APP, marker), |client| async move {
                let result = client.simple_query(&sql).await;
                (client, result)
            })
            .await
        } else {
            let sql =
                format!("INSERT INTO users (user_id, name) VALUES ($1, {value}), ($2, {value})");
            cancel_while_running(client, &direct, (APP, marker), |client| async move {
                let result = client.execute(&sql, &[&keys[0], &keys[1]]).await;
                (client, result)
            })
            .await
        };
        for server in &direct {
            let left: i64 = server
                .query_one(
                    "SELECT count(*) FROM users WHERE user_id = ANY($1)",
                    &[&keys.to_vec()],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(left, 0, "{marker}: a cancelled INSERT left rows");
        }
        assert_usable(&client, &direct, APP).await;
    }
}

/// Every row of `table` on each shard's primary.
async fn row_counts(direct: &[Client; 2], table: &str) -> [i64; 2] {
    let mut counts = [0; 2];
    for (count, server) in counts.iter_mut().zip(direct) {
        let sql = format!("SELECT count(*) FROM {table}");
        *count = server.query_one(&sql, &[]).await.unwrap().get(0);
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_stops_a_split_copy_from_stdin_on_every_shard() {
    const APP: &str = "cancel_copy_in";
    let table = APP;
    // A row named 'slow' sleeps in its CHECK, so each shard is busy with the COPY (not waiting
    // for rows, when PostgreSQL honours a cancel only at the next row) when the cancel comes.
    let columns = format!(
        "user_id bigint, name text CHECK (name <> 'slow' OR pg_sleep({SLEEP}) IS NOT NULL)"
    );
    let (_proxy, client, direct) = setup(APP, &[table], &columns).await;
    let token = client.cancel_token();
    let slow: Vec<i64> = (0..2)
        .map(|shard| {
            (10_001..)
                .find(|&k| support::shard_of_id(k) == shard)
                .unwrap()
        })
        .collect();
    let rows = |ids: std::ops::RangeInclusive<i64>| -> Bytes {
        ids.map(|id| format!("{id}\tsome text to fill the batches\n"))
            .collect::<String>()
            .into()
    };
    let copy = async {
        let sink = client
            .copy_in::<_, Bytes>(&format!("COPY {table} (user_id, name) FROM STDIN"))
            .await
            .expect("the COPY starts");
        futures_util::pin_mut!(sink);
        sink.send(rows(1..=3000)).await.expect("sending rows");
        let slow_rows = format!("{}\tslow\n{}\tslow\n", slow[0], slow[1]);
        sink.send(Bytes::from(slow_rows))
            .await
            .expect("sending rows");
        // More than a 64 KiB batch for each shard after the slow rows, so pgshard sends them.
        sink.send(rows(3001..=9000)).await.expect("sending rows");
        wait_asleep_everywhere(&direct, APP, table).await;
        token.cancel_query(NoTls).await.expect("sending the cancel");
        sink.as_mut().finish().await
    };
    let result = tokio::time::timeout(HANG_GUARD, copy)
        .await
        .expect("the cancelled COPY ends (it sleeps for minutes on each shard otherwise)");
    let err = result.expect_err("the COPY was cancelled");
    assert_eq!(sqlstate(&err), "57014", "{err}");
    assert_none_running(&direct, APP, table).await;
    assert_eq!(
        row_counts(&direct, table).await,
        [0, 0],
        "a cancelled COPY loads nothing"
    );
    assert_usable(&client, &direct, APP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_stops_a_gathered_copy_to_stdout_on_every_shard() {
    const APP: &str = "cancel_copy_out";
    let table = APP;
    let (_proxy, client, direct) = setup(APP, &[table], "user_id bigint, name text").await;
    for id in 1..=10i64 {
        client
            .execute(
                &format!("INSERT INTO {table} (user_id, name) VALUES ($1, 'x')"),
                &[&id],
            )
            .await
            .unwrap();
    }
    assert!(
        !row_counts(&direct, table).await.contains(&0),
        "rows on both shards"
    );
    let sql =
        format!("COPY (SELECT user_id FROM {table} WHERE pg_sleep({SLEEP}) IS NOT NULL) TO STDOUT");
    let client = cancel_while_running(client, &direct, (APP, table), |client| async move {
        let result = async {
            let stream = client.copy_out(&sql).await?;
            futures_util::pin_mut!(stream);
            let mut out = Vec::new();
            while let Some(chunk) = stream.next().await {
                out.extend_from_slice(&chunk?);
            }
            Ok(out)
        }
        .await;
        (client, result)
    })
    .await;
    assert_usable(&client, &direct, APP).await;
}

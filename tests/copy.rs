//! COPY through the proxy against two real shards: `COPY <sharded table> FROM STDIN` (text and
//! CSV, tokio-postgres and psql's `\copy`) puts every row on the shard its key hashes to and
//! reports the total; bad rows, NULL keys, a shard's own error (at the start or midway) and the
//! client's CopyFail leave no row on any shard; `COPY ... TO STDOUT` without a key gathers every
//! shard's rows; what cannot be gathered by concatenation, binary COPY and COPY inside a
//! transaction are refused with 0A000. After each, the same client keeps working (pooled
//! connections are clean).
//!
//! Each test creates its own table (on both shards, directly) and its own proxy whose config
//! declares that table sharded by `id bigint`.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use pgshard::localpg::LocalCluster;
use support::{connect_direct, shard_clusters, start_proxy, two_shard_config, Proxy};
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

/// Bounds every wait, so that a hang fails the test instead of stalling the suite. Not a
/// performance bar.
const HANG_GUARD: Duration = Duration::from_secs(60);

fn shard_of_id(id: i64) -> usize {
    support::shard_of_id(id)
}

/// A proxy whose config shards `table` by `id bigint`, the table created fresh on both shards
/// with `columns`, and a direct client per shard primary.
struct Fixture {
    proxy: Proxy,
    shards: [Client; 2],
    clusters: [&'static LocalCluster; 2],
    table: &'static str,
}

async fn fixture(table: &'static str, columns: &str) -> Fixture {
    let clusters = shard_clusters();
    let mut config = two_shard_config(clusters);
    config.push_str(&format!(
        "\n[[sharding.tables]]\nname = \"{table}\"\nkey_column = \"id\"\nkey_type = \"bigint\"\n"
    ));
    let mut shards = Vec::new();
    for cluster in clusters {
        let client = connect_direct(cluster.primary_port()).await;
        client
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} ({columns})"
            ))
            .await
            .expect("creating the test table on a shard");
        shards.push(client);
    }
    let proxy = start_proxy(&config).await;
    Fixture {
        proxy,
        shards: shards.try_into().unwrap_or_else(|_| unreachable!()),
        clusters,
        table,
    }
}

impl Fixture {
    /// `(id, name)` of every row on each shard, by id.
    async fn rows_by_shard(&self) -> [BTreeMap<i64, Option<String>>; 2] {
        let mut out = [BTreeMap::new(), BTreeMap::new()];
        for (i, client) in self.shards.iter().enumerate() {
            let rows = client
                .query(&format!("SELECT id, name FROM {}", self.table), &[])
                .await
                .expect("reading a shard directly");
            for row in rows {
                out[i].insert(row.get::<_, i64>(0), row.get::<_, Option<String>>(1));
            }
        }
        out
    }

    /// Asserts every row sits on the shard its key hashes to, and returns all rows.
    async fn placed_rows(&self) -> BTreeMap<i64, Option<String>> {
        let mut all = BTreeMap::new();
        for (shard, rows) in self.rows_by_shard().await.into_iter().enumerate() {
            for (id, name) in rows {
                assert_eq!(shard_of_id(id), shard, "row {id} is on s{shard}");
                assert!(all.insert(id, name).is_none(), "row {id} is on both shards");
            }
        }
        all
    }

    async fn wait_for_replicas(&self) {
        for cluster in self.clusters {
            cluster
                .wait_for_replay(HANG_GUARD)
                .expect("the replica catches up");
        }
    }
}

/// A name that exercises text-format escaping: tabs, newlines, backslashes, UTF-8.
fn tricky_name(id: i64) -> String {
    format!("n{id}\twith tab\nnewline \\ backslash ключ")
}

/// Text-format line for `(id, name)`.
fn text_line(id: i64, name: &str) -> String {
    let escaped = name
        .replace('\\', "\\\\")
        .replace('\t', "\\t")
        .replace('\n', "\\n");
    format!("{id}\t{escaped}\n")
}

/// Sends `data` in CopyData chunks of `chunk` bytes (so rows straddle messages); returns the
/// row count the proxy reports, or the error.
async fn copy_in(
    client: &Client,
    sql: &str,
    data: &[u8],
    chunk: usize,
) -> Result<u64, tokio_postgres::Error> {
    let sink = client.copy_in::<_, Bytes>(sql).await?;
    futures_util::pin_mut!(sink);
    for piece in data.chunks(chunk) {
        sink.send(Bytes::copy_from_slice(piece)).await?;
    }
    sink.as_mut().finish().await
}

async fn copy_out(client: &Client, sql: &str) -> Result<Vec<u8>, tokio_postgres::Error> {
    let stream = client.copy_out(sql).await?;
    futures_util::pin_mut!(stream);
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.code().code().to_string())
        .unwrap_or_else(|| format!("not a server error: {e}"))
}

fn message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.message().to_string())
        .unwrap_or_default()
}

/// The proxy's pooled connections are clean: the same client runs a keyed write, a keyed read
/// (on a replica, once it has replayed the write) and a simple query after the COPY.
async fn still_works(client: &Client, f: &Fixture) {
    let table = f.table;
    client
        .execute(
            &format!("INSERT INTO {table} (id, name) VALUES ($1, 'after')"),
            &[&-7i64],
        )
        .await
        .expect("a write after the COPY");
    f.wait_for_replicas().await;
    let row = client
        .query_one(
            &format!("SELECT name FROM {table} WHERE id = $1"),
            &[&-7i64],
        )
        .await
        .expect("a read after the COPY");
    assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some("after"));
    client
        .simple_query("SELECT 1")
        .await
        .expect("a simple query after the COPY");
}

async fn with_guard<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(HANG_GUARD * 3, f)
        .await
        .expect("the test finished (hang guard)");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_copy_puts_every_row_on_the_shard_its_key_hashes_to() {
    with_guard(async {
        let f = fixture("copy_text", "id bigint PRIMARY KEY, name text").await;
        let client = f.proxy.connect().await;
        let ids: Vec<i64> = (1..=3000).map(|i| i * 7919 % 100_003).collect();
        let mut data = String::new();
        for &id in &ids {
            data.push_str(&text_line(id, &tricky_name(id)));
        }
        // 1000-byte CopyData messages: rows are cut at arbitrary bytes, even inside UTF-8.
        let n = copy_in(
            &client,
            "COPY copy_text (id, name) FROM STDIN",
            data.as_bytes(),
            1000,
        )
        .await
        .expect("COPY through the proxy");
        assert_eq!(n, 3000, "CommandComplete reports the total of both shards");
        let rows = f.placed_rows().await;
        assert_eq!(rows.len(), 3000);
        for id in ids {
            assert_eq!(rows[&id].as_deref(), Some(tricky_name(id).as_str()));
        }
        let by_shard = f.rows_by_shard().await;
        assert!(
            !by_shard[0].is_empty() && !by_shard[1].is_empty(),
            "both shards got rows"
        );
        still_works(&client, &f).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csv_copy_with_quotes_newlines_and_nulls_is_split_by_key() {
    with_guard(async {
        let f = fixture("copy_csv", "name text, id bigint PRIMARY KEY").await;
        let client = f.proxy.connect().await;
        let mut data = String::from("name,id\r\n");
        for id in 1..=2000i64 {
            match id % 3 {
                0 => data.push_str(&format!("\"multi\nline, \"\"quoted\"\" {id}\",{id}\r\n")),
                1 => data.push_str(&format!(",\"{id}\"\r\n")),
                _ => data.push_str(&format!("plain {id},{id}\r\n")),
            }
        }
        let n = copy_in(
            &client,
            "COPY copy_csv (name, id) FROM STDIN WITH (FORMAT csv, HEADER true)",
            data.as_bytes(),
            777,
        )
        .await
        .expect("CSV COPY through the proxy");
        assert_eq!(n, 2000);
        let rows = f.placed_rows().await;
        assert_eq!(rows.len(), 2000);
        assert_eq!(rows[&3].as_deref(), Some("multi\nline, \"quoted\" 3"));
        assert_eq!(rows[&4], None, "an unquoted empty CSV field is NULL");
        assert_eq!(rows[&5].as_deref(), Some("plain 5"));
        still_works(&client, &f).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_copy_csv_with_header_and_legacy_syntax_works() {
    with_guard(async {
        let f = fixture("copy_psql", "id bigint PRIMARY KEY, name text").await;
        let path = std::env::temp_dir().join(format!("pgshard_copy_{}.csv", std::process::id()));
        let mut data = String::from("id;name\n");
        for id in 1..=1500i64 {
            data.push_str(&format!("{id};'semi;colon {id}'\n"));
        }
        std::fs::write(&path, &data).expect("writing the CSV file");
        let run = |command: String| {
            std::process::Command::new("psql")
                .arg(f.proxy.url("app", "app"))
                .args(["-X", "-v", "ON_ERROR_STOP=1", "-c", &command])
                .output()
                .expect("running psql")
        };
        let out = run(format!(
            "\\copy copy_psql (id, name) FROM '{}' DELIMITER ';' CSV HEADER QUOTE ''''",
            path.display()
        ));
        assert!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("COPY 1500"),
            "{out:?}"
        );
        let rows = f.placed_rows().await;
        assert_eq!(rows.len(), 1500);
        assert_eq!(rows[&42].as_deref(), Some("semi;colon 42"));
        // And out again, gathered from both shards, with one header.
        f.wait_for_replicas().await;
        let out_path = path.with_extension("out.csv");
        let out = run(format!(
            "\\copy copy_psql TO '{}' WITH (FORMAT csv, HEADER true)",
            out_path.display()
        ));
        assert!(
            out.status.success(),
            "psql: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("COPY 1500"),
            "psql prints the total: {out:?}"
        );
        let text = std::fs::read_to_string(&out_path).expect("reading the COPY output");
        assert!(
            text.starts_with("id,name\n"),
            "{}",
            &text[..40.min(text.len())]
        );
        assert_eq!(text.matches("id,name").count(), 1, "one header line");
        assert_eq!(
            text.lines().filter(|l| l.contains("semi;colon")).count(),
            1500
        );
        let _ = std::fs::remove_file(&out_path);
        let _ = std::fs::remove_file(&path);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_column_list_the_key_is_found_in_the_table_column_order() {
    with_guard(async {
        let f = fixture("copy_nolist", "name text, note text, id bigint PRIMARY KEY").await;
        let client = f.proxy.connect().await;
        let data: String = (1..=500i64).map(|id| format!("n{id}\tx\t{id}\n")).collect();
        let n = copy_in(
            &client,
            "COPY copy_nolist FROM STDIN",
            data.as_bytes(),
            4096,
        )
        .await
        .expect("COPY without a column list");
        assert_eq!(n, 500);
        assert_eq!(f.placed_rows().await.len(), 500);
        still_works(&client, &f).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_null_key_fails_the_whole_copy_with_23502_and_loads_nothing() {
    with_guard(async {
        let f = fixture("copy_nullkey", "id bigint, name text").await;
        let client = f.proxy.connect().await;
        let mut data: String = (1..=1000i64).map(|id| format!("{id}\tok\n")).collect();
        data.push_str("\\N\tno key\n");
        data.extend((1001..=2000i64).map(|id| format!("{id}\tok\n")));
        let err = copy_in(
            &client,
            "COPY copy_nullkey (id, name) FROM STDIN",
            data.as_bytes(),
            512,
        )
        .await
        .expect_err("a NULL key is refused");
        assert_eq!(sqlstate(&err), SqlState::NOT_NULL_VIOLATION.code());
        assert!(message(&err).contains("line 1001"), "{}", message(&err));
        assert_eq!(
            f.placed_rows().await.len(),
            0,
            "nothing was loaded on any shard"
        );
        still_works(&client, &f).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_rows_fail_with_22p04_or_the_key_types_error() {
    with_guard(async {
        let f = fixture("copy_badrow", "id bigint, name text").await;
        let client = f.proxy.connect().await;
        // The key is the second field; line 3 has only one.
        let data = "a\t1\nb\t2\nno key field\nd\t4\n";
        let err = copy_in(
            &client,
            "COPY copy_badrow (name, id) FROM STDIN",
            data.as_bytes(),
            3,
        )
        .await
        .expect_err("a row without the key field is refused");
        assert_eq!(sqlstate(&err), "22P04");
        assert!(message(&err).contains("line 3"), "{}", message(&err));
        let data = "a\t1\nb\tnot-a-number\n";
        let err = copy_in(
            &client,
            "COPY copy_badrow (name, id) FROM STDIN",
            data.as_bytes(),
            64,
        )
        .await
        .expect_err("a key that is not a bigint is refused");
        assert_eq!(sqlstate(&err), "22P02");
        assert!(message(&err).contains("line 2"), "{}", message(&err));
        assert_eq!(f.placed_rows().await.len(), 0);
        still_works(&client, &f).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shards_own_error_rolls_back_every_shard() {
    with_guard(async {
        let f = fixture("copy_dup", "id bigint PRIMARY KEY, name text").await;
        // A row already on its shard: the COPY repeats its key.
        let taken = 77i64;
        f.shards[shard_of_id(taken)]
            .execute("INSERT INTO copy_dup VALUES ($1, 'before')", &[&taken])
            .await
            .unwrap();
        let client = f.proxy.connect().await;
        let mut data: String = (1..=1000i64)
            .map(|id| format!("{}\tnew\n", id + 1000))
            .collect();
        data.push_str(&format!("{taken}\tduplicate\n"));
        let err = copy_in(
            &client,
            "COPY copy_dup (id, name) FROM STDIN",
            data.as_bytes(),
            2048,
        )
        .await
        .expect_err("the duplicate key fails on its shard");
        assert_eq!(sqlstate(&err), SqlState::UNIQUE_VIOLATION.code());
        let rows = f.placed_rows().await;
        assert_eq!(rows.len(), 1, "only the row from before: {rows:?}");
        assert_eq!(rows[&taken].as_deref(), Some("before"));
        still_works(&client, &f).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_the_shards_refuse_fails_with_their_error_and_the_session_goes_on() {
    with_guard(async {
        let f = fixture("copy_nocol", "id bigint, name text").await;
        let client = f.proxy.connect().await;
        // A column the table lacks: every shard refuses the COPY before copy-in mode.
        let sql = "COPY copy_nocol (id, nosuch) FROM STDIN";
        let err = client.simple_query(sql).await.expect_err("simple protocol");
        assert_eq!(sqlstate(&err), SqlState::UNDEFINED_COLUMN.code(), "{err}");
        still_works(&client, &f).await;
        // On a client of its own: after a refused copy_in, tokio-postgres sends CopyFail and
        // Sync and then cannot place the extra ReadyForQuery (with PostgreSQL too).
        let other = f.proxy.connect().await;
        let err = copy_in(&other, sql, b"1\tx\n", 2048)
            .await
            .expect_err("extended protocol");
        assert_eq!(sqlstate(&err), SqlState::UNDEFINED_COLUMN.code(), "{err}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_fail_from_the_client_leaves_nothing() {
    with_guard(async {
        let f = fixture("copy_abort", "id bigint, name text").await;
        let client = f.proxy.connect().await;
        {
            let sink = client
                .copy_in::<_, Bytes>("COPY copy_abort (id, name) FROM STDIN")
                .await
                .expect("the COPY starts");
            futures_util::pin_mut!(sink);
            let data: String = (1..=2000i64).map(|id| format!("{id}\tx\n")).collect();
            sink.send(Bytes::from(data)).await.expect("sending rows");
            // Dropped without finish: tokio-postgres sends CopyFail.
        }
        // Answered after the CopyFail (and its Sync), so the abort is done by then.
        client
            .simple_query("SELECT 1")
            .await
            .expect("the session goes on after CopyFail");
        assert_eq!(f.placed_rows().await.len(), 0, "CopyFail loads nothing");
        still_works(&client, &f).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_to_stdout_without_a_key_gathers_every_shard() {
    with_guard(async {
        let f = fixture("copy_out", "id bigint PRIMARY KEY, name text").await;
        let client = f.proxy.connect().await;
        let data: String = (1..=1200i64)
            .map(|id| text_line(id, &tricky_name(id)))
            .collect();
        copy_in(
            &client,
            "COPY copy_out (id, name) FROM STDIN",
            data.as_bytes(),
            9000,
        )
        .await
        .expect("loading");
        f.wait_for_replicas().await;
        let out = copy_out(
            &client,
            "COPY (SELECT id, name FROM copy_out WHERE id > 0) TO STDOUT",
        )
        .await
        .expect("COPY (SELECT ...) TO STDOUT");
        let mut lines: Vec<String> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        lines.sort();
        let mut expected: Vec<String> = data.lines().map(String::from).collect();
        expected.sort();
        assert_eq!(lines, expected, "every row from both shards, once");
        let out = copy_out(&client, "COPY copy_out TO STDOUT (FORMAT csv)")
            .await
            .expect("COPY table TO STDOUT");
        assert_eq!(
            String::from_utf8(out).unwrap().matches("with tab").count(),
            1200
        );
        // A key still routes to its one shard.
        let out = copy_out(
            &client,
            "COPY (SELECT name FROM copy_out WHERE id = 5) TO STDOUT",
        )
        .await
        .expect("keyed COPY TO");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            text_line(5, &tricky_name(5))[2..]
        );
        still_works(&client, &f).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_copy_cannot_do_across_shards_is_refused_with_0a000() {
    with_guard(async {
        let f = fixture("copy_refused", "id bigint, name text").await;
        let client = f.proxy.connect().await;
        for sql in [
            "COPY (SELECT id FROM copy_refused ORDER BY id) TO STDOUT",
            "COPY (SELECT count(*) FROM copy_refused) TO STDOUT",
            "COPY (SELECT id FROM copy_refused LIMIT 3) TO STDOUT",
            "COPY copy_refused TO STDOUT (FORMAT binary)",
        ] {
            let err = copy_out(&client, sql).await.expect_err(sql);
            assert_eq!(sqlstate(&err), "0A000", "{sql}: {err}");
        }
        // (As a simple query: tokio-postgres's copy_in sends CopyFail and Sync after a refused
        // Bind, whose extra ReadyForQuery it then cannot place, with PostgreSQL too.)
        let err = client
            .simple_query("COPY copy_refused (id, name) FROM STDIN (FORMAT binary)")
            .await
            .expect_err("binary COPY in");
        assert_eq!(sqlstate(&err), "0A000");
        client.batch_execute("BEGIN").await.unwrap();
        let err = client
            .simple_query("COPY copy_refused (id, name) FROM STDIN")
            .await
            .expect_err("COPY in a transaction");
        assert_eq!(sqlstate(&err), "0A000");
        assert!(message(&err).contains("transaction"), "{}", message(&err));
        client.batch_execute("ROLLBACK").await.unwrap();
        still_works(&client, &f).await;
    })
    .await;
}

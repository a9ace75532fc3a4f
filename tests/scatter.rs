//! Keyless reads answered from every shard (issue 4, first slice), checked against one plain
//! PostgreSQL holding the same rows: every query of the corpus must return exactly the rows the
//! single server returns; what pgshard cannot merge yet must be refused with 0A000 naming the
//! construct, never answered wrongly.

mod support;

use std::time::Duration;

use tokio_postgres::{Client, SimpleQueryMessage};

/// The table of this binary, created on both shards and on the reference server.
const SCHEMA: &str =
    "CREATE TABLE scatter_rows (user_id bigint PRIMARY KEY, grp int, val numeric, label text)";

/// Rows as text, sorted, for order-insensitive comparison.
type Rows = Vec<Vec<Option<String>>>;

/// Starts a proxy over the two shards (scatter_rows sharded by user_id) after loading the same
/// rows through it and into the reference server. Loaded once per test binary.
async fn setup() -> (support::Proxy, Client) {
    static LOADED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let shards = support::shard_clusters();
    let reference = support::cluster();
    let config = support::two_shard_config_with(shards, &["scatter_rows"]);
    let proxy = support::start_proxy(&config).await;
    let reference_client = support::connect_direct(reference.primary_port()).await;
    LOADED.get_or_init(|| async {
        for cluster in shards {
            cluster.psql(cluster.primary_port(), "app", &format!("SET ROLE app; {SCHEMA}")).unwrap();
        }
        reference_client.batch_execute(SCHEMA).await.unwrap();
        let client = proxy.connect().await;
        for id in 1..=400i64 {
            let grp = (id % 7) as i32;
            let val = if id % 11 == 0 { "NULL".to_string() } else { format!("{}.{}", id * 3, id % 10) };
            let label = if id % 13 == 0 { "NULL".to_string() } else { format!("'{}{}'", ["a", "b", "c"][id as usize % 3], id) };
            let insert = format!("INSERT INTO scatter_rows (user_id, grp, val, label) VALUES ({id}, {grp}, {val}, {label})");
            client.simple_query(&insert).await.unwrap();
            reference_client.simple_query(&insert).await.unwrap();
        }
        for cluster in shards {
            cluster.wait_for_replay(Duration::from_secs(60)).unwrap();
        }
    })
    .await;
    (proxy, reference_client)
}

async fn rows(client: &Client, sql: &str) -> Result<(Rows, u64), tokio_postgres::Error> {
    let (mut rows, tag) = ordered_rows(client, sql).await?;
    rows.sort();
    Ok((rows, tag))
}

/// Rows in the order the server sent them.
async fn ordered_rows(client: &Client, sql: &str) -> Result<(Rows, u64), tokio_postgres::Error> {
    let mut rows = Vec::new();
    let mut tag = 0;
    for message in client.simple_query(sql).await? {
        match message {
            SimpleQueryMessage::Row(row) => {
                rows.push(
                    (0..row.len())
                        .map(|i| row.get(i).map(str::to_string))
                        .collect(),
                );
            }
            SimpleQueryMessage::CommandComplete(n) => tag = n,
            _ => {}
        }
    }
    Ok((rows, tag))
}

#[tokio::test]
async fn keyless_reads_return_exactly_what_one_server_with_all_rows_returns() {
    let (proxy, reference) = setup().await;
    let client = proxy.connect().await;
    let corpus = [
        "SELECT user_id, grp, val, label FROM scatter_rows",
        "SELECT * FROM scatter_rows WHERE grp = 3",
        "SELECT user_id, val FROM scatter_rows WHERE val IS NULL",
        "SELECT user_id, label FROM scatter_rows WHERE label LIKE 'a%'",
        "SELECT user_id FROM scatter_rows WHERE user_id IN (1, 42, 77, 399)",
        "SELECT user_id, val * 2 AS doubled FROM scatter_rows WHERE grp < 2",
        "SELECT s.user_id, s.grp FROM scatter_rows s WHERE s.grp BETWEEN 2 AND 4",
        "SELECT user_id, coalesce(label, 'none') AS l FROM scatter_rows WHERE val > 500",
        "SELECT user_id FROM scatter_rows WHERE false",
        "SELECT lower(label) AS l, grp + 1 AS g FROM scatter_rows WHERE user_id > 350",
    ];
    for sql in corpus {
        let got = rows(&client, sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let want = rows(&reference, sql).await.unwrap();
        assert_eq!(got.0, want.0, "rows differ for {sql}");
        assert_eq!(
            got.1, want.1,
            "row count in CommandComplete differs for {sql}"
        );
    }
}

#[tokio::test]
async fn keyless_reads_gather_rows_from_both_shards() {
    let (proxy, _reference) = setup().await;
    let client = proxy.connect().await;
    let (all, _) = rows(
        &client,
        "SELECT user_id, inet_server_port() FROM scatter_rows",
    )
    .await
    .unwrap();
    let ports: std::collections::BTreeSet<_> = all.iter().map(|r| r[1].clone()).collect();
    assert_eq!(all.len(), 400);
    assert_eq!(ports.len(), 2, "rows came from two servers: {ports:?}");
}

#[tokio::test]
async fn a_limit_without_order_stops_after_that_many_rows_that_all_exist() {
    let (proxy, reference) = setup().await;
    let client = proxy.connect().await;
    let (limited, tag) = rows(&client, "SELECT user_id, grp FROM scatter_rows LIMIT 7")
        .await
        .unwrap();
    assert_eq!((limited.len(), tag), (7, 7));
    let (all, _) = rows(&reference, "SELECT user_id, grp FROM scatter_rows")
        .await
        .unwrap();
    assert!(limited.iter().all(|row| all.contains(row)));
}

#[tokio::test]
async fn reads_pgshard_cannot_merge_yet_are_refused_naming_the_construct() {
    let (proxy, _reference) = setup().await;
    let client = proxy.connect().await;
    let cases = [
        (
            "SELECT user_id, label FROM scatter_rows WHERE label COLLATE \"C\" > 'b' ORDER BY label",
            "COLLATE",
        ),
        ("SELECT avg(val::float8) FROM scatter_rows", "avg"),
        ("SELECT count(DISTINCT grp) FROM scatter_rows", "DISTINCT"),
        ("SELECT grp FROM scatter_rows GROUP BY CUBE (grp)", "CUBE"),
        (
            "SELECT DISTINCT ON (grp) grp FROM scatter_rows",
            "DISTINCT ON",
        ),
        ("SELECT user_id FROM scatter_rows OFFSET $1", "OFFSET"),
    ];
    for (sql, construct) in cases {
        let err = client.simple_query(sql).await.expect_err(sql);
        let db = err.as_db_error().unwrap_or_else(|| panic!("{sql}: {err}"));
        assert_eq!(db.code().code(), "0A000", "{sql}");
        assert!(db.message().contains(construct), "{sql}: {}", db.message());
        // The client stays usable.
        assert_eq!(
            rows(&client, "SELECT 1").await.unwrap().0,
            vec![vec![Some("1".to_string())]]
        );
    }
}

#[tokio::test]
async fn a_keyless_read_runs_in_a_transaction_until_it_uses_a_shard() {
    let (proxy, reference) = setup().await;
    let client = proxy.connect().await;
    let count = "SELECT count(*), sum(grp) FROM scatter_rows";
    let want = rows(&reference, count).await.unwrap().0;

    // Before the transaction's first statement reaches a shard, the read runs on every shard.
    client.simple_query("BEGIN").await.unwrap();
    assert_eq!(rows(&client, count).await.unwrap().0, want);
    let by_key = "SELECT user_id FROM scatter_rows WHERE user_id = 5";
    assert_eq!(rows(&client, by_key).await.unwrap().0.len(), 1);
    // Now the transaction is on one shard: a cross-shard read is refused and aborts it.
    let err = client.simple_query(count).await.unwrap_err();
    let db = err.as_db_error().unwrap();
    assert_eq!(db.code().code(), "0A000");
    assert!(
        db.message().contains("already used a shard"),
        "{}",
        db.message()
    );
    let err = client.simple_query(by_key).await.unwrap_err();
    assert_eq!(err.as_db_error().unwrap().code().code(), "25P02");
    client.simple_query("ROLLBACK").await.unwrap();

    // REPEATABLE READ needs one snapshot, which shards do not share.
    client
        .simple_query("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await
        .unwrap();
    let err = client.simple_query(count).await.unwrap_err();
    assert!(
        err.as_db_error().unwrap().message().contains("snapshot"),
        "{err}"
    );
    client.simple_query("ROLLBACK").await.unwrap();

    // A shard's error in a cross-shard read aborts the transaction, as one server would.
    client.simple_query("BEGIN").await.unwrap();
    let err = client
        .simple_query("SELECT 1 / (grp - grp) FROM scatter_rows")
        .await
        .unwrap_err();
    assert_eq!(err.as_db_error().unwrap().code().code(), "22012");
    let err = client.simple_query(count).await.unwrap_err();
    assert_eq!(err.as_db_error().unwrap().code().code(), "25P02");
    client.simple_query("ROLLBACK").await.unwrap();
    assert_eq!(rows(&client, count).await.unwrap().0, want);
}

/// The isolation level in force, however it was set, keeps cross-shard reads out of
/// REPEATABLE READ and SERIALIZABLE transactions (they need one snapshot; shards have several).
#[tokio::test]
async fn a_snapshot_isolation_set_any_way_refuses_a_keyless_read_in_a_transaction() {
    let (proxy, reference) = setup().await;
    let count = "SELECT count(*) FROM scatter_rows";
    let want = rows(&reference, count).await.unwrap().0;
    let refused = |result: Result<(Rows, u64), tokio_postgres::Error>, how: &str| {
        let err = result.expect_err(how);
        let db = err.as_db_error().unwrap_or_else(|| panic!("{how}: {err}"));
        assert_eq!(db.code().code(), "0A000", "{how}");
        assert!(db.message().contains("snapshot"), "{how}: {}", db.message());
    };
    // A session default set with SET, or with SET SESSION CHARACTERISTICS.
    for set in [
        "SET default_transaction_isolation = 'repeatable read'",
        "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL SERIALIZABLE",
    ] {
        let client = proxy.connect().await;
        client.simple_query(set).await.unwrap();
        client.simple_query("BEGIN").await.unwrap();
        refused(rows(&client, count).await, set);
        client.simple_query("ROLLBACK").await.unwrap();
        // Outside a transaction each shard reads alone: the read runs.
        assert_eq!(rows(&client, count).await.unwrap().0, want, "{set}");
        // BEGIN ISOLATION LEVEL READ COMMITTED overrides the default.
        client
            .simple_query("BEGIN ISOLATION LEVEL READ COMMITTED")
            .await
            .unwrap();
        assert_eq!(rows(&client, count).await.unwrap().0, want, "{set}");
        client.simple_query("COMMIT").await.unwrap();
    }
    // A startup option, as libpq sends PGOPTIONS.
    let mut config: tokio_postgres::Config = proxy.url("app", "app").parse().unwrap();
    config.options("-c default_transaction_isolation=serializable");
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client.simple_query("BEGIN").await.unwrap();
    refused(rows(&client, count).await, "startup option");
    client.simple_query("ROLLBACK").await.unwrap();
    // Over the extended protocol too (BEGIN held back, then a prepared keyless read).
    client.simple_query("BEGIN").await.unwrap();
    let err = client.query(count, &[]).await.unwrap_err();
    assert_eq!(err.as_db_error().unwrap().code().code(), "0A000");
    client.simple_query("ROLLBACK").await.unwrap();
}

#[tokio::test]
async fn a_keyless_read_over_the_extended_protocol_gathers_every_shard() {
    let (proxy, reference) = setup().await;
    let client = proxy.connect().await;
    let sql = "SELECT user_id, label FROM scatter_rows WHERE grp = $1 ORDER BY user_id";
    let got = client.query(sql, &[&1i32]).await.unwrap();
    let want = reference.query(sql, &[&1i32]).await.unwrap();
    let ids =
        |rows: &[tokio_postgres::Row]| rows.iter().map(|r| r.get::<_, i64>(0)).collect::<Vec<_>>();
    assert_eq!(ids(&got), ids(&want));
    assert!(got.len() > 40);
    assert_eq!(client.query("SELECT 1::int", &[]).await.unwrap().len(), 1);
}

#[tokio::test]
async fn ordered_keyless_reads_merge_into_exactly_the_single_server_order() {
    let (proxy, reference) = setup().await;
    let client = proxy.connect().await;
    let corpus = [
        "SELECT user_id, grp FROM scatter_rows ORDER BY grp, user_id",
        "SELECT user_id, val FROM scatter_rows ORDER BY val DESC, user_id LIMIT 10",
        "SELECT user_id, val FROM scatter_rows ORDER BY val NULLS FIRST, user_id LIMIT 15",
        "SELECT user_id, val FROM scatter_rows ORDER BY val ASC NULLS LAST, user_id DESC",
        "SELECT * FROM scatter_rows ORDER BY user_id DESC LIMIT 5",
        "SELECT user_id AS id, grp FROM scatter_rows ORDER BY 2 DESC, 1 LIMIT 30",
        "SELECT user_id, val * 2 AS doubled FROM scatter_rows ORDER BY doubled, user_id LIMIT 25",
        "SELECT user_id, grp FROM scatter_rows WHERE grp = 2 ORDER BY user_id",
        "SELECT user_id FROM scatter_rows WHERE user_id IN (5, 42, 77, 300) ORDER BY user_id DESC",
    ];
    for sql in corpus {
        let got = ordered_rows(&client, sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let want = ordered_rows(&reference, sql).await.unwrap();
        assert_eq!(got, want, "rows or their order differ for {sql}");
    }
}

#[tokio::test]
async fn rows_sorted_by_text_merge_in_the_single_server_order_under_the_c_collation() {
    let (proxy, reference) = setup().await;
    let client = proxy.connect().await;
    let sql = "SELECT user_id, label FROM scatter_rows ORDER BY label, user_id LIMIT 40";
    // No waiting: the first statement that needs the shards' collations learns them.
    let got = ordered_rows(&client, sql).await;
    let want = ordered_rows(&reference, sql).await.unwrap();
    assert_eq!(got.unwrap(), want);
    let sql = "SELECT user_id FROM scatter_rows ORDER BY lower(label) COLLATE \"C\" DESC, user_id";
    let got = ordered_rows(&client, sql).await.unwrap();
    assert_eq!(got, ordered_rows(&reference, sql).await.unwrap());
}

#[tokio::test]
async fn aggregates_without_group_by_combine_into_the_single_server_answer() {
    let (proxy, reference) = setup().await;
    let client = proxy.connect().await;
    let corpus = [
        "SELECT count(*) FROM scatter_rows",
        "SELECT count(val), count(label) FROM scatter_rows",
        "SELECT sum(user_id), sum(val), sum(grp) FROM scatter_rows",
        "SELECT min(val), max(val), min(user_id), max(grp) FROM scatter_rows WHERE grp > 2",
        "SELECT count(*), sum(grp), max(val) FROM scatter_rows WHERE false",
        "SELECT bool_and(grp > 0), bool_or(grp = 6) FROM scatter_rows",
        "SELECT count(*) AS n, sum(val * 2) AS doubled FROM scatter_rows WHERE val IS NOT NULL",
    ];
    for sql in corpus {
        let got = ordered_rows(&client, sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let want = ordered_rows(&reference, sql).await.unwrap();
        assert_eq!(got, want, "combined aggregates differ for {sql}");
    }
}

#[tokio::test]
async fn a_cancel_request_stops_a_cross_shard_read_on_every_shard() {
    let (proxy, _reference) = setup().await;
    let client = proxy.connect().await;
    let token = client.cancel_token();
    let sleeper = tokio::spawn(async move {
        let result = client
            .simple_query("SELECT pg_sleep(30), count(*), 'scatter_cancel' FROM scatter_rows")
            .await;
        (client, result.map(|_| ()))
    });
    // Cancel once the statement runs on both shards (pgshard sends them its own rendering of
    // the statement, without comments: the marker is a string).
    let running = "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' \
                   AND query LIKE '%scatter_cancel%' AND pid <> pg_backend_pid()";
    let shards = support::shard_clusters();
    let mut watchers = Vec::new();
    for cluster in shards {
        watchers.push(support::connect_direct(cluster.primary_port()).await);
    }
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let mut active = 0;
            for watcher in &watchers {
                active += watcher
                    .query_one(running, &[])
                    .await
                    .unwrap()
                    .get::<_, i64>(0);
            }
            if active == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the read never ran on both shards");
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let (client, result) = tokio::time::timeout(Duration::from_secs(10), sleeper)
        .await
        .expect("a cancelled cross-shard read returns at once, not after 30 s")
        .unwrap();
    let err = result.expect_err("the read was cancelled");
    assert_eq!(err.as_db_error().unwrap().code().code(), "57014");
    // Neither shard is still running it, and the client goes on.
    for watcher in &watchers {
        assert_eq!(
            watcher
                .query_one(running, &[])
                .await
                .unwrap()
                .get::<_, i64>(0),
            0
        );
    }
    assert_eq!(rows(&client, "SELECT 1").await.unwrap().0.len(), 1);
}

//! Writes to several shards (issue 4, items 3 and 4): a write to a reference table runs on every
//! shard's primary, and a multi-row INSERT whose rows belong to several shards is split into one
//! INSERT per shard. Placement is checked directly on each shard's servers; each test uses its
//! own keys and codes, so the tests share the two clusters.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use tokio_postgres::{Client, SimpleQueryMessage};

fn shard_of(key: i64) -> usize {
    support::shard_of_id(key)
}

/// A proxy over the two shards, and a direct client to each shard's primary.
async fn setup() -> (support::Proxy, Client, [Client; 2]) {
    let shards = support::shard_clusters();
    let proxy = support::start_proxy(&support::two_shard_config(shards)).await;
    let client = proxy.connect().await;
    let direct = [
        support::connect_direct(shards[0].primary_port()).await,
        support::connect_direct(shards[1].primary_port()).await,
    ];
    (proxy, client, direct)
}

/// The rows and the last CommandComplete count of a simple query.
async fn run(client: &Client, sql: &str) -> Result<(Vec<Vec<String>>, u64), tokio_postgres::Error> {
    let mut rows = Vec::new();
    let mut count = 0;
    for message in client.simple_query(sql).await? {
        match message {
            SimpleQueryMessage::Row(row) => rows.push(
                (0..row.len())
                    .map(|i| row.get(i).unwrap_or("NULL").to_string())
                    .collect(),
            ),
            SimpleQueryMessage::CommandComplete(n) => count = n,
            _ => {}
        }
    }
    Ok((rows, count))
}

/// The first column of every row, as a set.
async fn column(client: &Client, sql: &str) -> BTreeSet<String> {
    let (rows, _) = run(client, sql).await.unwrap();
    rows.into_iter().map(|mut r| r.remove(0)).collect()
}

/// The SQLSTATE and message of a failed query.
fn db_error(result: Result<impl std::fmt::Debug, tokio_postgres::Error>) -> (String, String) {
    let e = result.expect_err("the statement should fail");
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {e}"));
    (db.code().code().to_string(), db.message().to_string())
}

/// No server connection of either shard is left inside a transaction, and the proxy still
/// answers reads and writes on both shards.
async fn assert_clean(client: &Client, direct: &[Client; 2]) {
    for (i, server) in direct.iter().enumerate() {
        let stuck = column(
            server,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = 'app' \
             AND state LIKE 'idle in transaction%'",
        )
        .await;
        assert_eq!(stuck, BTreeSet::from(["0".to_string()]), "shard {i}");
    }
    for key in [1i64, 42] {
        let (rows, _) = run(
            client,
            &format!("SELECT count(*) FROM users WHERE user_id = {key}"),
        )
        .await
        .unwrap();
        assert_eq!(rows.len(), 1);
    }
    assert_eq!(run(client, "SELECT 1").await.unwrap().0, [["1"]]);
}

#[tokio::test]
async fn reference_table_writes_land_on_every_shard_with_one_count() {
    let (proxy, client, direct) = setup().await;
    let (rows, count) = run(
        &client,
        "INSERT INTO countries (code, name) VALUES ('fa', 'A'), ('fb', 'B')",
    )
    .await
    .unwrap();
    assert_eq!((rows.len(), count), (0, 2));
    let both = BTreeSet::from(["fa".to_string(), "fb".to_string()]);
    for server in &direct {
        assert_eq!(
            column(
                server,
                "SELECT code FROM countries WHERE code IN ('fa', 'fb')"
            )
            .await,
            both
        );
    }
    let (_, count) = run(
        &client,
        "UPDATE countries SET name = 'it''s, x' WHERE code IN ('fa', 'fb')",
    )
    .await
    .unwrap();
    assert_eq!(count, 2);
    for server in &direct {
        let names = column(
            server,
            "SELECT name FROM countries WHERE code IN ('fa', 'fb')",
        )
        .await;
        assert_eq!(names, BTreeSet::from(["it's, x".to_string()]));
    }
    // The replicas follow their primaries.
    for cluster in support::shard_clusters() {
        cluster.wait_for_replay(Duration::from_secs(60)).unwrap();
        let replica = support::connect_direct(cluster.replica_ports()[0]).await;
        assert_eq!(
            column(
                &replica,
                "SELECT code FROM countries WHERE code IN ('fa', 'fb')"
            )
            .await,
            both
        );
    }
    let (_, count) = run(&client, "DELETE FROM countries WHERE code IN ('fa', 'fb')")
        .await
        .unwrap();
    assert_eq!(count, 2);
    for server in &direct {
        assert!(column(
            server,
            "SELECT code FROM countries WHERE code IN ('fa', 'fb')"
        )
        .await
        .is_empty());
    }
    assert_clean(&client, &direct).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn reference_table_returning_rows_come_from_one_shard_only() {
    let (proxy, client, direct) = setup().await;
    let (rows, count) = run(&client, "INSERT INTO countries (code, name) VALUES ('fr1', 'R1'), ('fr2', 'R2') RETURNING code, name")
        .await
        .unwrap();
    assert_eq!(count, 2);
    assert_eq!(rows, [["fr1", "R1"], ["fr2", "R2"]]);
    for server in &direct {
        assert_eq!(
            column(
                server,
                "SELECT count(*) FROM countries WHERE code LIKE 'fr_'"
            )
            .await,
            BTreeSet::from(["2".to_string()])
        );
    }
    assert_clean(&client, &direct).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_reference_write_failing_on_one_shard_names_where_it_applied_and_can_be_repaired() {
    let (proxy, client, direct) = setup().await;
    direct[1]
        .batch_execute("INSERT INTO countries (code, name) VALUES ('fe', 'already here')")
        .await
        .unwrap();
    let (code, message) = db_error(
        run(
            &client,
            "INSERT INTO countries (code, name) VALUES ('fe', 'new')",
        )
        .await,
    );
    assert_eq!(code, "23505", "{message}");
    assert!(
        message.contains("applied on shards s0 and failed on shards s1"),
        "{message}"
    );
    assert!(message.contains("duplicate key"), "{message}");
    assert!(message.contains("/* pgshard: shard=<name> */"), "{message}");
    assert_eq!(
        column(&direct[0], "SELECT name FROM countries WHERE code = 'fe'").await,
        BTreeSet::from(["new".to_string()])
    );
    assert_eq!(
        column(&direct[1], "SELECT name FROM countries WHERE code = 'fe'").await,
        BTreeSet::from(["already here".to_string()])
    );
    // The repair the message suggests: the same write, on the failed shard only.
    let (_, count) = run(
        &client,
        "/* pgshard: shard=s1 */ UPDATE countries SET name = 'new' WHERE code = 'fe'",
    )
    .await
    .unwrap();
    assert_eq!(count, 1);
    for server in &direct {
        assert_eq!(
            column(server, "SELECT name FROM countries WHERE code = 'fe'").await,
            BTreeSet::from(["new".to_string()])
        );
    }
    // Failing everywhere is a plain error: the server's own.
    let (code, message) = db_error(
        run(
            &client,
            "INSERT INTO countries (code, name) VALUES ('fe', 'again')",
        )
        .await,
    );
    assert_eq!(code, "23505");
    assert!(!message.contains("pgshard"), "{message}");
    assert_clean(&client, &direct).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn reference_writes_inside_a_transaction_are_refused() {
    let (proxy, client, direct) = setup().await;
    client.batch_execute("BEGIN").await.unwrap();
    run(&client, "SELECT name FROM users WHERE user_id = 42")
        .await
        .unwrap();
    let (code, message) = db_error(
        run(
            &client,
            "INSERT INTO countries (code, name) VALUES ('ft', 'T')",
        )
        .await,
    );
    assert_eq!(code, "0A000");
    assert!(message.contains("outside BEGIN"), "{message}");
    client.batch_execute("ROLLBACK").await.unwrap();
    for server in &direct {
        assert!(
            column(server, "SELECT code FROM countries WHERE code = 'ft'")
                .await
                .is_empty()
        );
    }
    assert_clean(&client, &direct).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn reference_writes_with_parameters_run_on_every_shard() {
    let (proxy, client, direct) = setup().await;
    let inserted = client
        .execute(
            "INSERT INTO countries (code, name) VALUES ($1, $2)",
            &[&"fq", &"Param"],
        )
        .await
        .unwrap();
    assert_eq!(inserted, 1, "one shard's count, not the sum");
    // RETURNING over the extended protocol: one shard's rows, not one per shard.
    let rows = client
        .query(
            "UPDATE countries SET name = $1 WHERE code = $2 RETURNING code, name",
            &[&"Param2", &"fq"],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, String>(1), "Param2");
    for server in &direct {
        assert_eq!(
            column(server, "SELECT name FROM countries WHERE code = 'fq'").await,
            std::collections::BTreeSet::from(["Param2".to_string()])
        );
    }
    // A failure on every shard passes the server's error through; the client goes on.
    let err = client
        .execute(
            "INSERT INTO countries (code, name) VALUES ($1, $2)",
            &[&"fq", &"Again"],
        )
        .await
        .unwrap_err();
    assert_eq!(err.as_db_error().unwrap().code().code(), "23505");
    let deleted = client
        .execute("DELETE FROM countries WHERE code = $1", &[&"fq"])
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    assert_clean(&client, &direct).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_reference_write_that_also_uses_a_sharded_table_is_refused() {
    let (proxy, client, direct) = setup().await;
    let (a, _) = keys_on_each_shard(50_000);
    for sql in [
        format!("INSERT INTO countries (code, name) SELECT 'fu', name FROM users WHERE user_id = {a}"),
        format!("INSERT INTO countries (code, name) VALUES ('fu', 'U'); INSERT INTO users (user_id, name) VALUES ({a}, 'u')"),
    ] {
        let (code, message) = db_error(run(&client, &sql).await);
        assert_eq!(code, "0A000", "{sql}");
        assert!(message.contains("its own statement"), "{message}");
    }
    for server in &direct {
        assert!(
            column(server, "SELECT code FROM countries WHERE code = 'fu'")
                .await
                .is_empty()
        );
        let users = column(
            server,
            &format!("SELECT name FROM users WHERE user_id = {a}"),
        )
        .await;
        assert!(users.is_empty());
    }
    assert_clean(&client, &direct).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn copy_into_a_reference_table_is_refused_and_loads_nothing() {
    let (proxy, client, direct) = setup().await;
    // As a simple query (psql's \copy): every shard's COPY is ended with CopyFail.
    let (code, message) = db_error(run(&client, "COPY countries (code, name) FROM STDIN").await);
    assert_eq!(code, "0A000", "{message}");
    assert!(message.contains("INSERT ... VALUES"), "{message}");
    for server in &direct {
        assert!(
            column(server, "SELECT code FROM countries WHERE code = 'fc'")
                .await
                .is_empty()
        );
    }
    assert_clean(&client, &direct).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_multi_row_insert_is_split_so_each_row_lands_on_its_keys_shard() {
    let (proxy, client, direct) = setup().await;
    let keys: Vec<i64> = (0..100).map(|i| 10_000 + i * 7).collect();
    let values: Vec<String> = keys
        .iter()
        .map(|k| format!("({k}, 'n, {k} (it''s)')"))
        .collect();
    let (rows, count) = run(
        &client,
        &format!(
            "INSERT INTO users (user_id, name) VALUES {}",
            values.join(", ")
        ),
    )
    .await
    .unwrap();
    assert_eq!((rows.len(), count), (0, 100));
    for (shard, server) in direct.iter().enumerate() {
        let expected: BTreeSet<String> = keys
            .iter()
            .filter(|k| shard_of(**k) == shard)
            .map(|k| format!("{k}|n, {k} (it's)"))
            .collect();
        assert!(!expected.is_empty(), "the keys should cover both shards");
        let got = column(
            server,
            "SELECT user_id || '|' || name FROM users WHERE user_id BETWEEN 10000 AND 10700",
        )
        .await;
        assert_eq!(got, expected, "shard {shard}");
    }
    // RETURNING gives every row once, from both shards.
    let values: Vec<String> = keys.iter().map(|k| format!("({k}, 'o{k}')")).collect();
    let (rows, count) = run(
        &client,
        &format!(
            "INSERT INTO orders (user_id, note) VALUES {} RETURNING user_id, note",
            values.join(", ")
        ),
    )
    .await
    .unwrap();
    assert_eq!(count, 100);
    let returned: BTreeSet<Vec<String>> = rows.into_iter().collect();
    let expected: BTreeSet<Vec<String>> = keys
        .iter()
        .map(|k| vec![k.to_string(), format!("o{k}")])
        .collect();
    assert_eq!(returned, expected);
    for (shard, server) in direct.iter().enumerate() {
        let on_shard = column(
            server,
            "SELECT user_id::text FROM orders WHERE user_id BETWEEN 10000 AND 10700",
        )
        .await;
        let expected: BTreeSet<String> = keys
            .iter()
            .filter(|k| shard_of(**k) == shard)
            .map(|k| k.to_string())
            .collect();
        assert_eq!(on_shard, expected, "shard {shard}");
    }
    assert_clean(&client, &direct).await;
    proxy.shutdown().await;
}

/// Two keys in 20000.. on different shards: `(on shard 0, on shard 1)`.
fn keys_on_each_shard(from: i64) -> (i64, i64) {
    let a = (from..).find(|k| shard_of(*k) == 0).unwrap();
    let b = (from..).find(|k| shard_of(*k) == 1).unwrap();
    (a, b)
}

#[tokio::test]
async fn a_split_insert_failing_on_one_shard_says_which_rows_stayed() {
    let (proxy, client, direct) = setup().await;
    let (a, b) = keys_on_each_shard(20_000);
    direct[1]
        .batch_execute(&format!(
            "INSERT INTO users (user_id, name) VALUES ({b}, 'first')"
        ))
        .await
        .unwrap();
    let sql = format!(
        "INSERT INTO users (user_id, name) VALUES ({a}, 'x'), ({b}, 'x') RETURNING user_id"
    );
    let (code, message) = db_error(run(&client, &sql).await);
    assert_eq!(code, "23505", "{message}");
    assert!(
        message.contains("rows for shards s0 were inserted"),
        "{message}"
    );
    assert!(
        message.contains("the rows for shards s1 were not"),
        "{message}"
    );
    assert_eq!(
        column(
            &direct[0],
            &format!("SELECT name FROM users WHERE user_id = {a}")
        )
        .await,
        BTreeSet::from(["x".to_string()])
    );
    assert_eq!(
        column(
            &direct[1],
            &format!("SELECT name FROM users WHERE user_id = {b}")
        )
        .await,
        BTreeSet::from(["first".to_string()])
    );
    // ON CONFLICT clauses go to every part.
    let sql = format!(
        "INSERT INTO users (user_id, name) VALUES ({a}, 'y'), ({b}, 'y') \
         ON CONFLICT (user_id) DO UPDATE SET name = excluded.name || '!' RETURNING name"
    );
    let (rows, count) = run(&client, &sql).await.unwrap();
    assert_eq!(count, 2);
    assert_eq!(rows, [["y!"], ["y!"]]);
    assert_clean(&client, &direct).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_split_insert_inside_a_transaction_is_refused() {
    let (proxy, client, direct) = setup().await;
    let (a, b) = keys_on_each_shard(30_000);
    let sql = format!("INSERT INTO users (user_id, name) VALUES ({a}, 't'), ({b}, 't')");
    client.batch_execute("BEGIN").await.unwrap();
    let (code, message) = db_error(run(&client, &sql).await);
    assert_eq!(code, "0A000");
    assert!(message.contains("several shards"), "{message}");
    client.batch_execute("ROLLBACK").await.unwrap();
    // With parameters, in a transaction: the same refusal.
    client.batch_execute("BEGIN").await.unwrap();
    let (code, message) = db_error(
        client
            .execute(
                "INSERT INTO users (user_id, name) VALUES ($1, 'p'), ($2, 'p')",
                &[&a, &b],
            )
            .await,
    );
    assert_eq!(code, "0A000");
    assert!(message.contains("several shards"), "{message}");
    client.batch_execute("ROLLBACK").await.unwrap();
    for server in &direct {
        let found = column(
            server,
            &format!("SELECT user_id FROM users WHERE user_id IN ({a}, {b})"),
        )
        .await;
        assert!(found.is_empty());
    }
    // Outside a transaction the same text runs.
    assert_eq!(run(&client, &sql).await.unwrap().1, 2);
    assert_clean(&client, &direct).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_fan_out_pipelined_behind_another_query_waits_for_its_answer() {
    let (proxy, client, direct) = setup().await;
    let (a, b) = keys_on_each_shard(40_000);
    let c = (b + 1..).find(|k| shard_of(*k) == 1).unwrap();
    let first = format!("INSERT INTO users (user_id, name) VALUES ({b}, 'one')");
    let second = format!("INSERT INTO users (user_id, name) VALUES ({a}, 'two'), ({c}, 'two')");
    let third = "INSERT INTO countries (code, name) VALUES ('fp', 'P')";
    // Sent back to back: the split INSERT and the reference write arrive while the first
    // INSERT's connection still owes its answer.
    let (r1, r2, r3) = tokio::join!(
        run(&client, &first),
        run(&client, &second),
        run(&client, third)
    );
    assert_eq!(r1.unwrap().1, 1);
    assert_eq!(r2.unwrap().1, 2);
    assert_eq!(r3.unwrap().1, 1);
    let ids = column(
        &direct[1],
        &format!("SELECT user_id FROM users WHERE user_id IN ({b}, {c})"),
    )
    .await;
    assert_eq!(ids.len(), 2);
    for server in &direct {
        assert_eq!(
            column(server, "SELECT name FROM countries WHERE code = 'fp'").await,
            BTreeSet::from(["P".to_string()])
        );
    }
    assert_clean(&client, &direct).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_split_insert_with_parameters_lands_each_row_on_its_keys_shard() {
    let (proxy, client, direct) = setup().await;
    // 40 rows with bound keys and names, in one statement: $1..$80.
    let keys: Vec<i64> = (60_000..60_040).collect();
    let rows: Vec<String> = (0..keys.len())
        .map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2))
        .collect();
    let sql = format!(
        "INSERT INTO users (user_id, name) VALUES {} RETURNING user_id, name",
        rows.join(", ")
    );
    let names: Vec<String> = keys.iter().map(|k| format!("bound-{k}")).collect();
    let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = Vec::new();
    for (key, name) in keys.iter().zip(&names) {
        params.push(key);
        params.push(name);
    }
    let returned = client.query(&sql, &params).await.unwrap();
    assert_eq!(returned.len(), keys.len(), "RETURNING rows of every shard");
    let mut got: Vec<(i64, String)> = returned.iter().map(|r| (r.get(0), r.get(1))).collect();
    got.sort();
    let want: Vec<(i64, String)> = keys.iter().cloned().zip(names.iter().cloned()).collect();
    assert_eq!(got, want);
    for key in &keys {
        let shard = shard_of(*key);
        let select = format!("SELECT name FROM users WHERE user_id = {key}");
        assert_eq!(
            column(&direct[shard], &select).await,
            std::collections::BTreeSet::from([format!("bound-{key}")]),
            "user {key} on its shard s{shard}"
        );
        assert!(column(&direct[1 - shard], &select).await.is_empty());
    }
    // The count of a parameterized split without RETURNING is the total.
    let more: Vec<i64> = (60_100..60_110).collect();
    let rows: Vec<String> = (1..=more.len()).map(|i| format!("(${i}, 'n')")).collect();
    let sql = format!(
        "INSERT INTO users (user_id, name) VALUES {}",
        rows.join(", ")
    );
    let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = more
        .iter()
        .map(|k| k as &(dyn tokio_postgres::types::ToSql + Sync))
        .collect();
    assert_eq!(
        client.execute(&sql, &params).await.unwrap(),
        more.len() as u64
    );
    assert_clean(&client, &direct).await;
    proxy.shutdown().await;
}

//! INSERTs without a column list into sharded tables (issue 9, item 4): pgshard reads each row's
//! key at its place in the table's column order, learned from the shards' catalogs, over the
//! simple and the extended protocol, with literals and `$n` parameters in binary (tokio-postgres)
//! and text (psycopg) format, split per shard when the rows span shards; the order is learned
//! again after DDL passing through pgshard. Placement is checked on each shard's primary
//! directly. Each test uses its own tables, created on both shards before its proxy starts.

mod support;

use std::collections::BTreeSet;

use tokio_postgres::{Client, SimpleQueryMessage};

/// Creates `schema` (statements run on both shards' primaries, after dropping `tables`), then
/// starts a proxy sharding `tables` by `user_id bigint`; returns it, a client through it and a
/// direct client to each primary.
async fn setup(tables: &[&str], schema: &str) -> (support::Proxy, Client, [Client; 2]) {
    let shards = support::shard_clusters();
    let direct = [
        support::connect_direct(shards[0].primary_port()).await,
        support::connect_direct(shards[1].primary_port()).await,
    ];
    for server in &direct {
        for table in tables {
            server
                .batch_execute(&format!("DROP TABLE IF EXISTS {table}"))
                .await
                .unwrap();
        }
        server.batch_execute(schema).await.unwrap();
    }
    let proxy = support::start_proxy(&support::two_shard_config_with(shards, tables)).await;
    let client = proxy.connect().await;
    (proxy, client, direct)
}

/// Rows of a simple query, every value as text.
async fn rows(client: &Client, sql: &str) -> Vec<Vec<String>> {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    messages
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).unwrap_or("NULL").to_string())
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// The SQLSTATE and message of a failed statement.
fn db_error<T: std::fmt::Debug>(result: Result<T, tokio_postgres::Error>) -> (String, String) {
    let e = result.expect_err("the statement should fail");
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {e}"));
    (db.code().code().to_string(), db.message().to_string())
}

/// Every row of `table` with key `key` is on the key's shard only, and equals `expected`
/// (`SELECT <columns>`, ordered by the columns).
async fn assert_placed(
    direct: &[Client; 2],
    table: &str,
    columns: &str,
    key: i64,
    expected: &[&str],
) {
    let shard = support::shard_of_id(key);
    let sql = format!("SELECT {columns} FROM {table} WHERE user_id = {key} ORDER BY 1");
    let got: Vec<String> = rows(&direct[shard], &sql)
        .await
        .into_iter()
        .map(|r| r.join("|"))
        .collect();
    assert_eq!(got, expected, "{table} key {key} on its shard s{shard}");
    assert!(
        rows(&direct[1 - shard], &sql).await.is_empty(),
        "{table} key {key} must not be on shard s{}",
        1 - shard
    );
}

/// Two keys on each shard.
const S0: [i64; 2] = [1, 2];
const S1: [i64; 2] = [42, 4];

#[tokio::test]
async fn literal_inserts_without_a_column_list_land_on_their_keys_shard() {
    assert!(S0.iter().all(|&k| support::shard_of_id(k) == 0));
    assert!(S1.iter().all(|&k| support::shard_of_id(k) == 1));
    let (proxy, client, direct) = setup(
        &["ic_lit"],
        "CREATE TABLE ic_lit (name text, user_id bigint, note text DEFAULT 'none', \
         n int DEFAULT 7)",
    )
    .await;
    // One row per statement, the key second.
    for key in [S0[0], S1[0]] {
        client
            .batch_execute(&format!(
                "INSERT INTO ic_lit VALUES ('one-{key}', {key}, 'x', 1)"
            ))
            .await
            .unwrap();
    }
    // Trailing defaults: fewer values than columns, the key among them.
    client
        .batch_execute(&format!("INSERT INTO ic_lit VALUES ('short', {})", S0[1]))
        .await
        .unwrap();
    // Rows on several shards: split per shard, RETURNING rows of both, the total count.
    let returned = rows(
        &client,
        &format!(
            "INSERT INTO ic_lit VALUES ('m-{a}', {a}, 'y', 2), ('m-{b}', {b}, 'y', 3) \
             RETURNING user_id",
            a = S1[1],
            b = S0[0]
        ),
    )
    .await;
    let returned: BTreeSet<String> = returned.into_iter().map(|mut r| r.remove(0)).collect();
    assert_eq!(
        returned,
        BTreeSet::from([S1[1].to_string(), S0[0].to_string()])
    );
    let cols = "name, note, n";
    assert_placed(
        &direct,
        "ic_lit",
        cols,
        S0[0],
        &[&format!("m-{}|y|3", S0[0]), &format!("one-{}|x|1", S0[0])],
    )
    .await;
    assert_placed(
        &direct,
        "ic_lit",
        cols,
        S1[0],
        &[&format!("one-{}|x|1", S1[0])],
    )
    .await;
    assert_placed(&direct, "ic_lit", cols, S0[1], &["short|none|7"]).await;
    assert_placed(
        &direct,
        "ic_lit",
        cols,
        S1[1],
        &[&format!("m-{}|y|2", S1[1])],
    )
    .await;
    // The key not given (only the first column): refused, saying what to do; nothing inserted.
    let (code, message) = db_error(
        client
            .batch_execute("INSERT INTO ic_lit VALUES ('nokey')")
            .await,
    );
    assert_eq!(code, "0A000");
    assert!(message.contains("name the columns"), "{message}");
    for server in &direct {
        assert!(rows(server, "SELECT 1 FROM ic_lit WHERE name = 'nokey'")
            .await
            .is_empty());
    }
    proxy.shutdown().await;
}

#[tokio::test]
async fn parameters_in_binary_over_the_extended_protocol_place_each_row() {
    let (proxy, client, direct) = setup(
        &["ic_bin"],
        "CREATE TABLE ic_bin (name text, user_id bigint, note text DEFAULT 'none')",
    )
    .await;
    // A prepared statement reused for keys on both shards (tokio-postgres binds int8 in binary).
    let insert = client
        .prepare("INSERT INTO ic_bin VALUES ($1, $2, $3)")
        .await
        .unwrap();
    for key in [S0[0], S1[0]] {
        let name = format!("p-{key}");
        assert_eq!(
            client
                .execute(&insert, &[&name, &key, &"bound"])
                .await
                .unwrap(),
            1
        );
    }
    // Unnamed statement, trailing default.
    client
        .execute("INSERT INTO ic_bin VALUES ($1, $2)", &[&"u", &S1[1]])
        .await
        .unwrap();
    // A multi-row INSERT spanning shards, split at its Bind.
    let returned = client
        .query(
            "INSERT INTO ic_bin VALUES ($1, $2, 'split'), ($3, $4, 'split') RETURNING name",
            &[&"s-a", &S0[1], &"s-b", &S1[0]],
        )
        .await
        .unwrap();
    let mut names: Vec<String> = returned.iter().map(|r| r.get(0)).collect();
    names.sort();
    assert_eq!(names, ["s-a", "s-b"]);
    let cols = "name, note";
    assert_placed(
        &direct,
        "ic_bin",
        cols,
        S0[0],
        &[&format!("p-{}|bound", S0[0])],
    )
    .await;
    assert_placed(
        &direct,
        "ic_bin",
        cols,
        S1[0],
        &[&format!("p-{}|bound", S1[0]), "s-b|split"],
    )
    .await;
    assert_placed(&direct, "ic_bin", cols, S1[1], &["u|none"]).await;
    assert_placed(&direct, "ic_bin", cols, S0[1], &["s-a|split"]).await;
    // The key not given: refused with 0A000.
    let (code, message) = db_error(
        client
            .execute("INSERT INTO ic_bin VALUES ($1)", &[&"k"])
            .await,
    );
    assert_eq!(code, "0A000", "{message}");
    proxy.shutdown().await;
}

#[tokio::test]
async fn text_format_parameters_from_psycopg_place_each_row() {
    let (proxy, _client, direct) = setup(
        &["ic_text"],
        "CREATE TABLE ic_text (name text, user_id bigint)",
    )
    .await;
    // psycopg's %t placeholders bind in text format; executemany pipelines one row per Bind.
    let script = format!(
        r#"
import psycopg
with psycopg.connect("{dsn}", autocommit=True) as conn:
    conn.execute("INSERT INTO ic_text VALUES (%t, %t)", ("one", {k0}))
    conn.execute("INSERT INTO ic_text VALUES (%t, %t), (%t, %t)", ("two", {k1}, "three", {k2}))
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO ic_text VALUES (%t, %t)", [("four", {k3}), ("five", {k4})])
"#,
        dsn = proxy.url("app", "app"),
        k0 = S0[0],
        k1 = S0[1],
        k2 = S1[0],
        k3 = S1[1],
        k4 = S0[0],
    );
    let out = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .await
        .expect("running python3");
    assert!(
        out.status.success(),
        "psycopg failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_placed(&direct, "ic_text", "name", S0[0], &["five", "one"]).await;
    assert_placed(&direct, "ic_text", "name", S0[1], &["two"]).await;
    assert_placed(&direct, "ic_text", "name", S1[0], &["three"]).await;
    assert_placed(&direct, "ic_text", "name", S1[1], &["four"]).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_table_whose_order_is_unknown_is_refused_saying_to_name_the_columns() {
    // The configured key column is not in the table: its key cannot be found by position.
    let (proxy, client, _direct) = setup(
        &["ic_nokey"],
        "CREATE TABLE ic_nokey (id bigint, name text)",
    )
    .await;
    let (code, message) = db_error(
        client
            .batch_execute("INSERT INTO ic_nokey VALUES (42, 'a')")
            .await,
    );
    assert_eq!(code, "0A000");
    assert!(
        message.contains("does not know the column order of ic_nokey")
            && message.contains("INSERT INTO ic_nokey (user_id, ...) VALUES"),
        "{message}"
    );
    proxy.shutdown().await;
}

#[tokio::test]
async fn the_order_is_learned_again_after_ddl_through_pgshard() {
    let (proxy, client, direct) = setup(
        &["ic_added", "ic_moved"],
        "CREATE TABLE ic_added (name text); \
         CREATE TABLE ic_moved (a text, name text, user_id bigint)",
    )
    .await;
    // Learned at start: the key is the third column of ic_moved.
    client
        .batch_execute(&format!(
            "INSERT INTO ic_moved VALUES ('a', 'before', {})",
            S1[0]
        ))
        .await
        .unwrap();
    // DDL on sharded tables goes to one shard per statement, named by a hint.
    for shard in ["s0", "s1"] {
        client
            .batch_execute(&format!(
                "/* pgshard: shard={shard} */ ALTER TABLE ic_added ADD COLUMN user_id bigint"
            ))
            .await
            .unwrap();
        client
            .batch_execute(&format!(
                "/* pgshard: shard={shard} */ ALTER TABLE ic_moved DROP COLUMN a"
            ))
            .await
            .unwrap();
    }
    // ic_added now has its key second; ic_moved's key moved from third to second.
    client
        .batch_execute(&format!(
            "INSERT INTO ic_added VALUES ('added-{a}', {a}), ('added-{b}', {b})",
            a = S0[0],
            b = S1[1]
        ))
        .await
        .unwrap();
    client
        .batch_execute(&format!("INSERT INTO ic_moved VALUES ('after', {})", S0[1]))
        .await
        .unwrap();
    let inserted = client
        .execute(
            "INSERT INTO ic_moved VALUES ($1, $2)",
            &[&"after-bound", &S1[1]],
        )
        .await
        .unwrap();
    assert_eq!(inserted, 1);
    assert_placed(
        &direct,
        "ic_added",
        "name",
        S0[0],
        &[&format!("added-{}", S0[0])],
    )
    .await;
    assert_placed(
        &direct,
        "ic_added",
        "name",
        S1[1],
        &[&format!("added-{}", S1[1])],
    )
    .await;
    assert_placed(&direct, "ic_moved", "name", S1[0], &["before"]).await;
    assert_placed(&direct, "ic_moved", "name", S0[1], &["after"]).await;
    assert_placed(&direct, "ic_moved", "name", S1[1], &["after-bound"]).await;
    proxy.shutdown().await;
}

#[tokio::test]
async fn a_statement_prepared_before_its_table_was_complete_routes_once_it_is() {
    // ic_late exists on s0 only when the proxy starts: its order is unknown.
    let (proxy, client, direct) = setup(&["ic_late"], "SELECT 1").await;
    direct[0]
        .batch_execute("CREATE TABLE ic_late (name text, user_id bigint)")
        .await
        .unwrap();
    // Prepared (Parse, Describe on the default shard s0) while pgshard cannot route it.
    let insert = client
        .prepare("INSERT INTO ic_late VALUES ($1, $2)")
        .await
        .unwrap();
    let (code, _) = db_error(client.execute(&insert, &[&"early", &S1[0]]).await);
    assert_eq!(code, "0A000");
    // The missing table is created through pgshard; the prepared statement now routes.
    client
        .batch_execute("/* pgshard: shard=s1 */ CREATE TABLE ic_late (name text, user_id bigint)")
        .await
        .unwrap();
    for key in [S1[0], S0[0]] {
        assert_eq!(client.execute(&insert, &[&"late", &key]).await.unwrap(), 1);
    }
    assert_placed(&direct, "ic_late", "name", S1[0], &["late"]).await;
    assert_placed(&direct, "ic_late", "name", S0[0], &["late"]).await;
    proxy.shutdown().await;
}

//! The differential corpus of issue 4: the same generated users and orders are loaded into two
//! shards behind pgshard (each row on the shard its key's slot maps to) and into one plain
//! PostgreSQL; every read of the corpus must give the same column names, the same rows and the
//! same row count through pgshard as on the single server (in the same order when the query's
//! ORDER BY fixes one), and every construct pgshard cannot merge must get 0A000 naming it.

mod support;

use std::time::Duration;

use tokio_postgres::{Client, SimpleQueryMessage};

const USERS: i64 = 3000;
const ORDERS: i64 = 15000;

const SCHEMA: &str = "\
    CREATE TABLE diff_users (user_id bigint PRIMARY KEY, name text NOT NULL, country text, \
        score int NOT NULL, active boolean NOT NULL); \
    CREATE TABLE diff_orders (order_id bigint PRIMARY KEY, user_id bigint NOT NULL, \
        amount numeric(10,2) NOT NULL, status text NOT NULL, qty int NOT NULL, note text, \
        created_at timestamp NOT NULL, paid_at timestamptz, due date);";

/// How a query's rows are compared.
#[derive(Clone, Copy)]
enum Compare {
    /// No ORDER BY: as multisets.
    Unordered,
    /// The ORDER BY is a total order: row by row.
    Exact,
    /// The ORDER BY has ties among rows that differ only outside the first `n` columns (its
    /// sort keys): the sequence of those columns must match, and the rows as multisets.
    Ties(usize),
}

use Compare::*;

#[rustfmt::skip]
const CORPUS: &[(&str, Compare)] = &[
    // Point and range reads.
    ("SELECT * FROM diff_users WHERE user_id = 42", Unordered),
    ("SELECT * FROM diff_orders WHERE user_id = 42", Unordered),
    ("SELECT user_id, name FROM diff_users WHERE user_id IN (1, 2, 3, 1500, 2999)", Unordered),
    ("SELECT * FROM diff_users WHERE user_id BETWEEN 100 AND 160", Unordered),
    ("SELECT order_id, amount FROM diff_orders WHERE amount > 95", Unordered),
    ("SELECT user_id, country FROM diff_users WHERE country IS NULL", Unordered),
    ("SELECT user_id FROM diff_users WHERE NOT active AND score > 90", Unordered),
    ("SELECT o.order_id, u.name FROM diff_orders o JOIN diff_users u ON u.user_id = o.user_id WHERE o.amount < 1", Unordered),
    ("SELECT u.user_id, o.order_id FROM diff_users u JOIN diff_orders o USING (user_id) WHERE u.score = 7", Unordered),
    ("SELECT user_id, name FROM diff_users u WHERE EXISTS (SELECT 1 FROM diff_orders o WHERE o.user_id = u.user_id AND o.amount > 99)", Unordered),
    ("SELECT user_id, coalesce(country, '??') AS c FROM diff_users WHERE score < 3", Unordered),
    // ORDER BY, LIMIT, OFFSET; hidden sort columns.
    ("SELECT user_id, score FROM diff_users ORDER BY score DESC, user_id LIMIT 10", Exact),
    ("SELECT order_id, amount FROM diff_orders ORDER BY amount DESC, order_id LIMIT 25", Exact),
    ("SELECT user_id, name FROM diff_users ORDER BY name LIMIT 20", Exact),
    ("SELECT user_id, country FROM diff_users ORDER BY country NULLS FIRST, user_id DESC LIMIT 30", Exact),
    ("SELECT user_id, country FROM diff_users ORDER BY country DESC NULLS LAST, user_id LIMIT 30", Exact),
    ("SELECT order_id FROM diff_orders ORDER BY amount, order_id LIMIT 15", Exact),
    ("SELECT name FROM diff_users ORDER BY score, user_id LIMIT 12", Exact),
    ("SELECT user_id, score FROM diff_users ORDER BY score, user_id LIMIT 10 OFFSET 100", Exact),
    ("SELECT order_id, qty FROM diff_orders ORDER BY qty * amount DESC, order_id LIMIT 10", Exact),
    ("SELECT * FROM diff_users ORDER BY user_id DESC LIMIT 5", Exact),
    ("SELECT user_id FROM diff_users ORDER BY user_id OFFSET 2990", Exact),
    ("SELECT order_id, user_id FROM diff_orders WHERE status = 'paid' ORDER BY user_id, order_id LIMIT 50", Exact),
    ("SELECT user_id, score FROM diff_users ORDER BY 2 DESC, 1 LIMIT 7", Exact),
    ("SELECT u.user_id, o.amount FROM diff_users u JOIN diff_orders o ON o.user_id = u.user_id ORDER BY o.amount DESC, o.order_id LIMIT 10", Exact),
    ("SELECT user_id FROM diff_users LIMIT 0", Exact),
    // Dates and timestamps.
    ("SELECT order_id, created_at FROM diff_orders ORDER BY created_at DESC, order_id LIMIT 10", Exact),
    ("SELECT order_id, paid_at FROM diff_orders ORDER BY paid_at NULLS FIRST, order_id LIMIT 12", Exact),
    ("SELECT order_id FROM diff_orders WHERE status = 'new' ORDER BY due DESC, paid_at, order_id LIMIT 8", Exact),
    ("SELECT min(created_at), max(paid_at), min(due) FROM diff_orders", Exact),
    ("SELECT date_trunc('month', created_at) AS month, count(*) FROM diff_orders GROUP BY 1 ORDER BY month", Exact),
    ("SELECT due, count(*) FROM diff_orders GROUP BY due ORDER BY count(*) DESC, due LIMIT 5", Exact),
    // Ties.
    ("SELECT score, user_id FROM diff_users WHERE score > 95 ORDER BY score", Ties(1)),
    ("SELECT status, order_id FROM diff_orders WHERE amount > 99 ORDER BY status DESC", Ties(1)),
    // Aggregates without GROUP BY.
    ("SELECT count(*) FROM diff_orders", Exact),
    ("SELECT count(*), count(note) FROM diff_orders", Exact),
    ("SELECT sum(amount), min(amount), max(amount) FROM diff_orders", Exact),
    ("SELECT avg(amount) FROM diff_orders", Exact),
    ("SELECT avg(score), avg(user_id) FROM diff_users", Exact),
    ("SELECT sum(qty), avg(qty) FROM diff_orders WHERE status = 'new'", Exact),
    ("SELECT bool_and(active), bool_or(active), every(score >= 0) FROM diff_users", Exact),
    ("SELECT count(*), sum(amount), avg(amount), max(note) FROM diff_orders WHERE false", Exact),
    ("SELECT count(*) FILTER (WHERE status = 'paid'), sum(amount) FILTER (WHERE qty > 3) FROM diff_orders", Exact),
    ("SELECT max(name), min(country) FROM diff_users", Exact),
    ("SELECT count(*) AS n, avg(amount) AS mean FROM diff_orders WHERE user_id < 100", Exact),
    ("SELECT coalesce(sum(amount), 0), coalesce(count(note), 0) FROM diff_orders WHERE false", Exact),
    ("SELECT coalesce(sum(amount), 0.0) AS total FROM diff_orders WHERE user_id < 50", Exact),
    // GROUP BY.
    ("SELECT status, count(*) FROM diff_orders GROUP BY status", Unordered),
    ("SELECT status, count(*), sum(amount), avg(amount) FROM diff_orders GROUP BY status ORDER BY status", Exact),
    ("SELECT country, count(*) FROM diff_users GROUP BY country ORDER BY country NULLS FIRST", Exact),
    ("SELECT user_id, count(*) AS n, sum(amount) FROM diff_orders GROUP BY user_id ORDER BY n DESC, user_id LIMIT 10", Exact),
    ("SELECT qty, status, count(*) FROM diff_orders GROUP BY qty, status ORDER BY qty, status", Exact),
    ("SELECT qty, avg(amount) FROM diff_orders GROUP BY 1 ORDER BY 1", Exact),
    ("SELECT score % 10 AS bucket, count(*) FROM diff_users GROUP BY bucket ORDER BY bucket", Exact),
    ("SELECT count(*) FROM diff_orders GROUP BY status", Unordered),
    ("SELECT status FROM diff_orders GROUP BY status ORDER BY sum(amount) DESC", Exact),
    ("SELECT active, max(score), min(score) FROM diff_users GROUP BY active ORDER BY active", Exact),
    ("SELECT country, avg(score) FROM diff_users GROUP BY country ORDER BY avg(score) DESC, country LIMIT 3", Exact),
    ("SELECT lower(status) AS s, count(*) FILTER (WHERE qty = 1) FROM diff_orders GROUP BY lower(status) ORDER BY s", Exact),
    ("SELECT status, coalesce(sum(qty), 0) AS q FROM diff_orders GROUP BY status ORDER BY q DESC, status", Exact),
    // HAVING.
    ("SELECT user_id, count(*) FROM diff_orders GROUP BY user_id HAVING count(*) > 8 ORDER BY user_id", Exact),
    ("SELECT status, sum(amount) FROM diff_orders GROUP BY status HAVING sum(amount) > 1000 AND count(*) >= 3", Unordered),
    ("SELECT qty, count(*) FROM diff_orders GROUP BY qty HAVING avg(amount) < 50.5 OR qty = 5 ORDER BY qty", Exact),
    ("SELECT country, count(*) FROM diff_users GROUP BY country HAVING country IS NOT NULL AND count(*) > 1 ORDER BY country", Exact),
    ("SELECT active, count(*) FROM diff_users GROUP BY active HAVING bool_or(score > 98)", Unordered),
    ("SELECT count(*) FROM diff_orders HAVING count(*) > 0", Exact),
    ("SELECT count(*) FROM diff_orders HAVING count(*) < 0", Exact),
    ("SELECT status, count(*) FROM diff_orders GROUP BY status ORDER BY count(*) DESC, status LIMIT 2 OFFSET 1", Exact),
    ("SELECT user_id, max(amount) FROM diff_orders GROUP BY user_id HAVING NOT (max(amount) <= 99.5) ORDER BY 2 DESC, 1", Exact),
    // DISTINCT.
    ("SELECT DISTINCT status FROM diff_orders", Unordered),
    ("SELECT DISTINCT country FROM diff_users ORDER BY country", Exact),
    ("SELECT DISTINCT qty, status FROM diff_orders ORDER BY qty DESC, status LIMIT 6", Exact),
    ("SELECT DISTINCT score FROM diff_users ORDER BY score LIMIT 5 OFFSET 3", Exact),
    ("SELECT DISTINCT count(*) FROM diff_orders GROUP BY user_id", Unordered),
    ("SELECT DISTINCT active FROM diff_users", Unordered),
    ("SELECT DISTINCT amount FROM diff_orders WHERE amount < 2", Unordered),
    // NULLs.
    ("SELECT note, count(*) FROM diff_orders GROUP BY note ORDER BY note NULLS FIRST LIMIT 5", Exact),
    ("SELECT user_id, note FROM diff_orders WHERE note IS NULL ORDER BY order_id LIMIT 10", Exact),
    ("SELECT min(note), max(note), count(note) FROM diff_orders WHERE user_id > 2900", Exact),
    ("SELECT country, sum(score) FROM diff_users WHERE country IS NULL GROUP BY country", Unordered),
    ("SELECT user_id, avg(qty) FROM diff_orders WHERE note IS NULL GROUP BY user_id ORDER BY avg(qty) DESC, user_id LIMIT 5", Exact),
];

/// Constructs that cannot be merged exactly, with a word the 0A000 message must contain.
#[rustfmt::skip]
const REFUSED: &[(&str, &str)] = &[
    ("SELECT count(DISTINCT status) FROM diff_orders", "count(DISTINCT"),
    ("SELECT user_id, rank() OVER (ORDER BY score) FROM diff_users", "window function"),
    ("SELECT string_agg(name, ',') FROM diff_users", "string_agg"),
    ("SELECT DISTINCT ON (status) status, amount FROM diff_orders", "DISTINCT ON"),
    ("SELECT a.user_id FROM diff_users a JOIN diff_users b ON a.score = b.score", "join of sharded tables"),
    ("SELECT avg(amount::float8) FROM diff_orders", "avg()"),
    ("SELECT sum(amount::float8) FROM diff_orders", "sum"),
    ("SELECT status, round(avg(amount), 2) FROM diff_orders GROUP BY status", "aggregate inside an expression"),
    ("SELECT name FROM diff_users UNION SELECT note FROM diff_orders", "UNION"),
    ("SELECT status, count(*) FROM diff_orders GROUP BY ROLLUP (status)", "ROLLUP"),
    ("SELECT coalesce(max(amount), 0) FROM diff_orders", "aggregate inside an expression"),
    ("SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY amount) FROM diff_orders", "percentile_cont"),
    ("SELECT user_id FROM diff_users ORDER BY interval '1 day' * score LIMIT 3", "type OID"),
];

fn user_row(id: i64) -> String {
    let countries = ["'de'", "'fr'", "'us'", "'jp'", "NULL"];
    let country = countries[(id * 7 % 5) as usize];
    let score = id * 37 % 100;
    let active = id % 3 != 0;
    format!("({id}, 'user{id:05}', {country}, {score}, {active})")
}

fn order_row(id: i64) -> (i64, String) {
    let user = 1 + id * 7919 % USERS;
    let amount = format!("{}.{:02}", id * 31 % 10000 / 100, id * 31 % 100);
    let status = ["new", "paid", "shipped", "cancelled"][(id % 4) as usize];
    let qty = id % 5 + 1;
    let note = if id % 6 == 0 {
        "NULL".to_string()
    } else {
        format!("'n{:02}'", id % 50)
    };
    let created = format!(
        "timestamp '2024-01-01' + interval '1 minute' * {}",
        id * 7919 % 525_600
    );
    let paid = match id % 5 {
        0 => "NULL".to_string(),
        _ => format!(
            "timestamptz '2024-01-01 00:00:00+00' + interval '1 second' * {}",
            id * 104_729 % 31_536_000
        ),
    };
    let due = format!("date '2024-01-01' + {}", id % 400);
    let row =
        format!("({id}, {user}, {amount}, '{status}', {qty}, {note}, {created}, {paid}, {due})");
    (user, row)
}

/// Inserts `rows` into `table` in batches.
async fn insert(client: &Client, table: &str, rows: &[String]) {
    for batch in rows.chunks(1000) {
        client
            .batch_execute(&format!("INSERT INTO {table} VALUES {}", batch.join(",")))
            .await
            .unwrap();
    }
}

/// Loads the data once per test binary: each row directly into its shard's primary, and all
/// rows into the single server; returns a proxy over the two shards and a reference client.
async fn setup() -> (support::Proxy, Client) {
    static LOADED: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    let shards = support::shard_clusters();
    let reference = support::cluster();
    let config = support::two_shard_config_with(shards, &["diff_users", "diff_orders"]);
    let proxy = support::start_proxy(&config).await;
    let reference_client = support::connect_direct(reference.primary_port()).await;
    LOADED
        .get_or_init(|| async {
            let mut users: [Vec<String>; 2] = Default::default();
            let mut orders: [Vec<String>; 2] = Default::default();
            for id in 1..=USERS {
                users[support::shard_of_id(id)].push(user_row(id));
            }
            for id in 1..=ORDERS {
                let (user, row) = order_row(id);
                orders[support::shard_of_id(user)].push(row);
            }
            reference_client.batch_execute(SCHEMA).await.unwrap();
            for (shard, cluster) in shards.iter().enumerate() {
                let client = support::connect_direct(cluster.primary_port()).await;
                client.batch_execute(SCHEMA).await.unwrap();
                insert(&client, "diff_users", &users[shard]).await;
                insert(&client, "diff_orders", &orders[shard]).await;
                insert(&reference_client, "diff_users", &users[shard]).await;
                insert(&reference_client, "diff_orders", &orders[shard]).await;
                client.batch_execute("ANALYZE").await.unwrap();
            }
            for cluster in shards {
                cluster.wait_for_replay(Duration::from_secs(60)).unwrap();
            }
        })
        .await;
    (proxy, reference_client)
}

type Rows = Vec<Vec<Option<String>>>;

/// Column names, rows in the order sent, and the CommandComplete row count.
async fn run(
    client: &Client,
    sql: &str,
) -> Result<(Vec<String>, Rows, u64), tokio_postgres::Error> {
    let mut names = Vec::new();
    let mut rows = Vec::new();
    let mut tag = 0;
    for message in client.simple_query(sql).await? {
        match message {
            SimpleQueryMessage::RowDescription(columns) => {
                names = columns.iter().map(|c| c.name().to_string()).collect();
            }
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
    Ok((names, rows, tag))
}

fn sorted(mut rows: Rows) -> Rows {
    rows.sort();
    rows
}

/// What differs between pgshard's answer and the single server's, if anything.
fn difference(
    how: Compare,
    got: &(Vec<String>, Rows, u64),
    want: &(Vec<String>, Rows, u64),
) -> Option<String> {
    if got.0 != want.0 {
        return Some(format!("column names {:?}, want {:?}", got.0, want.0));
    }
    if got.2 != want.2 {
        return Some(format!("row count {}, want {}", got.2, want.2));
    }
    let same = match how {
        Unordered => sorted(got.1.clone()) == sorted(want.1.clone()),
        Exact => got.1 == want.1,
        Ties(n) => {
            let keys = |rows: &Rows| rows.iter().map(|r| r[..n].to_vec()).collect::<Vec<_>>();
            keys(&got.1) == keys(&want.1) && sorted(got.1.clone()) == sorted(want.1.clone())
        }
    };
    (!same).then(|| {
        let head = |rows: &Rows| rows.iter().take(5).cloned().collect::<Vec<_>>();
        format!(
            "rows differ: got {} starting {:?}, want {} starting {:?}",
            got.1.len(),
            head(&got.1),
            want.1.len(),
            head(&want.1)
        )
    })
}

/// Which protocol a corpus run uses.
#[derive(Clone, Copy)]
enum Protocol {
    /// Simple queries, text results.
    Simple,
    /// tokio-postgres prepared statements, binary results.
    Extended,
}

async fn run_with(
    protocol: Protocol,
    client: &Client,
    sql: &str,
) -> Result<(Vec<String>, Rows, u64), tokio_postgres::Error> {
    match protocol {
        Protocol::Simple => run(client, sql).await,
        Protocol::Extended => run_extended(client, sql).await,
    }
}

/// Runs the whole corpus through pgshard and on the single server; fails listing every read
/// whose answers differ.
async fn check_corpus(protocol: Protocol) {
    let (proxy, reference) = setup().await;
    let client = proxy.connect().await;
    // No waiting for pgshard to learn the shards' collations: a statement that needs them
    // before the start-up learner is done learns them itself.
    assert!(CORPUS.len() >= 60, "the corpus has {} reads", CORPUS.len());
    let mut failures = Vec::new();
    for &(sql, how) in CORPUS {
        let want = run_with(protocol, &reference, sql)
            .await
            .unwrap_or_else(|e| panic!("reference: {sql}: {e}"));
        match run_with(protocol, &client, sql).await {
            Ok(got) => {
                if let Some(why) = difference(how, &got, &want) {
                    failures.push(format!("{sql}\n    {why}"));
                }
            }
            Err(e) => failures.push(format!("{sql}\n    error: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} reads differ:\n{}",
        failures.len(),
        CORPUS.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn every_corpus_read_equals_the_single_server_answer() {
    check_corpus(Protocol::Simple).await;
}

#[tokio::test]
async fn constructs_that_cannot_be_merged_get_0a000_naming_them() {
    let (proxy, _reference) = setup().await;
    let client = proxy.connect().await;
    let mut failures = Vec::new();
    for &(sql, construct) in REFUSED {
        match client.simple_query(sql).await {
            Ok(_) => failures.push(format!("{sql}: answered instead of refused")),
            Err(e) => match e.as_db_error() {
                Some(db) if db.code().code() == "0A000" && db.message().contains(construct) => {}
                Some(db) => failures.push(format!("{sql}: {} {}", db.code().code(), db.message())),
                None => failures.push(format!("{sql}: {e}")),
            },
        }
        // The client stays usable after each refusal.
        let (_, rows, _) = run(&client, "SELECT 1").await.unwrap();
        assert_eq!(rows, vec![vec![Some("1".to_string())]]);
    }
    assert!(
        failures.is_empty(),
        "wrongly handled:\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn a_merge_over_the_memory_limit_fails_cleanly_and_others_are_unaffected() {
    let (_proxy, _reference) = setup().await;
    let shards = support::shard_clusters();
    let config = support::two_shard_config_with(shards, &["diff_users", "diff_orders"])
        .replace("[sharding]\n", "[sharding]\nmax_merge_memory_mb = 1\n");
    let proxy = support::start_proxy(&config).await;
    let client = proxy.connect().await;
    let other = proxy.connect().await;
    // 15,000 groups of about 150 bytes each need more than 1 MiB.
    let err = client
        .simple_query("SELECT order_id, count(*) FROM diff_orders GROUP BY order_id")
        .await
        .unwrap_err();
    let db = err.as_db_error().expect("an ErrorResponse");
    assert_eq!(db.code().code(), "53200", "{}", db.message());
    assert!(
        db.message().contains("max_merge_memory_mb"),
        "{}",
        db.message()
    );
    // The same client and another one go on; small merges still fit.
    let (_, rows, _) = run(
        &client,
        "SELECT status, count(*) FROM diff_orders GROUP BY status",
    )
    .await
    .unwrap();
    assert_eq!(rows.len(), 4);
    let (_, rows, _) = run(&other, "SELECT count(*) FROM diff_users")
        .await
        .unwrap();
    assert_eq!(rows, vec![vec![Some(USERS.to_string())]]);
}

/// Any value as the bytes the server sent (binary format, as tokio-postgres asks for).
struct Raw(Vec<u8>);

impl<'a> tokio_postgres::types::FromSql<'a> for Raw {
    fn from_sql(
        _: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw.to_vec()))
    }

    fn accepts(_: &tokio_postgres::types::Type) -> bool {
        true
    }
}

/// Column names with types, rows as raw binary values, over the extended protocol.
async fn run_extended(
    client: &Client,
    sql: &str,
) -> Result<(Vec<String>, Rows, u64), tokio_postgres::Error> {
    let rows = client.query(sql, &[]).await?;
    let names = match rows.first() {
        Some(row) => row
            .columns()
            .iter()
            .map(|c| format!("{} {}", c.name(), c.type_()))
            .collect(),
        None => Vec::new(),
    };
    let values = rows
        .iter()
        .map(|row| {
            (0..row.len())
                .map(|i| row.get::<_, Option<Raw>>(i).map(|r| format!("{:?}", r.0)))
                .collect()
        })
        .collect::<Rows>();
    let count = values.len() as u64;
    Ok((names, values, count))
}

#[tokio::test]
async fn every_corpus_read_over_the_extended_protocol_in_binary_equals_the_single_server() {
    check_corpus(Protocol::Extended).await;
}

#[tokio::test]
async fn cross_shard_reads_take_parameters_over_the_extended_protocol() {
    let (proxy, reference) = setup().await;
    let client = proxy.connect().await;
    let sql = "SELECT status, count(*), avg(amount) FROM diff_orders WHERE qty >= $1 AND note <> $2 GROUP BY status ORDER BY status";
    let statement = client.prepare(sql).await.unwrap();
    for qty in [1i32, 3, 5] {
        let got = client.query(&statement, &[&qty, &"n07"]).await.unwrap();
        let want = reference.query(sql, &[&qty, &"n07"]).await.unwrap();
        let raw = |rows: &[tokio_postgres::Row]| {
            rows.iter()
                .map(|r| {
                    (0..r.len())
                        .map(|i| r.get::<_, Option<Raw>>(i).map(|v| v.0))
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(raw(&got), raw(&want), "qty >= {qty}");
    }
    // The unnamed statement, parsed and bound in one batch.
    let count = client
        .query_one(
            "SELECT count(*) FROM diff_users WHERE score > $1",
            &[&50i32],
        )
        .await
        .unwrap();
    let want = reference
        .query_one(
            "SELECT count(*) FROM diff_users WHERE score > $1",
            &[&50i32],
        )
        .await
        .unwrap();
    assert_eq!(count.get::<_, i64>(0), want.get::<_, i64>(0));
}

#[tokio::test]
async fn psycopg_and_asyncpg_get_the_single_server_answers() {
    let (proxy, _reference) = setup().await;
    let script: std::path::PathBuf = [
        env!("CARGO_MANIFEST_DIR"),
        "tests",
        "clients",
        "scatter_drivers.py",
    ]
    .iter()
    .collect();
    let proxy_dsn = format!("postgresql://app:app@127.0.0.1:{}/app", proxy.port());
    let reference_dsn = format!(
        "postgresql://app:app@127.0.0.1:{}/app",
        support::cluster().primary_port()
    );
    let run = tokio::process::Command::new("python3")
        .arg(&script)
        .args([&proxy_dsn, &reference_dsn])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the driver script finishes")
        .expect("python3 runs");
    let report = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "scatter_drivers.py failed:\n{report}");
}

#[tokio::test]
async fn timestamps_are_merged_only_in_datestyle_iso() {
    let (proxy, reference) = setup().await;
    let url = format!(
        "{}?options=-c%20DateStyle%3DGerman",
        proxy.url("app", "app")
    );
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    let sql =
        "SELECT order_id, created_at FROM diff_orders ORDER BY created_at DESC, order_id LIMIT 3";
    let err = client
        .simple_query(sql)
        .await
        .expect_err("German dates cannot be ordered");
    let db = err.as_db_error().expect("an ErrorResponse");
    assert_eq!(db.code().code(), "0A000");
    assert!(db.message().contains("DateStyle ISO"), "{}", db.message());
    // Switching to ISO in the session makes the same read merge, equal to one server.
    client.simple_query("SET DateStyle = ISO").await.unwrap();
    let got = run(&client, sql).await.unwrap();
    let want = run(&reference, sql).await.unwrap();
    assert_eq!(got.1, want.1);
}

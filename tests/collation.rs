//! Text ordered across shards under real collations (issue 9, item 5): databases created under
//! `C.UTF-8`, a libc locale (`en_US.UTF-8`) and an ICU locale (`de-DE`) on both shard clusters
//! and on one reference server holding all rows. Every cross-shard ORDER BY / min / max /
//! GROUP BY ... ORDER BY on text must return exactly the reference server's rows in its order;
//! what pgshard cannot order exactly (a collation the shards define differently, an
//! expression whose collation it cannot know) is refused with 0A000, never answered wrongly.
//!
//! Needs the locales en_US.UTF-8 and de_DE.UTF-8 on the machine (`.ci/run` generates them) and
//! a PostgreSQL built with ICU.

mod support;

use std::time::Duration;

use tokio_postgres::{Client, SimpleQueryMessage};

/// The databases: name, the locale clause of their CREATE DATABASE, and the collation clause
/// of column `tag` of their table `words`.
const DATABASES: &[(&str, &str, &str)] = &[
    // tag's own collation (C) orders like the database's.
    ("coll_cutf8", "LOCALE 'C.UTF-8'", "COLLATE \"C\""),
    ("coll_libc", "LOCALE 'en_US.UTF-8'", ""),
    (
        "coll_icu",
        "LOCALE_PROVIDER icu ICU_LOCALE 'de-DE' LOCALE 'C.UTF-8'",
        "",
    ),
    // tag's own collation (C) orders unlike the database's.
    ("coll_mixed", "LOCALE 'en_US.UTF-8'", "COLLATE \"C\""),
    // Gets a table while a proxy runs.
    ("coll_late", "LOCALE 'C.UTF-8'", ""),
];

/// Words that sort differently under every collation: case, accents, punctuation, spaces,
/// digits, empty, several scripts, emoji, ligatures, and canonically equivalent spellings.
const WORDS: &[&str] = &[
    "apple", "Apple", "APPLE", "äpfel", "Äpfel", "apfel", "zebra", "Zebra", "école", "ecole",
    "Ecole", "École", "naïve", "naive", "straße", "strasse", "Strasse", "co-op", "coop", "co op",
    "résumé", "resume", "Å", "A\u{30A}", "a\u{308}", "ä", "1", "10", "2", "-1", "", "  ", "z", "Z",
    "Ω", "ω", "日本", "中文", "😀", "👍🏽", "ﬁ", "fi", "æ", "ae", "ø", "o", "ö", "oe", "İ", "i", "I",
    "ı", "x-ray", "xray", "X ray", "Müller", "Mueller", "muller", "ǅ", "dž",
];

const REGIONS: &[&str] = &[
    "Zürich",
    "zurich",
    "Ägypten",
    "Aachen",
    "aachen",
    "Oslo",
    "Øresund",
    "",
    "東京",
    "Ångström",
];

type Rows = Vec<Vec<Option<String>>>;

/// The row `id` of every database: (w, region, tag) as SQL literals.
fn row(id: usize) -> String {
    let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let w = match id % 4 {
        _ if id.is_multiple_of(29) => "NULL".to_string(),
        0 => quote(WORDS[id % WORDS.len()]),
        1 => quote(&format!("{} b", WORDS[id % WORDS.len()])),
        2 => quote(&format!(
            "{}{}",
            WORDS[id % WORDS.len()],
            WORDS[(id / 7) % WORDS.len()]
        )),
        _ => quote(&format!("{}-{}", WORDS[(id * 3) % WORDS.len()], id % 5)),
    };
    let region = quote(REGIONS[id % REGIONS.len()]);
    let tag = quote(WORDS[(id * 7) % WORDS.len()]);
    format!("({id}, {w}, {region}, {tag})")
}

const ROWS: usize = 360;

/// Creates the databases (on both shards and the reference server) and loads the same rows:
/// on the shards by key, on the reference server all of them. Once per test binary.
async fn setup() {
    static DONE: tokio::sync::OnceCell<()> = tokio::sync::OnceCell::const_new();
    DONE.get_or_init(|| async {
        let shards = support::shard_clusters();
        let reference = support::cluster();
        let servers = [
            (shards[0], Some(0)),
            (shards[1], Some(1)),
            (reference, None),
        ];
        for (cluster, shard) in servers {
            let port = cluster.primary_port();
            for (db, locale, tag) in DATABASES {
                let create = format!(
                    "CREATE DATABASE {db} OWNER app TEMPLATE template0 ENCODING 'UTF8' {locale}"
                );
                cluster.psql(port, "postgres", &create).unwrap();
                let schema = format!(
                    "SET ROLE app; CREATE TABLE words (user_id bigint PRIMARY KEY, w text, \
                     region text, tag text {tag})"
                );
                cluster.psql(port, db, &schema).unwrap();
                let rows: Vec<String> = (1..=ROWS)
                    .filter(|&id| shard.is_none_or(|s| support::shard_of_id(id as i64) == s))
                    .map(row)
                    .collect();
                let insert = format!("INSERT INTO words VALUES {}", rows.join(", "));
                cluster.psql(port, db, &insert).unwrap();
            }
            // A collation the two shards define differently: no single order is right.
            let mixed = match shard {
                Some(0) => "CREATE COLLATION mixed (provider = icu, locale = 'und')",
                _ => "CREATE COLLATION mixed (provider = libc, locale = 'C')",
            };
            cluster.psql(port, "coll_cutf8", mixed).unwrap();
        }
        for cluster in shards {
            cluster.wait_for_replay(Duration::from_secs(60)).unwrap();
        }
    })
    .await;
}

/// A proxy over both shards serving database `db` of each, with `words` sharded by user_id.
async fn proxy(db: &str) -> support::Proxy {
    let config = support::two_shard_config_with(support::shard_clusters(), &["words", "late"])
        .replace("slots = ", &format!("database = \"{db}\"\nslots = "));
    support::start_proxy(&config).await
}

async fn reference(db: &str) -> Client {
    let port = support::cluster().primary_port();
    let url = format!("postgres://app:app@127.0.0.1:{port}/{db}");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connecting to the reference server");
    tokio::spawn(connection);
    client
}

/// Rows in the order the server sent them.
async fn ordered_rows(client: &Client, sql: &str) -> Result<Rows, tokio_postgres::Error> {
    let mut rows = Vec::new();
    for message in client.simple_query(sql).await? {
        if let SimpleQueryMessage::Row(row) = message {
            rows.push(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            );
        }
    }
    Ok(rows)
}

/// Queries every collation's database answers exactly as one server.
const CORPUS: &[&str] = &[
    "SELECT user_id, w FROM words ORDER BY w, user_id",
    "SELECT w, user_id FROM words ORDER BY w DESC NULLS LAST, user_id LIMIT 37",
    "SELECT w, region FROM words ORDER BY region, w DESC, user_id OFFSET 5 LIMIT 50",
    "SELECT min(w), max(w), min(region), max(region), count(*) FROM words",
    "SELECT region, count(*), min(w), max(w) FROM words GROUP BY region ORDER BY region",
    "SELECT region, count(*) AS n FROM words GROUP BY region ORDER BY region DESC LIMIT 4",
    "SELECT region, max(w) FROM words GROUP BY region HAVING max(w) > 'e' ORDER BY 1",
    "SELECT DISTINCT region FROM words ORDER BY region",
    "SELECT DISTINCT region COLLATE \"und-x-icu\" AS r FROM words ORDER BY r DESC",
    "SELECT region, count(*) FROM words GROUP BY region ORDER BY region COLLATE \"C\"",
    "SELECT user_id, w FROM words ORDER BY w COLLATE \"C\", user_id",
    "SELECT user_id FROM words ORDER BY w COLLATE \"und-x-icu\", user_id",
    "SELECT w COLLATE \"de-x-icu\" AS x, user_id FROM words ORDER BY x, user_id",
    "SELECT user_id, w FROM words ORDER BY w COLLATE \"en_US\" DESC, user_id",
    "SELECT user_id, tag FROM words ORDER BY tag, user_id",
    "SELECT * FROM words ORDER BY tag DESC, w, user_id LIMIT 60",
];

/// What is ordered exactly where a column's own collation differs from the database's:
/// that column, by its collation; other columns, by the database's.
const MIXED: &[&str] = &[
    "SELECT user_id, tag FROM words ORDER BY tag, user_id",
    "SELECT * FROM words ORDER BY tag DESC, w, user_id LIMIT 60",
    "SELECT user_id, w, tag FROM words ORDER BY w, tag, user_id",
    "SELECT w, user_id FROM words ORDER BY w COLLATE \"C\", user_id",
];

async fn same_as_one_server(db: &str, corpus: &[&str]) {
    setup().await;
    let proxy = proxy(db).await;
    let client = proxy.connect().await;
    let one = reference(db).await;
    for sql in corpus {
        let got = ordered_rows(&client, sql)
            .await
            .unwrap_or_else(|e| panic!("{db}: {sql}: {e:?}"));
        let want = ordered_rows(&one, sql).await.unwrap();
        assert!(!want.is_empty(), "{db}: {sql}: the corpus must return rows");
        assert_eq!(got, want, "{db}: rows or their order differ for {sql}");
    }
    // The extended protocol merges the same way.
    let sql = "SELECT user_id, w FROM words WHERE user_id > $1 ORDER BY w DESC, user_id";
    let values = |rows: Vec<tokio_postgres::Row>| -> Vec<(i64, Option<String>)> {
        rows.iter().map(|r| (r.get(0), r.get(1))).collect()
    };
    let got = values(client.query(sql, &[&10i64]).await.unwrap());
    let want = values(one.query(sql, &[&10i64]).await.unwrap());
    assert_eq!(got, want, "{db}: extended protocol: {sql}");
}

/// The error pgshard refuses `sql` with: 0A000, its message.
async fn refusal(db: &str, sql: &str) -> String {
    setup().await;
    let proxy = proxy(db).await;
    let client = proxy.connect().await;
    let err = ordered_rows(&client, sql)
        .await
        .expect_err("pgshard must refuse this");
    let db_err = err
        .as_db_error()
        .unwrap_or_else(|| panic!("{sql}: {err:?}"));
    assert_eq!(db_err.code().code(), "0A000", "{sql}: {}", db_err.message());
    db_err.message().to_string()
}

#[tokio::test]
async fn text_under_c_utf8_merges_in_code_point_order_like_one_server() {
    // tag's own collation (C) orders like the database's, so expressions are ordered too.
    let lower = "SELECT user_id, lower(w) AS l FROM words ORDER BY l, user_id";
    same_as_one_server("coll_cutf8", &[CORPUS, &[lower]].concat()).await;
}

#[tokio::test]
async fn text_under_a_libc_locale_merges_like_one_server() {
    same_as_one_server("coll_libc", CORPUS).await;
}

#[tokio::test]
async fn text_under_an_icu_locale_merges_like_one_server() {
    same_as_one_server("coll_icu", CORPUS).await;
}

#[tokio::test]
async fn a_column_with_its_own_collation_merges_by_it() {
    same_as_one_server("coll_mixed", MIXED).await;
}

#[tokio::test]
async fn a_collation_whose_probe_order_differs_on_a_shard_is_refused() {
    let message = refusal(
        "coll_cutf8",
        "SELECT user_id, w FROM words ORDER BY w COLLATE mixed, user_id",
    )
    .await;
    assert!(
        message.contains("mixed") && message.contains("differs from shard 1's"),
        "{message}"
    );
}

#[tokio::test]
async fn an_expression_whose_collation_pgshard_cannot_know_is_refused() {
    // tag has collation C, unlike the database's en_US: lower(...) or min(...) of some
    // column could be either, so pgshard refuses rather than guess.
    for sql in [
        "SELECT user_id, lower(w) AS l FROM words ORDER BY l, user_id",
        "SELECT min(w) FROM words",
    ] {
        let message = refusal("coll_mixed", sql).await;
        assert!(message.contains("collation pg_catalog.\"C\""), "{message}");
    }
    let message = refusal(
        "coll_icu",
        "SELECT user_id, w FROM words WHERE w COLLATE \"C\" > 'a' ORDER BY w",
    )
    .await;
    assert!(message.contains("COLLATE"), "{message}");
}

#[tokio::test]
async fn a_table_created_after_start_is_ordered_by_its_columns_own_collation() {
    setup().await;
    let proxy = proxy("coll_late").await;
    let client = proxy.connect().await;
    let sql = "SELECT user_id, w FROM words ORDER BY w, user_id";
    // pgshard has learned the columns' collations by the time this is answered.
    ordered_rows(&client, sql).await.unwrap();
    let shards = support::shard_clusters();
    let reference_cluster = support::cluster();
    let create = "SET ROLE app; CREATE TABLE late (user_id bigint PRIMARY KEY, \
                  w text COLLATE \"und-x-icu\")";
    for (cluster, shard) in [
        (shards[0], Some(0)),
        (shards[1], Some(1)),
        (reference_cluster, None),
    ] {
        let port = cluster.primary_port();
        cluster.psql(port, "coll_late", create).unwrap();
        let rows: Vec<String> = (1..=ROWS)
            .filter(|&id| shard.is_none_or(|s| support::shard_of_id(id as i64) == s))
            .map(|id| format!("({id}, '{}')", WORDS[id % WORDS.len()]))
            .collect();
        let insert = format!("INSERT INTO late VALUES {}", rows.join(", "));
        cluster.psql(port, "coll_late", &insert).unwrap();
    }
    for cluster in shards {
        cluster.wait_for_replay(Duration::from_secs(60)).unwrap();
    }
    let one = reference("coll_late").await;
    for sql in [
        "SELECT user_id, w FROM late ORDER BY w, user_id",
        "SELECT * FROM late ORDER BY w DESC, user_id LIMIT 40",
    ] {
        let got = ordered_rows(&client, sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        assert_eq!(got, ordered_rows(&one, sql).await.unwrap(), "{sql}");
    }
}

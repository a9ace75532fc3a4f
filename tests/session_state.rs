//! A client's session state in transaction mode, against the real cluster: settings, role and
//! transaction characteristics last for the client's session whichever server connection serves
//! it (and never reach another client); RESET goes back to the client's startup value (both pool
//! modes); state that cannot move (temporary tables, cursors WITH HOLD, SQL PREPARE, LISTEN,
//! advisory locks) keeps the client on its server connection until it is gone, and nothing of it
//! reaches the next client; `session_state = "refuse"` refuses it instead.

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use support::{base_config_with, cluster, start_proxy, Proxy};
use tokio_postgres::{AsyncMessage, Client, Config, NoTls, SimpleQueryMessage};

const HANG_GUARD: Duration = Duration::from_secs(20);

/// A proxy with `size` server connections; waiting for one fails after half a second.
async fn proxy(size: usize, more: &[(&str, &str)]) -> Proxy {
    let size = format!("size = {size}");
    let mut edits = vec![
        ("size = 4", size.as_str()),
        ("checkout_timeout_ms = 5000", "checkout_timeout_ms = 500"),
    ];
    edits.extend_from_slice(more);
    start_proxy(&base_config_with(&edits)).await
}

/// Login settings for app/app through `proxy`.
fn client_config(proxy: &Proxy) -> Config {
    let mut config = Config::new();
    config
        .host("127.0.0.1")
        .port(proxy.port())
        .user("app")
        .password("app")
        .dbname("app");
    config
}

/// Connects as app/app with `options` (`-c name=value ...`), if any.
async fn connect(proxy: &Proxy, options: Option<&str>) -> Client {
    let mut config = client_config(proxy);
    if let Some(options) = options {
        config.options(options);
    }
    let (client, connection) = tokio::time::timeout(HANG_GUARD, config.connect(NoTls))
        .await
        .expect("login within the hang guard")
        .expect("connecting through the proxy");
    tokio::spawn(connection);
    client
}

/// The single value a simple query returns.
async fn value(client: &Client, sql: &str) -> String {
    let messages = tokio::time::timeout(HANG_GUARD, client.simple_query(sql))
        .await
        .expect("an answer within the hang guard")
        .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    let values: Vec<String> = messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row.get(0).unwrap_or("NULL").to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(values.len(), 1, "{sql} returns one row: {values:?}");
    values.into_iter().next().unwrap_or_default()
}

fn sqlstate<T: std::fmt::Debug>(result: Result<T, tokio_postgres::Error>) -> String {
    let err = result.expect_err("the statement must fail");
    err.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| panic!("error without SQLSTATE: {err:?}"))
}

/// Runs `sql` on the primary directly, as app.
fn direct(sql: &str) {
    let cluster = cluster();
    cluster
        .psql(cluster.primary_port(), "app", sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// Role `state_tenant`, granted to app. Once per test process.
fn create_role() {
    static CREATED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    CREATED.get_or_init(|| {
        direct(
            "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'state_tenant') \
             THEN CREATE ROLE state_tenant NOLOGIN; GRANT state_tenant TO app; END IF; END $$;",
        )
    });
}

// ---------------------------------------------------------------------------------------------
// Settings last for the client's session

#[tokio::test]
async fn session_settings_last_across_transactions_and_stay_with_their_client() {
    create_role();
    // One server connection: the other client runs on it between the first one's statements.
    let proxy = proxy(1, &[]).await;
    let a = connect(&proxy, None).await;
    let b = connect(&proxy, None).await;
    let default_path = value(&b, "SHOW search_path").await;
    a.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS state_schema; \
         CREATE TABLE IF NOT EXISTS state_schema.marker (v text); \
         TRUNCATE state_schema.marker; INSERT INTO state_schema.marker VALUES ('found')",
    )
    .await
    .unwrap();
    a.batch_execute(
        "SET search_path = state_schema, public; SET statement_timeout = '1234ms'; \
         SET work_mem = '3MB'; SET myapp.tenant = '42'",
    )
    .await
    .unwrap();
    a.execute("SET enable_seqscan = off", &[]).await.unwrap();
    for round in 0..3 {
        assert_eq!(
            value(&b, "SHOW search_path").await,
            default_path,
            "round {round}"
        );
        assert_eq!(value(&b, "SHOW statement_timeout").await, "0");
        // (A placeholder once defined in a server session reads as empty after its reset.)
        let other = value(&b, "SELECT current_setting('myapp.tenant', true)").await;
        assert!(other == "NULL" || other.is_empty(), "{other}");
        assert_eq!(value(&a, "SHOW search_path").await, "state_schema, public");
        assert_eq!(value(&a, "SHOW statement_timeout").await, "1234ms");
        assert_eq!(value(&a, "SHOW work_mem").await, "3MB");
        assert_eq!(value(&a, "SHOW enable_seqscan").await, "off");
        assert_eq!(
            value(&a, "SELECT current_setting('myapp.tenant')").await,
            "42"
        );
        assert_eq!(value(&a, "SELECT v FROM marker").await, "found");
        // Over the extended protocol too.
        let row = a.query_one("SHOW statement_timeout", &[]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), "1234ms");
    }
    // A SET in a transaction that rolls back is undone, as on PostgreSQL.
    a.batch_execute("BEGIN; SET work_mem = '5MB'; ROLLBACK")
        .await
        .unwrap();
    assert_ne!(value(&b, "SHOW work_mem").await, "3MB");
    assert_eq!(value(&a, "SHOW work_mem").await, "3MB");
    // SET LOCAL stays in its transaction.
    a.batch_execute("BEGIN; SET LOCAL work_mem = '7MB'; COMMIT")
        .await
        .unwrap();
    assert_eq!(value(&a, "SHOW work_mem").await, "3MB");
}

#[tokio::test]
async fn a_role_lasts_for_its_client_and_never_reaches_another() {
    create_role();
    let proxy = proxy(1, &[]).await;
    let a = connect(&proxy, None).await;
    let b = connect(&proxy, None).await;
    a.batch_execute("SET ROLE state_tenant").await.unwrap();
    for _ in 0..3 {
        assert_eq!(value(&b, "SELECT current_user").await, "app");
        assert_eq!(value(&a, "SELECT current_user").await, "state_tenant");
    }
    a.batch_execute("RESET ROLE").await.unwrap();
    assert_eq!(value(&a, "SELECT current_user").await, "app");
    a.batch_execute("SET ROLE state_tenant").await.unwrap();
    drop(a);
    let c = connect(&proxy, None).await;
    assert_eq!(
        value(&c, "SELECT current_user || '/' || session_user").await,
        "app/app"
    );
}

#[tokio::test]
async fn read_only_session_characteristics_keep_refusing_writes() {
    let proxy = proxy(1, &[]).await;
    let a = connect(&proxy, None).await;
    let b = connect(&proxy, None).await;
    a.batch_execute("CREATE TABLE IF NOT EXISTS state_keep_me (id int)")
        .await
        .unwrap();
    a.batch_execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
        .await
        .unwrap();
    assert_eq!(value(&b, "SHOW default_transaction_read_only").await, "off");
    // What PostgreSQL refuses in a read-only session, pgshard must not let through.
    assert_eq!(
        sqlstate(a.batch_execute("DROP TABLE state_keep_me").await),
        "25006"
    );
    assert_eq!(value(&b, "SELECT count(*) FROM state_keep_me").await, "0");
    assert_eq!(value(&a, "SHOW default_transaction_read_only").await, "on");
}

// ---------------------------------------------------------------------------------------------
// RESET goes back to the startup value

async fn reset_goes_back_to_the_startup_value(proxy: &Proxy) {
    // libpq spells PGDATESTYLE as `datestyle`: the lower-case name must not shadow a later SET.
    let a = connect(
        proxy,
        Some("-c datestyle=Postgres,DMY -c timezone=Asia/Tokyo"),
    )
    .await;
    let b = connect(proxy, None).await;
    assert_eq!(value(&a, "SHOW DateStyle").await, "Postgres, DMY");
    a.batch_execute("SET DateStyle = 'SQL, MDY'; SET TimeZone = 'UTC'")
        .await
        .unwrap();
    value(&b, "SELECT 1").await;
    assert_eq!(value(&a, "SHOW DateStyle").await, "SQL, MDY");
    assert_eq!(value(&a, "SHOW TimeZone").await, "UTC");
    a.batch_execute("RESET DateStyle").await.unwrap();
    assert_eq!(value(&a, "SHOW DateStyle").await, "Postgres, DMY");
    assert_eq!(value(&a, "SHOW TimeZone").await, "UTC");
    a.batch_execute("SET TimeZone TO DEFAULT").await.unwrap();
    assert_eq!(value(&a, "SHOW TimeZone").await, "Asia/Tokyo");
    a.batch_execute("SET DateStyle = 'ISO, MDY'; SET TimeZone = 'UTC'")
        .await
        .unwrap();
    a.batch_execute("RESET ALL").await.unwrap();
    value(&b, "SELECT 1").await;
    assert_eq!(value(&a, "SHOW DateStyle").await, "Postgres, DMY");
    assert_eq!(value(&a, "SHOW TimeZone").await, "Asia/Tokyo");
    a.batch_execute("DISCARD ALL").await.unwrap();
    assert_eq!(value(&a, "SHOW DateStyle").await, "Postgres, DMY");
}

#[tokio::test]
async fn reset_goes_back_to_the_startup_value_in_transaction_mode() {
    reset_goes_back_to_the_startup_value(&proxy(1, &[]).await).await;
}

#[tokio::test]
async fn reset_goes_back_to_the_startup_value_in_session_mode() {
    let session = ("pool_mode = \"transaction\"", "pool_mode = \"session\"");
    reset_goes_back_to_the_startup_value(&proxy(2, &[session]).await).await;
}

// ---------------------------------------------------------------------------------------------
// State that cannot move pins the client

#[tokio::test]
async fn a_temporary_table_keeps_its_client_on_its_connection_until_dropped() {
    let proxy = proxy(1, &[]).await;
    let a = connect(&proxy, None).await;
    let b = connect(&proxy, None).await;
    a.batch_execute("CREATE TEMP TABLE state_tmp (x int); INSERT INTO state_tmp VALUES (7)")
        .await
        .unwrap();
    assert_eq!(value(&a, "SELECT x FROM state_tmp").await, "7");
    // Pinned: the only server connection stays with a; b waits and gets 53300.
    assert_eq!(sqlstate(b.simple_query("SELECT 1").await), "53300");
    assert_eq!(value(&a, "SELECT count(*) FROM state_tmp").await, "1");
    a.batch_execute("DROP TABLE state_tmp").await.unwrap();
    // Unpinned: b is served again.
    assert_eq!(value(&b, "SELECT 1").await, "1");
    assert_eq!(value(&a, "SELECT 2").await, "2");
}

#[tokio::test]
async fn temporary_tables_of_one_client_never_reach_another() {
    let proxy = proxy(2, &[]).await;
    let a = connect(&proxy, None).await;
    let b = connect(&proxy, None).await;
    a.batch_execute("CREATE TEMP TABLE state_same (x int); INSERT INTO state_same VALUES (1)")
        .await
        .unwrap();
    // The same name for another client: its own table, not "already exists".
    b.batch_execute("CREATE TEMP TABLE state_same (x int)")
        .await
        .unwrap();
    assert_eq!(value(&b, "SELECT count(*) FROM state_same").await, "0");
    assert_eq!(value(&a, "SELECT count(*) FROM state_same").await, "1");
    drop(a);
    drop(b);
    let c = connect(&proxy, None).await;
    let d = connect(&proxy, None).await;
    for client in [&c, &d] {
        assert_eq!(
            sqlstate(client.simple_query("SELECT * FROM state_same").await),
            "42P01"
        );
    }
    // SELECT INTO TEMP and CREATE TEMP TABLE AS pin too (their tags say SELECT).
    c.batch_execute("SELECT 5 AS x INTO TEMP state_into")
        .await
        .unwrap();
    assert_eq!(value(&c, "SELECT x FROM state_into").await, "5");
    d.batch_execute("CREATE TEMPORARY TABLE state_as AS SELECT 6 AS x")
        .await
        .unwrap();
    assert_eq!(value(&d, "SELECT x FROM state_as").await, "6");
}

#[tokio::test]
async fn cursors_with_hold_and_sql_prepared_statements_stay_with_their_client() {
    let proxy = proxy(2, &[]).await;
    let a = connect(&proxy, None).await;
    let b = connect(&proxy, None).await;
    a.batch_execute(
        "DECLARE state_c CURSOR WITH HOLD FOR SELECT g FROM generate_series(1, 3) g; \
         PREPARE state_p AS SELECT 42",
    )
    .await
    .unwrap();
    assert_eq!(value(&a, "FETCH 1 FROM state_c").await, "1");
    assert_eq!(value(&b, "SELECT count(*) FROM pg_cursors").await, "0");
    assert_eq!(value(&a, "FETCH 1 FROM state_c").await, "2");
    assert_eq!(value(&a, "EXECUTE state_p").await, "42");
    assert_eq!(sqlstate(b.simple_query("EXECUTE state_p").await), "26000");
    a.batch_execute("CLOSE state_c").await.unwrap();
    assert_eq!(value(&a, "EXECUTE state_p").await, "42");
    drop(a);
    let c = connect(&proxy, None).await;
    let d = connect(&proxy, None).await;
    for client in [&c, &d] {
        assert_eq!(
            value(client, "SELECT count(*) FROM pg_prepared_statements").await,
            "0"
        );
    }
}

#[tokio::test]
async fn advisory_locks_stay_with_their_client_and_go_when_it_leaves() {
    let proxy = proxy(2, &[]).await;
    let a = connect(&proxy, None).await;
    let b = connect(&proxy, None).await;
    assert_eq!(value(&a, "SELECT pg_advisory_lock(7707)::text").await, "");
    assert_eq!(value(&b, "SELECT pg_try_advisory_lock(7707)").await, "f");
    // The same session unlocks it: it really is a's server session.
    assert_eq!(value(&a, "SELECT pg_advisory_unlock(7707)").await, "t");
    assert_eq!(value(&b, "SELECT pg_try_advisory_lock(7707)").await, "t");
    assert_eq!(value(&b, "SELECT pg_advisory_unlock(7707)").await, "t");
    value(&a, "SELECT pg_advisory_lock(7708)::text").await;
    drop(a);
    // Gone with its client: the connection was discarded before anyone else got it.
    let c = connect(&proxy, None).await;
    let got = tokio::time::timeout(HANG_GUARD, async {
        loop {
            if value(&c, "SELECT pg_try_advisory_lock(7708)").await == "t" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(got.is_ok(), "the lock of a client that left is released");
}

#[tokio::test]
async fn listen_keeps_its_client_and_notifications_arrive() {
    let proxy = proxy(2, &[]).await;
    let (listener, mut connection) = client_config(&proxy).connect(NoTls).await.unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    tokio::spawn(async move {
        while let Some(Ok(message)) = messages.next().await {
            if let AsyncMessage::Notification(n) = message {
                let _ = tx.send(n.payload().to_string());
            }
        }
    });
    listener
        .batch_execute("LISTEN state_channel")
        .await
        .unwrap();
    let other = connect(&proxy, None).await;
    for payload in ["one", "two"] {
        other
            .batch_execute(&format!("NOTIFY state_channel, '{payload}'"))
            .await
            .unwrap();
        let got = tokio::time::timeout(HANG_GUARD, rx.recv()).await;
        assert_eq!(got.ok().flatten().as_deref(), Some(payload));
        // The listener keeps working between notifications.
        assert_eq!(value(&listener, "SELECT 1").await, "1");
    }
    listener.batch_execute("UNLISTEN *").await.unwrap();
    let third = connect(&proxy, None).await;
    assert_eq!(
        value(&third, "SELECT count(*) FROM pg_listening_channels()").await,
        "0"
    );
}

#[tokio::test]
async fn session_state_refuse_refuses_what_would_pin() {
    let refuse = (
        "pool_mode = \"transaction\"",
        "pool_mode = \"transaction\"\nsession_state = \"refuse\"",
    );
    let proxy = proxy(2, &[refuse]).await;
    let a = connect(&proxy, None).await;
    for sql in [
        "CREATE TEMP TABLE state_refused (x int)",
        "SELECT 1 INTO TEMP state_refused",
        "DECLARE c CURSOR WITH HOLD FOR SELECT 1",
        "PREPARE state_refused AS SELECT 1",
        "LISTEN state_refused",
        "SELECT pg_advisory_lock(1)",
    ] {
        let err = a.batch_execute(sql).await.expect_err(sql);
        let db = err.as_db_error().unwrap_or_else(|| panic!("{sql}: {err}"));
        assert_eq!(db.code().code(), "0A000", "{sql}");
        assert!(
            db.message().contains("session_state"),
            "{sql}: {}",
            db.message()
        );
    }
    // The transaction-scoped forms run.
    a.batch_execute(
        "BEGIN; CREATE TEMP TABLE state_fine (x int) ON COMMIT DROP; \
         SELECT pg_advisory_xact_lock(1); COMMIT",
    )
    .await
    .unwrap();
    assert_eq!(value(&a, "SELECT 1").await, "1");
}

#[tokio::test]
async fn a_tiny_statement_timeout_is_read_back_and_kept() {
    // The read-back itself runs without the client's timeout, which it reports unchanged.
    let proxy = proxy(1, &[]).await;
    let a = connect(&proxy, None).await;
    let b = connect(&proxy, None).await;
    for _ in 0..5 {
        a.batch_execute("SET statement_timeout = 1").await.unwrap();
        assert_eq!(value(&b, "SHOW statement_timeout").await, "0");
        assert_eq!(value(&a, "SHOW statement_timeout").await, "1ms");
        a.batch_execute("RESET statement_timeout").await.unwrap();
        assert_eq!(value(&a, "SHOW statement_timeout").await, "0");
    }
}

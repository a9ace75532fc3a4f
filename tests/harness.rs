//! Tests of the test harness itself (`tests/support`) against the real local cluster.

mod support;

use std::time::{Duration, Instant};

use support::{cluster, connect_direct};

/// Tests that stop the replica or depend on it running take this lock.
static REPLICA: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Polls `sql` on `port` (database `app`, as app) until it returns `expected` or 30 s pass.
async fn wait_for_value(port: u16, sql: &str, expected: i64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        match tokio_postgres::connect(
            &format!("postgres://app:app@127.0.0.1:{port}/app"),
            tokio_postgres::NoTls,
        )
        .await
        {
            Ok((client, connection)) => {
                tokio::spawn(connection);
                match client.query_one(sql, &[]).await {
                    Ok(row) if row.get::<_, i64>(0) == expected => return,
                    Ok(row) => last = format!("got {}", row.get::<_, i64>(0)),
                    Err(e) => last = e.to_string(),
                }
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("`{sql}` on port {port} never returned {expected}; last: {last}");
}

#[tokio::test]
async fn primary_accepts_app_with_scram_over_tcp() {
    let client = connect_direct(cluster().primary_port()).await;
    let row = client
        .query_one("SELECT current_user::text, current_database()::text", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "app");
    assert_eq!(row.get::<_, String>(1), "app");
}

#[tokio::test]
async fn wrong_password_is_rejected() {
    let url = format!(
        "postgres://app:wrong@127.0.0.1:{}/app",
        cluster().primary_port()
    );
    let err = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .err()
        .expect("a wrong password must be refused");
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::INVALID_PASSWORD),
        "{err:?}"
    );
}

#[tokio::test]
async fn psql_returns_rows_and_reports_errors() {
    let c = cluster();
    let out = c.psql(c.primary_port(), "app", "SELECT 1 + 1").unwrap();
    assert_eq!(out.trim(), "2");
    let err = c.psql(c.primary_port(), "app", "SELEC 1").unwrap_err();
    assert!(format!("{err:#}").contains("syntax error"), "{err:#}");
}

#[tokio::test]
async fn replica_is_in_recovery_and_sees_primary_writes() {
    let _replica = REPLICA.lock().await;
    let c = cluster();
    let primary = connect_direct(c.primary_port()).await;
    primary
        .batch_execute(
            "CREATE TABLE harness_replication (id bigint);
             INSERT INTO harness_replication SELECT generate_series(1, 10);",
        )
        .await
        .unwrap();

    let replica = connect_direct(c.replica_ports()[0]).await;
    let row = replica
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0), "the replica must be in recovery");
    wait_for_value(
        c.replica_ports()[0],
        "SELECT count(*) FROM harness_replication",
        10,
    )
    .await;
}

#[tokio::test]
async fn stopped_replica_refuses_connections_and_catches_up_after_start() {
    let _replica = REPLICA.lock().await;
    let c = cluster();
    let port = c.replica_ports()[0];
    c.stop_replica(0).unwrap();
    let refused = tokio_postgres::connect(
        &format!("postgres://app:app@127.0.0.1:{port}/app"),
        tokio_postgres::NoTls,
    )
    .await;
    assert!(
        refused.is_err(),
        "a stopped replica must refuse connections"
    );

    let primary = connect_direct(c.primary_port()).await;
    primary
        .batch_execute(
            "CREATE TABLE harness_restart (id bigint);
             INSERT INTO harness_restart VALUES (1), (2), (3);",
        )
        .await
        .unwrap();
    c.start_replica(0).unwrap();
    // start_replica waits for replay, so the rows are there at once.
    let replica = connect_direct(port).await;
    let row = replica
        .query_one("SELECT count(*) FROM harness_restart", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 3);
}

#[tokio::test]
async fn base_config_parses_and_proxy_shuts_down_on_request() {
    let proxy = support::start_proxy(&support::base_config(cluster())).await;
    assert_ne!(proxy.port(), 0);
    assert_eq!(
        proxy.url("app", "app"),
        format!("postgres://app:app@127.0.0.1:{}/app", proxy.port())
    );
    tokio::time::timeout(Duration::from_secs(10), proxy.shutdown())
        .await
        .expect("the proxy must stop within 10 s of shutdown");
}

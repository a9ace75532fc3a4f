//! Limits against the real cluster: `pool.size` caps a server's connections for a user with
//! health checks included, a user's `max_client_connections`, and a user's statement rate limit
//! (statements over it wait, then get 53400; the session goes on).

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::{base_config_with, cluster, start_proxy};

async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

fn url(port: u16, user: &str, password: &str) -> String {
    format!("postgres://{user}:{password}@127.0.0.1:{port}/app")
}

/// The base config with an extra user `name` (logging in to the cluster as app) whose entry
/// ends with `settings`.
fn config_with_user(name: &str, settings: &str) -> String {
    let mut text = base_config_with(&[]);
    text.push_str(&format!(
        "\n[[users]]\nname = \"{name}\"\npassword = \"pw\"\nserver_user = \"app\"\n\
         server_password = \"app\"\n{settings}\n"
    ));
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_size_caps_server_connections_with_health_checks_included() {
    let c = cluster();
    c.psql(
        c.primary_port(),
        "postgres",
        "CREATE DATABASE capped OWNER app",
    )
    .unwrap();
    let mut config = base_config_with(&[("size = 4", "size = 2\nhealth_check_interval_ms = 10")]);
    config.push_str("database = \"capped\"\n");
    let proxy = start_proxy(&config).await;
    let port = proxy.port();
    let mut load = Vec::new();
    for _ in 0..6 {
        load.push(tokio::spawn(async move {
            let client = connect(&url(port, "app", "app")).await.unwrap();
            for _ in 0..40 {
                client.execute("SELECT pg_sleep(0.01)", &[]).await.unwrap();
            }
        }));
    }
    let watcher = support::connect_direct(c.primary_port()).await;
    let mut most = 0;
    while load.iter().any(|t| !t.is_finished()) {
        let n: i64 = watcher
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE datname = 'capped' AND usename = 'app'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        most = most.max(n);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for task in load {
        task.await.unwrap();
    }
    assert_eq!(
        most, 2,
        "pool.size = 2 must cap the server connections, health checks included"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_over_its_client_limit_gets_53300_until_a_client_leaves() {
    let proxy = start_proxy(&config_with_user("few", "max_client_connections = 2")).await;
    let u = url(proxy.port(), "few", "pw");
    let first = connect(&u).await.unwrap();
    let _second = connect(&u).await.unwrap();
    let refused = connect(&u).await.unwrap_err();
    let db = refused.as_db_error().expect("an ErrorResponse");
    assert_eq!(db.code().code(), "53300", "{db:?}");
    assert!(db.message().contains("user \"few\""), "{}", db.message());
    // Another user is not limited by it.
    let other = connect(&url(proxy.port(), "app", "app")).await.unwrap();
    other.query_one("SELECT 1", &[]).await.unwrap();
    drop(first);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match connect(&u).await {
            Ok(client) => {
                client.query_one("SELECT 1", &[]).await.unwrap();
                break;
            }
            Err(e) if tokio::time::Instant::now() < deadline => {
                assert_eq!(e.code().map(|c| c.code()), Some("53300"), "{e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("the freed place was never given back: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_over_the_rate_limit_wait_then_get_53400() {
    let settings = "statements_per_second = 1\nstatement_burst = 2\nrate_limit_wait_ms = 100";
    let proxy = start_proxy(&config_with_user("slow", settings)).await;
    let client = Arc::new(connect(&url(proxy.port(), "slow", "pw")).await.unwrap());
    // The burst passes; the next statement would wait about a second, over the 100 ms allowed.
    client.simple_query("SELECT 1").await.unwrap();
    client.simple_query("SELECT 2").await.unwrap();
    let refused = client.simple_query("SELECT 3").await.unwrap_err();
    let db = refused.as_db_error().expect("an ErrorResponse");
    assert_eq!(db.code().code(), "53400", "{db:?}");
    assert!(
        db.message().contains("statements_per_second"),
        "{}",
        db.message()
    );
    // The extended protocol is limited too (one token per Execute).
    let refused = client.query_one("SELECT 4", &[]).await.unwrap_err();
    assert_eq!(refused.code().map(|c| c.code()), Some("53400"), "{refused}");
    // Other users are not.
    let other = connect(&url(proxy.port(), "app", "app")).await.unwrap();
    for _ in 0..5 {
        other.simple_query("SELECT 1").await.unwrap();
    }
    // Once the bucket refills, the same session goes on.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let rows = client.query("SELECT 5", &[]).await.unwrap();
    assert_eq!(rows.len(), 1);
}

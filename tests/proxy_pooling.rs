//! Pooling through the proxy against the real cluster: named prepared statements and client
//! settings that must follow a client from one server connection to the next, connections left
//! dirty by departing clients, session mode, and the limits (checkout timeout, client count).

mod support;

use std::time::Duration;

use support::{base_config_with, cluster, connect_direct, start_proxy, Proxy};
use tokio_postgres::{Client, Config, NoTls, SimpleQueryMessage};

/// Bounds waits on the proxy, so that a hang fails the test instead of stalling the suite.
const HANG_GUARD: Duration = Duration::from_secs(20);

async fn proxy_with_pool_size(size: usize) -> Proxy {
    start_proxy(&base_config_with(&[(
        "size = 4",
        &format!("size = {size}"),
    )]))
    .await
}

/// Connects as app/app to `port` with `options` and `application_name`, if given.
async fn connect_with(port: u16, options: Option<&str>, application_name: Option<&str>) -> Client {
    let mut config = Config::new();
    config
        .host("127.0.0.1")
        .port(port)
        .user("app")
        .password("app")
        .dbname("app");
    if let Some(options) = options {
        config.options(options);
    }
    if let Some(name) = application_name {
        config.application_name(name);
    }
    let (client, connection) = tokio::time::timeout(HANG_GUARD, config.connect(NoTls))
        .await
        .expect("login within the hang guard")
        .unwrap_or_else(|e| panic!("connecting to port {port}: {e}"));
    tokio::spawn(connection);
    client
}

fn sqlstate<T: std::fmt::Debug>(result: Result<T, tokio_postgres::Error>) -> String {
    let err = result.expect_err("the call must fail");
    match err.code() {
        Some(code) => code.code().to_string(),
        None => panic!("error without SQLSTATE: {err:?}"),
    }
}

/// The single value of a one-row, one-column simple query.
async fn simple_value(client: &Client, sql: &str) -> String {
    let messages = client.simple_query(sql).await.unwrap();
    let values: Vec<String> = messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row.get(0).unwrap_or("NULL").to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(values.len(), 1, "{sql} returns one row");
    values.into_iter().next().unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Prepared statements

#[tokio::test]
async fn prepared_statements_of_two_clients_interleave_on_one_server_connection() {
    let proxy = proxy_with_pool_size(1).await;
    let a = proxy.connect().await;
    let b = proxy.connect().await;
    let shared_text = "SELECT $1::int4 + 1";
    let a_shared = a.prepare(shared_text).await.unwrap();
    let b_shared = b.prepare(shared_text).await.unwrap();
    let a_own = a.prepare("SELECT $1::text || ' from a'").await.unwrap();
    let b_own = b.prepare("SELECT $1::text || ' from b'").await.unwrap();
    for i in 0..20i32 {
        let row = a.query_one(&a_shared, &[&i]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), i + 1);
        let row = b.query_one(&b_own, &[&format!("b{i}")]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), format!("b{i} from b"));
        // A statement prepared now, between the other client's executions.
        let text = format!("SELECT $1::int4 * {i}");
        let a_now = a.prepare(&text).await.unwrap();
        let b_now = b.prepare(&text).await.unwrap();
        let row = b.query_one(&b_shared, &[&(i * 10)]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), i * 10 + 1);
        let row = a.query_one(&a_own, &[&format!("a{i}")]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), format!("a{i} from a"));
        assert_eq!(
            b.query_one(&b_now, &[&3i32])
                .await
                .unwrap()
                .get::<_, i32>(0),
            3 * i
        );
        assert_eq!(
            a.query_one(&a_now, &[&2i32])
                .await
                .unwrap()
                .get::<_, i32>(0),
            2 * i
        );
    }
}

#[tokio::test]
async fn prepared_statement_survives_server_switch() {
    let proxy = proxy_with_pool_size(2).await;
    let b = proxy.connect().await;
    let statement = b
        .prepare("SELECT $1::int4 * 2, pg_backend_pid()")
        .await
        .unwrap();
    let first = b.query_one(&statement, &[&1i32]).await.unwrap();
    assert_eq!(first.get::<_, i32>(0), 2);
    // Another client holds the server connection b used, inside a transaction.
    let a = proxy.connect().await;
    a.batch_execute("BEGIN; SELECT pg_backend_pid()")
        .await
        .unwrap();
    let held: i32 = a
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let second = b.query_one(&statement, &[&21i32]).await.unwrap();
    assert_eq!(second.get::<_, i32>(0), 42);
    assert_ne!(
        second.get::<_, i32>(1),
        held,
        "b ran on the other server connection"
    );
    a.batch_execute("COMMIT").await.unwrap();
    for i in 0..10i32 {
        let row = b.query_one(&statement, &[&i]).await.unwrap();
        assert_eq!(row.get::<_, i32>(0), 2 * i);
    }
}

#[tokio::test]
async fn pipelined_queries_of_two_clients_all_get_their_own_answers() {
    let proxy = proxy_with_pool_size(1).await;
    let a = proxy.connect().await;
    let b = proxy.connect().await;
    let statement = a.prepare("SELECT $1::int4 + 1000").await.unwrap();
    // tokio-postgres writes every request before reading any response.
    let a_queries = (0..20i32).map(|i| {
        let (a, statement) = (&a, &statement);
        async move {
            (
                i,
                a.query_one(statement, &[&i])
                    .await
                    .unwrap()
                    .get::<_, i32>(0),
            )
        }
    });
    let b_queries = (0..20i32).map(|i| {
        let b = &b;
        async move {
            (
                i,
                b.query_one("SELECT $1::int4 * -1", &[&i])
                    .await
                    .unwrap()
                    .get::<_, i32>(0),
            )
        }
    });
    let (a_results, b_results) = tokio::time::timeout(
        HANG_GUARD,
        futures_util::future::join(
            futures_util::future::join_all(a_queries),
            futures_util::future::join_all(b_queries),
        ),
    )
    .await
    .expect("every pipelined query is answered");
    assert!(
        a_results.iter().all(|&(i, got)| got == i + 1000),
        "{a_results:?}"
    );
    assert!(b_results.iter().all(|&(i, got)| got == -i), "{b_results:?}");
}

#[tokio::test]
async fn closed_statement_can_be_prepared_again() {
    let proxy = proxy_with_pool_size(1).await;
    let a = proxy.connect().await;
    let b = proxy.connect().await;
    let text = "SELECT $1::int4 * 3";
    let b_statement = b.prepare(text).await.unwrap();
    let statement = a.prepare(text).await.unwrap();
    assert_eq!(
        a.query_one(&statement, &[&2i32])
            .await
            .unwrap()
            .get::<_, i32>(0),
        6
    );
    drop(statement); // tokio-postgres sends Close for it
    let again = a.prepare(text).await.unwrap();
    assert_eq!(
        a.query_one(&again, &[&5i32])
            .await
            .unwrap()
            .get::<_, i32>(0),
        15
    );
    // The other client's statement of the same text was not affected by the Close.
    assert_eq!(
        b.query_one(&b_statement, &[&7i32])
            .await
            .unwrap()
            .get::<_, i32>(0),
        21
    );
}

#[tokio::test]
async fn prepared_statement_survives_another_clients_discard_all() {
    let proxy = proxy_with_pool_size(1).await;
    let a = proxy.connect().await;
    let b = proxy.connect().await;
    let statement = b.prepare("SELECT $1::text || '!'").await.unwrap();
    assert_eq!(
        b.query_one(&statement, &[&"one"])
            .await
            .unwrap()
            .get::<_, String>(0),
        "one!"
    );
    a.batch_execute("DISCARD ALL").await.unwrap();
    assert_eq!(
        b.query_one(&statement, &[&"two"])
            .await
            .unwrap()
            .get::<_, String>(0),
        "two!"
    );
    a.batch_execute("DEALLOCATE ALL").await.unwrap();
    assert_eq!(
        b.query_one(&statement, &[&"three"])
            .await
            .unwrap()
            .get::<_, String>(0),
        "three!"
    );
}

#[tokio::test]
async fn prepared_statement_survives_a_discard_all_that_failed() {
    let proxy = proxy_with_pool_size(1).await;
    let client = proxy.connect().await;
    let statement = client.prepare("SELECT $1::int4 - 1").await.unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    // DISCARD ALL cannot run inside a transaction block: the server keeps its statements.
    assert_eq!(sqlstate(client.batch_execute("DISCARD ALL").await), "25001");
    client.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(
        client
            .query_one(&statement, &[&10i32])
            .await
            .unwrap()
            .get::<_, i32>(0),
        9
    );
    let again = client.prepare("SELECT $1::int4 - 1").await.unwrap();
    assert_eq!(
        client
            .query_one(&again, &[&3i32])
            .await
            .unwrap()
            .get::<_, i32>(0),
        2
    );
}

// ---------------------------------------------------------------------------------------------
// Client settings

/// The settings a client sees, read both with the simple and with the extended protocol.
async fn visible_settings(client: &Client) -> Vec<String> {
    let mut seen = Vec::new();
    for name in [
        "statement_timeout",
        "search_path",
        "application_name",
        "TimeZone",
    ] {
        seen.push(simple_value(client, &format!("SHOW {name}")).await);
    }
    let row = client
        .query_one(
            "SELECT current_setting('statement_timeout'), current_setting('search_path'),
                    current_setting('application_name'), current_setting('TimeZone')",
            &[],
        )
        .await
        .unwrap();
    let extended: Vec<String> = (0..4).map(|i| row.get(i)).collect();
    assert_eq!(seen, extended, "simple and extended protocol agree");
    seen
}

#[tokio::test]
async fn startup_parameters_follow_each_client_across_server_switches() {
    let proxy = proxy_with_pool_size(1).await;
    let primary = cluster().primary_port();
    let profiles = [
        (
            Some("-c statement_timeout=1234 -c search_path=a_schema,public -c TimeZone=Asia/Tokyo"),
            Some("alpha"),
        ),
        (
            Some("-c statement_timeout=5678 -c search_path=b_schema -c TimeZone=America/New_York"),
            Some("beta"),
        ),
        // No options: the server's defaults. (Without an application_name a client would see
        // the server connection's own, "pgshard", where PostgreSQL shows an empty string.)
        (None, Some("gamma")),
    ];
    let mut expected = Vec::new();
    let mut clients = Vec::new();
    for (options, application_name) in profiles {
        // What PostgreSQL itself shows a client connecting with these parameters.
        let direct = connect_with(primary, options, application_name).await;
        expected.push(visible_settings(&direct).await);
        clients.push(connect_with(proxy.port(), options, application_name).await);
    }
    assert_ne!(expected[0], expected[1]);
    assert_ne!(expected[1], expected[2]);
    for round in 0..5 {
        for (i, client) in clients.iter().enumerate() {
            assert_eq!(
                visible_settings(client).await,
                expected[i],
                "client {i}, round {round}"
            );
        }
    }
}

#[tokio::test]
async fn invalid_startup_setting_is_refused_and_leaves_no_settings_behind() {
    let proxy = proxy_with_pool_size(1).await;
    let primary = cluster().primary_port();
    let direct = connect_with(primary, None, Some("plain")).await;
    let defaults = visible_settings(&direct).await;
    let earlier = connect_with(
        proxy.port(),
        Some("-c statement_timeout=1234 -c search_path=x_schema"),
        Some("earlier"),
    )
    .await;
    assert_eq!(
        simple_value(&earlier, "SHOW statement_timeout").await,
        "1234ms"
    );
    drop(earlier);
    let mut bad = Config::new();
    bad.host("127.0.0.1")
        .port(proxy.port())
        .user("app")
        .password("app")
        .dbname("app");
    bad.options("-c statement_timeout=bogus");
    let refused = tokio::time::timeout(HANG_GUARD, bad.connect(NoTls))
        .await
        .expect("an answer");
    assert_eq!(sqlstate(refused.map(|(client, _)| client)), "22023");
    let plain = connect_with(proxy.port(), None, Some("plain")).await;
    assert_eq!(visible_settings(&plain).await, defaults);
}

#[tokio::test]
async fn timezone_set_by_a_client_follows_it_to_its_next_transaction() {
    let proxy = proxy_with_pool_size(1).await;
    let direct = connect_direct(cluster().primary_port()).await;
    let default_zone = simple_value(&direct, "SHOW TimeZone").await;
    assert_ne!(default_zone, "Asia/Tokyo");
    let a = proxy.connect().await;
    let b = proxy.connect().await;
    a.batch_execute("SET TimeZone = 'Asia/Tokyo'")
        .await
        .unwrap();
    assert_eq!(simple_value(&b, "SHOW TimeZone").await, default_zone);
    assert_eq!(simple_value(&a, "SHOW TimeZone").await, "Asia/Tokyo");
    assert_eq!(simple_value(&b, "SHOW TimeZone").await, default_zone);
    a.batch_execute("BEGIN").await.unwrap();
    let row = a
        .query_one("SELECT current_setting('TimeZone')", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "Asia/Tokyo");
    a.batch_execute("COMMIT").await.unwrap();
}

/// libpq sends PGTZ as `timezone`, in lower case; the server reports `TimeZone`.
#[tokio::test]
async fn timezone_set_after_a_lower_case_startup_parameter_follows_the_client() {
    let proxy = proxy_with_pool_size(1).await;
    let a = connect_with(proxy.port(), Some("-c timezone=Asia/Tokyo"), Some("lower")).await;
    let b = proxy.connect().await;
    assert_eq!(simple_value(&a, "SHOW TimeZone").await, "Asia/Tokyo");
    a.batch_execute("SET TimeZone = 'Europe/Paris'")
        .await
        .unwrap();
    // b takes the one server connection in between, so a's next statement gets it back from
    // the pool and has its settings applied again.
    simple_value(&b, "SELECT 1").await;
    assert_eq!(simple_value(&a, "SHOW TimeZone").await, "Europe/Paris");
}

#[tokio::test]
async fn settings_a_client_changes_with_set_do_not_leak_to_the_next_client() {
    let proxy = proxy_with_pool_size(1).await;
    let direct = connect_with(cluster().primary_port(), None, Some("plain")).await;
    let defaults = visible_settings(&direct).await;
    let setter = proxy.connect().await;
    setter
        .batch_execute("SET statement_timeout = 1")
        .await
        .unwrap();
    setter
        .execute("SET search_path = leak_schema", &[])
        .await
        .unwrap();
    let next = connect_with(proxy.port(), None, Some("plain")).await;
    assert_eq!(visible_settings(&next).await, defaults);
    let row = next.query_one("SELECT pg_sleep(0.05)::text", &[]).await;
    assert!(
        row.is_ok(),
        "not cancelled by another client's statement_timeout: {row:?}"
    );
}

#[tokio::test]
async fn reset_all_by_a_client_leaves_the_next_clients_settings_intact() {
    let proxy = proxy_with_pool_size(1).await;
    let options = Some("-c statement_timeout=1234 -c search_path=r_schema,public");
    let direct = connect_with(cluster().primary_port(), options, Some("same")).await;
    let expected = visible_settings(&direct).await;
    // Clients of one application connect alike; pools such as asyncpg's send RESET ALL.
    let a = connect_with(proxy.port(), options, Some("same")).await;
    let b = connect_with(proxy.port(), options, Some("same")).await;
    a.batch_execute("SELECT 1; RESET ALL").await.unwrap();
    assert_eq!(visible_settings(&b).await, expected);
    a.batch_execute("DISCARD ALL").await.unwrap();
    assert_eq!(visible_settings(&b).await, expected);
}

// ---------------------------------------------------------------------------------------------
// Server connections handed from client to client

#[tokio::test]
async fn client_leaving_mid_transaction_leaves_nothing_behind() {
    let proxy = proxy_with_pool_size(1).await;
    let a = proxy.connect().await;
    a.batch_execute("CREATE TABLE pool_abandoned (id int)")
        .await
        .unwrap();
    a.batch_execute("BEGIN; INSERT INTO pool_abandoned VALUES (1)")
        .await
        .unwrap();
    drop(a);
    let b = proxy.connect().await;
    assert_eq!(
        simple_value(&b, "SELECT count(*) FROM pool_abandoned").await,
        "0"
    );
    assert_eq!(
        simple_value(&b, "SELECT now() = statement_timestamp()").await,
        "t"
    );
    assert_eq!(
        simple_value(&b, "SELECT txid_current_if_assigned() IS NULL").await,
        "t"
    );
    let primary = connect_direct(cluster().primary_port()).await;
    assert_eq!(
        simple_value(&primary, "SELECT count(*) FROM pool_abandoned").await,
        "0"
    );
}

#[tokio::test]
async fn session_mode_resets_the_server_connection_between_clients() {
    let proxy = start_proxy(&base_config_with(&[
        ("pool_mode = \"transaction\"", "pool_mode = \"session\""),
        ("size = 4", "size = 1"),
    ]))
    .await;
    let direct = connect_direct(cluster().primary_port()).await;
    let default_path = simple_value(&direct, "SHOW search_path").await;
    let a = proxy.connect().await;
    let pid = simple_value(&a, "SELECT pg_backend_pid()").await;
    a.batch_execute(
        "SET search_path = pool_session_schema, public;
         CREATE TEMP TABLE pool_session_tmp (id int);
         PREPARE pool_session_stmt AS SELECT 1;",
    )
    .await
    .unwrap();
    assert_ne!(simple_value(&a, "SHOW search_path").await, default_path);
    drop(a);
    let b = proxy.connect().await;
    assert_eq!(
        simple_value(&b, "SELECT pg_backend_pid()").await,
        pid,
        "the only server connection was reused"
    );
    assert_eq!(simple_value(&b, "SHOW search_path").await, default_path);
    assert_eq!(
        simple_value(&b, "SELECT to_regclass('pool_session_tmp') IS NULL").await,
        "t"
    );
    assert_eq!(
        simple_value(&b, "SELECT count(*) FROM pg_prepared_statements").await,
        "0"
    );
}

#[tokio::test]
async fn checkout_timeout_gives_53300_and_the_client_stays_usable() {
    let proxy = start_proxy(&base_config_with(&[
        ("size = 4", "size = 1"),
        ("checkout_timeout_ms = 5000", "checkout_timeout_ms = 300"),
    ]))
    .await;
    let waiting = proxy.connect().await;
    let holding = proxy.connect().await;
    holding.batch_execute("BEGIN; SELECT 1").await.unwrap();
    assert_eq!(sqlstate(waiting.simple_query("SELECT 1").await), "53300");
    assert_eq!(sqlstate(waiting.query("SELECT 1", &[]).await), "53300");
    holding.batch_execute("COMMIT").await.unwrap();
    assert_eq!(simple_value(&waiting, "SELECT 'served'").await, "served");
    let row = waiting.query_one("SELECT 2", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 2);
}

#[tokio::test]
async fn client_connections_over_the_limit_get_53300() {
    let proxy = start_proxy(&base_config_with(&[(
        "pool_mode = \"transaction\"",
        "pool_mode = \"transaction\"\nmax_client_connections = 2",
    )]))
    .await;
    let first = proxy.connect().await;
    let second = proxy.connect().await;
    let third = tokio_postgres::connect(&proxy.url("app", "app"), NoTls).await;
    assert_eq!(sqlstate(third.map(|(client, _)| client)), "53300");
    assert_eq!(simple_value(&first, "SELECT 1").await, "1");
    assert_eq!(simple_value(&second, "SELECT 2").await, "2");
}

// ---------------------------------------------------------------------------------------------
// Server connections that die

/// Terminates the server process `pid` and waits until it is gone.
async fn terminate_server_process(pid: &str) {
    let primary = connect_direct(cluster().primary_port()).await;
    let pid: i32 = pid.parse().unwrap();
    primary
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    tokio::time::timeout(HANG_GUARD, async {
        let alive = "SELECT count(*) FROM pg_stat_activity WHERE pid = $1";
        while primary
            .query_one(alive, &[&pid])
            .await
            .unwrap()
            .get::<_, i64>(0)
            > 0
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the terminated server process is gone");
}

#[tokio::test]
async fn idle_server_connection_killed_is_replaced_unnoticed() {
    let proxy = proxy_with_pool_size(1).await;
    let client = proxy.connect().await;
    let pid = simple_value(&client, "SELECT pg_backend_pid()").await;
    terminate_server_process(&pid).await;
    assert_eq!(
        simple_value(&client, "SELECT 'on a new server connection'").await,
        "on a new server connection"
    );
    assert_ne!(simple_value(&client, "SELECT pg_backend_pid()").await, pid);
}

#[tokio::test]
async fn server_connection_killed_mid_transaction_fails_only_its_client() {
    let proxy = proxy_with_pool_size(1).await;
    let victim = proxy.connect().await;
    victim.batch_execute("BEGIN").await.unwrap();
    let pid = simple_value(&victim, "SELECT pg_backend_pid()").await;
    terminate_server_process(&pid).await;
    assert!(
        victim.simple_query("SELECT 1").await.is_err(),
        "the transaction is lost"
    );
    let other = tokio::time::timeout(HANG_GUARD, proxy.connect())
        .await
        .expect("the pool is free");
    assert_eq!(
        simple_value(&other, "SELECT 'still serving'").await,
        "still serving"
    );
}

// ---------------------------------------------------------------------------------------------
// Nothing of one client's identity reaches the next client

/// Creates role `pooling_tenant` (granted to app) and two ways to become it without a SET tag:
/// a plpgsql function and (through set_config) a plain SELECT. Once per test process.
fn create_tenant_role() {
    static CREATED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    CREATED.get_or_init(create_tenant_role_now);
}

fn create_tenant_role_now() {
    let cluster = cluster();
    cluster
        .psql(
            cluster.primary_port(),
            "app",
            "DO $$ BEGIN \
               IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'pooling_tenant') THEN \
                 CREATE ROLE pooling_tenant NOLOGIN; GRANT pooling_tenant TO app; \
               END IF; END $$; \
             CREATE OR REPLACE FUNCTION public.pooling_become_tenant() RETURNS text \
               LANGUAGE plpgsql AS $f$ BEGIN EXECUTE 'SET ROLE pooling_tenant'; \
               RETURN current_user; END $f$; \
             GRANT EXECUTE ON FUNCTION public.pooling_become_tenant() TO app;",
        )
        .expect("creating the tenant role");
}

/// Every way a client can change its role, as one simple-query string that also reports
/// `current_user` right after (in the same server session).
const BECOME_TENANT: &[&str] = &[
    "SET ROLE pooling_tenant; SELECT current_user",
    "SET SESSION ROLE pooling_tenant; SELECT current_user",
    "SELECT set_config('role', 'pooling_tenant', false); SELECT current_user",
    "SELECT public.pooling_become_tenant(); SELECT current_user",
    "DO $$ BEGIN EXECUTE 'SET ROLE pooling_tenant'; END $$; SELECT current_user",
];

/// The last row's single value of a simple query string.
async fn last_value(client: &Client, sql: &str) -> String {
    let messages = client.simple_query(sql).await.unwrap();
    messages
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(row.get(0).unwrap_or("NULL").to_string()),
            _ => None,
        })
        .last()
        .unwrap_or_else(|| panic!("{sql} returns rows"))
}

#[tokio::test]
async fn a_role_set_by_one_client_never_reaches_the_next() {
    create_tenant_role();
    // One server connection, so the second client gets the very connection the first used.
    let proxy = proxy_with_pool_size(1).await;
    for become_tenant in BECOME_TENANT {
        // The client leaves after changing its role.
        let a = proxy.connect().await;
        assert_eq!(
            last_value(&a, become_tenant).await,
            "pooling_tenant",
            "{become_tenant} changes the role within its own statement"
        );
        drop(a);
        let b = proxy.connect().await;
        assert_eq!(
            simple_value(&b, "SELECT current_user || '/' || session_user").await,
            "app/app",
            "after another client ran {become_tenant}"
        );
        // The client stays, and another one runs between its statements.
        let a = proxy.connect().await;
        assert_eq!(last_value(&a, become_tenant).await, "pooling_tenant");
        assert_eq!(
            simple_value(&b, "SELECT current_user").await,
            "app",
            "while another client that ran {become_tenant} is still connected"
        );
        // Over the extended protocol too.
        let row = b.query_one("SELECT current_user::text", &[]).await.unwrap();
        assert_eq!(row.get::<_, String>(0), "app");
        drop(a);
    }
}

#[tokio::test]
async fn a_role_set_over_the_extended_protocol_never_reaches_the_next_client() {
    create_tenant_role();
    let proxy = proxy_with_pool_size(1).await;
    let a = proxy.connect().await;
    let become_tenant = a
        .prepare("SELECT set_config('role', 'pooling_tenant', false)")
        .await
        .unwrap();
    let row = a.query_one(&become_tenant, &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "pooling_tenant");
    let b = proxy.connect().await;
    let row = b.query_one("SELECT current_user::text", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "app");
    // The prepared statement runs again on the one connection, then another client comes.
    a.query_one(&become_tenant, &[]).await.unwrap();
    drop(a);
    let row = b.query_one("SELECT current_user::text", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "app");
}

#[tokio::test]
async fn session_mode_hands_on_no_role_either() {
    create_tenant_role();
    let proxy = start_proxy(&base_config_with(&[
        ("pool_mode = \"transaction\"", "pool_mode = \"session\""),
        ("size = 4", "size = 1"),
    ]))
    .await;
    for become_tenant in BECOME_TENANT {
        let a = proxy.connect().await;
        assert_eq!(last_value(&a, become_tenant).await, "pooling_tenant");
        // In session mode the role lasts for the client's session, as on PostgreSQL.
        assert_eq!(
            simple_value(&a, "SELECT current_user").await,
            "pooling_tenant"
        );
        drop(a);
        let b = tokio::time::timeout(HANG_GUARD, proxy.connect())
            .await
            .expect("the one server connection is released when the client leaves");
        assert_eq!(
            simple_value(&b, "SELECT current_user || '/' || session_user").await,
            "app/app",
            "after another client ran {become_tenant}"
        );
    }
}

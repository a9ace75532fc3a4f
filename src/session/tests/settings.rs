//! Settings and roles a client changes itself: a CommandComplete `SET` (or a statement that may
//! change the role unseen, such as `set_config`) makes the next checkout of that connection start
//! with `SET SESSION AUTHORIZATION DEFAULT;RESET ALL;`, so no client inherits another's; settings
//! the server reports as changed follow the client to its next connection.

use super::harness::{on, one_shard};
use super::harness::{Batch, Msgs, RawClient, ScriptedServer};

const RESET: &str = r#"Q "SET SESSION AUTHORIZATION DEFAULT;RESET ALL;""#;

/// Scripts a simple query answered with `tag`, and runs it.
async fn run(server: &ScriptedServer, client: &mut RawClient, sql: &str, tag: &str) {
    server.script([on(&[&format!("Q {sql:?}")]).reply(Msgs::new().command(tag).ready(b'I'))]);
    let got = client.request(Batch::new().query(sql)).await;
    assert_eq!(got, [format!("C {tag:?}"), "Z I".to_string()]);
}

#[tokio::test]
async fn a_set_makes_the_next_checkout_reset_the_connection_first() {
    let server = ScriptedServer::start().await;
    let shared = one_shard(&server, 1);
    let mut client = RawClient::connect(&shared).await;
    run(&server, &mut client, "SELECT 2", "SELECT 1").await;
    run(&server, &mut client, "SET ROLE admin", "SET").await;
    run(&server, &mut client, "SELECT 3", "SELECT 1").await;
    run(&server, &mut client, "SELECT 4", "SELECT 1").await;
    assert_eq!(
        server.frames(0),
        [
            r#"Q "SELECT 2""#,
            r#"Q "SET ROLE admin""#,
            RESET,
            r#"Q "SELECT 3""#,
            r#"Q "SELECT 4""#,
        ],
        "a reset after the SET, and only then"
    );
    server.assert_done();
}

#[tokio::test]
async fn set_config_in_a_select_resets_the_connection_too() {
    let server = ScriptedServer::start().await;
    let shared = one_shard(&server, 1);
    let mut client = RawClient::connect(&shared).await;
    let sql = "SELECT set_config('role', 'admin', false)";
    run(&server, &mut client, sql, "SELECT 1").await;
    // Another client gets the connection back as the login user.
    let mut next = RawClient::connect(&shared).await;
    run(&server, &mut next, "SELECT 2", "SELECT 1").await;
    assert_eq!(
        server.frames(0),
        [format!("Q {sql:?}").as_str(), RESET, r#"Q "SELECT 2""#]
    );
    server.assert_done();
}

#[tokio::test]
async fn a_reported_setting_follows_the_client_after_the_reset() {
    let server = ScriptedServer::start().await;
    let shared = one_shard(&server, 1);
    let mut client = RawClient::connect(&shared).await;
    let sql = "SET TimeZone = 'Europe/Paris'";
    let reported = Msgs::new()
        .parameter("TimeZone", "Europe/Paris")
        .command("SET")
        .ready(b'I');
    server.script([on(&[&format!("Q {sql:?}")]).reply(reported)]);
    let got = client.request(Batch::new().query(sql)).await;
    assert_eq!(got, ["S TimeZone=Europe/Paris", r#"C "SET""#, "Z I"]);
    run(&server, &mut client, "SELECT 2", "SELECT 1").await;
    let reset = "SET SESSION AUTHORIZATION DEFAULT;RESET ALL;\
                 SELECT pg_catalog.set_config('TimeZone', 'Europe/Paris', false);";
    assert_eq!(
        server.frames(0),
        [
            format!("Q {sql:?}"),
            format!("Q {reset:?}"),
            r#"Q "SELECT 2""#.into()
        ]
    );
    server.assert_done();
}

//! Settings and roles a client changes itself: after a CommandComplete `SET` (or a statement
//! that may change the session unseen, such as `set_config`), the session reads back what the
//! server session holds at its next quiet point; that follows the client to every connection it
//! uses next, and is undone (only what differs) for the next client. A client that leaves before
//! that read leaves a connection that is reset in full.

use super::harness::{on, one_shard};
use super::harness::{Batch, Msgs, RawClient, ScriptedServer};

const CAPTURE: &str = r#"Q "SELECT 'statement_timeout', pg_catalog.current_setting*"#;

/// Scripts a simple query answered with `tag`, and runs it.
async fn run(server: &ScriptedServer, client: &mut RawClient, sql: &str, tag: &str) {
    server.script([on(&[&format!("Q {sql:?}")]).reply(Msgs::new().command(tag).ready(b'I'))]);
    let got = client.request(Batch::new().query(sql)).await;
    assert_eq!(got, [format!("C {tag:?}"), "Z I".to_string()]);
}

/// Runs `sql` (answered with `tag`); the session read back then finds `settings`.
async fn run_read_back(
    server: &ScriptedServer,
    client: &mut RawClient,
    sql: &str,
    tag: &str,
    settings: &[(&str, &str)],
) {
    server.script([
        on(&[&q(sql)]).reply(Msgs::new().command(tag).ready(b'I')),
        on(&[CAPTURE]).reply(captured(settings)),
    ]);
    let got = client.request(Batch::new().query(sql)).await;
    assert_eq!(got, [format!("C {tag:?}"), "Z I".to_string()]);
}

/// A capture answer: these settings, nothing pinning.
fn captured(settings: &[(&str, &str)]) -> Msgs {
    let mut msgs = Msgs::new();
    for (name, value) in settings {
        msgs = msgs.row(&[name, value]);
    }
    msgs.row(&["", ""]).command("SELECT 2").ready(b'I')
}

/// The simple query pgshard sends to bring a connection to other settings.
fn q(sql: &str) -> String {
    format!("Q {sql:?}")
}

#[tokio::test]
async fn a_role_read_back_follows_the_client_and_is_undone_for_the_next() {
    let server = ScriptedServer::start().await;
    let shared = one_shard(&server, 1);
    let mut client = RawClient::connect(&shared).await;
    run(&server, &mut client, "SELECT 2", "SELECT 1").await;
    run_read_back(
        &server,
        &mut client,
        "SET ROLE admin",
        "SET",
        &[("role", "admin")],
    )
    .await;
    run(&server, &mut client, "SELECT 3", "SELECT 1").await;
    // Another client (pool of one: the same connection) is back to the login user ...
    let mut next = RawClient::connect(&shared).await;
    run(&server, &mut next, "SELECT 4", "SELECT 1").await;
    drop(next);
    // ... and the first one gets its role again.
    run(&server, &mut client, "SELECT 5", "SELECT 1").await;
    assert_eq!(
        server.frames(0),
        [
            q("SELECT 2"),
            q("SET ROLE admin"),
            server.frames(0)[2].clone(),
            q("SELECT 3"),
            q("SET SESSION AUTHORIZATION DEFAULT;"),
            q("SELECT 4"),
            q("SET SESSION AUTHORIZATION DEFAULT;\
               SELECT pg_catalog.set_config(E'role', E'admin', false);"),
            q("SELECT 5"),
        ],
    );
    assert!(server.frames(0)[2].starts_with(&CAPTURE[..CAPTURE.len() - 1]));
    server.assert_done();
}

#[tokio::test]
async fn set_config_in_a_select_is_read_back_too() {
    let server = ScriptedServer::start().await;
    let shared = one_shard(&server, 1);
    let mut client = RawClient::connect(&shared).await;
    let sql = "SELECT set_config('role', 'admin', false)";
    run_read_back(&server, &mut client, sql, "SELECT 1", &[("role", "admin")]).await;
    drop(client);
    // Another client gets the connection back as the login user.
    let mut next = RawClient::connect(&shared).await;
    run(&server, &mut next, "SELECT 2", "SELECT 1").await;
    let frames = server.frames(0);
    assert_eq!(frames.len(), 4, "{frames:?}");
    assert_eq!(frames[0], q(sql));
    assert_eq!(
        frames[2..],
        [q("SET SESSION AUTHORIZATION DEFAULT;"), q("SELECT 2")]
    );
    server.assert_done();
}

#[tokio::test]
async fn a_client_that_leaves_inside_a_transaction_after_a_set_leaves_nothing_behind() {
    let server = ScriptedServer::start().await;
    let shared = one_shard(&server, 1);
    let mut client = RawClient::connect(&shared).await;
    in_transaction(&server, &mut client, "SET ROLE admin").await;
    drop(client);
    let mut next = RawClient::connect(&shared).await;
    run(&server, &mut next, "SELECT 2", "SELECT 1").await;
    // Rolled back, then DISCARD ALL (session state unread), then the next client's query.
    let frames = server.frames(0);
    assert_eq!(
        frames[2..],
        [q("ROLLBACK"), q("DISCARD ALL"), q("SELECT 2")],
        "{frames:?}"
    );
    server.assert_done();
}

#[tokio::test]
async fn a_reported_setting_follows_the_client_to_its_next_connection() {
    let server = ScriptedServer::start().await;
    let shared = one_shard(&server, 1);
    let mut client = RawClient::connect(&shared).await;
    let sql = "SET TimeZone = 'Europe/Paris'";
    let reported = Msgs::new()
        .parameter("TimeZone", "Europe/Paris")
        .command("SET")
        .ready(b'I');
    server.script([
        on(&[&q(sql)]).reply(reported),
        on(&[CAPTURE]).reply(captured(&[("timezone", "Europe/Paris")])),
    ]);
    let got = client.request(Batch::new().query(sql)).await;
    assert_eq!(got, ["S TimeZone=Europe/Paris", r#"C "SET""#, "Z I"]);
    let mut next = RawClient::connect(&shared).await;
    run(&server, &mut next, "SELECT 2", "SELECT 1").await;
    drop(next);
    run(&server, &mut client, "SELECT 3", "SELECT 1").await;
    let frames = server.frames(0);
    assert_eq!(
        frames[2..],
        [
            q(r#"RESET "timezone";"#),
            q("SELECT 2"),
            q("SELECT pg_catalog.set_config(E'timezone', E'Europe/Paris', false);"),
            q("SELECT 3"),
        ],
        "{frames:?}"
    );
    server.assert_done();
}

#[tokio::test]
async fn a_set_local_needs_no_read_back() {
    let server = ScriptedServer::start().await;
    let shared = one_shard(&server, 1);
    let mut client = RawClient::connect(&shared).await;
    in_transaction(&server, &mut client, "SET LOCAL work_mem = '1MB'").await;
    run(&server, &mut client, "COMMIT", "COMMIT").await;
    run(&server, &mut client, "SELECT 2", "SELECT 1").await;
    assert_eq!(
        server.frames(0),
        [
            q("BEGIN"),
            q("SET LOCAL work_mem = '1MB'"),
            q("COMMIT"),
            q("SELECT 2")
        ]
    );
    server.assert_done();
}

/// BEGIN (held back by pgshard, sent with the statement), then `sql` answered with `SET`.
async fn in_transaction(server: &ScriptedServer, client: &mut RawClient, sql: &str) {
    server.script([
        on(&[r#"Q "BEGIN""#]).reply(Msgs::new().command("BEGIN").ready(b'T')),
        on(&[&q(sql)]).reply(Msgs::new().command("SET").ready(b'T')),
    ]);
    let got = client.request(Batch::new().query("BEGIN")).await;
    assert_eq!(got, ["C \"BEGIN\"", "Z T"]);
    let got = client.request(Batch::new().query(sql)).await;
    assert_eq!(got, ["C \"SET\"", "Z T"]);
}

#[tokio::test]
async fn the_unnamed_statement_goes_again_after_a_read_back_dropped_it() {
    // A read-back is a simple query, which drops the server's unnamed statement: a pinned
    // client's later Describe of it must bring its Parse again.
    let server = ScriptedServer::start().await;
    let shared = one_shard(&server, 1);
    let mut client = RawClient::connect(&shared).await;
    let pinned = Msgs::new()
        .row(&["", "LISTEN"])
        .command("SELECT 1")
        .ready(b'I');
    server.script([
        on(&[&q("LISTEN ch")]).reply(Msgs::new().command("LISTEN").ready(b'I')),
        on(&[r#"Q "SET LOCAL statement_timeout = 0;*"#]).reply(pinned.clone()),
    ]);
    let got = client.request(Batch::new().query("LISTEN ch")).await;
    assert_eq!(got, [r#"C "LISTEN""#, "Z I"]);
    server
        .script([on(&[r#"P "" "SELECT 1""#, "S"]).reply(Msgs::new().parse_complete().ready(b'I'))]);
    let got = client
        .request(Batch::new().parse("", "SELECT 1", &[]).sync())
        .await;
    assert_eq!(got, ["1", "Z I"]);
    server.script([
        on(&[&q("SET work_mem = '1MB'")]).reply(Msgs::new().command("SET").ready(b'I')),
        on(&[CAPTURE]).reply(pinned),
        on(&[r#"P "" "SELECT 1""#, "D*", "S"]).reply(
            Msgs::new()
                .parse_complete()
                .params(&[])
                .no_data()
                .ready(b'I'),
        ),
    ]);
    let got = client
        .request(Batch::new().query("SET work_mem = '1MB'"))
        .await;
    assert_eq!(got, [r#"C "SET""#, "Z I"]);
    let got = client
        .request(Batch::new().describe_statement("").sync())
        .await;
    assert_eq!(
        got,
        ["t []", "n", "Z I"],
        "the Parse pgshard sent again is not the client's"
    );
    server.assert_done();
}

//! Prepared statements in transaction mode: a client's statement follows it to whichever server
//! connection it gets (the Parse, renamed `pgshard_<hash>`, goes first where it is missing), and a
//! connection that has it already is not sent it again.

use tokio_postgres::types::Type;

use super::harness::{on, one_shard, server_name, within};
use super::harness::{Batch, Msgs, PgClient, RawClient, ScriptedServer};

const SQL: &str = "SELECT name FROM users WHERE user_id = $1";

/// What a server answers to tokio-postgres's prepare (Parse, Describe, Sync).
fn described() -> Msgs {
    Msgs::new()
        .parse_complete()
        .params(&[20])
        .columns(&[("name", 25)])
        .ready(b'I')
}

#[tokio::test]
async fn a_statement_is_parsed_again_on_the_next_server_connection_before_its_bind() {
    let server = ScriptedServer::start().await;
    let shared = one_shard(&server, 2);
    let name = server_name(SQL, &[20]);
    let parse = format!(r#"P "{name}" "{SQL}" [20]"#);
    let a = PgClient::connect(&shared).await;
    server.script([on(&[&parse, &format!(r#"D S "{name}""#), "S"]).reply(described())]);
    let statement = within("prepare", a.client.prepare_typed(SQL, &[Type::INT8]))
        .await
        .expect("prepare");
    assert_eq!(
        server.conn_count(),
        1,
        "login and prepare on one connection"
    );

    // Client B holds that connection in a transaction, so A's next statement gets another one.
    let b = PgClient::connect(&shared).await;
    server.script([on(&[r#"Q "BEGIN""#]).reply(Msgs::new().command("BEGIN").ready(b'T'))]);
    within("BEGIN", b.client.batch_execute("BEGIN"))
        .await
        .expect("BEGIN");

    let bind = format!(r#"B "" "{name}" [x{:016x}]"#, 7);
    let answer = Msgs::new()
        .parse_complete()
        .bind_complete()
        .row(&["ann"])
        .command("SELECT 1")
        .ready(b'I');
    server.script([on(&[&parse, &bind, r#"E """#, "S"]).reply(answer)]);
    let rows = within("query", a.client.query(&statement, &[&7i64]))
        .await
        .expect("query on the second connection");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, &str>(0), "ann");
    assert_eq!(server.conn_count(), 2);
    assert_eq!(
        server.scripted_frames(1),
        [parse.as_str(), &bind, r#"E """#, "S"],
        "the renamed Parse came first on the new connection"
    );
    server.assert_done();
    drop(statement);
}

#[tokio::test]
async fn a_parse_the_connection_already_has_is_answered_by_pgshard() {
    let server = ScriptedServer::start().await;
    let shared = one_shard(&server, 1);
    let name = server_name(SQL, &[20]);
    let parse = format!(r#"P "{name}" "{SQL}" [20]"#);
    let a = PgClient::connect(&shared).await;
    server.script([on(&[&parse, &format!(r#"D S "{name}""#), "S"]).reply(described())]);
    let first = within("prepare", a.client.prepare_typed(SQL, &[Type::INT8]))
        .await
        .expect("prepare");

    // Another client prepares the same text on the same (only) connection: only the Describe
    // reaches the server; the ParseComplete is pgshard's.
    let b = PgClient::connect(&shared).await;
    let described_again = Msgs::new().params(&[20]).columns(&[("name", 25)]);
    server.script([on(&[&format!(r#"D S "{name}""#), "S"]).reply(described_again.ready(b'I'))]);
    let second = within("prepare again", b.client.prepare_typed(SQL, &[Type::INT8]))
        .await
        .expect("prepare again");
    assert_eq!(second.params(), [Type::INT8]);
    assert_eq!(second.columns()[0].name(), "name");
    assert_eq!(server.conn_count(), 1);
    server.assert_done();
    drop((first, second));
}

#[tokio::test]
async fn the_unnamed_statement_is_parsed_again_on_the_next_connection_before_its_describe() {
    let server = ScriptedServer::start().await;
    let shared = one_shard(&server, 2);
    let mut a = RawClient::connect(&shared).await;
    let parse = r#"P "" "SELECT 1 AS a""#;
    server.script([on(&[parse, "S"]).reply(Msgs::new().parse_complete().ready(b'I'))]);
    let got = a
        .request(Batch::new().parse("", "SELECT 1 AS a", &[]).sync())
        .await;
    assert_eq!(got, ["1", "Z I"]);

    // Client B holds that connection in a transaction, so A's next batch gets another one.
    let mut b = RawClient::connect(&shared).await;
    server.script([on(&[r#"Q "BEGIN""#]).reply(Msgs::new().command("BEGIN").ready(b'T'))]);
    assert_eq!(
        b.request(Batch::new().query("BEGIN")).await,
        [r#"C "BEGIN""#, "Z T"]
    );

    let described = Msgs::new()
        .parse_complete()
        .params(&[])
        .columns(&[("a", 23)])
        .ready(b'I');
    server.script([on(&[parse, r#"D S """#, "S"]).reply(described)]);
    let got = a.request(Batch::new().describe_statement("").sync()).await;
    assert_eq!(
        got,
        ["t []", "T [a]", "Z I"],
        "pgshard's own ParseComplete is dropped"
    );
    assert_eq!(server.conn_count(), 2);
    server.assert_done();
}

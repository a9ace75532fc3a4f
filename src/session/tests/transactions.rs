//! Held-back BEGIN: pgshard answers BEGIN itself and sends it with the first statement that picks
//! a shard, over the simple protocol and as tokio-postgres sends a transaction (simple BEGIN, then
//! a prepared statement described on the default shard outside the transaction).

use tokio_postgres::types::Type;

use super::harness::{key_on, on, server_name, two_shards, within};
use super::harness::{Batch, Msgs, PgClient, RawClient, ScriptedServer};

#[tokio::test]
async fn a_fatal_error_answering_the_held_back_begin_still_reaches_the_client() {
    let (s0, s1) = (ScriptedServer::start().await, ScriptedServer::start().await);
    let shared = two_shards(&s0, &s1, 1);
    let mut client = RawClient::connect(&shared).await;
    let key = key_on(&shared, 1);
    client.request(Batch::new().query("BEGIN")).await;

    let insert = format!("INSERT INTO users (user_id, name) VALUES ({key}, 'ann')");
    let shutdown = Msgs::new().fatal(
        "57P01",
        "terminating connection due to administrator command",
    );
    s1.script([on(&[r#"Q "BEGIN""#, &format!("Q {insert:?}")]).reply(shutdown)]);
    client.send(Batch::new().query(&insert)).await;
    let got = client.until_closed().await;

    // The server's FATAL answered pgshard's own BEGIN, which the client never saw sent: it is
    // told that the server connection was lost, and the session ends.
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].starts_with("E FATAL 08006"), "{got:?}");
}

#[tokio::test]
async fn begin_waits_for_the_first_statement_and_goes_with_it_to_that_statements_shard() {
    let (s0, s1) = (ScriptedServer::start().await, ScriptedServer::start().await);
    let shared = two_shards(&s0, &s1, 1);
    let mut client = RawClient::connect(&shared).await;
    let key = key_on(&shared, 1);

    let got = client.request(Batch::new().query("BEGIN")).await;
    assert_eq!(got, [r#"C "BEGIN""#, "Z T"], "answered by pgshard");
    assert!(
        s0.scripted_frames(0).is_empty(),
        "the login connection got nothing"
    );
    assert_eq!(
        s1.conn_count(),
        0,
        "no connection to the statement's shard yet"
    );

    let insert = format!("INSERT INTO users (user_id, name) VALUES ({key}, 'ann')");
    s1.script([
        on(&[r#"Q "BEGIN""#]).reply(Msgs::new().command("BEGIN").ready(b'T')),
        on(&[&format!("Q {insert:?}")]).reply(Msgs::new().command("INSERT 0 1").ready(b'T')),
        on(&[r#"Q "COMMIT""#]).reply(Msgs::new().command("COMMIT").ready(b'I')),
    ]);
    let got = client.request(Batch::new().query(&insert)).await;
    assert_eq!(
        got,
        [r#"C "INSERT 0 1""#, "Z T"],
        "BEGIN's own answer is not repeated"
    );
    let got = client.request(Batch::new().query("COMMIT")).await;
    assert_eq!(got, [r#"C "COMMIT""#, "Z I"]);

    let expected = [
        r#"Q "BEGIN""#.to_string(),
        format!("Q {insert:?}"),
        r#"Q "COMMIT""#.to_string(),
    ];
    assert_eq!(s1.scripted_frames(0), expected);
    assert!(
        s0.scripted_frames(0).is_empty(),
        "the default shard saw none of it"
    );
    s0.assert_done();
    s1.assert_done();
}

#[tokio::test]
async fn an_empty_transaction_never_reaches_a_server() {
    let s0 = ScriptedServer::start().await;
    let s1 = ScriptedServer::start().await;
    let shared = two_shards(&s0, &s1, 1);
    let mut client = RawClient::connect(&shared).await;
    let got = client.request(Batch::new().query("BEGIN")).await;
    assert_eq!(got, [r#"C "BEGIN""#, "Z T"]);
    let got = client.request(Batch::new().query("COMMIT")).await;
    assert_eq!(got, [r#"C "COMMIT""#, "Z I"]);
    assert!(s0.scripted_frames(0).is_empty());
    assert_eq!(s1.conn_count(), 0);
    s0.assert_done();
}

#[tokio::test]
async fn a_prepared_insert_in_a_transaction_is_described_outside_it_and_runs_after_begin() {
    let (s0, s1) = (ScriptedServer::start().await, ScriptedServer::start().await);
    let shared = two_shards(&s0, &s1, 1);
    let pg = PgClient::connect(&shared).await;
    let key = key_on(&shared, 1);
    let sql = "INSERT INTO users (user_id, name) VALUES ($1, 'ann')";
    let name = server_name(sql, &[20]);
    let parse = format!(r#"P "{name}" "{sql}" [20]"#);

    within("BEGIN", pg.client.batch_execute("BEGIN"))
        .await
        .expect("BEGIN");
    // tokio-postgres describes the statement before binding it: that runs on the default shard,
    // outside the transaction (its ReadyForQuery says idle; the client is told "in transaction").
    let described = Msgs::new().parse_complete().params(&[20]).no_data();
    s0.script([on(&[&parse, &format!(r#"D S "{name}""#), "S"]).reply(described.ready(b'I'))]);
    let statement = within("prepare", pg.client.prepare_typed(sql, &[Type::INT8]))
        .await
        .expect("prepare");

    // The Bind picks s1: BEGIN goes first, then the Parse s1 lacks, then the Bind.
    let bind = format!(r#"B "" "{name}" [x{key:016x}]"#);
    let inserted = Msgs::new()
        .parse_complete()
        .bind_complete()
        .command("INSERT 0 1")
        .ready(b'T');
    s1.script([
        on(&[r#"Q "BEGIN""#]).reply(Msgs::new().command("BEGIN").ready(b'T')),
        on(&[&parse, &bind, r#"E """#, "S"]).reply(inserted),
        on(&[r#"Q "COMMIT""#]).reply(Msgs::new().command("COMMIT").ready(b'I')),
    ]);
    let rows = within("insert", pg.client.execute(&statement, &[&key]))
        .await
        .expect("insert");
    assert_eq!(rows, 1);
    within("COMMIT", pg.client.batch_execute("COMMIT"))
        .await
        .expect("COMMIT");

    s0.assert_done();
    s1.assert_done();
    assert_eq!(
        s0.scripted_frames(0).len(),
        3,
        "only the Describe ran on s0"
    );
    drop(statement);
}

#[tokio::test]
async fn a_statement_pipelined_behind_one_that_opened_a_transaction_unseen_is_not_left_waiting() {
    // Found by the session fuzz target: `SELECT 1; BEGIN` is no BEGIN to pgshard, so the next
    // statement, bound for another shard, waited for the connection to be released, which a
    // transaction never is; and the session no longer read the client, so it hung for good.
    let (s0, s1) = (ScriptedServer::start().await, ScriptedServer::start().await);
    let shared = two_shards(&s0, &s1, 1);
    let mut client = RawClient::connect(&shared).await;
    let opens = "SELECT 1; BEGIN";
    let answer = Msgs::new().command("SELECT 1").command("BEGIN").ready(b'T');
    s0.script([on(&[&format!("Q {opens:?}")]).reply(answer)]);
    let other_shard = format!("SELECT * FROM users WHERE user_id = {}", key_on(&shared, 1));

    let got = client
        .request(Batch::new().query(opens).query(&other_shard))
        .await;
    let second = client.until_ready().await;

    assert_eq!(got, [r#"C "SELECT 1""#, r#"C "BEGIN""#, "Z T"]);
    // As when the client waits for the first answer before sending it: the transaction is on
    // s0, and a statement for s1 is refused inside it.
    assert_eq!(second, ["E ERROR 0A000", "Z E"]);
    assert_eq!(s1.conn_count(), 0);
    s0.assert_done();
}

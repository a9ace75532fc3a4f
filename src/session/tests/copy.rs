//! COPY FROM STDIN through a session: over the simple protocol, and as tokio-postgres sends it
//! over the extended protocol (Bind, Execute, Sync, then the data: the server ignores that Sync in
//! copy-in mode, so no ReadyForQuery is owed for it); and split across shards when the shards
//! refuse it.

use bytes::Bytes;
use futures_util::SinkExt;

use super::harness::{on, one_shard, server_name, two_shards, within};
use super::harness::{Batch, Msgs, PgClient, RawClient, ScriptedServer};

#[tokio::test]
async fn copy_from_stdin_is_forwarded_and_the_connection_released_after_it() {
    let server = ScriptedServer::start().await;
    let shared = one_shard(&server, 1);
    let mut client = RawClient::connect(&shared).await;
    let copy = "COPY users (user_id, name) FROM STDIN";
    server.script([
        on(&[&format!("Q {copy:?}")]).reply(Msgs::new().copy_in(2)),
        on(&[r#"d "1\tann\n""#, r#"d "2\tbob\n""#, "c"])
            .reply(Msgs::new().command("COPY 2").ready(b'I')),
    ]);

    client.send(Batch::new().query(copy)).await;
    assert_eq!(client.recv().await.as_deref(), Some("G 2"));
    let batch = Batch::new()
        .copy_data("1\tann\n")
        .copy_data("2\tbob\n")
        .copy_done();
    let got = client.request(batch).await;
    assert_eq!(got, [r#"C "COPY 2""#, "Z I"]);

    // The connection is free again: a second client (pool of 1) gets it.
    let mut other = RawClient::connect(&shared).await;
    let answer = Msgs::new().row(&["2"]).command("SELECT 1").ready(b'I');
    server.script([on(&[r#"Q "SELECT count(*) FROM users""#]).reply(answer)]);
    let got = other
        .request(Batch::new().query("SELECT count(*) FROM users"))
        .await;
    assert_eq!(got, ["D ['2']", r#"C "SELECT 1""#, "Z I"]);
    assert_eq!(server.conn_count(), 1);
    server.assert_done();
}

#[tokio::test]
async fn tokio_postgres_copy_in_skips_the_sync_the_server_ignores() {
    let server = ScriptedServer::start().await;
    let shared = one_shard(&server, 1);
    let pg = PgClient::connect(&shared).await;
    let copy = "COPY users (user_id, name) FROM STDIN";
    let name = server_name(copy, &[]);
    let described = Msgs::new().parse_complete().params(&[]).no_data();
    server.script([
        on(&[
            &format!(r#"P "{name}" "{copy}""#),
            &format!(r#"D S "{name}""#),
            "S",
        ])
        .reply(described.ready(b'I')),
        on(&[&format!(r#"B "" "{name}" []"#), r#"E """#, "S"])
            .reply(Msgs::new().bind_complete().copy_in(2)),
        // Then the data, CopyDone and tokio-postgres's second Sync.
        on(&[r#"d "1\tann\n2\tbob\n""#, "c", "S"]).reply(Msgs::new().command("COPY 2").ready(b'I')),
    ]);
    let statement = within("prepare", pg.client.prepare(copy))
        .await
        .expect("prepare");
    let sink = within("copy_in", pg.client.copy_in::<_, Bytes>(&statement))
        .await
        .expect("copy in");
    let mut sink = std::pin::pin!(sink);
    within(
        "copy data",
        sink.send(Bytes::from_static(b"1\tann\n2\tbob\n")),
    )
    .await
    .expect("copy data");
    let rows = within("copy finish", sink.as_mut().finish())
        .await
        .expect("finish");
    assert_eq!(rows, 2);

    // Nothing more is owed: the connection went back to the pool, and another client (pool of
    // 1) gets it.
    let mut other = RawClient::connect(&shared).await;
    let answer = Msgs::new().command("SELECT 0").ready(b'I');
    server.script([on(&[r#"Q "SELECT 0""#]).reply(answer)]);
    let got = other.request(Batch::new().query("SELECT 0")).await;
    assert_eq!(got, [r#"C "SELECT 0""#, "Z I"]);
    assert_eq!(server.conn_count(), 1);
    server.assert_done();
    drop(statement);
}

#[tokio::test]
async fn a_split_copy_the_shards_refuse_ends_with_their_error_and_rolls_them_back() {
    // Found by the session fuzz target: the shards' ReadyForQuery after the refused COPY left
    // them "in flight", so pgshard waited for another that never came, holding the session and
    // both connections forever.
    let (s0, s1) = (ScriptedServer::start().await, ScriptedServer::start().await);
    let shared = two_shards(&s0, &s1, 1);
    let mut client = RawClient::connect(&shared).await;
    let copy = "COPY users (user_id, nosuch) FROM STDIN";
    let refused = Msgs::new()
        .command("BEGIN")
        .ready(b'T')
        .error(
            "42703",
            r#"column "nosuch" of relation "users" does not exist"#,
        )
        .ready(b'E');
    for server in [&s0, &s1] {
        server.script([on(&[r#"Q "BEGIN""#, &format!("Q {copy:?}")]).reply(refused.clone())]);
    }

    let got = client.request(Batch::new().query(copy)).await;

    assert_eq!(got, ["E ERROR 42703", "Z I"]);
    // Both shards' transactions were rolled back, and the session goes on.
    for server in [&s0, &s1] {
        server.wait_received(0, r#"Q "ROLLBACK""#).await;
    }
    s0.script([on(&[r#"Q "SELECT 2""#]).reply(Msgs::new().command("SELECT 0").ready(b'I'))]);
    let got = client.request(Batch::new().query("SELECT 2")).await;
    assert_eq!(got, [r#"C "SELECT 0""#, "Z I"]);
    s0.assert_done();
    s1.assert_done();
}

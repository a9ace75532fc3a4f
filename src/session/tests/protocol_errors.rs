//! Malformed client frames: the client gets a FATAL 08P01 and the session ends; the server
//! connection it held is brought back to a clean state (ROLLBACK) or, with a query still running,
//! cancelled and closed. Never handed to the next client as it was.

use super::harness::{on, one_shard, within};
use super::harness::{Batch, Msgs, RawClient, ScriptedServer};

#[tokio::test]
async fn a_malformed_frame_in_a_transaction_ends_the_session_and_the_connection_is_rolled_back() {
    let server = ScriptedServer::start().await;
    let shared = one_shard(&server, 1);
    let mut client = RawClient::connect(&shared).await;
    server.script([on(&[r#"Q "BEGIN""#]).reply(Msgs::new().command("BEGIN").ready(b'T'))]);
    let got = client.request(Batch::new().query("BEGIN")).await;
    assert_eq!(got, [r#"C "BEGIN""#, "Z T"]);

    // A length below the 4 bytes of the length field itself.
    client.send(Batch::new().raw(b"Q\0\0\0\x02")).await;
    assert_eq!(client.until_closed().await, ["E FATAL 08P01"]);
    within("the session to end", client.disconnect())
        .await
        .expect("session");

    // The next client (pool of 1) gets the connection only after it was rolled back.
    let mut next = RawClient::connect(&shared).await;
    let answer = Msgs::new().command("SELECT 0").ready(b'I');
    server.script([on(&[r#"Q "SELECT 2""#]).reply(answer)]);
    let got = next.request(Batch::new().query("SELECT 2")).await;
    assert_eq!(got, [r#"C "SELECT 0""#, "Z I"]);
    assert_eq!(
        server.frames(0),
        [r#"Q "BEGIN""#, r#"Q "ROLLBACK""#, r#"Q "SELECT 2""#]
    );
    assert_eq!(server.conn_count(), 1);
    server.assert_done();
}

#[tokio::test]
async fn a_malformed_frame_during_a_query_leaves_that_connection_cancelled_and_closed() {
    let server = ScriptedServer::start().await;
    let shared = one_shard(&server, 1);
    let mut client = RawClient::connect(&shared).await;
    let slow = r#"Q "SELECT * FROM slow""#;
    let cancelled = Msgs::new()
        .error("57014", "canceling statement")
        .ready(b'I');
    server.script([on(&[slow]).reply_on_cancel(cancelled)]);
    client.send(Batch::new().query("SELECT * FROM slow")).await;
    server.wait_received(0, slow).await;

    // A length claiming 2 GiB: refused from the header alone.
    client.send(Batch::new().raw(b"Q\x7f\xff\xff\xff")).await;
    assert_eq!(client.until_closed().await, ["E FATAL 08P01"]);
    server.wait_closed(0).await;
    assert_eq!(server.cancels(), [server.key(0)]);
    assert_eq!(
        server.frames(0),
        [slow],
        "nothing after the query reached the server"
    );

    let mut next = RawClient::connect(&shared).await;
    let answer = Msgs::new().command("SELECT 0").ready(b'I');
    server.script([on(&[r#"Q "SELECT 2""#]).reply(answer)]);
    let got = next.request(Batch::new().query("SELECT 2")).await;
    assert_eq!(got, [r#"C "SELECT 0""#, "Z I"]);
    assert_eq!(
        server.conn_count(),
        2,
        "a new connection, not the abandoned one"
    );
    server.assert_done();
}

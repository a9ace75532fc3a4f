//! The login: requests a client writes together with its StartupMessage, without waiting for
//! ReadyForQuery, are answered after it (PostgreSQL reads them from the same buffer).

use super::harness::{on, one_shard};
use super::harness::{Batch, Msgs, RawClient, ScriptedServer};

#[tokio::test]
async fn a_query_sent_with_the_startup_message_is_answered_after_the_login() {
    // Found by the session fuzz target: the bytes read with the StartupMessage stayed in the
    // session's buffer until the client sent more, so this query was never answered.
    let server = ScriptedServer::start().await;
    let shared = one_shard(&server, 1);
    let answer = Msgs::new().command("SELECT 0").ready(b'I');
    server.script([on(&[r#"Q "SELECT 2""#]).reply(answer)]);

    let mut client = RawClient::connect_pipelined(&shared, Batch::new().query("SELECT 2")).await;

    assert_eq!(client.until_ready().await, [r#"C "SELECT 0""#, "Z I"]);
    server.assert_done();
}

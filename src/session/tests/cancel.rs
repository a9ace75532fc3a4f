//! Cancelling: a CancelRequest with a client's key (pgshard's BackendKeyData) reaches the server
//! running that client's query, under the server's own key; a connection a cancel was sent for
//! serves nobody else until the server has confirmed the cancel (closed its socket); a client
//! that goes away mid-query leaves a connection that is cancelled and closed, never handed to the
//! next client.

use std::sync::Arc;

use super::harness::client::open_session;
use super::harness::{on, one_shard, within};
use super::harness::{Batch, Msgs, PgClient, RawClient, ScriptedServer};
use crate::shared::Shared;
use tokio_postgres::NoTls;

const SLOW: &str = "SELECT * FROM slow";

/// The answer PostgreSQL gives a cancelled query.
fn cancelled() -> Msgs {
    Msgs::new()
        .error("57014", "canceling statement due to user request")
        .ready(b'I')
}

/// Sends a raw CancelRequest through a session and waits until that session has done with it
/// (it forwards every matching cancel before it ends).
async fn send_cancel(shared: &Arc<Shared>, key: (i32, i32)) {
    let (mut stream, session) = open_session(shared);
    let mut request = bytes::BytesMut::new();
    crate::wire::build::cancel_request(&mut request, key.0, key.1);
    tokio::io::AsyncWriteExt::write_all(&mut stream, &request)
        .await
        .expect("write");
    within("the cancel session to end", session)
        .await
        .expect("cancel session");
}

#[tokio::test]
async fn a_cancel_request_reaches_the_server_running_the_clients_query() {
    let server = ScriptedServer::start().await;
    let shared = one_shard(&server, 1);
    let pg = PgClient::connect(&shared).await;

    // While the client runs nothing, its cancel goes nowhere; an unknown key never does.
    pg.cancel(&shared).await;
    send_cancel(&shared, (1000, 0x5eed_0000)).await;
    assert!(server.cancels().is_empty(), "{:?}", server.cancels());

    server.script([on(&[&format!("Q {SLOW:?}")]).reply_on_cancel(cancelled())]);
    let query = pg.client.simple_query(SLOW);
    let cancel = async {
        server.wait_received(0, &format!("Q {SLOW:?}")).await;
        pg.cancel(&shared).await;
    };
    let (answer, ()) = within("the query and its cancel", async {
        tokio::join!(query, cancel)
    })
    .await;

    assert_eq!(
        server.cancels(),
        [server.key(0)],
        "the server's key, not pgshard's"
    );
    let error = answer.expect_err("cancelled");
    assert_eq!(error.code().map(|c| c.code()), Some("57014"));
    // The connection is still good for the client's next statement.
    server.script([on(&[r#"Q "SELECT 2""#]).reply(Msgs::new().command("SELECT 0").ready(b'I'))]);
    within("next query", pg.client.simple_query("SELECT 2"))
        .await
        .expect("next query");
    assert_eq!(server.conn_count(), 1);
    server.assert_done();
}

#[tokio::test]
async fn a_client_gone_mid_query_leaves_its_connection_cancelled_and_closed() {
    let server = ScriptedServer::start().await;
    let shared = one_shard(&server, 1);
    let mut client = RawClient::connect(&shared).await;
    server.script([on(&[&format!("Q {SLOW:?}")]).reply_on_cancel(cancelled())]);
    client.send(Batch::new().query(SLOW)).await;
    server.wait_received(0, &format!("Q {SLOW:?}")).await;

    let session = client.disconnect();
    within("the session to end", session)
        .await
        .expect("session");
    server.wait_closed(0).await;
    assert_eq!(server.cancels(), [server.key(0)]);

    // The next client (pool of 1) gets a new connection.
    let mut next = RawClient::connect(&shared).await;
    server.script([on(&[r#"Q "SELECT 2""#]).reply(Msgs::new().command("SELECT 0").ready(b'I'))]);
    let got = next.request(Batch::new().query("SELECT 2")).await;
    assert_eq!(got, [r#"C "SELECT 0""#, "Z I"]);
    assert_eq!(server.conn_count(), 2);
    assert_eq!(server.frames(1), [r#"Q "SELECT 2""#]);
    server.assert_done();
}

/// Connections of the only pool whose reset waits for a cancel (SHOW POOLS `sv_being_canceled`).
fn being_canceled(shared: &Shared) -> u64 {
    let pool = shared.shards[0]
        .primary
        .pools
        .get("app")
        .expect("app's pool");
    pool.manager().stats.being_canceled_now()
}

/// PostgreSQL signals a cancelled process twice; the second signal may land after the statement
/// ended, on whatever runs next there. Until the server closes the cancel's socket (after both
/// signals) the connection serves nobody else: the next client waits, then gets it.
#[tokio::test]
async fn a_connection_serves_nobody_else_until_its_cancel_is_confirmed() {
    let server = ScriptedServer::start().await;
    let shared = one_shard(&server, 1);
    let first = PgClient::connect(&shared).await;
    let second = PgClient::connect(&shared).await;
    server.script([on(&[&format!("Q {SLOW:?}")]).reply_on_cancel(cancelled())]);
    server.hold_cancels(true);
    // The cancel's session forwards it and ends only once the server confirmed it.
    let (stream, cancel_session) = open_session(&shared);
    let query = first.client.simple_query(SLOW);
    let cancel = async {
        server.wait_received(0, &format!("Q {SLOW:?}")).await;
        let token = first.client.cancel_token();
        within("the cancel request", token.cancel_query_raw(stream, NoTls))
            .await
            .expect("cancel request sent");
    };
    let (answer, ()) = within("the query and its cancel", async {
        tokio::join!(query, cancel)
    })
    .await;
    let error = answer.expect_err("cancelled");
    assert_eq!(error.code().map(|c| c.code()), Some("57014"));

    // The only connection went back to the pool with its cancel unconfirmed: the second
    // client's statement waits for it.
    server.script([on(&[r#"Q "SELECT 2""#]).reply(Msgs::new().command("SELECT 0").ready(b'I'))]);
    let next = tokio::spawn(async move { second.client.simple_query("SELECT 2").await });
    // SHOW POOLS counts it in sv_being_canceled meanwhile.
    within("the connection to count as being canceled", async {
        while being_canceled(&shared) != 1 {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert!(
        !server.frames(0).iter().any(|f| f == r#"Q "SELECT 2""#),
        "the next client's statement reached a connection whose cancel is on its way: {:?}",
        server.frames(0)
    );
    assert!(!next.is_finished());

    server.hold_cancels(false);
    within("the next client's statement", next)
        .await
        .expect("task")
        .expect("the next client's statement runs once the cancel is confirmed");
    within("the cancel session to end", cancel_session)
        .await
        .expect("cancel session");
    assert_eq!(server.conn_count(), 1, "the same connection, not a new one");
    assert_eq!(being_canceled(&shared), 0);
    server.assert_done();
}

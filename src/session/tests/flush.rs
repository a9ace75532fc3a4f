//! Client streams that hold written bytes until flushed (TLS does, and so does a `BufWriter`):
//! a flush the stream could not finish at once is finished once the stream has room, so an
//! answer never stays in the stream's buffer while the session waits for the client.

use tokio::io::BufWriter;
use tokio_postgres::config::SslMode;
use tokio_postgres::{NoTls, SimpleQueryMessage};

use super::harness::{on, one_shard, within, Msgs, ScriptedServer};

#[tokio::test]
async fn answers_held_by_a_buffering_stream_reach_a_slow_reading_client() {
    let server = ScriptedServer::start().await;
    let shared = one_shard(&server, 1);
    let answer = Msgs::new().command("SELECT 0").ready(b'I');
    server.script([on(&[r#"Q "SELECT 2""#]).reply(answer)]);
    // The duplex takes 16 bytes at a time: the login's answer (ParameterStatus, BackendKeyData,
    // ReadyForQuery) fits in the BufWriter but its flush waits for the client to read. Before
    // the fix, that flush was tried once with a waker that wakes no one, and never again.
    let (ours, theirs) = tokio::io::duplex(16);
    tokio::spawn(crate::session::run(BufWriter::new(theirs), shared.clone()));
    let mut config = tokio_postgres::Config::new();
    config.user("app").dbname("app").ssl_mode(SslMode::Disable);
    let (client, connection) = within("the login", config.connect_raw(ours, NoTls))
        .await
        .expect("login through the session");
    tokio::spawn(connection);

    let rows = within("the answer", client.simple_query("SELECT 2"))
        .await
        .expect("the query runs");
    assert!(matches!(
        rows.last(),
        Some(SimpleQueryMessage::CommandComplete(0))
    ));
    server.assert_done();
}

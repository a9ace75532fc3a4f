//! A replica going away in the middle of a plain read: the read runs again elsewhere when the
//! client has been sent nothing of its answer yet, even if the server's last words were
//! ParseComplete and BindComplete, queued but unwritten (a shutdown's FATAL follows them in the
//! same read); once rows are queued, the client gets the error and its session ends with it.

use super::harness::script::Step;
use super::harness::{on, primary_and_replica, Batch, Msgs, RawClient, ScriptedServer};

const READ: &str = "SELECT name FROM users WHERE user_id = 1";

fn read() -> Batch {
    Batch::new()
        .parse("", READ, &[])
        .bind("", "", &[])
        .execute()
        .sync()
}

/// The replica's step for [`read`]: the frames it receives, and `reply`.
fn on_read(reply: Msgs) -> Step {
    let frames = [
        format!(r#"P "" "{READ}""#),
        r#"B "" "" []"#.to_string(),
        r#"E """#.to_string(),
        "S".to_string(),
    ];
    on(&frames.iter().map(String::as_str).collect::<Vec<_>>()).reply(reply)
}

/// ParseComplete and BindComplete: what the server sends before a statement's rows.
fn headers() -> Msgs {
    Msgs::new().parse_complete().bind_complete()
}

/// `msgs`, then the FATAL a server shutting down sends.
fn then_shutdown(msgs: Msgs) -> Msgs {
    msgs.fatal(
        "57P01",
        "terminating connection due to administrator command",
    )
}

/// A primary and a replica (pools of 2), and a client of pgshard in front of them.
async fn primary_replica_client() -> (ScriptedServer, ScriptedServer, RawClient) {
    let primary = ScriptedServer::start().await;
    let replica = ScriptedServer::start().await;
    let shared = primary_and_replica(&primary, &replica, 2);
    let client = RawClient::connect(&shared).await;
    (primary, replica, client)
}

#[tokio::test]
async fn a_shutdown_after_the_answers_headers_runs_the_read_again() {
    let (primary, replica, mut client) = primary_replica_client().await;
    let answer = headers().row(&["ann"]).command("SELECT 1").ready(b'I');
    replica.script([on_read(then_shutdown(headers())), on_read(answer)]);

    let got = client.request(read()).await;

    assert_eq!(
        got,
        ["1", "2", "D ['ann']", r#"C "SELECT 1""#, "Z I"],
        "one whole answer, its headers once"
    );
    assert_eq!(replica.conn_count(), 2, "run again on a new connection");
    replica.assert_done();
    replica.assert_no_failures();
    // Nothing is scripted on the primary: a read reaching it would be off script.
    primary.assert_no_failures();
}

#[tokio::test]
async fn a_shutdown_after_rows_were_queued_reaches_the_client() {
    let (_primary, replica, mut client) = primary_replica_client().await;
    replica.script([on_read(then_shutdown(headers().row(&["ann"])))]);

    client.send(read()).await;
    let mut got = Vec::new();
    for _ in 0..4 {
        got.extend(client.recv().await);
    }

    assert_eq!(got[..3], ["1", "2", "D ['ann']"]);
    assert!(
        got[3].contains("57P01"),
        "the client learns the read was cut: {got:?}"
    );
    assert_eq!(replica.conn_count(), 1, "not run again");
    assert_eq!(
        client.until_closed().await,
        Vec::<String>::new(),
        "then the session ends, as PostgreSQL's ends after a FATAL: nothing more is sent"
    );
}

//! Extended-protocol batches: pipelined Parse/Bind/Execute with one Sync, errors in the middle of
//! a batch (from the server, or a refusal by pgshard), and a batch that needs two shards.

use super::harness::{key_on, on, one_shard, server_name, two_shards};
use super::harness::{Batch, Msgs, RawClient, ScriptedServer};

/// Parse/Bind/Execute of `SELECT {i}` for each `i`, then one Sync.
fn selects(values: &[&str]) -> Batch {
    values
        .iter()
        .fold(Batch::new(), |b, v| {
            b.parse("", &format!("SELECT {v}"), &[])
                .bind("", "", &[])
                .execute()
        })
        .sync()
}

/// What the server receives for [`selects`].
fn select_frames(values: &[&str]) -> Vec<String> {
    let mut frames = Vec::new();
    for v in values {
        frames.push(format!(r#"P "" "SELECT {v}""#));
        frames.push(r#"B "" "" []"#.to_string());
        frames.push(r#"E """#.to_string());
    }
    frames.push("S".to_string());
    frames
}

fn refs(frames: &[String]) -> Vec<&str> {
    frames.iter().map(String::as_str).collect()
}

#[tokio::test]
async fn a_pipelined_batch_reaches_the_server_whole_and_its_answers_come_back_in_order() {
    let server = ScriptedServer::start().await;
    let shared = one_shard(&server, 1);
    let mut client = RawClient::connect(&shared).await;
    let frames = select_frames(&["1", "2", "3"]);
    let mut reply = Msgs::new();
    for v in ["1", "2", "3"] {
        reply = reply
            .parse_complete()
            .bind_complete()
            .row(&[v])
            .command("SELECT 1");
    }
    server.script([on(&refs(&frames)).reply(reply.ready(b'I'))]);

    let got = client.request(selects(&["1", "2", "3"])).await;

    let mut expected = Vec::new();
    for v in ["1", "2", "3"] {
        expected.extend([
            "1".into(),
            "2".into(),
            format!("D ['{v}']"),
            r#"C "SELECT 1""#.into(),
        ]);
    }
    expected.push("Z I".into());
    assert_eq!(got, expected);
    assert_eq!(
        server.frames(0),
        frames,
        "one connection got the whole batch, in order"
    );

    // The connection went back to the pool at ReadyForQuery and serves the next request.
    let answer = Msgs::new().row(&["4"]).command("SELECT 1").ready(b'I');
    server.script([on(&[r#"Q "SELECT 4""#]).reply(answer)]);
    let got = client.request(Batch::new().query("SELECT 4")).await;
    assert_eq!(got, ["D ['4']", r#"C "SELECT 1""#, "Z I"]);
    assert_eq!(server.conn_count(), 1);
    server.assert_done();
}

#[tokio::test]
async fn a_server_error_mid_batch_skips_to_sync_and_the_connection_stays_usable() {
    let server = ScriptedServer::start().await;
    let shared = one_shard(&server, 1);
    let mut client = RawClient::connect(&shared).await;
    let values = ["1", "1/0", "3"];
    // As PostgreSQL does: the third statement is skipped up to the Sync.
    let reply = Msgs::new()
        .parse_complete()
        .bind_complete()
        .row(&["1"])
        .command("SELECT 1")
        .parse_complete()
        .bind_complete()
        .error("22012", "division by zero")
        .ready(b'I');
    server.script([on(&refs(&select_frames(&values))).reply(reply)]);

    let got = client.request(selects(&values)).await;

    assert_eq!(
        got,
        [
            "1",
            "2",
            "D ['1']",
            r#"C "SELECT 1""#,
            "1",
            "2",
            "E ERROR 22012",
            "Z I"
        ]
    );
    // Nothing is owed any more: the connection went back to the pool, usable, and another
    // client (pool of 1) gets it.
    let mut other = RawClient::connect(&shared).await;
    let answer = Msgs::new().row(&["4"]).command("SELECT 1").ready(b'I');
    server.script([on(&[r#"Q "SELECT 4""#]).reply(answer)]);
    let got = other.request(Batch::new().query("SELECT 4")).await;
    assert_eq!(got, ["D ['4']", r#"C "SELECT 1""#, "Z I"]);
    assert_eq!(server.conn_count(), 1, "the connection was not given up");
    server.assert_done();
}

#[tokio::test]
async fn a_named_parse_skipped_after_an_error_is_sent_again_before_its_bind() {
    let server = ScriptedServer::start().await;
    let shared = one_shard(&server, 1);
    let mut client = RawClient::connect(&shared).await;
    let name = server_name("SELECT 3", &[]);
    let parse = format!(r#"P "{name}" "SELECT 3""#);
    let failing = [
        r#"P "" "SELECT 1/0""#,
        r#"B "" "" []"#,
        r#"E """#,
        &parse,
        "S",
    ];
    let error = Msgs::new()
        .parse_complete()
        .bind_complete()
        .error("22012", "division by zero")
        .ready(b'I');
    server.script([on(&failing).reply(error)]);
    let batch = Batch::new()
        .parse("", "SELECT 1/0", &[])
        .bind("", "", &[])
        .execute()
        .parse("s3", "SELECT 3", &[])
        .sync();
    let got = client.request(batch).await;
    assert_eq!(got, ["1", "2", "E ERROR 22012", "Z I"]);

    // The server skipped that Parse: it must get it again before the Bind.
    let bind = format!(r#"B "" "{name}" []"#);
    let answer = Msgs::new()
        .parse_complete()
        .bind_complete()
        .row(&["3"])
        .command("SELECT 1")
        .ready(b'I');
    server.script([on(&[&parse, &bind, r#"E """#, "S"]).reply(answer)]);
    let got = client
        .request(Batch::new().bind("", "s3", &[]).execute().sync())
        .await;
    assert_eq!(
        got,
        ["2", "D ['3']", r#"C "SELECT 1""#, "Z I"],
        "pgshard's own ParseComplete is dropped"
    );
    server.assert_done();
}

#[tokio::test]
async fn a_refusal_mid_batch_skips_to_sync_and_the_servers_part_ends_with_that_sync() {
    let (s0, s1) = (ScriptedServer::start().await, ScriptedServer::start().await);
    let shared = two_shards(&s0, &s1, 1);
    let mut client = RawClient::connect(&shared).await;
    let k0 = key_on(&shared, 0).to_string();
    let read = "SELECT name FROM users WHERE user_id = $1";
    let answer = Msgs::new()
        .parse_complete()
        .bind_complete()
        .row(&["ann"])
        .command("SELECT 1");
    let bind = format!(r#"B "" "" ['{k0}']"#);
    let update = r#"P "" "UPDATE users SET name = 'x'""#;
    s0.script([
        on(&[&format!(r#"P "" "{read}" [20]"#), &bind, r#"E """#]).reply(answer),
        // The refused statement's Parse arrives while s0 is held: it is parsed there, as
        // PostgreSQL parses a statement before its Bind fails; its Sync ends s0's part.
        on(&[update, "S"]).reply(Msgs::new().parse_complete().ready(b'I')),
    ]);
    // A write without its key would need every shard: pgshard refuses it and skips the rest.
    let batch = Batch::new()
        .parse("", read, &[20])
        .bind("", "", &[&k0])
        .execute()
        .parse("", "UPDATE users SET name = 'x'", &[])
        .bind("", "", &[])
        .execute()
        .parse("", "SELECT 3", &[])
        .bind("", "", &[])
        .execute()
        .sync();
    let got = client.request(batch).await;
    assert_eq!(
        got,
        [
            "1",
            "2",
            "D ['ann']",
            r#"C "SELECT 1""#,
            "1",
            "E ERROR 0A000",
            "Z I"
        ]
    );
    assert_eq!(s1.conn_count(), 0, "nothing reached the other shard");
    s0.assert_done();
}

//! Extended-protocol batches that move to another shard before their Sync: pgshard ends the
//! first server's part with a Sync of its own (its ReadyForQuery is not the client's), and the
//! next server gets what it lacks of the batch, the unnamed statement's Parse included.

use super::harness::{key_on, on, two_shards};
use super::harness::{Batch, Msgs, RawClient, ScriptedServer};

#[tokio::test]
async fn a_batch_needing_a_second_shard_ends_the_first_shards_part_with_a_sync_of_its_own() {
    let (s0, s1) = (ScriptedServer::start().await, ScriptedServer::start().await);
    let shared = two_shards(&s0, &s1, 1);
    let mut client = RawClient::connect(&shared).await;
    let (k0, k1) = (
        key_on(&shared, 0).to_string(),
        key_on(&shared, 1).to_string(),
    );
    let read = "SELECT name FROM users WHERE user_id = $1";
    let parse = format!(r#"P "" "{read}" [20]"#);
    let answer = |name: &str| {
        Msgs::new()
            .parse_complete()
            .bind_complete()
            .row(&[name])
            .command("SELECT 1")
    };
    s0.script([
        on(&[&parse, &format!(r#"B "" "" ['{k0}']"#), r#"E """#]).reply(answer("ann")),
        // The second Parse arrives while s0 is still held (its ParseComplete is the client's);
        // then the Bind picks s1, and pgshard's own Sync ends s0's part of the batch.
        on(&[&parse, "S"]).reply(Msgs::new().parse_complete().ready(b'I')),
    ]);
    // s1 gets the Parse again before the Bind (that ParseComplete is not the client's).
    let on_s1 = [&parse, &format!(r#"B "" "" ['{k1}']"#), r#"E """#, "S"];
    s1.script([on(&on_s1).reply(answer("bob").ready(b'I'))]);
    let batch = Batch::new()
        .parse("", read, &[20])
        .bind("", "", &[&k0])
        .execute()
        .parse("", read, &[20])
        .bind("", "", &[&k1])
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
            "2",
            "D ['bob']",
            r#"C "SELECT 1""#,
            "Z I"
        ],
        "one ReadyForQuery: the one pgshard's own Sync brought is not the client's"
    );
    s0.assert_done();
    s1.assert_done();
}

#[tokio::test]
async fn one_unnamed_parse_bound_for_two_shards_reaches_both() {
    let (s0, s1) = (ScriptedServer::start().await, ScriptedServer::start().await);
    let shared = two_shards(&s0, &s1, 1);
    let mut client = RawClient::connect(&shared).await;
    let (k0, k1) = (
        key_on(&shared, 0).to_string(),
        key_on(&shared, 1).to_string(),
    );
    let write = "UPDATE users SET name = 'x' WHERE user_id = $1";
    let parse = format!(r#"P "" "{write}" [20]"#);
    let updated = || {
        Msgs::new()
            .parse_complete()
            .bind_complete()
            .command("UPDATE 1")
    };
    s0.script([
        on(&[&parse, &format!(r#"B "" "" ['{k0}']"#), r#"E """#]).reply(updated()),
        on(&["S"]).reply(Msgs::new().ready(b'I')),
    ]);
    // s1 never saw the client's Parse: pgshard sends it, and drops its ParseComplete.
    let on_s1 = [&parse, &format!(r#"B "" "" ['{k1}']"#), r#"E """#, "S"];
    s1.script([on(&on_s1).reply(updated().ready(b'I'))]);
    let batch = Batch::new()
        .parse("", write, &[20])
        .bind("", "", &[&k0])
        .execute()
        .bind("", "", &[&k1])
        .execute()
        .sync();

    let got = client.request(batch).await;

    assert_eq!(
        got,
        ["1", "2", r#"C "UPDATE 1""#, "2", r#"C "UPDATE 1""#, "Z I"]
    );
    s0.assert_done();
    s1.assert_done();
}

#[tokio::test]
async fn a_begin_behind_a_close_still_owed_is_held_back_for_the_shard_its_statement_picks() {
    // tokio-postgres closes a statement with Close + Sync pipelined behind its use; a BEGIN that
    // arrives while that Sync's answer is still owed must not start the transaction on the
    // connection answering it (the default shard) when its first statement picks another.
    let (s0, s1) = (ScriptedServer::start().await, ScriptedServer::start().await);
    let shared = two_shards(&s0, &s1, 1);
    let mut client = RawClient::connect(&shared).await;
    let k1 = key_on(&shared, 1).to_string();
    let insert = format!("INSERT INTO users (user_id, name) VALUES ({k1}, 'x')");
    s0.script([on(&["S"]).reply(Msgs::new().ready(b'I'))]);
    let mut close = bytes::BytesMut::new();
    close.extend_from_slice(&[b'C', 0, 0, 0, 8, b'S', b's', b'1', 0]);
    let got = client
        .request(Batch::new().raw(&close).sync().query("BEGIN"))
        .await;
    // The Sync's ReadyForQuery says idle: the transaction began after it.
    assert_eq!(got, ["3", "Z I"]);
    assert_eq!(client.recv().await.as_deref(), Some(r#"C "BEGIN""#));
    assert_eq!(client.recv().await.as_deref(), Some("Z T"));
    s1.script([
        on(&[r#"Q "BEGIN""#]).reply(Msgs::new().command("BEGIN").ready(b'T')),
        on(&[&format!("Q {insert:?}")]).reply(Msgs::new().command("INSERT 0 1").ready(b'T')),
        on(&[r#"Q "COMMIT""#]).reply(Msgs::new().command("COMMIT").ready(b'I')),
    ]);
    let got = client.request(Batch::new().query(&insert)).await;
    assert_eq!(got, [r#"C "INSERT 0 1""#, "Z T"]);
    let got = client.request(Batch::new().query("COMMIT")).await;
    assert_eq!(got, [r#"C "COMMIT""#, "Z I"]);
    s0.assert_done();
    s1.assert_done();
}

//! DataRows go on to the client in runs (one copy per run of whole DataRows in what was read):
//! every row arrives once, whole and in order, also when a read ends inside a row and when
//! other frames come between the runs.

use super::harness::{on, one_shard, Batch, Msgs, RawClient, ScriptedServer};

#[tokio::test]
async fn rows_arrive_once_whole_and_in_order() {
    const ROWS: usize = 3_000;
    let server = ScriptedServer::start().await;
    let shared = one_shard(&server, 1);
    let mut client = RawClient::connect(&shared).await;
    // Two statements' answers in one write: a long run (longer than one read of the session,
    // so a read ends inside a row), a CommandComplete, then a short run.
    let mut answer = Msgs::new().columns(&[("n", 23)]);
    for n in 1..=ROWS {
        answer = answer.row(&[&n.to_string()]);
    }
    let answer = answer
        .command(&format!("SELECT {ROWS}"))
        .columns(&[("m", 23)])
        .row(&["a"])
        .row(&["b"])
        .command("SELECT 2")
        .ready(b'I');
    let sql = "SELECT n FROM t; SELECT m FROM u";
    server.script([on(&[&format!("Q {sql:?}")]).reply(answer)]);
    let got = client.request(Batch::new().query(sql)).await;

    let mut want = vec!["T [n]".to_string()];
    want.extend((1..=ROWS).map(|n| format!("D ['{n}']")));
    want.push(format!("C \"SELECT {ROWS}\""));
    want.extend(["T [m]", "D ['a']", "D ['b']", "C \"SELECT 2\"", "Z I"].map(String::from));
    assert_eq!(got.len(), want.len(), "every frame once");
    assert_eq!(got, want);
    server.assert_done();
}

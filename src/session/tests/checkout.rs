//! The order a checkout tries pools in: plain reads take the replicas in turn (one turn per
//! checkout, whether it finds an idle connection at once or waits), then the primary; other
//! statements the primary alone. No server is reached: the order is decided before any connect.

use std::sync::Arc;

use bytes::BytesMut;

use crate::config::Config;
use crate::router::Target;
use crate::session::settings::Settings;
use crate::session::Session;
use crate::shared::Shared;
use crate::transport::Conn;

fn session() -> Session<tokio::io::DuplexStream> {
    let text = "[server]\nlisten = \"127.0.0.1:0\"\ndatabase = \"app\"\n\n\
                [[users]]\nname = \"app\"\npassword = \"app\"\n\n\
                [[shards]]\nname = \"s0\"\nprimary = \"127.0.0.1:1\"\n\
                replicas = [\"127.0.0.1:2\", \"127.0.0.1:3\"]\n";
    let shared = Arc::new(Shared::new(
        Config::from_toml_str(text).expect("a valid config"),
    ));
    let (stream, _peer) = tokio::io::duplex(64);
    Session::new(
        Conn::new(stream, BytesMut::new()),
        shared,
        "app".into(),
        Arc::new(Settings::new()),
        None,
    )
}

/// The addresses a checkout with this turn would try, in order.
fn order(session: &Session<tokio::io::DuplexStream>, turn: Option<usize>) -> Vec<String> {
    session
        .checkout_order(0, turn)
        .map(|candidate| {
            let (pool, _) = candidate.expect("the primary is up");
            pool.manager().login.addr.clone()
        })
        .collect()
}

#[tokio::test]
async fn reads_take_the_replicas_in_turn_then_the_primary() {
    let session = session();
    let mut first = Vec::new();
    for _ in 0..4 {
        let turn = session.replica_turn(0, Target::Replica);
        let tried = order(&session, turn);
        assert_eq!(tried.len(), 3, "both replicas, then the primary: {tried:?}");
        assert_eq!(tried[2], "127.0.0.1:1");
        first.push(tried[0].clone());
    }
    assert_eq!(
        first,
        ["127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:2", "127.0.0.1:3"],
        "one turn per checkout"
    );
}

#[tokio::test]
async fn other_statements_take_the_primary_and_no_turn() {
    let session = session();
    assert_eq!(session.replica_turn(0, Target::Primary), None);
    assert_eq!(order(&session, None), ["127.0.0.1:1"]);
    let turn = session.replica_turn(0, Target::Replica);
    assert_eq!(turn, Some(0), "a write took no replica's turn");
}

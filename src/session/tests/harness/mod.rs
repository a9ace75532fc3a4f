//! The harness of the session tests: scripted servers ([`server`] following a [`script`]), a [`Shared`] pointing at them
//! (one shard, or two for routing corners), and clients over an in-memory duplex ([`client`]).
//! The proxy is built as `pgshard serve` builds it ([`Shared::new`] from TOML config text), minus
//! the accept loop and the `pg_proc` lookup (the router keeps its built-in volatility list).

pub mod client;
pub mod render;
pub mod reply;
pub mod script;
pub mod server;

use std::sync::Arc;
use std::time::Duration;

pub use client::{within, Batch, PgClient, RawClient};
pub use reply::Msgs;
pub use script::on;
pub use server::ScriptedServer;

/// Longest any wait may take before the test is declared hung (a guard, never a sync point).
pub const HANG: Duration = Duration::from_secs(10);

use crate::config::Config;
use crate::sharding::KeyValue;
use crate::shared::Shared;

/// `[server]`, `[pool]` and `[[users]]` of every test config: trust login as `app` to database
/// `app`, transaction mode, health checks and idle reaping far beyond any test's life.
fn header(pool_size: usize) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
database = "app"
auth_method = "trust"

[pool]
size = {pool_size}
checkout_timeout_ms = 10000
health_check_interval_ms = 3600000
idle_timeout_ms = 3600000

[[users]]
name = "app"
password = "app"

[sharding]
key_column = "user_id"
key_type = "bigint"

[[sharding.tables]]
name = "users"
"#
    )
}

fn shared(text: &str) -> Arc<Shared> {
    let config = Config::from_toml_str(text).expect("a valid test config");
    Arc::new(Shared::new(config))
}

/// One shard served by `server`, pools of `pool_size`: nothing to route, so pgshard is a pure
/// pooler (statements are forwarded unparsed).
pub fn one_shard(server: &ScriptedServer, pool_size: usize) -> Arc<Shared> {
    shared(&format!(
        "{}\n[[shards]]\nname = \"s0\"\nprimary = \"{}\"\n",
        header(pool_size),
        server.addr
    ))
}

/// One shard with a primary and one replica (plain reads go to the replica first), table
/// `users` sharded by `user_id`, pools of `pool_size`.
pub fn primary_and_replica(
    primary: &ScriptedServer,
    replica: &ScriptedServer,
    pool_size: usize,
) -> Arc<Shared> {
    shared(&format!(
        "{}\n[[shards]]\nname = \"s0\"\nprimary = \"{}\"\nreplicas = [\"{}\"]\n",
        header(pool_size),
        primary.addr,
        replica.addr
    ))
}

/// Two shards, `s0` (slots 0-2047, the default shard) and `s1` (2048-4095), table `users`
/// sharded by `user_id bigint`, pools of `pool_size`: statements are routed.
pub fn two_shards(s0: &ScriptedServer, s1: &ScriptedServer, pool_size: usize) -> Arc<Shared> {
    let mut text = header(pool_size);
    for (i, (server, slots)) in [(s0, "0-2047"), (s1, "2048-4095")].iter().enumerate() {
        text.push_str(&format!(
            "\n[[shards]]\nname = \"s{i}\"\nprimary = \"{}\"\nslots = \"{slots}\"\n",
            server.addr
        ));
    }
    shared(&text)
}

/// The smallest positive `user_id` living on `shard`.
pub fn key_on(shared: &Shared, shard: usize) -> i64 {
    let map = shared.config.shard_map();
    (1..)
        .find(|&k| map.shard_of_key(&KeyValue::Int(k)) == shard)
        .expect("every shard owns some key")
}

/// The name pgshard gives a client's statement on every server connection.
pub fn server_name(sql: &str, types: &[u32]) -> String {
    let mut parse = bytes::BytesMut::new();
    postgres_protocol::message::frontend::parse("any", sql, types.iter().copied(), &mut parse)
        .expect("parse");
    let parse = crate::wire::extended::Parse::decode(&parse[5..]).expect("decodes");
    crate::session::prepared::Statement::new(&parse, None, crate::session::state::Effects::NONE)
        .server_name
}

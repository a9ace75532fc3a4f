//! pgshard: a sharding router and transaction pooler for PostgreSQL.
//!
//! Data flows one way: client socket → [`transport`] and [`wire`] (frames) → [`session`] (client state machine)
//! → [`router`] (statement → route) → [`pool`] → [`backend`] (server connections) → back to the client.
//! The router hands cross-shard planning to [`multishard`], and both read SQL with [`sql`].
//! [`config`] and [`sharding`] are pure data; [`cli`] is the glue for the `pgshard` binary.
//! See ARCHITECTURE.md for the map and the invariants.

pub mod admin;
pub mod auth;
pub mod backend;
pub mod cancel;
pub mod catalog;
pub mod cli;
pub mod collation;
pub mod config;
pub mod control;
pub mod error;
pub mod holds;
pub mod limits;
pub mod localpg;
pub mod merge;
pub mod metrics;
pub mod multishard;
pub mod pool;
pub mod rebalance;
pub mod router;
pub mod server;
pub mod session;
pub mod sharding;
pub mod shared;
pub mod sql;
pub mod stats;
pub mod tls;
pub mod transport;
pub mod wire;

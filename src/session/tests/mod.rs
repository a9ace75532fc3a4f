//! Session tests over an in-memory duplex: a real client (tokio-postgres, or raw frames) on one
//! end of [`crate::session::run`], scripted PostgreSQL servers behind the pools, for the protocol
//! corners: pipelined extended batches, errors mid-batch, held-back BEGIN, prepared statements
//! moving between server connections, COPY, cancel, malformed frames, settings resets, requests
//! sent with the StartupMessage, a client stream that holds bytes until flushed. Each test
//! asserts what the client saw and exactly what pgshard sent to the servers. See `harness`.

mod harness;

mod cancel;
mod checkout;
mod copy;
mod extended;
mod flush;
mod footprint;
mod login;
mod prepared;
mod protocol_errors;
mod replica_loss;
mod rows;
mod settings;
mod shard_switch;
mod transactions;

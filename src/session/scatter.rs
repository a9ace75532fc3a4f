//! Keyless reads answered from several shards (scatter-gather), first slice: the statement runs
//! unchanged on every involved shard and the rows are concatenated, streaming, with a total row
//! count; a LIMIT without ORDER BY stops after that many rows. Reads that need real merging
//! (ORDER BY, aggregates, DISTINCT, ...) are refused by the router's `Scatter::Unsupported`
//! before anything is sent. Holds one message at a time, never a whole result.

use bytes::{Bytes, BytesMut};

use super::error::SessionError;
use super::{io, Session};
use crate::backend::BackendManager;
use crate::pool::Pooled;
use crate::router::Target;
use crate::wire::build::{self, Severity};
use crate::wire::server_tag as tag;
use crate::wire::{rows, Frame, TransactionStatus};

/// Output queued for the client beyond this is written before reading more rows.
const FLUSH_AT: usize = 64 * 1024;

/// What the shards have answered so far.
#[derive(Default)]
struct Gathered {
    /// Stop forwarding rows after this many.
    limit: Option<u64>,
    rows: u64,
    /// The first RowDescription, forwarded to the client; the others must agree with it.
    described: Option<Bytes>,
    /// The first error (ErrorResponse bytes), sent instead of the row count.
    error: Option<Bytes>,
}

impl Session {
    /// Runs a simple query on one connection per shard and streams the concatenated rows.
    pub(super) async fn scatter(
        &mut self,
        frame: &Frame,
        shards: &[usize],
        target: Target,
        limit: Option<u64>,
    ) -> Result<(), SessionError> {
        let mut conns = Vec::with_capacity(shards.len());
        for &shard in shards {
            conns.push(self.connection_for(shard, target).await?.0);
        }
        // Every shard starts working before any answer is read.
        for conn in conns.iter_mut() {
            conn.in_flight = true;
            conn.write(&frame.bytes).await?;
        }
        let mut gathered = Gathered {
            limit,
            ..Gathered::default()
        };
        for conn in conns.iter_mut() {
            self.gather(conn, &mut gathered).await?;
        }
        match gathered.error {
            Some(error) => self.client_out.extend_from_slice(&error),
            None => {
                build::command_complete(&mut self.client_out, &format!("SELECT {}", gathered.rows))
            }
        }
        build::ready_for_query(&mut self.client_out, TransactionStatus::Idle);
        Ok(())
    }

    /// Reads one shard's answer up to its ReadyForQuery, forwarding what the client should see.
    async fn gather(
        &mut self,
        conn: &mut Pooled<BackendManager>,
        gathered: &mut Gathered,
    ) -> Result<(), SessionError> {
        loop {
            let frame = conn.read_frame().await?;
            match frame.tag() {
                tag::ROW_DESCRIPTION => match &gathered.described {
                    None => {
                        self.client_out.extend_from_slice(&frame.bytes);
                        gathered.described = Some(frame.bytes.freeze());
                    }
                    Some(first) if rows::same_columns(&first[5..], frame.body()) => {}
                    Some(_) => {
                        gathered.error.get_or_insert_with(|| {
                            error_bytes("the shards returned different columns for this query; check that every shard has the same schema")
                        });
                    }
                },
                tag::DATA_ROW => {
                    let room = gathered.limit.is_none_or(|limit| gathered.rows < limit);
                    if room && gathered.error.is_none() {
                        self.client_out.extend_from_slice(&frame.bytes);
                        gathered.rows += 1;
                    }
                }
                tag::ERROR_RESPONSE => {
                    gathered.error.get_or_insert(frame.bytes.freeze());
                }
                tag::NOTICE_RESPONSE => self.client_out.extend_from_slice(&frame.bytes),
                tag::PARAMETER_STATUS => conn.note_parameter_status(frame.body()),
                tag::READY_FOR_QUERY => {
                    conn.status = frame
                        .body()
                        .first()
                        .and_then(|&b| TransactionStatus::from_byte(b))
                        .unwrap_or(TransactionStatus::Idle);
                    conn.in_flight = false;
                    return Ok(());
                }
                // CommandComplete is replaced by the total; nothing else belongs to a SELECT.
                _ => {}
            }
            if self.client_out.len() > FLUSH_AT {
                let out = std::mem::take(&mut self.client_out);
                io::write_all(&mut self.client, &out).await?;
            }
        }
    }
}

fn error_bytes(message: &str) -> Bytes {
    let mut out = BytesMut::new();
    build::error_response(
        &mut out,
        Severity::Error,
        "XX000",
        &format!("pgshard: {message}"),
    );
    out.freeze()
}

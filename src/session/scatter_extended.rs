//! Cross-shard reads over the extended protocol: at a Bind that routes to several shards the
//! batch's Parses and the Bind are answered here, and at its Execute every shard runs the
//! statement (the router's rewrite of it when the merge needs one) as its own unnamed
//! statement and portal, with the client's parameters; the rows are merged as for the simple
//! protocol ([`super::scatter`]). Shards answer in text whenever values are compared or
//! computed, and values go to the client in the formats its Bind asked for. Never leaves a
//! portal open: a row limit on Execute (a cursor) is refused.

use bytes::BytesMut;

use super::error::{SessionError, Unsupported};
use super::Session;
use crate::router::{Scatter, Target};
use crate::transport::Stream;
use crate::wire::build;
use crate::wire::client_tag as tag;
use crate::wire::extended::{Bind, Parse};
use crate::wire::Frame;

/// A cross-shard read bound by the client and not yet executed.
pub(super) struct ExtendedScatter {
    shards: Vec<usize>,
    target: Target,
    how: Scatter,
    /// Parse and Bind for each shard (unnamed statement and portal).
    prefix: BytesMut,
    /// The result formats the client's Bind asked for; `None` when the shards answer in them.
    formats: Option<Vec<i16>>,
    /// The client described the portal: it gets the RowDescription.
    pub(super) describe: bool,
    /// The client's portal name.
    pub(super) portal: Vec<u8>,
}

impl<S: Stream> Session<S> {
    /// A Bind of a cross-shard read: answers the batch's Parses and the Bind; the read waits
    /// for the Execute as the portal returned.
    pub(super) fn begin_extended_scatter(
        &mut self,
        frame: &Frame,
        shards: Vec<usize>,
        target: Target,
        how: Scatter,
    ) -> Result<ExtendedScatter, SessionError> {
        let bind = Bind::decode(frame.body())?;
        let (sql, types) = self.bound_statement(bind.statement)?;
        let sql = match &how {
            Scatter::Merge(merge) => merge.sql.clone(),
            _ => sql,
        };
        // Values are only forwarded untouched when rows are concatenated as they come.
        let passthrough = matches!(&how, Scatter::Concat { order, .. } if order.is_empty());
        let mut prefix = BytesMut::new();
        build::parse(&mut prefix, &sql, &types);
        prefix.extend_from_slice(&bind.encode_unnamed(!passthrough)?);
        let formats = (!passthrough).then(|| bind.result_formats()).transpose()?;
        self.answer_parses_and_bind();
        Ok(ExtendedScatter {
            shards,
            target,
            how,
            prefix,
            formats,
            describe: false,
            portal: bind.portal.to_vec(),
        })
    }

    /// The text and parameter types of the statement a Bind names: a named statement, or the
    /// unnamed one parsed in this batch.
    pub(super) fn bound_statement(&self, name: &[u8]) -> Result<(String, Vec<u32>), SessionError> {
        let from_parse = |bytes: &[u8]| -> Result<(String, Vec<u32>), SessionError> {
            let parse = Parse::decode(&bytes[5..])?;
            let sql = String::from_utf8_lossy(parse.query()).into_owned();
            Ok((sql, parse.param_types()))
        };
        if !name.is_empty() {
            if let Some(statement) = self.statements.get(name) {
                return from_parse(&statement.parse);
            }
        }
        let unnamed = self.proto.pending.iter().rev().find(|f| {
            f.tag() == tag::PARSE && Parse::decode(f.body()).is_ok_and(|p| p.name.is_empty())
        });
        match unnamed {
            Some(frame) if name.is_empty() => from_parse(&frame.bytes),
            _ => Err(Unsupported::ScatterUnnamedFromEarlierBatch.into()),
        }
    }

    /// Runs a bound cross-shard read at its Execute (`max_rows` 0: all rows).
    pub(super) async fn run_extended_scatter(
        &mut self,
        batch: ExtendedScatter,
        max_rows: i32,
    ) -> Result<(), SessionError> {
        if max_rows != 0 {
            return Err(Unsupported::ScatterFetchInParts.into());
        }
        let mut request = batch.prefix;
        build::describe_portal(&mut request);
        build::execute(&mut request);
        build::sync(&mut request);
        let output = super::scatter::Output {
            describe: batch.describe,
            formats: batch.formats,
            simple: false,
        };
        self.run_scatter(&request, &batch.shards, batch.target, &batch.how, output)
            .await
    }
}

//! Portals pgshard binds itself instead of a server: a cross-shard read (run on every shard at
//! its Execute, [`super::scatter_extended`]), a write to a reference table (run on every shard's
//! primary at its Execute, [`super::fanout`]) and transaction commands it answers itself (a BEGIN
//! held back until the first statement picks a shard, and the end of a transaction that never
//! reached one), as the extended protocol sends them (JDBC, Npgsql). Handles the frames after
//! such a Bind up to its Execute; never sends anything to a server for the command portals.

use bytes::BytesMut;

use super::error::{SessionError, Unsupported};
use super::fanout::FanOut;
use super::scatter_extended::ExtendedScatter;
use super::Session;
use crate::config::PoolMode;
use crate::router::{Params, TransactionControl};
use crate::transport::Stream;
use crate::wire::build;
use crate::wire::client_tag as tag;
use crate::wire::extended::{Bind, Execute, Target as Named, TargetKind};
use crate::wire::Frame;

/// A portal bound by pgshard, waiting for its Execute.
pub(super) enum Bound {
    Scatter(ExtendedScatter),
    /// A write on every shard: the shards' Parse and Bind, and whether the client described it.
    FanOut {
        prefix: BytesMut,
        work: FanOut,
        portal: Vec<u8>,
        describe: bool,
    },
    /// A command answered here with this CommandComplete tag.
    Answer {
        portal: Vec<u8>,
        tag: &'static str,
    },
}

impl Bound {
    fn portal(&self) -> &[u8] {
        match self {
            Bound::Scatter(batch) => &batch.portal,
            Bound::FanOut { portal, .. } => portal,
            Bound::Answer { portal, .. } => portal,
        }
    }
}

impl<S: Stream> Session<S> {
    /// A Bind of BEGIN with no server held yet, or of COMMIT/ROLLBACK of a transaction whose
    /// BEGIN is still held back: answered here as the simple protocol's are (the BEGIN is sent
    /// later, as a simple query, with the first statement that picks a shard). `true` when
    /// answered; the batch's Parses and the Bind are answered now, the Execute later.
    pub(super) fn bound_transaction_control(
        &mut self,
        control: TransactionControl,
        bind: &Bind<'_>,
    ) -> Result<bool, SessionError> {
        let free = self.server.is_none();
        let tag = match control {
            TransactionControl::Begin { read_only }
                if free && self.tx.is_outside() && self.mode == PoolMode::Transaction =>
            {
                let Ok((sql, types)) = self.bound_statement(bind.statement) else {
                    return Ok(false);
                };
                if !types.is_empty() {
                    return Ok(false);
                }
                let mut begin = BytesMut::new();
                build::query(&mut begin, &sql);
                self.tx.hold_begin(begin.freeze(), read_only);
                "BEGIN"
            }
            TransactionControl::Commit | TransactionControl::Rollback if self.tx.is_held_back() => {
                self.tx.end_held_back(control)
            }
            _ => return Ok(false),
        };
        self.answer_parses_and_bind();
        self.proto.bound = Some(Box::new(Bound::Answer {
            portal: bind.portal.to_vec(),
            tag,
        }));
        Ok(true)
    }

    /// A Bind of a write that runs on every shard (a reference table): its Parses and the Bind
    /// are answered now, and the shards run it at its Execute.
    pub(super) fn begin_bound_fan_out(
        &mut self,
        frame: &Frame,
        work: FanOut,
    ) -> Result<(), SessionError> {
        let bind = Bind::decode(frame.body())?;
        let (sql, types) = self.bound_statement(bind.statement)?;
        let mut prefix = BytesMut::new();
        let work = match work {
            FanOut::SplitAtBind => FanOut::SplitRequests(self.split_requests(&bind, &types)?),
            work => {
                build::parse(&mut prefix, &sql, &types);
                prefix.extend_from_slice(&bind.encode_unnamed(false)?);
                work
            }
        };
        self.answer_parses_and_bind();
        self.proto.bound = Some(Box::new(Bound::FanOut {
            prefix,
            work,
            portal: bind.portal.to_vec(),
            describe: false,
        }));
        Ok(())
    }

    /// Each shard's Parse and Bind of a multi-row INSERT split by its bound keys: the shard's
    /// rows with their parameters renumbered from `$1`, and the client's values for them.
    fn split_requests(
        &self,
        bind: &Bind<'_>,
        types: &[u32],
    ) -> Result<Vec<(usize, BytesMut)>, SessionError> {
        let plan = match (!bind.statement.is_empty())
            .then(|| self.statements.get(bind.statement))
            .flatten()
        {
            Some(statement) => statement.plan.clone(),
            None => self.unnamed.plan.clone(),
        };
        let plan = plan.ok_or(Unsupported::SplitUnknownStatement)?;
        let params = bind.params()?;
        let router = self.shared.router.load();
        let parts = router
            .split_insert(
                &plan,
                &Params::new(&params.values, &params.formats).with_types(types),
            )
            .map_err(SessionError::Route)?;
        let mut requests = Vec::with_capacity(parts.len());
        for part in parts {
            let part_types: Vec<u32> = part
                .params
                .iter()
                .map(|&i| types.get(i).copied().unwrap_or(0))
                .collect();
            let mut request = BytesMut::new();
            build::parse(&mut request, &part.sql, &part_types);
            request.extend_from_slice(&bind.encode_subset(&part.params)?);
            requests.push((part.shard, request));
        }
        Ok(requests)
    }

    /// A frame after a Bind pgshard answered; `Some(frame)` when the frame is not about that
    /// portal and must be routed as usual (the portal is then forgotten).
    pub(super) async fn continue_bound(
        &mut self,
        frame: Frame,
    ) -> Result<Option<Frame>, SessionError> {
        let Some(bound) = self.proto.bound.take() else {
            return Ok(Some(frame));
        };
        match frame.tag() {
            tag::DESCRIBE => {
                let target = Named::decode(frame.body(), "Describe")?;
                if target.kind != TargetKind::Portal || target.name != bound.portal() {
                    return Ok(Some(frame));
                }
                let mut bound = bound;
                match &mut *bound {
                    Bound::Scatter(batch) => batch.describe = true,
                    Bound::FanOut { describe, .. } => *describe = true,
                    Bound::Answer { .. } => self.answer(build::no_data),
                }
                self.proto.bound = Some(bound);
                Ok(None)
            }
            tag::FLUSH => {
                self.proto.bound = Some(bound);
                Ok(None)
            }
            tag::EXECUTE => {
                let execute = Execute::decode(frame.body())?;
                if execute.portal != bound.portal() {
                    return Ok(Some(frame));
                }
                match *bound {
                    Bound::Scatter(batch) => self
                        .run_extended_scatter(batch, execute.max_rows)
                        .await
                        .map(|()| None),
                    Bound::FanOut {
                        mut prefix,
                        work,
                        describe,
                        ..
                    } => {
                        let finish = |request: &mut BytesMut| {
                            if describe {
                                build::describe_portal(request);
                            }
                            build::execute(request);
                            build::sync(request);
                        };
                        finish(&mut prefix);
                        let work = match work {
                            FanOut::SplitRequests(mut requests) => {
                                requests.iter_mut().for_each(|(_, r)| finish(r));
                                FanOut::SplitRequests(requests)
                            }
                            work => work,
                        };
                        self.fan_out_request(&prefix, work, false)
                            .await
                            .map(|()| None)
                    }
                    Bound::Answer { tag, .. } => {
                        self.answer(|out| build::command_complete(out, tag));
                        Ok(None)
                    }
                }
            }
            _ => Ok(Some(frame)),
        }
    }
}

//! Keyless reads answered from several shards (scatter-gather): the statement (or the router's
//! rewrite of it, [`Merge::sql`]) runs on every involved shard; rows are concatenated, or, with
//! an ORDER BY, merged k-way from the shards' sorted streams (one head row per shard); OFFSET,
//! LIMIT, DISTINCT and hidden sort columns are applied on the way out, and aggregates are
//! combined per group ([`super::groups`]). Holds one row per shard plus, for DISTINCT, the rows
//! seen, within `[sharding] max_merge_memory_mb`; never a whole result otherwise.

use std::cmp::Ordering;
use std::collections::HashSet;

use bytes::{Bytes, BytesMut};

use super::error::{Failure, MultiShardError, SessionError};
use super::Session;
use crate::backend::BackendManager;
use crate::collation::TextRules;
use crate::merge::{canonical, is_text, SortType, TypeRules};
use crate::pool::Pooled;
use crate::router::{KeyCollation, Merge, Scatter, SortColumn, SortKey, Target};
use crate::transport::Stream;
use crate::wire::build;
use crate::wire::server_tag as tag;
use crate::wire::{binary, rows, Frame};

/// Output queued for the client beyond this is written before reading more rows.
const FLUSH_AT: usize = 64 * 1024;

/// What the shards have answered so far, and what may still go to the client.
#[derive(Default)]
pub(super) struct Gathered {
    /// Stop forwarding rows after this many.
    pub(super) limit: Option<u64>,
    /// Drop this many rows before forwarding any.
    offset: u64,
    pub(super) rows: u64,
    /// Trailing hidden sort columns to strip from rows and the RowDescription.
    hidden: usize,
    /// SELECT DISTINCT: the canonical rows sent so far.
    seen: Option<HashSet<Vec<u8>>>,
    /// What the session can order (collation, DateStyle).
    pub(super) rules: TypeRules,
    /// Bytes held for this query (DISTINCT rows, groups), and the most allowed.
    pub(super) held: usize,
    pub(super) max_held: usize,
    /// Groups are described by the session itself, once all shards answered.
    pub(super) grouped: bool,
    /// The client gets the RowDescription (simple protocol, or a Describe of the portal).
    pub(super) describe: bool,
    /// Result formats the client asked for, when the shards answer in text instead.
    pub(super) formats: Option<Vec<i16>>,
    /// Some value goes to the client in binary.
    binary: bool,
    /// The first RowDescription (as the shards sent it); the others must agree with it.
    pub(super) described: Option<Bytes>,
    /// The shard that sent it (its table OIDs are that shard's).
    described_by: Option<usize>,
    /// `rules.text` has been fetched for this read.
    text_fetched: bool,
    /// The type OID of each column it describes.
    pub(super) oids: Vec<u32>,
    /// The first error, sent instead of the row count.
    pub(super) error: Option<Failure>,
}

impl Gathered {
    fn full(&self) -> bool {
        self.limit.is_some_and(|limit| self.rows >= limit)
    }

    /// Keeps `error` unless an earlier one is kept already (the client sees the first).
    pub(super) fn fail(&mut self, error: impl Into<Failure>) {
        if self.error.is_none() {
            self.error = Some(error.into());
        }
    }

    /// Counts `bytes` more held memory; false (with the error set) when over the limit.
    pub(super) fn hold(&mut self, bytes: usize) -> bool {
        self.held += bytes;
        if self.held <= self.max_held {
            return true;
        }
        let mib = self.max_held >> 20;
        self.fail(MultiShardError::MergeMemory { mib });
        false
    }
}

/// How a cross-shard read's answer goes to the client.
pub(super) struct Output {
    /// Send the RowDescription.
    pub(super) describe: bool,
    /// Result formats the client asked for (`None`: as the shards send them).
    pub(super) formats: Option<Vec<i16>>,
    /// Simple protocol: end with ReadyForQuery.
    pub(super) simple: bool,
}

impl<S: Stream> Session<S> {
    /// Runs a simple query on one connection per shard and streams the combined rows.
    pub(super) async fn scatter(
        &mut self,
        frame: &Frame,
        shards: &[usize],
        target: Target,
        how: &Scatter,
    ) -> Result<(), SessionError> {
        let mut rewritten = BytesMut::new();
        let query: &[u8] = match how {
            Scatter::Merge(merge) => {
                build::query(&mut rewritten, &merge.sql);
                &rewritten
            }
            _ => &frame.bytes,
        };
        let output = Output {
            describe: true,
            formats: None,
            simple: true,
        };
        self.run_scatter(query, shards, target, how, output).await
    }

    /// Sends `request` to one connection per shard and streams the combined answer.
    pub(super) async fn run_scatter(
        &mut self,
        request: &[u8],
        shards: &[usize],
        target: Target,
        how: &Scatter,
        output: Output,
    ) -> Result<(), SessionError> {
        let mut conns = self.shard_connections(shards, target).await?;
        conns.send_all(request).await?;
        // Dates and timestamps are read in DateStyle ISO, which every connection must report.
        let iso_dates = conns.iter().all(|c| {
            c.params()
                .get("DateStyle")
                .is_some_and(|style| style.starts_with("ISO"))
        });
        // Text rules are fetched once a text column shows up (`fetch_text_rules`).
        let rules = TypeRules {
            text: TextRules::default(),
            iso_dates,
        };
        let mut gathered = Gathered {
            rules,
            max_held: self.shared.config.sharding.max_merge_memory_mb << 20,
            describe: output.describe,
            binary: output
                .formats
                .as_ref()
                .is_some_and(|f| f.iter().any(|&c| c != 0)),
            formats: output.formats,
            ..Gathered::default()
        };
        match how {
            Scatter::Concat { order, limit } => {
                gathered.limit = *limit;
                self.merge_rows(&mut conns, order, &mut gathered).await?;
            }
            Scatter::Merge(merge) => match &merge.groups {
                Some(groups) => {
                    gathered.grouped = true;
                    self.merge_groups(&mut conns, merge, groups, &mut gathered)
                        .await?;
                }
                None => {
                    apply(merge, &mut gathered);
                    self.merge_rows(&mut conns, &merge.order, &mut gathered)
                        .await?;
                }
            },
            Scatter::Unsupported(why) => {
                gathered.fail(MultiShardError::CannotMerge(why.clone()));
                self.drain(&mut conns, &mut gathered).await?;
            }
        }
        match gathered.error {
            Some(error) => {
                self.shared.metrics.error(error.sqlstate());
                error.write_to(&mut self.client.output);
                self.fail_statement(output.simple);
            }
            None => build::command_complete(
                &mut self.client.output,
                &format!("SELECT {}", gathered.rows),
            ),
        }
        if output.simple {
            build::ready_for_query(&mut self.client.output, self.tx.status());
        }
        Ok(())
    }

    /// Concatenates the shards' rows, or merges them by `order`.
    async fn merge_rows(
        &mut self,
        conns: &mut [Pooled<BackendManager>],
        order: &[SortKey],
        gathered: &mut Gathered,
    ) -> Result<(), SessionError> {
        if order.is_empty() {
            for conn in conns.iter_mut() {
                while let Some(row) = self.next_row(conn, gathered).await? {
                    self.emit(&row, gathered);
                    self.flush_full().await?;
                }
            }
            return Ok(());
        }
        self.merge_sorted(conns, order, gathered).await
    }

    /// Reads every shard's answer to its end, dropping the rows.
    pub(super) async fn drain(
        &mut self,
        conns: &mut [Pooled<BackendManager>],
        gathered: &mut Gathered,
    ) -> Result<(), SessionError> {
        for conn in conns.iter_mut() {
            while self.next_row(conn, gathered).await?.is_some() {}
        }
        Ok(())
    }

    /// Sends one shard row to the client, unless DISTINCT, OFFSET or LIMIT drop it.
    fn emit(&mut self, row: &[u8], gathered: &mut Gathered) {
        if gathered.error.is_some() || gathered.full() {
            return;
        }
        if gathered.hidden == 0 && gathered.seen.is_none() && !gathered.binary {
            if gathered.offset > 0 {
                gathered.offset -= 1;
            } else {
                self.client.output.extend_from_slice(row);
                gathered.rows += 1;
            }
            return;
        }
        let Some(mut fields) = rows::data_row_fields(&row[5..]) else {
            gathered.fail(MultiShardError::MalformedRow);
            return;
        };
        fields.truncate(fields.len().saturating_sub(gathered.hidden));
        if gathered.seen.is_some() {
            let key = canonical_row(&fields, &gathered.oids);
            let size = key.len() + 48;
            let new = gathered.seen.as_mut().is_some_and(|seen| seen.insert(key));
            if !new || !gathered.hold(size) {
                return;
            }
        }
        if gathered.offset > 0 {
            gathered.offset -= 1;
            return;
        }
        self.send_row(&fields, gathered);
    }

    /// Sends a DataRow of text values, encoded in the formats the client asked for.
    pub(super) fn send_row(&mut self, fields: &[Option<&[u8]>], gathered: &mut Gathered) {
        if !gathered.binary {
            build::data_row(&mut self.client.output, fields);
            gathered.rows += 1;
            return;
        }
        let mut encoded: Vec<Option<Vec<u8>>> = Vec::with_capacity(fields.len());
        for (i, field) in fields.iter().enumerate() {
            let Some(value) = field else {
                encoded.push(None);
                continue;
            };
            if format_code(gathered.formats.as_deref(), i) == 0 {
                encoded.push(Some(value.to_vec()));
                continue;
            }
            let oid = gathered.oids.get(i).copied().unwrap_or(0);
            match binary::text_to_binary(oid, value) {
                Some(bytes) => encoded.push(Some(bytes)),
                None => {
                    let why = format!("binary results of type OID {oid} (ask for text results)");
                    gathered.fail(MultiShardError::CannotMerge(why));
                    return;
                }
            }
        }
        let values: Vec<Option<&[u8]>> = encoded.iter().map(|v| v.as_deref()).collect();
        build::data_row(&mut self.client.output, &values);
        gathered.rows += 1;
    }

    /// Sends a RowDescription of these fields, with the format codes the client will get.
    pub(super) fn send_description<F: AsRef<[u8]>>(&mut self, fields: &[F], gathered: &Gathered) {
        match gathered.formats.as_deref() {
            None => build::row_description(&mut self.client.output, fields),
            Some(codes) => {
                let fields: Vec<Vec<u8>> = fields
                    .iter()
                    .enumerate()
                    .map(|(i, f)| rows::with_format(f.as_ref(), format_code(Some(codes), i)))
                    .collect();
                build::row_description(&mut self.client.output, &fields);
            }
        }
    }

    /// Writes the output queued for the client once it is large.
    pub(super) async fn flush_full(&mut self) -> Result<(), SessionError> {
        if self.client.output.len() > FLUSH_AT {
            self.client.drain().await?;
        }
        Ok(())
    }
}

/// The format code of result column `i` under a Bind's result format codes.
fn format_code(codes: Option<&[i16]>, i: usize) -> i16 {
    match codes {
        None | Some([]) => 0,
        Some([one]) => *one,
        Some(codes) => codes.get(i).copied().unwrap_or(0),
    }
}

/// Sets up `gathered` for a rows merge (no aggregates).
fn apply(merge: &Merge, gathered: &mut Gathered) {
    gathered.limit = merge.limit;
    gathered.offset = merge.offset;
    gathered.hidden = merge.hidden;
    if merge.distinct {
        gathered.seen = Some(HashSet::new());
    }
}

/// A row's values made comparable as PostgreSQL compares them (DISTINCT, grouping).
pub(super) fn canonical_row(fields: &[Option<&[u8]>], oids: &[u32]) -> Vec<u8> {
    let mut key = Vec::new();
    for (i, field) in fields.iter().enumerate() {
        match field {
            None => key.extend_from_slice(&u32::MAX.to_be_bytes()),
            Some(value) => {
                let value = canonical(oids.get(i).copied().unwrap_or(0), value);
                key.extend_from_slice(&(value.len() as u32).to_be_bytes());
                key.extend_from_slice(&value);
            }
        }
    }
    key
}

/// A sort key resolved against the result's columns.
pub(super) struct Key {
    pub(super) column: usize,
    pub(super) kind: SortType,
    pub(super) descending: bool,
    pub(super) nulls_first: bool,
}

impl<S: Stream> Session<S> {
    /// Merges the shards' sorted rows: each step forwards the smallest head row and reads the
    /// next row of that shard only.
    async fn merge_sorted(
        &mut self,
        conns: &mut [Pooled<BackendManager>],
        order: &[SortKey],
        gathered: &mut Gathered,
    ) -> Result<(), SessionError> {
        let mut heads = Vec::with_capacity(conns.len());
        let mut finished = vec![false; conns.len()];
        for (i, conn) in conns.iter_mut().enumerate() {
            let head = self.next_row(conn, gathered).await?;
            finished[i] = head.is_none();
            heads.push(head);
        }
        self.fetch_text_rules(order, gathered).await;
        self.relearn_if_stale(order, gathered).await;
        let resolved = gathered.described.as_ref().map(|d| {
            let columns = rows::column_types(&d[5..]).unwrap_or_default();
            let origins = rows::column_origins(&d[5..]).unwrap_or_default();
            let result = Described {
                columns: &columns,
                origins: &origins,
                shard: gathered.described_by,
            };
            resolve_keys(&result, gathered.hidden, order, &gathered.rules)
        });
        let keys = match resolved {
            Some(Ok(keys)) => keys,
            Some(Err(why)) => {
                gathered.fail(MultiShardError::CannotMerge(why));
                Vec::new()
            }
            None => Vec::new(),
        };
        while gathered.error.is_none() && !gathered.full() {
            let Some(best) = smallest(&heads, &keys) else {
                break;
            };
            if let Some(row) = heads[best].take() {
                self.emit(&row, gathered);
            }
            self.flush_full().await?;
            heads[best] = self.next_row(&mut conns[best], gathered).await?;
            finished[best] = heads[best].is_none();
        }
        // Whatever is left is read and dropped, so every connection ends clean.
        for (i, conn) in conns.iter_mut().enumerate() {
            while !finished[i] {
                finished[i] = self.next_row(conn, gathered).await?.is_none();
            }
        }
        Ok(())
    }

    /// Fetches the collations' rules (verifying the ones `order` names) once the result shows a
    /// text column; a read without text never waits for them.
    pub(super) async fn fetch_text_rules(&self, order: &[SortKey], gathered: &mut Gathered) {
        if gathered.text_fetched || !gathered.oids.iter().any(|&oid| is_text(oid)) {
            return;
        }
        gathered.text_fetched = true;
        let (collations, logins) = (&self.shared.collations, &self.shared.catalog_logins);
        gathered.rules.text = collations.rules(&named_in(order), logins).await;
    }

    /// When the result comes from a table created after the columns' collations were learned,
    /// learns them again and takes the new rules.
    async fn relearn_if_stale(&self, order: &[SortKey], gathered: &mut Gathered) {
        let Some(d) = &gathered.described else { return };
        let origins = rows::column_origins(&d[5..]).unwrap_or_default();
        let shard = gathered.described_by;
        let Some(relation) = gathered.rules.text.stale_relation(&origins, shard) else {
            return;
        };
        let (collations, logins) = (&self.shared.collations, &self.shared.catalog_logins);
        collations
            .relearn_for(logins, shard.unwrap_or(0), relation)
            .await;
        gathered.rules.text = collations.rules(&named_in(order), logins).await;
    }

    /// A shard's next DataRow, handling what comes before it; `None` once its ReadyForQuery is read.
    pub(super) async fn next_row(
        &mut self,
        conn: &mut Pooled<BackendManager>,
        gathered: &mut Gathered,
    ) -> Result<Option<BytesMut>, SessionError> {
        loop {
            let frame = conn.read_frame().await?;
            match frame.tag() {
                tag::DATA_ROW => return Ok(Some(frame.bytes)),
                tag::ROW_DESCRIPTION => {
                    if gathered.described.is_none() {
                        gathered.described_by = self.shared.shard_at(conn.addr());
                    }
                    self.describe(frame, gathered)
                }
                tag::ERROR_RESPONSE => gathered.fail(Failure::Server(frame.bytes.freeze())),
                tag::NOTICE_RESPONSE => self.client.output.extend_from_slice(&frame.bytes),
                tag::PARAMETER_STATUS => conn.note_parameter_status(frame.body()),
                tag::READY_FOR_QUERY => {
                    conn.note_ready_for_query(frame.body());
                    return Ok(None);
                }
                // CommandComplete is replaced by the total; nothing else belongs to a SELECT.
                _ => {}
            }
        }
    }

    /// Forwards the first RowDescription (without hidden columns; groups are described later);
    /// later ones must describe the same columns.
    fn describe(&mut self, frame: Frame, gathered: &mut Gathered) {
        match &gathered.described {
            None => {
                let bytes = frame.bytes.freeze();
                let types = rows::column_types(&bytes[5..]).unwrap_or_default();
                gathered.oids = types.into_iter().map(|(_, oid, _)| oid).collect();
                if gathered.grouped || !gathered.describe {
                } else if gathered.hidden == 0 && gathered.formats.is_none() {
                    self.client.output.extend_from_slice(&bytes);
                } else {
                    let mut fields = rows::description_fields(&bytes[5..]).unwrap_or_default();
                    fields.truncate(fields.len().saturating_sub(gathered.hidden));
                    self.send_description(&fields, gathered);
                }
                gathered.described = Some(bytes);
            }
            Some(first) if rows::same_columns(&first[5..], frame.body()) => {}
            Some(_) => gathered.fail(MultiShardError::DifferentColumns),
        }
    }
}

/// Index of the head row that sorts first (ties: the lower shard).
fn smallest(heads: &[Option<BytesMut>], keys: &[Key]) -> Option<usize> {
    let mut best: Option<(usize, &BytesMut)> = None;
    for (i, head) in heads.iter().enumerate() {
        let Some(row) = head else { continue };
        match best {
            Some((_, current))
                if compare_rows(keys, &row[5..], &current[5..]) != Ordering::Less => {}
            _ => best = Some((i, row)),
        }
    }
    best.map(|(i, _)| i)
}

fn compare_rows(keys: &[Key], a: &[u8], b: &[u8]) -> Ordering {
    compare_by(
        keys,
        |i| rows::data_row_field(a, i).flatten(),
        |i| rows::data_row_field(b, i).flatten(),
    )
}

/// Compares two rows key by key, with `a(i)`/`b(i)` giving column `i` (`None`: NULL).
pub(super) fn compare_by<'x, 'y>(
    keys: &[Key],
    a: impl Fn(usize) -> Option<&'x [u8]>,
    b: impl Fn(usize) -> Option<&'y [u8]>,
) -> Ordering {
    for key in keys {
        let ordering = match (a(key.column), b(key.column)) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) if key.nulls_first => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) if key.nulls_first => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(x), Some(y)) if key.descending => key.kind.compare(x, y).reverse(),
            (Some(x), Some(y)) => key.kind.compare(x, y),
        };
        if ordering != Ordering::Equal {
            return ordering;
        }
    }
    Ordering::Equal
}

/// A result's columns as a shard described them: (name, type OID, format) and (table OID,
/// column number) of each, and which shard sent the description.
pub(super) struct Described<'a> {
    pub(super) columns: &'a [(String, u32, i16)],
    /// Empty when unknown (every column then counts as an expression).
    pub(super) origins: &'a [(u32, i16)],
    pub(super) shard: Option<usize>,
}

/// The collation names sort keys write with COLLATE.
pub(super) fn named_in(order: &[SortKey]) -> Vec<&str> {
    let mut names: Vec<&str> = order
        .iter()
        .filter_map(|key| match &key.collation {
            KeyCollation::Named(name) => Some(name.as_str()),
            _ => None,
        })
        .collect();
    names.dedup();
    names
}

/// Resolves the router's sort keys against the columns of a result whose last `hidden`
/// columns are hidden sort columns; `Err` names what cannot be merged.
pub(super) fn resolve_keys(
    result: &Described,
    hidden: usize,
    order: &[SortKey],
    rules: &TypeRules,
) -> Result<Vec<Key>, String> {
    let columns = result.columns;
    let visible = columns.len().saturating_sub(hidden);
    order
        .iter()
        .map(|key| {
            let column = match &key.column {
                SortColumn::Index(i) => *i,
                SortColumn::Hidden(i) => visible + i,
                SortColumn::Name(name) => {
                    let mut found = columns[..visible].iter().enumerate().filter(|(_, c)| c.0 == *name);
                    match (found.next(), found.next()) {
                        (Some((i, _)), None) => i,
                        _ => return Err(format!("ORDER BY {name}, which is not exactly one column of the result")),
                    }
                }
            };
            let (name, oid, format) =
                columns.get(column).ok_or("ORDER BY a column the result does not have")?;
            let origin = result.origins.get(column).copied().unwrap_or((0, 0));
            let text = || match &key.collation {
                KeyCollation::Named(collation) => rules.text.named(collation).map_err(|why| {
                    format!("collation {collation}: {why}")
                }),
                KeyCollation::Implicit => rules.text.column(*oid, origin, result.shard),
                KeyCollation::Unknown => Err(
                    "a COLLATE clause elsewhere in the statement may change its collation \
                     (write COLLATE on the ORDER BY item itself)".to_string(),
                ),
            };
            let kind = match rules.sort_type_or_why(*oid, text) {
                Ok(kind) if *format == 0 => kind,
                Err(Some(why)) => return Err(format!("the order of text column {name} ({why})")),
                _ => return Err(format!(
                    "rows sorted by column {name} (type OID {oid}); pgshard merges integers, floats, \
                     numeric, bool, uuid, dates and timestamps (DateStyle ISO), and text under \
                     collations it verified on every shard"
                )),
            };
            Ok(Key { column, kind, descending: key.descending, nulls_first: key.nulls_first })
        })
        .collect()
}

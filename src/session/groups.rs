//! Aggregated cross-shard reads (with or without GROUP BY): each shard returns one row of
//! partial aggregates per group; rows are folded into groups keyed by their GROUP BY values,
//! then HAVING, DISTINCT, ORDER BY, OFFSET and LIMIT apply to the combined groups, as one
//! server would. Groups are held until every shard has answered, within `[sharding]
//! max_merge_memory_mb`; the client sees nothing until then, and an error instead of a partial
//! answer.

use std::collections::{HashMap, HashSet};

use super::aggregate::{check_type, evaluate, fold};
use super::error::{MultiShardError, SessionError};
use super::scatter::{canonical_row, compare_by, resolve_keys, Described, Gathered};
use super::Session;
use crate::backend::BackendManager;
use crate::merge::{average, TypeRules};
use crate::pool::Pooled;
use crate::router::{Combine, Groups, Merge, Output};
use crate::transport::Stream;
use crate::wire::rows;

/// Why text of a statement with a COLLATE clause pgshard cannot attribute is not compared.
const COLLATE_ELSEWHERE: &str =
    "a COLLATE clause inside the statement may change the collation of \
     its text values (write COLLATE only on the ORDER BY item)";

/// numeric's type OID: what avg() of integers and numerics returns.
const NUMERIC: u32 = 1700;

/// The groups seen so far: each one's shard columns, folded.
#[derive(Default)]
struct Table {
    index: HashMap<Vec<u8>, usize>,
    groups: Vec<Vec<Option<Vec<u8>>>>,
}

type Row = Vec<Option<Vec<u8>>>;

impl<S: Stream> Session<S> {
    /// Folds every shard's rows into groups, then sends the groups the query asks for.
    pub(super) async fn merge_groups(
        &mut self,
        conns: &mut [Pooled<BackendManager>],
        merge: &Merge,
        groups: &Groups,
        gathered: &mut Gathered,
    ) -> Result<(), SessionError> {
        let mut table = Table::default();
        let mut roles: Option<Vec<Option<Combine>>> = None;
        let mut rules = None;
        for conn in conns.iter_mut() {
            while let Some(row) = self.next_row(conn, gathered).await? {
                if gathered.error.is_some() {
                    continue;
                }
                if rules.is_none() {
                    rules = Some(self.group_rules(merge, groups, gathered).await);
                }
                let rules = rules.as_ref().expect("set above");
                let roles = roles.get_or_insert_with(|| fold_roles(groups, gathered.oids.len()));
                let added = check_types(groups, &gathered.oids, rules)
                    .and_then(|()| table.add(&row[5..], groups, roles, rules, gathered));
                if let Err(why) = added {
                    gathered.fail(MultiShardError::CannotMerge(why));
                }
            }
        }
        if gathered.error.is_some() {
            return Ok(());
        }
        let Some(described) = gathered.described.clone() else {
            return Ok(());
        };
        let rules = match rules {
            Some(rules) => rules,
            None => self.group_rules(merge, groups, gathered).await,
        };
        let rules = &rules;
        let finished = check_types(groups, &gathered.oids, rules)
            .and_then(|()| finish(table, merge, groups, &described[5..], rules));
        let (fields, rows) = match finished {
            Ok(done) => done,
            Err(why) => {
                gathered.fail(MultiShardError::CannotMerge(why));
                return Ok(());
            }
        };
        if gathered.describe {
            self.send_description(&fields, gathered);
        }
        // The client's values are the outputs, typed as described.
        gathered.oids = output_types(groups, &gathered.oids);
        for row in rows {
            let values: Vec<Option<&[u8]>> =
                row[..groups.visible].iter().map(|v| v.as_deref()).collect();
            self.send_row(&values, gathered);
            if gathered.error.is_some() {
                break;
            }
            self.flush_full().await?;
        }
        Ok(())
    }
}

impl<S: Stream> Session<S> {
    /// The ordering rules for the groups' values (text ones fetched if the result has text).
    async fn group_rules(
        &self,
        merge: &Merge,
        groups: &Groups,
        gathered: &mut Gathered,
    ) -> TypeRules {
        if groups.collation_unknown {
            return gathered.rules.without_text(COLLATE_ELSEWHERE);
        }
        self.fetch_text_rules(&merge.order, gathered).await;
        gathered.rules.clone()
    }
}

/// The type OID of each output, from the shard columns' types.
fn output_types(groups: &Groups, oids: &[u32]) -> Vec<u32> {
    let oid = |c: usize| oids.get(c).copied().unwrap_or(0);
    groups
        .outputs
        .iter()
        .map(|output| match *output {
            Output::Column(c) | Output::Aggregate(_, c) => oid(c),
            Output::Avg { .. } => NUMERIC,
        })
        .collect()
}

/// Which shard columns hold partial aggregates, and how each folds (`None`: a grouped value).
fn fold_roles(groups: &Groups, columns: usize) -> Vec<Option<Combine>> {
    let mut roles = vec![None; columns];
    let mut set = |column: usize, how: Combine| {
        if let Some(role) = roles.get_mut(column) {
            *role = Some(how);
        }
    };
    for output in &groups.outputs {
        match *output {
            Output::Column(_) => {}
            Output::Aggregate(how, column) => set(column, how),
            Output::Avg { sum, count } => {
                set(sum, Combine::Sum);
                set(count, Combine::Count);
            }
        }
    }
    roles
}

/// Refuses aggregates whose shard type cannot be combined exactly, before any is combined.
fn check_types(groups: &Groups, oids: &[u32], rules: &TypeRules) -> Result<(), String> {
    let oid = |c: usize| oids.get(c).copied().unwrap_or(0);
    for output in &groups.outputs {
        match *output {
            Output::Column(_) => {}
            Output::Aggregate(how, column) => check_type(how, oid(column), rules)?,
            Output::Avg { sum, .. } => check_type(Combine::Avg, oid(sum), rules)?,
        }
    }
    Ok(())
}

impl Table {
    /// Adds one shard row: a new group, or folded into the group with the same key.
    fn add(
        &mut self,
        body: &[u8],
        groups: &Groups,
        roles: &[Option<Combine>],
        rules: &TypeRules,
        gathered: &mut Gathered,
    ) -> Result<(), String> {
        let fields = rows::data_row_fields(body).ok_or("a malformed DataRow")?;
        let oids = &gathered.oids;
        let key_fields: Vec<Option<&[u8]>> = groups
            .keys
            .iter()
            .map(|&k| fields.get(k).copied().flatten())
            .collect();
        let key_oids: Vec<u32> = groups
            .keys
            .iter()
            .map(|&k| oids.get(k).copied().unwrap_or(0))
            .collect();
        let key = canonical_row(&key_fields, &key_oids);
        if let Some(&i) = self.index.get(&key) {
            let state = &mut self.groups[i];
            for (column, role) in roles.iter().enumerate() {
                let (Some(how), Some(slot)) = (role, state.get_mut(column)) else {
                    continue;
                };
                let value = fields.get(column).copied().flatten();
                let oid = oids.get(column).copied().unwrap_or(0);
                *slot = fold(*how, oid, rules, slot.take(), value)?;
            }
            return Ok(());
        }
        let size = 64
            + 2 * key.len()
            + fields
                .iter()
                .map(|f| 24 + f.map_or(0, <[u8]>::len))
                .sum::<usize>();
        if gathered.hold(size) {
            self.index.insert(key, self.groups.len());
            self.groups
                .push(fields.iter().map(|f| f.map(<[u8]>::to_vec)).collect());
        }
        Ok(())
    }
}

/// The client's RowDescription fields and the groups to send, in order: outputs computed,
/// HAVING, DISTINCT, ORDER BY, OFFSET and LIMIT applied.
fn finish(
    table: Table,
    merge: &Merge,
    groups: &Groups,
    description: &[u8],
    rules: &TypeRules,
) -> Result<(Vec<Vec<u8>>, Vec<Row>), String> {
    let shard_fields = rows::description_fields(description).ok_or("a malformed RowDescription")?;
    let shard_types = rows::column_types(description).ok_or("a malformed RowDescription")?;
    let mut fields = Vec::with_capacity(groups.outputs.len());
    let mut types = Vec::with_capacity(groups.outputs.len());
    for output in &groups.outputs {
        let (Output::Column(c) | Output::Aggregate(_, c) | Output::Avg { sum: c, .. }) = *output;
        let field = shard_fields
            .get(c)
            .ok_or("an output column the shards did not return")?;
        let (_, oid, _) = &shard_types[c];
        match output {
            Output::Avg { .. } => {
                fields
                    .push(rows::retyped_field(field, NUMERIC, -1, -1).ok_or("a malformed field")?);
                types.push(NUMERIC);
            }
            _ => {
                fields.push(field.to_vec());
                types.push(*oid);
            }
        }
    }
    let mut out: Vec<Row> = Vec::with_capacity(table.groups.len());
    for state in table.groups {
        let row = outputs(&state, &groups.outputs)?;
        if let Some(having) = &groups.having {
            if evaluate(having, &row, &types, rules)? != Some(true) {
                continue;
            }
        }
        out.push(row);
    }
    if merge.distinct {
        let mut seen = HashSet::new();
        out.retain(|row| {
            let visible: Vec<Option<&[u8]>> =
                row[..groups.visible].iter().map(|v| v.as_deref()).collect();
            seen.insert(canonical_row(&visible, &types))
        });
    }
    if !merge.order.is_empty() {
        // Sort keys of groups are output positions; names are not needed.
        let columns: Vec<(String, u32, i16)> =
            types.iter().map(|&oid| (String::new(), oid, 0)).collect();
        let result = Described {
            columns: &columns,
            origins: &[],
            shard: None,
        };
        let keys = resolve_keys(&result, 0, &merge.order, rules)?;
        out.sort_by(|a, b| compare_by(&keys, |i| a[i].as_deref(), |i| b[i].as_deref()));
    }
    let skip = usize::try_from(merge.offset).unwrap_or(usize::MAX);
    let take = merge
        .limit
        .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX));
    let rows = out.into_iter().skip(skip).take(take).collect();
    fields.truncate(groups.visible);
    Ok((fields, rows))
}

/// One group's output values from its folded shard columns.
fn outputs(state: &[Option<Vec<u8>>], outputs: &[Output]) -> Result<Row, String> {
    let value = |c: usize| state.get(c).cloned().flatten();
    outputs
        .iter()
        .map(|output| match *output {
            Output::Column(c) | Output::Aggregate(_, c) => Ok(value(c)),
            Output::Avg { sum, count } => match (value(sum), value(count)) {
                (Some(_), Some(n)) if n == b"0" => Ok(None),
                (Some(s), Some(n)) => average(&s, &n)
                    .map(|a| Some(a.into_bytes()))
                    .ok_or_else(|| "avg() of a value that is not a finite number".to_string()),
                _ => Ok(None),
            },
        })
        .collect()
}

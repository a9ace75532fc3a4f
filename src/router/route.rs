//! Plan + Bind parameters + session state → [`Route`]: the per-execution half of routing.
//!
//! The cheap path: literal keys were hashed when the plan was made, so a cached statement costs
//! a parameter parse, one hash and one table lookup. Never parses SQL, never does I/O, never
//! allocates for a single-shard route.

use super::plan::{KeyClass, KeyExpr, KeySet, Placement, Plan, SettingPlan, StatementKind};
use super::{RouteError, Router};
use crate::multishard::SplitPart;
use crate::sharding::{key_from_binary, key_from_text, KeyType, KeyValue, ShardingError};

/// Which server of a shard may run the statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The shard's primary.
    Primary,
    /// Replica-eligible: a healthy replica of the shard, or its primary when the shard reads
    /// from its primary (`read_from = "primary"`), has no replica up, or has none at all.
    Replica,
}

/// Where a statement goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// One shard.
    Shard { shard: usize, target: Target },
    /// Several shards (ascending), each running the statement unchanged: a keyless read or an
    /// IN list spanning shards (scatter-gather, a later issue), or an UPDATE/DELETE whose IN
    /// list spans shards. Until scatter-gather lands the session refuses these.
    Shards { shards: Vec<usize>, target: Target },
    /// A multi-row INSERT whose rows belong to several shards (ascending): it must be split
    /// per shard (a later issue); never send it unchanged to several shards (rows would be
    /// duplicated).
    SplitInsert { shards: Vec<usize> },
    /// Every shard's primary: writes to reference tables, DDL on sharded or reference tables.
    All,
    /// Answered by pgshard itself and never sent to a server: apply it with
    /// [`RouteContext::apply`] and reply `SET` / `RESET`.
    Local(OverrideChange),
}

/// A change to the session's routing overrides, from `SET`/`RESET pgshard.*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverrideChange {
    /// `SET pgshard.shard_key = v` (clears `pgshard.shard`).
    ShardKey(String),
    /// `SET pgshard.shard = 'name'` (clears `pgshard.shard_key`).
    Shard(usize),
    ResetShardKey,
    ResetShard,
    /// `RESET ALL`: clears both.
    ResetAll,
}

/// Where the session is, transaction-wise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TransactionMode {
    /// No explicit transaction: plain reads are replica-eligible.
    #[default]
    Outside,
    /// In `BEGIN` (read-write): everything goes to the primary.
    ReadWrite,
    /// In `BEGIN READ ONLY`: plain reads stay replica-eligible.
    ReadOnly,
}

/// What the session tells the router besides the statement: its `pgshard.*` overrides and its
/// transaction mode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteContext {
    /// `SET pgshard.shard_key`: the key as text, parsed by each table's declared type.
    pub shard_key: Option<String>,
    /// `SET pgshard.shard`: a shard index.
    pub shard: Option<usize>,
    pub transaction: TransactionMode,
}

impl RouteContext {
    /// Applies a [`Route::Local`] change. Setting one override clears the other.
    pub fn apply(&mut self, change: &OverrideChange) {
        match change {
            OverrideChange::ShardKey(key) => {
                self.shard_key = Some(key.clone());
                self.shard = None;
            }
            OverrideChange::Shard(shard) => {
                self.shard = Some(*shard);
                self.shard_key = None;
            }
            OverrideChange::ResetShardKey => self.shard_key = None,
            OverrideChange::ResetShard => self.shard = None,
            OverrideChange::ResetAll => {
                self.shard_key = None;
                self.shard = None;
            }
        }
    }
}

/// Bind parameters, as PostgreSQL's Bind message carries them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Params<'a> {
    /// Each parameter's bytes; `None` is SQL NULL.
    pub values: &'a [Option<&'a [u8]>],
    /// Format codes: none = all text, one = that for all, else one per parameter (0 text,
    /// 1 binary).
    pub formats: &'a [i16],
    /// Parameter type OIDs as the Parse declared them (missing or 0: left to the server).
    pub types: &'a [u32],
}

impl<'a> Params<'a> {
    /// No parameters (simple queries).
    pub const NONE: Params<'static> = Params {
        values: &[],
        formats: &[],
        types: &[],
    };

    pub fn new(values: &'a [Option<&'a [u8]>], formats: &'a [i16]) -> Params<'a> {
        Params {
            values,
            formats,
            types: &[],
        }
    }

    /// The same parameters with the types their Parse declared, so a binary key is read by its
    /// own type (a float8 is not an int8).
    pub fn with_types(self, types: &'a [u32]) -> Params<'a> {
        Params { types, ..self }
    }

    fn is_binary(&self, index: usize) -> bool {
        let code = match self.formats {
            [] => 0,
            [one] => *one,
            many => many.get(index).copied().unwrap_or(0),
        };
        code == 1
    }

    /// Parameter `index` as a key of `key_type`; `Ok(None)` for NULL.
    fn key(&self, index: usize, key_type: KeyType) -> Result<Option<KeyValue>, RouteError> {
        let value = self.values.get(index).ok_or(RouteError::MissingParam {
            number: index + 1,
            given: self.values.len(),
        })?;
        let Some(bytes) = value else {
            return Ok(None);
        };
        let key = if self.is_binary(index) {
            let declared = self.types.get(index).copied().unwrap_or(0);
            binary_key(key_type, declared, bytes).map_err(|e| match e {
                RouteError::KeyParamType { oid, .. } => RouteError::KeyParamType {
                    number: index + 1,
                    oid,
                },
                other => other,
            })?
        } else {
            let text =
                std::str::from_utf8(bytes).map_err(|_| ShardingError::KeyNotUtf8 { key_type })?;
            key_from_text(key_type, text)?
        };
        Ok(Some(key))
    }
}

/// PostgreSQL type OIDs a key parameter may be declared as.
mod oid {
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const UNKNOWN: u32 = 705;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const UUID: u32 = 2950;
}

/// A binary key parameter, read by the type its Parse declared (`0`: by the key's own type),
/// then converted as PostgreSQL's comparison or assignment would.
fn binary_key(key_type: KeyType, declared: u32, bytes: &[u8]) -> Result<KeyValue, RouteError> {
    let as_text = |bytes: &[u8]| -> Result<KeyValue, RouteError> {
        let text =
            std::str::from_utf8(bytes).map_err(|_| ShardingError::KeyNotUtf8 { key_type })?;
        Ok(key_from_text(key_type, text)?)
    };
    match declared {
        // A binary uuid is 16 bytes; any other length is a text-typed value (`$1::text::uuid`).
        0 if key_type == KeyType::Uuid && bytes.len() != 16 => as_text(bytes),
        0 => Ok(key_from_binary(key_type, bytes)?),
        oid::INT2 | oid::INT4 | oid::INT8 => match key_from_binary(KeyType::Bigint, bytes)? {
            KeyValue::Int(n) if is_integer(key_type) => {
                Ok(key_from_text(key_type, &n.to_string())?)
            }
            KeyValue::Int(n) => as_text(n.to_string().as_bytes()),
            other => Ok(other),
        },
        oid::TEXT | oid::VARCHAR | oid::BPCHAR | oid::NAME | oid::UNKNOWN => as_text(bytes),
        oid::UUID => Ok(key_from_binary(KeyType::Uuid, bytes)?),
        oid::FLOAT4 | oid::FLOAT8 if is_integer(key_type) => {
            let value = match *bytes {
                [a, b, c, d] => f64::from(f32::from_be_bytes([a, b, c, d])),
                [a, b, c, d, e, f, g, h] => f64::from_be_bytes([a, b, c, d, e, f, g, h]),
                _ => {
                    return Err(RouteError::KeyParamType {
                        number: 0,
                        oid: declared,
                    })
                }
            };
            // PostgreSQL casts float to integer by rounding half to even.
            let rounded = value.round_ties_even();
            if !rounded.is_finite() || rounded.abs() > 9.2e18 {
                return Err(RouteError::KeyParamType {
                    number: 0,
                    oid: declared,
                });
            }
            // Infallible: `rounded` is finite, integral and within i64's range.
            Ok(key_from_text(key_type, &(rounded as i64).to_string())?)
        }
        other => Err(RouteError::KeyParamType {
            number: 0,
            oid: other,
        }),
    }
}

fn is_integer(key_type: KeyType) -> bool {
    matches!(
        key_type,
        KeyType::Bigint | KeyType::Integer | KeyType::Smallint
    )
}

/// Shards a key set (or a class) may be on, without allocating for one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ShardSet {
    Empty,
    One(usize),
    Many(Vec<usize>),
}

impl ShardSet {
    fn insert(&mut self, shard: usize) {
        match self {
            ShardSet::Empty => *self = ShardSet::One(shard),
            ShardSet::One(s) if *s == shard => {}
            ShardSet::One(s) => *self = ShardSet::Many(sorted_pair(*s, shard)),
            ShardSet::Many(v) => {
                if let Err(at) = v.binary_search(&shard) {
                    v.insert(at, shard);
                }
            }
        }
    }

    fn union(&mut self, other: ShardSet) {
        match other {
            ShardSet::Empty => {}
            ShardSet::One(s) => self.insert(s),
            ShardSet::Many(v) => v.into_iter().for_each(|s| self.insert(s)),
        }
    }

    fn contains(&self, shard: usize) -> bool {
        match self {
            ShardSet::Empty => false,
            ShardSet::One(s) => *s == shard,
            ShardSet::Many(v) => v.binary_search(&shard).is_ok(),
        }
    }

    fn intersect(self, other: ShardSet) -> ShardSet {
        match (self, other) {
            (ShardSet::Empty, _) | (_, ShardSet::Empty) => ShardSet::Empty,
            (ShardSet::One(a), b) | (b, ShardSet::One(a)) => {
                if b.contains(a) {
                    ShardSet::One(a)
                } else {
                    ShardSet::Empty
                }
            }
            (ShardSet::Many(a), b) => {
                let mut out = ShardSet::Empty;
                a.into_iter()
                    .filter(|s| b.contains(*s))
                    .for_each(|s| out.insert(s));
                out
            }
        }
    }
}

fn sorted_pair(a: usize, b: usize) -> Vec<usize> {
    vec![a.min(b), a.max(b)]
}

impl Router {
    /// Resolves a plan to a route with the Bind parameters (for `$n` keys) and the session's
    /// state. Allocation-free for single-shard routes.
    pub fn route(
        &self,
        plan: &Plan,
        params: &Params<'_>,
        ctx: &RouteContext,
    ) -> Result<Route, RouteError> {
        if let Some(message) = &plan.unsupported {
            return Err(RouteError::Unsupported(message.clone()));
        }
        if let StatementKind::Setting(setting) = &plan.kind {
            return self.setting(setting).map(Route::Local);
        }
        let target = if plan.plain_read && ctx.transaction != TransactionMode::ReadWrite {
            Target::Replica
        } else {
            Target::Primary
        };
        match &plan.placement {
            Placement::All => {
                Ok(self
                    .hinted_shard(plan)?
                    .map_or(Route::All, |shard| Route::Shard {
                        shard,
                        target: Target::Primary,
                    }))
            }
            Placement::Default => {
                let shard = self.override_shard(plan, ctx, self.default_key_type)?;
                Ok(Route::Shard {
                    shard: shard.unwrap_or(self.default_shard),
                    target,
                })
            }
            Placement::Sharded(classes) => self.route_sharded(plan, classes, params, ctx, target),
        }
    }

    fn route_sharded(
        &self,
        plan: &Plan,
        classes: &[KeyClass],
        params: &Params<'_>,
        ctx: &RouteContext,
        target: Target,
    ) -> Result<Route, RouteError> {
        let mut found = ShardSet::Empty;
        let mut split = false;
        let mut keyless: Option<&KeyClass> = None;
        for class in classes {
            if class.sets.is_empty() {
                keyless = keyless.or(Some(class));
                continue;
            }
            let shards = self.class_shards(class, params)?;
            split |= matches!(shards, ShardSet::Many(_)) && class.sets.iter().any(|s| s.rows);
            found.union(shards);
        }
        if let Some(class) = keyless {
            if let Some(shard) = self.override_shard(plan, ctx, class.table.key_type)? {
                return Ok(Route::Shard { shard, target });
            }
            if plan.writes {
                return Err(self.key_needed(plan, class));
            }
            let shards = (0..self.map.len()).collect();
            return Ok(Route::Shards { shards, target });
        }
        let route = match found {
            // No row can match (`key = NULL`, contradictory keys): any shard answers right.
            ShardSet::Empty => Route::Shard {
                shard: self.default_shard,
                target,
            },
            ShardSet::One(shard) => Route::Shard { shard, target },
            ShardSet::Many(shards) if split => Route::SplitInsert { shards },
            ShardSet::Many(shards) => Route::Shards { shards, target },
        };
        self.check_key_moves(plan, &route, params)?;
        Ok(route)
    }

    /// The shards a key class is on: the intersection of its sets.
    fn class_shards(&self, class: &KeyClass, params: &Params<'_>) -> Result<ShardSet, RouteError> {
        let mut acc: Option<ShardSet> = None;
        for set in &class.sets {
            let shards = self.set_shards(set, class, params)?;
            acc = Some(match acc {
                None => shards,
                Some(prev) => prev.intersect(shards),
            });
        }
        Ok(acc.unwrap_or(ShardSet::Empty))
    }

    fn set_shards(
        &self,
        set: &KeySet,
        class: &KeyClass,
        params: &Params<'_>,
    ) -> Result<ShardSet, RouteError> {
        let mut out = ShardSet::Empty;
        for alt in &set.alts {
            match self.key_shard(alt, params)? {
                Some(shard) => out.insert(shard),
                None if set.rows => {
                    return Err(RouteError::NullKey {
                        table: class.table.name.to_string(),
                        column: class.table.key_column.to_string(),
                    })
                }
                None => {}
            }
        }
        Ok(out)
    }

    /// The shard of one key value; `None` for NULL.
    pub(super) fn key_shard(
        &self,
        key: &KeyExpr,
        params: &Params<'_>,
    ) -> Result<Option<usize>, RouteError> {
        match key {
            KeyExpr::Slot(slot) => Ok(Some(self.map.shard_of_slot(*slot))),
            KeyExpr::Param { index, key_type } => Ok(params
                .key(*index, *key_type)?
                .map(|k| self.map.shard_of_key(&k))),
            KeyExpr::Null => Ok(None),
            KeyExpr::Bad(e) => Err(RouteError::BadKey(e.clone())),
        }
    }

    /// The slot of the statement's first shard key, for per-slot statistics; `None` when it
    /// gives no key (or a NULL or malformed one). Allocation-free.
    pub fn key_slot(&self, plan: &Plan, params: &Params<'_>) -> Option<u16> {
        let Placement::Sharded(classes) = &plan.placement else {
            return None;
        };
        let set = classes.iter().find_map(|c| c.sets.first())?;
        match set.alts.first()? {
            KeyExpr::Slot(slot) => Some(*slot),
            KeyExpr::Param { index, key_type } => params
                .key(*index, *key_type)
                .ok()
                .flatten()
                .map(|k| k.slot()),
            KeyExpr::Null | KeyExpr::Bad(_) => None,
        }
    }

    /// `UPDATE ... SET key = v` is fine only when `v` lives on the shard the row is on.
    fn check_key_moves(
        &self,
        plan: &Plan,
        route: &Route,
        params: &Params<'_>,
    ) -> Result<(), RouteError> {
        for key_move in &plan.key_moves {
            let stays = match (&key_move.to, route) {
                (Some(to), Route::Shard { shard, .. }) => {
                    self.key_shard(to, params)? == Some(*shard)
                }
                _ => false,
            };
            if !stays {
                return Err(RouteError::KeyChange {
                    table: key_move.table.name.to_string(),
                    column: key_move.table.key_column.to_string(),
                });
            }
        }
        Ok(())
    }

    /// The shard a leading `/* pgshard: shard=s1 */` names: the only way to send a write meant
    /// for every shard (a reference table's) to one, e.g. to repair a partly applied one.
    fn hinted_shard(&self, plan: &Plan) -> Result<Option<usize>, RouteError> {
        match plan.hint.as_ref().and_then(|h| h.shard.as_deref()) {
            Some(name) => self.shard_named(name).map(Some),
            None => Ok(None),
        }
    }

    /// The shard a hint or session override names, if any: the statement's leading comment
    /// first, then `SET pgshard.shard`, then `SET pgshard.shard_key`.
    fn override_shard(
        &self,
        plan: &Plan,
        ctx: &RouteContext,
        key_type: KeyType,
    ) -> Result<Option<usize>, RouteError> {
        if let Some(hint) = &plan.hint {
            if let Some(name) = &hint.shard {
                return self.shard_named(name).map(Some);
            }
            if let Some(key) = &hint.shard_key {
                return Ok(Some(self.map.shard_of_key(&key_from_text(key_type, key)?)));
            }
        }
        if let Some(shard) = ctx.shard {
            if shard >= self.map.len() {
                return Err(self.unknown_shard(&shard.to_string()));
            }
            return Ok(Some(shard));
        }
        match &ctx.shard_key {
            Some(key) => Ok(Some(self.map.shard_of_key(&key_from_text(key_type, key)?))),
            None => Ok(None),
        }
    }

    fn setting(&self, setting: &SettingPlan) -> Result<OverrideChange, RouteError> {
        Ok(match setting {
            SettingPlan::ShardKey(key) => {
                self.check_override_key(key)?;
                OverrideChange::ShardKey(key.clone())
            }
            SettingPlan::Shard(name) => OverrideChange::Shard(self.shard_named(name)?),
            SettingPlan::ResetShardKey => OverrideChange::ResetShardKey,
            SettingPlan::ResetShard => OverrideChange::ResetShard,
            SettingPlan::ResetAll => OverrideChange::ResetAll,
            SettingPlan::Unknown(name) => return Err(RouteError::UnknownSetting(name.clone())),
        })
    }

    /// A `SET pgshard.shard_key` value must parse as at least one configured key type.
    fn check_override_key(&self, key: &str) -> Result<(), RouteError> {
        let mut first_error = None;
        for &key_type in &self.key_types {
            match key_from_text(key_type, key) {
                Ok(_) => return Ok(()),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), |e| Err(RouteError::BadKey(e)))
    }

    /// A shard by name, or by index written as a number.
    fn shard_named(&self, name: &str) -> Result<usize, RouteError> {
        if let Some(index) = self.map.shard_index(name) {
            return Ok(index);
        }
        match name.parse::<usize>() {
            Ok(index) if index < self.map.len() => Ok(index),
            _ => Err(self.unknown_shard(name)),
        }
    }

    fn unknown_shard(&self, name: &str) -> RouteError {
        let known: Vec<&str> = (0..self.map.len())
            .map(|i| self.map.shard_name(i))
            .collect();
        RouteError::UnknownShard {
            name: name.to_string(),
            known: known.join(", "),
        }
    }
}

impl Router {
    /// The INSERTs a [`Route::SplitInsert`] runs: one per shard (ascending), each with only
    /// the VALUES rows whose key lives there, in the client's order. Refused (0A000) when the
    /// statement cannot be split: several statements in one string, keys or rows that are not
    /// plain literals, or a rendering sqlparser cannot reproduce faithfully.
    pub fn split_insert(
        &self,
        plan: &Plan,
        params: &Params<'_>,
    ) -> Result<Vec<SplitPart>, RouteError> {
        let (Some(split), Some(keys)) = (&plan.split, plan.split_keys()) else {
            return Err(RouteError::Unsupported(UNSPLITTABLE.to_string()));
        };
        let mut by_shard: Vec<(usize, Vec<usize>)> = Vec::new();
        for (row, key) in keys.iter().enumerate() {
            let Some(shard) = self.key_shard(key, params)? else {
                return Err(RouteError::Unsupported(UNSPLITTABLE.to_string()));
            };
            match by_shard.iter_mut().find(|(s, _)| *s == shard) {
                Some((_, rows)) => rows.push(row),
                None => by_shard.push((shard, vec![row])),
            }
        }
        by_shard.sort_unstable_by_key(|(shard, _)| *shard);
        Ok(by_shard
            .into_iter()
            .map(|(shard, rows)| split.part(shard, &rows))
            .collect())
    }
}

const UNSPLITTABLE: &str = "this INSERT's rows belong to several shards, and pgshard splits only \
     a single INSERT ... VALUES whose shard keys are literals or $n parameters: send one INSERT \
     per shard (rows \
     whose keys are on the same shard may share one)";

#[cfg(test)]
mod binary_key_tests {
    use super::*;

    #[test]
    fn a_float8_key_parameter_is_read_as_the_integer_postgresql_would_store() {
        let bytes = 7_000_012.0f64.to_be_bytes();
        assert_eq!(
            binary_key(KeyType::Bigint, oid::FLOAT8, &bytes).unwrap(),
            KeyValue::Int(7_000_012)
        );
        // Rounded half to even, like PostgreSQL's float-to-integer cast.
        let half = 2.5f64.to_be_bytes();
        assert_eq!(
            binary_key(KeyType::Bigint, oid::FLOAT8, &half).unwrap(),
            KeyValue::Int(2)
        );
    }

    #[test]
    fn an_undeclared_float_would_be_misread_so_declared_types_win() {
        let bytes = 7_000_012.0f64.to_be_bytes();
        assert_ne!(
            binary_key(KeyType::Bigint, 0, &bytes).unwrap(),
            KeyValue::Int(7_000_012)
        );
    }

    #[test]
    fn a_text_typed_uuid_in_binary_format_is_parsed_as_text() {
        let text = b"550e8400-e29b-41d4-a716-446655440000";
        let from_text = binary_key(KeyType::Uuid, 0, text).unwrap();
        let from_binary = binary_key(KeyType::Uuid, oid::TEXT, text).unwrap();
        assert_eq!(from_text, from_binary);
        assert_eq!(from_text.slot(), 3877, "SHARDING.md test vector");
    }

    #[test]
    fn an_int4_parameter_for_a_text_key_hashes_its_decimal_text() {
        let key = binary_key(KeyType::Text, oid::INT4, &42i32.to_be_bytes()).unwrap();
        assert_eq!(key, KeyValue::Text("42".into()));
    }

    #[test]
    fn an_unreadable_parameter_type_is_refused_with_42804() {
        let err = binary_key(KeyType::Bigint, 1700, &[0, 1]).unwrap_err();
        assert_eq!(err.sqlstate(), "42804");
    }
}

//! The collations pgshard may order text by across shards: each one, the first time it is
//! needed (the database's own at start), is read from every shard's catalog, given a comparator,
//! and verified by sorting the probe set on every shard; a collation the shards disagree on or
//! whose order pgshard does not reproduce on the probe is kept as unusable, with the reason.
//! Also learns, at start, which columns and domains carry a collation of their own. Never
//! answers a client and never guesses: what is not verified is refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use super::catalog::{self, CollationRow};
use super::connection::{LoginParams, ServerConnection};
use crate::collation::{probe_difference, Collator, Columns, Icu, Spec, TextRules, PROBE};

/// A verified collation's comparator, or why text cannot be ordered under it.
pub type Verdict = Result<(Spec, Arc<Collator>), String>;

/// Collations verified per run at most: each new name a statement writes costs a connection to
/// every shard, so clients cannot make pgshard verify names without end.
const MAX_COLLATIONS: usize = 256;

/// The key of the database's own collation.
pub const DATABASE: &str = "";

/// What is known of the shards' collations; shared by every session.
#[derive(Default)]
pub struct Collations {
    icu: OnceLock<Option<Arc<Icu>>>,
    /// By collation name as a statement writes it (`"de_DE"`), or as the catalog qualifies it
    /// for columns (`"pg_catalog"."de_DE"`); [`DATABASE`] for the database's own.
    verdicts: Mutex<HashMap<String, Verdict>>,
    /// One verification at a time (sessions needing the same collation wait for it).
    verifying: tokio::sync::Mutex<()>,
    /// Learned at start: per shard, the columns with a collation of their own.
    columns: Mutex<Option<Arc<Columns>>>,
    /// One learning at a time.
    learning: tokio::sync::Mutex<()>,
}

impl Collations {
    fn icu(&self) -> Option<Arc<Icu>> {
        self.icu.get_or_init(|| Icu::load().map(Arc::new)).clone()
    }

    fn cached(&self, key: &str) -> Option<Verdict> {
        let verdicts = self.verdicts.lock().unwrap_or_else(|e| e.into_inner());
        verdicts.get(key).cloned()
    }

    /// The verdict on collation `key` ([`DATABASE`] or a name as SQL), verifying it on every
    /// shard (`logins`: their primaries) the first time. A failure to reach a shard is not
    /// kept: the next statement tries again.
    pub async fn verdict(&self, key: &str, logins: &[LoginParams]) -> Verdict {
        if let Some(v) = self.cached(key) {
            return v;
        }
        let _one = self.verifying.lock().await;
        if let Some(v) = self.cached(key) {
            return v;
        }
        let known = self
            .verdicts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len();
        if known >= MAX_COLLATIONS {
            return Err(format!(
                "pgshard verifies at most {MAX_COLLATIONS} collations per run and has verified \
                 that many"
            ));
        }
        match self.verify(key, logins).await {
            Ok(verdict) => {
                if let Err(why) = &verdict {
                    tracing::warn!("collation {}: {why}", shown(key));
                }
                let mut verdicts = self.verdicts.lock().unwrap_or_else(|e| e.into_inner());
                verdicts.insert(key.to_string(), verdict.clone());
                verdict
            }
            Err(e) => Err(format!("pgshard could not verify it on every shard ({e})")),
        }
    }

    /// Reads the collation on every shard, builds its comparator and sorts the probe set on
    /// each; `Err` only when a shard could not be asked.
    async fn verify(&self, key: &str, logins: &[LoginParams]) -> Result<Verdict, String> {
        let mut conns = Vec::with_capacity(logins.len());
        let mut specs = Vec::with_capacity(logins.len());
        for (shard, login) in logins.iter().enumerate() {
            let mut conn = ServerConnection::connect(login)
                .await
                .map_err(|e| e.to_string())?;
            let row = describe(&mut conn, key).await.map_err(|e| e.to_string())?;
            let spec = match row {
                None => return Ok(Err(format!("shard {shard} has no collation {key}"))),
                Some(row) => match spec_of(&mut conn, &row).await {
                    Ok(Ok(spec)) => (spec, row.qualified),
                    Ok(Err(why)) => return Ok(Err(why)),
                    Err(e) => return Err(e.to_string()),
                },
            };
            specs.push(spec);
            conns.push(conn);
        }
        let Some((spec, _)) = specs.first() else {
            return Ok(Err("no shard to verify it on".into()));
        };
        let collator = match Collator::new(spec, || self.icu()) {
            Ok(c) => Arc::new(c),
            Err(why) => return Ok(Err(why)),
        };
        // Every shard's order is checked against the comparator of shard 0's definition, so a
        // shard whose collation of that name orders differently fails here.
        for (shard, (conn, (_, qualified))) in conns.iter_mut().zip(&specs).enumerate() {
            let order = catalog::sorted_by_server(conn, PROBE, qualified)
                .await
                .map_err(|e| e.to_string())?;
            if let Some(why) = probe_difference(&collator, &order) {
                return Ok(Err(format!(
                    "pgshard's order ({spec}, as shard 0 defines it) differs from shard \
                     {shard}'s: {why}"
                )));
            }
        }
        // Definitions that differ yet agree on the probe could still differ elsewhere.
        if let Some(((other, _), i)) = specs.iter().zip(0..).find(|((s, _), _)| s != spec) {
            return Ok(Err(format!(
                "the shards do not define it alike: shard 0 has {spec}, shard {i} {other}"
            )));
        }
        Ok(Ok((spec.clone(), collator)))
    }

    /// Learns the database's collation and the columns with their own, on every shard
    /// (`logins`: their primaries), verifying each collation found. Called at start.
    async fn learn(&self, logins: &[LoginParams]) -> Result<(), String> {
        let database = self.verdict(DATABASE, logins).await;
        let mut per_shard = Vec::with_capacity(logins.len());
        let mut known_up_to = Vec::with_capacity(logins.len());
        for login in logins {
            let mut conn = ServerConnection::connect(login)
                .await
                .map_err(|e| e.to_string())?;
            // Read first: a relation created meanwhile is newer and makes pgshard look again.
            let newest = catalog::newest_relation(&mut conn);
            known_up_to.push(newest.await.map_err(|e| e.to_string())?);
            let found = catalog::collated_columns(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            per_shard.push(found);
        }
        let mut uncertain = None;
        let mut maps = Vec::with_capacity(per_shard.len());
        for found in per_shard {
            let mut map = HashMap::new();
            for (relation, column, name) in found {
                let verdict = self.verdict(&name, logins).await;
                let same = match (&verdict, &database) {
                    (Ok((a, _)), Ok((b, _))) => a == b,
                    _ => false,
                };
                if !same && uncertain.is_none() {
                    uncertain = Some(format!(
                        "a column or domain has collation {name}, which orders unlike the \
                         database's, so an expression's collation is not known to pgshard"
                    ));
                }
                if relation != 0 {
                    map.insert((relation, column), name);
                }
            }
            maps.push(map);
        }
        let columns = Columns {
            per_shard: maps,
            known_up_to,
            uncertain,
        };
        *self.columns.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(columns));
        Ok(())
    }

    /// The columns learned at start, learning them now if that has not happened yet (the
    /// start-up learner calls this too).
    pub async fn learned(&self, logins: &[LoginParams]) -> Result<Arc<Columns>, String> {
        let known = || {
            self.columns
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        };
        if let Some(columns) = known() {
            return Ok(columns);
        }
        let _one = self.learning.lock().await;
        if let Some(columns) = known() {
            return Ok(columns);
        }
        self.learn(logins).await?;
        known().ok_or_else(|| "the shards' collations are not learned".to_string())
    }

    /// Learns the columns again if relation `relation` of shard `shard` is newer than what was
    /// learned (a table created since), so its columns' own collations are known.
    pub async fn relearn_for(&self, logins: &[LoginParams], shard: usize, relation: u32) {
        let _one = self.learning.lock().await;
        let known = self
            .columns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if known.is_some_and(|c| c.known_up_to.get(shard).is_some_and(|&k| k >= relation)) {
            return;
        }
        if let Err(e) = self.learn(logins).await {
            tracing::warn!("cannot learn the shards' column collations again: {e}");
        }
    }

    /// The text ordering rules for one statement: the database's collation, the named ones
    /// it uses (`named`, verified now if new), and the learned column collations.
    pub async fn rules(&self, named: &[&str], logins: &[LoginParams]) -> TextRules {
        let columns = match self.learned(logins).await {
            Ok(columns) => columns,
            Err(e) => {
                let why = format!("pgshard could not learn the shards' collations ({e})");
                return TextRules::new(Err(why), HashMap::new(), None);
            }
        };
        let mut verdicts = HashMap::new();
        for name in columns.per_shard.iter().flat_map(HashMap::values) {
            if !verdicts.contains_key(name) {
                let v = self
                    .cached(name)
                    .unwrap_or_else(|| Err("not verified".into()));
                verdicts.insert(name.clone(), v.map(|(_, c)| c));
            }
        }
        for name in named {
            let v = self.verdict(name, logins).await;
            verdicts.insert(name.to_string(), v.map(|(_, c)| c));
        }
        let database = self.verdict(DATABASE, logins).await;
        TextRules::new(database.map(|(_, c)| c), verdicts, Some(columns))
    }
}

/// The catalog row of collation `key` on one shard (`None`: it has no such collation).
async fn describe(
    conn: &mut ServerConnection,
    key: &str,
) -> Result<Option<CollationRow>, super::BackendError> {
    if key == DATABASE {
        return catalog::database_collation(conn).await.map(Some);
    }
    catalog::named_collation(conn, key).await
}

/// How a catalog row orders text; `Ok(Err)` says why pgshard will not order under it.
async fn spec_of(
    conn: &mut ServerConnection,
    row: &CollationRow,
) -> Result<Result<Spec, String>, super::BackendError> {
    if !row.deterministic {
        return Ok(Err(
            "it is nondeterministic (equal strings may differ), which pgshard does not merge"
                .into(),
        ));
    }
    let row = if row.provider == "d" {
        catalog::database_collation(conn).await?
    } else {
        row.clone()
    };
    let spec = match Spec::from_catalog(&row.provider, &row.collate, &row.icu_locale) {
        Ok(spec) => spec,
        Err(why) => return Ok(Err(why)),
    };
    if spec != Spec::CodePoint && row.encoding != "UTF8" {
        return Ok(Err(format!(
            "the database encoding is {}; pgshard orders text under locales only in UTF8 \
             databases",
            row.encoding
        )));
    }
    Ok(Ok(spec))
}

fn shown(key: &str) -> &str {
    if key == DATABASE {
        "of the database"
    } else {
        key
    }
}

//! The catalog: the live shard map kept in PostgreSQL (schema `pgshard`), shared by every
//! router that names the same `[catalog]`. Creates it from the TOML on first start (one
//! transaction under an advisory lock), loads it, changes slot owners (one transaction that
//! bumps the epoch and notifies `pgshard_map`) and follows it ([`watch`]). PostgreSQL
//! transactions and row locks are the only coordination. It never routes a statement and is
//! never called on a statement's path: the router is handed a [`ShardMap`], it never queries.

pub mod cutover;
pub mod watch;

use std::ops::RangeInclusive;
use std::time::Duration;

use tokio_postgres::{Client, GenericClient, IsolationLevel};

use crate::sharding::{ShardMap, SLOT_COUNT};
use crate::tls::BackendTls;

/// Channel a slot owner change is announced on (`NOTIFY pgshard_map, '<new epoch>'`).
pub const CHANNEL: &str = "pgshard_map";

/// Key of the transaction-scoped advisory lock taken while creating the catalog (the bytes
/// of "pgshard" and a zero): two routers starting at once create it once.
const CREATE_LOCK: i64 = 0x7067_7368_6172_6400;

/// Version of the catalog's tables, recorded in `pgshard.map_epoch` when it is created: 2 adds
/// the routers, holds and the move journal ([`cutover`]), which [`open`] also adds to a catalog
/// of version 1.
pub const SCHEMA_VERSION: i32 = 2;

const CREATE_SQL: &str = "\
    CREATE SCHEMA IF NOT EXISTS pgshard; \
    CREATE TABLE pgshard.map_epoch ( \
        singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton), \
        epoch bigint NOT NULL CHECK (epoch > 0), \
        schema_version integer NOT NULL, \
        changed_at timestamptz NOT NULL DEFAULT now()); \
    CREATE TABLE pgshard.slots ( \
        slot integer PRIMARY KEY CHECK (slot BETWEEN 0 AND 4095), \
        shard text NOT NULL CHECK (shard <> ''));";

/// What went wrong with the catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog.url is not a connection string libpq would accept: {0}")]
    BadUrl(String),
    #[error("cannot reach the catalog at {at}: {problem}")]
    Connect { at: String, problem: String },
    #[error("catalog query failed: {0}")]
    Query(String),
    #[error(
        "the catalog has no shard map (schema pgshard); start `pgshard serve` with a [catalog] \
         section once to create it from the config"
    )]
    Missing,
    #[error("the catalog's shard map is damaged: {0}")]
    Damaged(String),
    #[error(
        "the live shard map gives slots {slots} to shard {shard:?}, which the config does not \
         define; add a [[shards]] entry named {shard:?} (with slots = \"\")"
    )]
    UnknownShard { shard: String, slots: String },
    #[error(
        "the shard map changed while this change was prepared: expected epoch {expected}, the \
         catalog is at {found}; read the map again and retry"
    )]
    EpochMoved { expected: u64, found: u64 },
    #[error("no slots given to move")]
    NoSlots,
    #[error("slot {0} does not exist; slots run from 0 to 4095")]
    BadSlot(u32),
    #[error(
        "the cutover hold of move {0} expired before the map flipped (routers may have let \
         statements through); the move retries its cutover"
    )]
    HoldExpired(String),
}

impl From<tokio_postgres::Error> for CatalogError {
    fn from(e: tokio_postgres::Error) -> Self {
        CatalogError::Query(detail(&e))
    }
}

/// What the server said (`ERROR: permission denied for ...`), or the error and its cause:
/// tokio-postgres's own text is only "db error".
pub fn detail(e: &tokio_postgres::Error) -> String {
    match (e.as_db_error(), std::error::Error::source(e)) {
        (Some(db), _) => db.to_string(),
        (None, Some(cause)) => format!("{e}: {cause}"),
        (None, None) => e.to_string(),
    }
}

/// The live map as the catalog holds it: the owner's name of each slot, and the epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveMap {
    pub epoch: u64,
    /// `owners[slot]` is the name of the shard owning `slot`; `SLOT_COUNT` entries.
    pub owners: Vec<String>,
}

impl LiveMap {
    /// The live map of a [`ShardMap`] (as created from the TOML).
    pub fn of(map: &ShardMap) -> LiveMap {
        LiveMap {
            epoch: map.version(),
            owners: (0..SLOT_COUNT)
                .map(|s| map.owner_name(s).to_string())
                .collect(),
        }
    }

    /// The routing map over the config's shards `names` (index order), versioned by the
    /// epoch; fails naming a shard the config lacks.
    pub fn to_shard_map(&self, names: &[String]) -> Result<ShardMap, CatalogError> {
        let mut owner = Vec::with_capacity(self.owners.len());
        for name in &self.owners {
            match names.iter().position(|n| n == name) {
                Some(i) => owner.push(i as u16),
                None => {
                    let slots = slot_list(&runs_of(&self.owners, name));
                    return Err(CatalogError::UnknownShard {
                        shard: name.clone(),
                        slots,
                    });
                }
            }
        }
        ShardMap::from_owners(names.to_vec(), owner, self.epoch)
            .ok_or_else(|| CatalogError::Damaged(format!("{} slots", self.owners.len())))
    }

    /// Shard names in order of first appearance, each with its slot ranges.
    pub fn by_shard(&self) -> Vec<(String, Vec<RangeInclusive<u16>>)> {
        let mut names: Vec<String> = Vec::new();
        for name in &self.owners {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        names
            .into_iter()
            .map(|n| {
                let ranges = runs_of(&self.owners, &n);
                (n, ranges)
            })
            .collect()
    }
}

/// Slots on which two maps disagree: (slots, owner in `toml`, owner in `live`).
pub type Disagreement = (RangeInclusive<u16>, String, String);

/// The slot ranges where `toml`'s owner differs from `live`'s, merged.
pub fn disagreements(toml: &ShardMap, live: &ShardMap) -> Vec<Disagreement> {
    let mut out: Vec<Disagreement> = Vec::new();
    for slot in 0..SLOT_COUNT {
        let (a, b) = (toml.owner_name(slot), live.owner_name(slot));
        if a == b {
            continue;
        }
        if let Some(last) = out.last_mut() {
            if u32::from(*last.0.end()) + 1 == u32::from(slot) && last.1 == a && last.2 == b {
                last.0 = *last.0.start()..=slot;
                continue;
            }
        }
        out.push((slot..=slot, a.to_string(), b.to_string()));
    }
    out
}

/// Logs a warning naming the slots where the config's `[[shards]]` slots differ from the live
/// map (which is the one routed by).
pub fn warn_disagreements(toml: &ShardMap, live: &ShardMap) {
    let diff = disagreements(toml, live);
    if diff.is_empty() {
        return;
    }
    let shown: Vec<String> = diff
        .iter()
        .take(8)
        .map(|(slots, t, l)| format!("slots {} are {t}'s in the config but {l}'s", range(slots)))
        .collect();
    let more = match diff.len() {
        n if n > 8 => format!(" (and {} more ranges)", n - 8),
        _ => String::new(),
    };
    tracing::warn!(
        "the config's [[shards]] slots disagree with the live shard map (catalog epoch {}), \
         which pgshard routes by: {}{more}; `pgshard map show` prints the live map",
        live.version(),
        shown.join("; ")
    );
}

/// `A-B` or `A`.
pub fn range(r: &RangeInclusive<u16>) -> String {
    if r.start() == r.end() {
        r.start().to_string()
    } else {
        format!("{}-{}", r.start(), r.end())
    }
}

/// `0-99,300-511` (empty for no slots).
pub fn slot_list(ranges: &[RangeInclusive<u16>]) -> String {
    ranges.iter().map(range).collect::<Vec<_>>().join(",")
}

/// Maximal runs of slots owned by `name`.
fn runs_of(owners: &[String], name: &str) -> Vec<RangeInclusive<u16>> {
    let mut out: Vec<RangeInclusive<u16>> = Vec::new();
    for (slot, owner) in (0..SLOT_COUNT).zip(owners) {
        if owner != name {
            continue;
        }
        match out.last_mut() {
            Some(last) if *last.end() + 1 == slot => *last = *last.start()..=slot,
            _ => out.push(slot..=slot),
        }
    }
    out
}

/// The connection settings of `url`, with a connect timeout and an application name when it
/// gives none.
pub fn parse_url(url: &str) -> Result<tokio_postgres::Config, CatalogError> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e: tokio_postgres::Error| CatalogError::BadUrl(e.to_string()))?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    if config.get_application_name().is_none() {
        config.application_name("pgshard-catalog");
    }
    Ok(config)
}

/// `host:port/dbname` of a connection string, for messages (never the password).
pub fn describe(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().or(config.get_user()).unwrap_or("");
    format!("{host}:{port}/{db}")
}

/// Opens a connection to the catalog (plain TCP: the catalog does not use TLS yet); its
/// connection task is spawned.
pub async fn connect(url: &str, tls: Option<&BackendTls>) -> Result<Client, CatalogError> {
    let (client, connection) = open_connection(url, tls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("catalog connection ended: {e}");
        }
    });
    Ok(client)
}

/// The stream of a catalog connection (TLS or not, as `[backend_tls]` says).
pub(crate) type CatalogStream =
    <tokio_postgres_rustls::MakeRustlsConnect as tokio_postgres::tls::MakeTlsConnect<
        tokio_postgres::Socket,
    >>::Stream;

/// A connection to the catalog whose task the caller drives (the watcher reads its
/// notifications).
pub(crate) async fn open_connection(
    url: &str,
    tls: Option<&BackendTls>,
) -> Result<
    (
        Client,
        tokio_postgres::Connection<tokio_postgres::Socket, CatalogStream>,
    ),
    CatalogError,
> {
    let mut config = parse_url(url)?;
    let (mode, connector) = crate::tls::for_tokio_postgres(tls);
    config
        .ssl_mode(mode)
        .connect(connector)
        .await
        .map_err(|e| CatalogError::Connect {
            at: describe(&config),
            problem: detail(&e),
        })
}

/// The live map, creating the catalog from `initial` (the TOML's map) if it does not exist
/// yet. Creation runs in one transaction under an advisory lock, so of two routers starting
/// at once one creates and the other loads.
pub async fn open(client: &mut Client, initial: &ShardMap) -> Result<LiveMap, CatalogError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&CREATE_LOCK])
        .await?;
    if !exists(&tx).await? {
        tx.batch_execute(CREATE_SQL).await?;
        let live = LiveMap::of(initial);
        let slots: Vec<i32> = (0..i32::from(SLOT_COUNT)).collect();
        tx.execute(
            "INSERT INTO pgshard.slots (slot, shard) SELECT * FROM unnest($1::int[], $2::text[])",
            &[&slots, &live.owners],
        )
        .await?;
        tx.execute(
            "INSERT INTO pgshard.map_epoch (epoch, schema_version) VALUES ($1, $2)",
            &[&(live.epoch as i64), &SCHEMA_VERSION],
        )
        .await?;
        tracing::info!(
            "created the live shard map (schema pgshard, epoch {}) from the config",
            live.epoch
        );
    }
    tx.batch_execute(cutover::MOVE_SQL).await?;
    tx.commit().await?;
    load(client).await
}

async fn exists(client: &impl GenericClient) -> Result<bool, CatalogError> {
    let row = client
        .query_one(
            "SELECT to_regclass('pgshard.map_epoch') IS NOT NULL \
                AND to_regclass('pgshard.slots') IS NOT NULL",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// The catalog's epoch alone (what the watcher polls).
pub async fn epoch(client: &impl GenericClient) -> Result<u64, CatalogError> {
    let row = client
        .query_opt("SELECT epoch FROM pgshard.map_epoch", &[])
        .await?
        .ok_or_else(|| CatalogError::Damaged("pgshard.map_epoch has no row".into()))?;
    Ok(row.get::<_, i64>(0) as u64)
}

/// Reads the live map, epoch and slots from one snapshot.
pub async fn load(client: &mut Client) -> Result<LiveMap, CatalogError> {
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    if !exists(&tx).await? {
        return Err(CatalogError::Missing);
    }
    let epoch = epoch(&tx).await?;
    let rows = tx
        .query("SELECT slot, shard FROM pgshard.slots ORDER BY slot", &[])
        .await?;
    tx.commit().await?;
    if rows.len() != usize::from(SLOT_COUNT) {
        return Err(CatalogError::Damaged(format!(
            "pgshard.slots has {} rows, not one per slot ({SLOT_COUNT})",
            rows.len()
        )));
    }
    let mut owners = Vec::with_capacity(rows.len());
    for (expected, row) in rows.iter().enumerate() {
        let slot: i32 = row.get(0);
        if slot as usize != expected {
            return Err(CatalogError::Damaged(format!("slot {expected} has no row")));
        }
        owners.push(row.get::<_, String>(1));
    }
    Ok(LiveMap { epoch, owners })
}

/// Gives `slots` to shard `target` in its own transaction; see [`set_owner_in`].
pub async fn set_owner(
    client: &mut Client,
    slots: &[u16],
    target: &str,
    expected_epoch: u64,
) -> Result<u64, CatalogError> {
    let tx = client.transaction().await?;
    let epoch = set_owner_in(&tx, slots, target, expected_epoch).await?;
    tx.commit().await?;
    Ok(epoch)
}

/// Gives `slots` to shard `target` inside the caller's transaction (a mover's cutover commits
/// it with its journal): locks the epoch row, fails with [`CatalogError::EpochMoved`] unless
/// the map is still at `expected_epoch`, updates the slots, bumps the epoch and queues the
/// `pgshard_map` notification (sent at commit). Returns the new epoch. The caller checks that
/// `target` is a shard of its config; the catalog does not list shards.
pub async fn set_owner_in(
    tx: &impl GenericClient,
    slots: &[u16],
    target: &str,
    expected_epoch: u64,
) -> Result<u64, CatalogError> {
    if slots.is_empty() {
        return Err(CatalogError::NoSlots);
    }
    if let Some(&bad) = slots.iter().find(|&&s| s >= SLOT_COUNT) {
        return Err(CatalogError::BadSlot(u32::from(bad)));
    }
    let found = tx
        .query_opt("SELECT epoch FROM pgshard.map_epoch FOR UPDATE", &[])
        .await?
        .ok_or_else(|| CatalogError::Damaged("pgshard.map_epoch has no row".into()))?
        .get::<_, i64>(0) as u64;
    if found != expected_epoch {
        return Err(CatalogError::EpochMoved {
            expected: expected_epoch,
            found,
        });
    }
    let slots: Vec<i32> = slots.iter().map(|&s| i32::from(s)).collect();
    tx.execute(
        "UPDATE pgshard.slots SET shard = $1 WHERE slot = ANY($2)",
        &[&target, &slots],
    )
    .await?;
    let next = found + 1;
    tx.execute(
        "UPDATE pgshard.map_epoch SET epoch = $1, changed_at = now()",
        &[&(next as i64)],
    )
    .await?;
    tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &next.to_string()])
        .await?;
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(specs: &[(&str, &str)]) -> ShardMap {
        let specs: Vec<(String, Option<String>)> = specs
            .iter()
            .map(|(n, s)| (n.to_string(), Some(s.to_string())))
            .collect();
        ShardMap::new(&specs).unwrap()
    }

    #[test]
    fn a_live_map_round_trips_and_names_unknown_shards() {
        let toml = map(&[("s0", "0-99,200-4095"), ("s1", "100-199"), ("s2", "")]);
        let live = LiveMap::of(&toml);
        let names: Vec<String> = ["s0", "s1", "s2"].map(String::from).to_vec();
        assert_eq!(live.to_shard_map(&names).unwrap(), toml);
        assert_eq!(
            live.by_shard(),
            vec![
                ("s0".to_string(), vec![0..=99, 200..=4095]),
                ("s1".to_string(), vec![100..=199]),
            ]
        );
        let err = live.to_shard_map(&names[..1]).unwrap_err().to_string();
        assert!(err.contains("\"s1\"") && err.contains("100-199"), "{err}");
    }

    #[test]
    fn disagreements_name_merged_slot_ranges() {
        let toml = map(&[("s0", "0-2047"), ("s1", "2048-4095")]);
        let live = map(&[("s0", "0-99,200-2047,4095"), ("s1", "100-199,2048-4094")]);
        assert_eq!(
            disagreements(&toml, &live),
            vec![
                (100..=199, "s0".to_string(), "s1".to_string()),
                (4095..=4095, "s1".to_string(), "s0".to_string()),
            ]
        );
        assert!(disagreements(&toml, &toml).is_empty());
    }

    #[test]
    fn a_catalog_url_is_described_without_its_password() {
        let config = parse_url("host=db port=6000 dbname=meta user=u password=secret").unwrap();
        assert_eq!(describe(&config), "db:6000/meta");
        assert!(parse_url("host=db port=notaport").is_err());
    }
}

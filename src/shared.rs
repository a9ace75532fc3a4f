//! The handles every session shares, passed explicitly (never global): config, the shards'
//! pools and health, the router behind `ArcSwap`, the plan cache, SCRAM verifiers, the client
//! count (the client registry, with each client's cancel key, is in `stats`). Below the session
//! and the accept loop; never serves a client.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

use arc_swap::{ArcSwap, ArcSwapOption};

use crate::auth::ScramVerifier;
use crate::backend::collations::Collations;
use crate::backend::connection::LoginParams;
use crate::backend::health::{self, CheckTiming, Health};
use crate::backend::wal::{self, ShardWal, WalServer, WalTiming};
use crate::backend::{catalog, BackendError, BackendManager, ServerConnection, ServerPool};
use crate::config::{Config, PoolMode, ReadFrom, ShardConfig, UserConfig};
use crate::control::Control;
use crate::limits::UserLimits;
use crate::metrics::Metrics;
use crate::pool::{Pool, PoolOptions};
use crate::router::{Isolation, Plan, PlanCache, Router, Volatility};
use crate::sharding::ShardMap;
use crate::stats::Stats;
use crate::tls::BackendTls;

#[cfg(test)]
#[path = "shared_tests.rs"]
mod tests;

/// One server (a primary or a replica): its pools, keyed by client user name, and its health.
pub struct Backend {
    pub addr: String,
    pub pools: UserPools,
    pub health: Arc<Health>,
}

/// A server's pools by client user name, looked up at every checkout: hashed with foldhash
/// (SipHash, std's default, cost ~160 instructions a lookup; no map here is keyed by what a
/// client chooses beyond its configured user name).
pub type UserPools = HashMap<String, ServerPool, foldhash::fast::RandomState>;

/// The servers of one shard.
pub struct ShardPools {
    pub name: String,
    pub primary: Backend,
    pub replicas: Vec<Backend>,
    /// Round-robin position for spreading reads over the replicas.
    pub next_replica: AtomicUsize,
    /// The servers' WAL positions, sampled while a client waits to read its own write from a
    /// replica; `None` when this shard's reads never go to a replica or
    /// `sharding.read_your_writes` is off.
    pub wal: Option<Arc<ShardWal>>,
}

/// Everything the sessions share, passed explicitly to each.
pub struct Shared {
    pub config: Config,
    pub shards: Vec<ShardPools>,
    /// The statement router; replaced once function volatility is learned from `pg_proc`.
    pub router: ArcSwap<Router>,
    /// Plans of simple-query texts, bounded in bytes, shared by all sessions.
    pub plans: Mutex<PlanCache>,
    /// The collations text may be merged under, verified against every shard (the database's
    /// at start, others when first used).
    pub collations: Collations,
    /// How pgshard logs in to each shard's primary for its own catalog queries (the first
    /// configured user); empty without users.
    pub catalog_logins: Vec<LoginParams>,
    /// The servers' `default_transaction_isolation` is REPEATABLE READ or SERIALIZABLE (set in
    /// postgresql.conf or with ALTER ROLE/DATABASE). Learned with the volatility table.
    pub server_isolation_is_snapshot: std::sync::atomic::AtomicBool,
    /// False when there is nothing to decide (one shard, reads from its primary): statements
    /// then go to that primary without being parsed.
    pub routing: bool,
    /// SCRAM verifiers of the configured users, derived once at start.
    pub verifiers: HashMap<Arc<str>, ScramVerifier>,
    pub clients: Arc<AtomicUsize>,
    /// `server.database`, shared by the client registry's entries.
    pub database: Arc<str>,
    /// Clients in transaction mode holding their server connection for session state they keep
    /// on it (temporary objects, cursors WITH HOLD, PREPARE, LISTEN, advisory locks).
    pub pinned_clients: Arc<AtomicUsize>,
    /// Each configured user's client count and statement rate limit.
    pub user_limits: HashMap<String, UserLimits>,
    /// Whether the proxy is shutting down (kept across reloads).
    pub lifecycle: Arc<Lifecycle>,
    /// Asks the accept loop to reload or shut down (the admin console's RELOAD, SHUTDOWN).
    pub control: Arc<Control>,
    /// Learning of the sharded tables' column order (for INSERTs without a column list).
    pub columns: ColumnLearning,
    /// TLS for clients (`server.tls_*`), from [`crate::tls::server_config`]: `None` when
    /// `server.tls_mode` is `disable`.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// TLS to the servers (`[backend_tls]`), `None` when plain.
    pub backend_tls: Option<Arc<BackendTls>>,
    /// The generation a reload made to replace this one; sessions move to it at their next
    /// quiet point.
    next: ArcSwapOption<Shared>,
    replaced: std::sync::atomic::AtomicBool,
    /// Counts generations: 0 for the config pgshard started with.
    pub generation: u64,
    /// Counts reloads of the config: a generation made for a new live map keeps its
    /// predecessor's (same shards in the same order, same pools).
    pub config_generation: u64,
    /// Prometheus metrics (recording is a no-op without `[metrics]`). Kept across reloads
    /// (shards added by one are not in the per-shard histograms until a restart).
    pub metrics: Arc<Metrics>,
    /// Counters and the client registry (admin console, metrics); kept across reloads.
    pub stats: Arc<Stats>,
    /// Clients' startup settings, one copy per distinct set.
    pub startup_sets: crate::session::settings::StartupSets,
}

/// The proxy's lifecycle, shared by every generation.
#[derive(Debug, Default)]
pub struct Lifecycle {
    /// A graceful shutdown began: no new clients; clients leave at their next transaction end.
    pub draining: std::sync::atomic::AtomicBool,
}

/// When the sharded tables' column order was last learned, and how many times: learning runs
/// one at a time, and a session that asks for it after a schema change waits for a round that
/// started after the change.
#[derive(Default)]
pub struct ColumnLearning {
    /// Held while learning; the time the last round ended.
    last: tokio::sync::Mutex<Option<Instant>>,
    /// Rounds started (each runs to its end before the next starts).
    rounds: AtomicU64,
}

impl Shared {
    /// Builds pools and verifiers for a validated config. Needs a tokio runtime (pool reapers).
    pub fn new(config: Config) -> Shared {
        let map = config.shard_map();
        Shared::build(config, None, Control::detached(), map, None)
    }

    /// [`Shared::new`] for a proxy whose accept loop listens to `control`, routing by `map`
    /// (the live map from the catalog, or the config's own).
    pub fn serving(config: Config, control: Arc<Control>, map: ShardMap) -> Shared {
        Shared::build(config, None, control, map, None)
    }

    /// The next generation routing by `map` (a newer live map from the catalog), with the same
    /// config: every pool and watch is kept, and the router keeps what it learned.
    pub fn with_map(&self, map: ShardMap) -> Shared {
        let control = self.control.clone();
        // The client TLS config is kept too: its files are read at reloads only (they were
        // checked then), never behind the operator's back.
        let tls = Some(self.tls.clone());
        let mut next = Shared::build(self.config.clone(), Some(self), control, map.clone(), tls);
        next.router
            .store(Arc::new(self.router.load().with_map(map)));
        next.config_generation = self.config_generation;
        next
    }

    /// The next generation after a reload to `config` (checked with
    /// [`Config::check_reload_from`]): pools whose login did not change are kept (resized to
    /// the new options), with their idle connections; so are health and WAL watches over an
    /// unchanged set of pools, the stats (with the client registry) and the client counts.
    /// The live shard map stays: a reload never re-imposes the config's slots.
    pub fn reloaded(&self, config: Config) -> Shared {
        let names: Vec<String> = config.shards.iter().map(|s| s.name.clone()).collect();
        let map = self
            .router
            .load()
            .shard_map()
            .reindexed(&names)
            // `check_reload_from` keeps every shard, so this never falls back.
            .unwrap_or_else(|| config.shard_map());
        Shared::build(config, Some(self), self.control.clone(), map, None)
    }

    fn build(
        config: Config,
        previous: Option<&Shared>,
        control: Arc<Control>,
        map: ShardMap,
        client_tls: Option<Option<Arc<rustls::ServerConfig>>>,
    ) -> Shared {
        // Files are read again at every reload (new client certificates apply to new clients);
        // the servers' TLS is kept while `[backend_tls]` is unchanged, so its pools are too.
        let tls = client_tls
            .unwrap_or_else(|| config.client_tls().expect("TLS files were checked at load"));
        let backend_tls = match previous {
            Some(p) if p.config.backend_tls == config.backend_tls => p.backend_tls.clone(),
            _ => config.server_tls().expect("TLS files were checked at load"),
        };
        let stats = previous.map_or_else(|| Arc::new(Stats::new()), |p| p.stats.clone());
        let shards = shard_pools(&config, previous, &stats, &backend_tls);
        let verifiers = config
            .users
            .iter()
            .map(|u| {
                (
                    u.name.as_str().into(),
                    ScramVerifier::from_password(&u.password),
                )
            })
            .collect();
        let user_limits = config
            .users
            .iter()
            .map(|u| {
                let before = previous.and_then(|p| p.user_limits.get(&u.name));
                (u.name.clone(), UserLimits::new(u, before))
            })
            .collect();
        let routing = config.shards.len() > 1
            || config
                .shards
                .iter()
                .any(|s| !s.replicas.is_empty() && s.read_from == ReadFrom::Replicas);
        let router =
            ArcSwap::from_pointee(Router::new(&config, Volatility::builtin()).with_map(map));
        let catalog_logins = match config.users.first() {
            Some(user) => config
                .shards
                .iter()
                .map(|shard| login(&config, &backend_tls, shard, &shard.primary, user))
                .collect(),
            None => Vec::new(),
        };
        let snapshot =
            previous.is_some_and(|p| p.server_isolation_is_snapshot.load(Ordering::Relaxed));
        Shared {
            database: config.server.database.as_str().into(),
            metrics: previous
                .map_or_else(|| Arc::new(Metrics::new(&config)), |p| p.metrics.clone()),
            collations: Collations::default(),
            catalog_logins,
            server_isolation_is_snapshot: std::sync::atomic::AtomicBool::new(snapshot),
            router,
            plans: Mutex::new(PlanCache::new(PLAN_CACHE_BYTES)),
            routing,
            config,
            shards,
            verifiers,
            user_limits,
            clients: previous.map_or_else(Default::default, |p| p.clients.clone()),
            pinned_clients: previous.map_or_else(Default::default, |p| p.pinned_clients.clone()),
            lifecycle: previous.map_or_else(Default::default, |p| p.lifecycle.clone()),
            control,
            columns: ColumnLearning::default(),
            next: ArcSwapOption::empty(),
            replaced: std::sync::atomic::AtomicBool::new(false),
            generation: previous.map_or(0, |p| p.generation + 1),
            config_generation: previous.map_or(0, |p| p.config_generation + 1),
            tls,
            backend_tls,
            stats,
            startup_sets: Default::default(),
        }
    }

    /// Makes `next` the generation sessions move to.
    pub fn replace_with(&self, next: Arc<Shared>) {
        self.next.store(Some(next));
        self.replaced.store(true, Ordering::Release);
    }

    /// Whether a reload replaced this generation (one atomic load).
    pub fn is_replaced(&self) -> bool {
        self.replaced.load(Ordering::Acquire)
    }

    /// The newest generation, when a reload replaced this one (cheap when none did).
    pub fn newest(&self) -> Option<Arc<Shared>> {
        let mut newest = self.next.load_full()?;
        while let Some(next) = newest.next.load_full() {
            newest = next;
        }
        Some(newest)
    }
}

/// Each shard's pools and watches for `config`, keeping what `previous` has that did not change
/// (see [`Shared::reloaded`]).
fn shard_pools(
    config: &Config,
    previous: Option<&Shared>,
    stats: &Stats,
    backend_tls: &BackendTlsRef,
) -> Vec<ShardPools> {
    config
        .shards
        .iter()
        .enumerate()
        .map(|(i, shard)| {
            let before = previous.and_then(|p| p.shards.get(i));
            let old = |addr: &str| {
                before.and_then(|b| {
                    std::iter::once(&b.primary)
                        .chain(&b.replicas)
                        .find(|x| x.addr == addr)
                })
            };
            let primary = backend(
                config,
                stats,
                backend_tls,
                shard,
                &shard.primary,
                old(&shard.primary),
            );
            let replicas: Vec<Backend> = shard
                .replicas
                .iter()
                .map(|r| backend(config, stats, backend_tls, shard, r, old(r)))
                .collect();
            let wal = match before.filter(|b| same_servers(b, &primary, &replicas)) {
                Some(b) if previous.is_some_and(|p| same_wal_timing(&p.config, config)) => {
                    b.wal.clone()
                }
                _ => wal_watch(config, shard, &primary, &replicas),
            };
            ShardPools {
                name: shard.name.clone(),
                primary,
                replicas,
                next_replica: AtomicUsize::new(0),
                wal,
            }
        })
        .collect()
}

/// Whether a shard's servers are the same backends (same pools, same health watch) as before.
fn same_servers(before: &ShardPools, primary: &Backend, replicas: &[Backend]) -> bool {
    Arc::ptr_eq(&before.primary.health, &primary.health)
        && before.replicas.len() == replicas.len()
        && before
            .replicas
            .iter()
            .zip(replicas)
            .all(|(a, b)| Arc::ptr_eq(&a.health, &b.health))
}

fn same_wal_timing(a: &Config, b: &Config) -> bool {
    a.pool.health_check_timeout_ms == b.pool.health_check_timeout_ms
}

/// Bytes of query text (plus overhead) the simple-query plan cache holds.
const PLAN_CACHE_BYTES: usize = 16 << 20;

impl Shared {
    /// `user`'s name as the client registry keeps it: shared with the configured user's, so
    /// that each client does not hold a copy.
    pub fn user_name(&self, user: &str) -> Arc<str> {
        self.verifiers
            .get_key_value(user)
            .map_or_else(|| user.into(), |(name, _)| name.clone())
    }
}

impl Shared {
    /// The servers' default isolation level, as learned at start (READ COMMITTED until then).
    pub fn server_default_isolation(&self) -> Isolation {
        if self.server_isolation_is_snapshot.load(Ordering::Relaxed) {
            Isolation::Snapshot
        } else {
            Isolation::ReadCommitted
        }
    }

    /// The plan of a simple query's text, from the cache or made now. A cached plan made with
    /// a column order the router no longer has (cached by a session racing the swap) is made
    /// again.
    pub fn plan(&self, sql: &str) -> Arc<Plan> {
        let lock = || self.plans.lock().unwrap_or_else(|e| e.into_inner());
        let router = self.router.load();
        if let Some(plan) = lock().get(sql) {
            if router.plan_is_current(&plan) {
                return plan;
            }
        }
        // Parsed outside the lock: sessions never wait for each other's parses.
        let plan = router.plan(sql);
        lock().insert(sql, plan.clone());
        plan
    }

    /// Learns which functions are volatile from the default shard's `pg_proc`, then swaps in a
    /// router that knows (and drops plans made without it). Best effort: on failure the
    /// built-in list stays, which sends unknown functions to the primary.
    pub async fn learn_volatility(&self) {
        let router = self.router.load();
        let shard = &self.config.shards[router.default_shard()];
        let Some(user) = self.config.users.first() else {
            return;
        };
        let login = login(&self.config, &self.backend_tls, shard, &shard.primary, user);
        let facts = async {
            let mut conn = ServerConnection::connect(&login).await?;
            catalog::server_facts(&mut conn).await
        };
        let facts = match facts.await {
            Ok(facts) => facts,
            Err(e) => {
                tracing::warn!("cannot read the catalog (function volatility): {e}");
                return;
            }
        };
        let snapshot = Isolation::parse(&facts.default_isolation) != Some(Isolation::ReadCommitted);
        self.server_isolation_is_snapshot
            .store(snapshot, Ordering::Relaxed);
        let mut volatility = Volatility::builtin();
        volatility.learn_pg_proc(
            facts
                .functions
                .iter()
                .map(|(name, kind)| (name.as_str(), *kind)),
        );
        self.router
            .rcu(|router| router.with_volatility(volatility.clone()));
        self.plans.lock().unwrap_or_else(|e| e.into_inner()).clear();
        tracing::info!(
            "learned function volatility from pg_proc ({} functions)",
            facts.functions.len()
        );
    }
}

impl Shared {
    /// Learns the shards' collations (the database's and the columns' own) and verifies them
    /// with the probe set on every shard. Best effort: a statement that needs them later learns
    /// them then.
    pub async fn learn_collations(&self) {
        match self.collations.learned(&self.catalog_logins).await {
            Ok(_) => tracing::info!("learned and verified the shards' collations"),
            Err(e) => tracing::warn!("cannot learn the shards' collations: {e}"),
        }
    }

    /// The shard (index) whose primary or replica listens on `addr`.
    pub fn shard_at(&self, addr: &str) -> Option<usize> {
        self.shards
            .iter()
            .position(|s| s.primary.addr == addr || s.replicas.iter().any(|r| r.addr == addr))
    }
}

/// Learning of the column order is asked again, when not after a schema change, at most this
/// often (a table missing everywhere is not looked for on every INSERT).
const COLUMNS_RELEARN_AFTER: Duration = Duration::from_secs(1);

impl Shared {
    /// Rounds of column learning started so far: pass it to
    /// [`Shared::relearn_columns_after`] once the schema may have changed.
    pub fn column_rounds(&self) -> u64 {
        self.columns.rounds.load(Ordering::Acquire)
    }

    /// Learns the column order of every sharded table (at start).
    pub async fn learn_columns(&self) {
        let mut last = self.columns.last.lock().await;
        self.learn_columns_now(&mut last).await;
    }

    /// Learns the column order again unless a round started after `seen` rounds (another
    /// session's round already saw the change); waits for a round in progress, which may have
    /// read the catalog before the change.
    pub async fn relearn_columns_after(&self, seen: u64) {
        let mut last = self.columns.last.lock().await;
        if self.column_rounds() <= seen {
            self.learn_columns_now(&mut last).await;
        }
    }

    /// Learns the column order again for a statement that needs one pgshard lacks, unless a
    /// round ended less than [`COLUMNS_RELEARN_AFTER`] ago; waits for a round in progress.
    pub async fn relearn_columns_unless_recent(&self) {
        let mut last = self.columns.last.lock().await;
        if last.is_none_or(|at| at.elapsed() >= COLUMNS_RELEARN_AFTER) {
            self.learn_columns_now(&mut last).await;
        }
    }

    /// Asks every shard's primary for each sharded table's columns and swaps in a router that
    /// knows the orders the shards agree on (dropping cached plans). A shard that cannot be
    /// asked leaves every order as it was.
    async fn learn_columns_now(&self, last: &mut Option<Instant>) {
        // Counted as it starts: a session that saw a change while this round ran waits for the next.
        self.columns.rounds.fetch_add(1, Ordering::AcqRel);
        let started = Instant::now();
        let tables: Vec<&str> = self
            .config
            .sharding
            .tables
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        let answers = join_all(
            self.config
                .shards
                .iter()
                .map(|shard| self.shard_columns(shard, &tables))
                .collect(),
        )
        .await;
        let mut per_shard: Vec<Vec<Option<Vec<String>>>> = Vec::new();
        for (shard, answer) in self.config.shards.iter().zip(answers) {
            match answer {
                Ok(columns) => per_shard.push(columns),
                Err(e) => {
                    tracing::warn!(
                        "cannot read the column order of the sharded tables on shard {}: {e}",
                        shard.name
                    );
                    self.end_column_round(last);
                    return;
                }
            }
        }
        let learned: Vec<(&str, Option<Vec<String>>)> = {
            let router = self.router.load();
            tables
                .iter()
                .enumerate()
                .map(|(t, &table)| {
                    let answers: Vec<Option<Vec<String>>> =
                        per_shard.iter().map(|s| s[t].clone()).collect();
                    let agreed = router.agreed_columns(table, &answers);
                    if agreed.is_none() && answers.iter().any(Option::is_some) {
                        tracing::warn!(
                            "the shards do not all have table {table} with its shard key at the                              same place: INSERTs into it without a column list are refused"
                        );
                    }
                    (table, agreed)
                })
                .collect()
        };
        self.router.rcu(|router| {
            let mut next = Router::clone(router);
            for (table, columns) in &learned {
                next.learn_columns(table, columns.clone());
            }
            next
        });
        self.plans.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let known = learned.iter().filter(|(_, c)| c.is_some()).count();
        tracing::info!(
            "learned the column order of {known} of {} sharded tables in {:?}",
            tables.len(),
            started.elapsed()
        );
        self.end_column_round(last);
    }

    fn end_column_round(&self, last: &mut Option<Instant>) {
        *last = Some(Instant::now());
    }

    /// Each table's columns on one shard's primary (`None`: no such table).
    async fn shard_columns(
        &self,
        shard: &ShardConfig,
        tables: &[&str],
    ) -> Result<Vec<Option<Vec<String>>>, BackendError> {
        let Some(user) = self.config.users.first() else {
            return Ok(vec![None; tables.len()]);
        };
        let login = login(&self.config, &self.backend_tls, shard, &shard.primary, user);
        let limit = login.connect_timeout * 2;
        let work = async {
            let mut conn = ServerConnection::connect(&login).await?;
            let mut found = Vec::with_capacity(tables.len());
            for table in tables {
                found.push(catalog::insert_columns(&mut conn, table).await?);
            }
            Ok(found)
        };
        tokio::time::timeout(limit, work)
            .await
            .unwrap_or_else(|_| Err(BackendError::ConnectTimeout(shard.primary.clone())))
    }
}

/// Runs `futures` concurrently on this task; their outputs in order.
async fn join_all<F: Future>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in futures.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    Poll::Ready(value) => *output = Some(value),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    outputs.into_iter().flatten().collect()
}

/// Pools for every user on one server, and a health watch over them. Pools of `previous` whose
/// login is unchanged are kept (with the new options); its health watch too when every pool was.
fn backend(
    config: &Config,
    stats: &Stats,
    tls: &BackendTlsRef,
    shard: &ShardConfig,
    addr: &str,
    previous: Option<&Backend>,
) -> Backend {
    let mut kept = 0;
    let pools: UserPools = config
        .users
        .iter()
        .map(|user| {
            let login = login(config, tls, shard, addr, user);
            let options = pool_options(config, user);
            let old = previous
                .and_then(|b| b.pools.get(&user.name))
                .filter(|pool| pool.manager().login == login);
            let pool = match old {
                Some(pool) => {
                    kept += 1;
                    pool.reconfigure(options);
                    pool.clone()
                }
                None => {
                    let stats = stats.new_pool();
                    Pool::new(BackendManager { login, stats }, options)
                }
            };
            (user.name.clone(), pool)
        })
        .collect();
    if let Some(old) = previous.filter(|b| b.pools.len() == kept && pools.len() == kept) {
        return Backend {
            addr: addr.to_string(),
            pools,
            health: old.health.clone(),
        };
    }
    let health = Arc::new(Health::default());
    let timing = CheckTiming {
        interval: Duration::from_millis(config.pool.health_check_interval_ms),
        timeout: Duration::from_millis(config.pool.health_check_timeout_ms),
    };
    if let Some(user) = config.users.first() {
        // The first user's pool runs the checks (within its size).
        let mut watched: Vec<ServerPool> = vec![pools[&user.name].clone()];
        watched.extend(
            pools
                .iter()
                .filter(|(name, _)| **name != user.name)
                .map(|(_, p)| p.clone()),
        );
        health::spawn_watch(addr.to_string(), &health, watched, timing);
    }
    Backend {
        addr: addr.to_string(),
        pools,
        health,
    }
}

/// The WAL watch of a shard whose plain reads may go to its replicas, when reading one's own
/// writes is on (transaction mode only: session mode reads from the primary it holds).
fn wal_watch(
    config: &Config,
    shard: &ShardConfig,
    primary: &Backend,
    replicas: &[Backend],
) -> Option<Arc<ShardWal>> {
    let enabled = config.sharding.read_your_writes
        && config.server.pool_mode == PoolMode::Transaction
        && shard.read_from == ReadFrom::Replicas
        && !replicas.is_empty();
    let user = config.users.first().filter(|_| enabled)?;
    let server = |b: &Backend| WalServer {
        pool: b.pools[&user.name].clone(),
        health: b.health.clone(),
    };
    let wal = Arc::new(ShardWal::new(replicas.len()));
    let timing = WalTiming {
        interval: Duration::from_millis(config.sharding.replay_check_interval_ms),
        gap: Duration::from_millis(config.sharding.replay_check_gap_ms),
        timeout: Duration::from_millis(config.pool.health_check_timeout_ms),
    };
    wal::spawn_watch(
        &wal,
        server(primary),
        replicas.iter().map(server).collect(),
        timing,
    );
    Some(wal)
}

/// `[backend_tls]` made usable, `None` for plain.
type BackendTlsRef = Option<Arc<BackendTls>>;

fn login(
    config: &Config,
    tls: &BackendTlsRef,
    shard: &ShardConfig,
    addr: &str,
    user: &UserConfig,
) -> LoginParams {
    LoginParams {
        addr: addr.to_string(),
        database: config.shard_database(shard).to_string(),
        user: user.server_user().to_string(),
        password: user.server_password().to_string(),
        connect_timeout: Duration::from_millis(config.pool.connect_timeout_ms),
        tls: tls.clone(),
    }
}

fn pool_options(config: &Config, user: &UserConfig) -> PoolOptions {
    let p = &config.pool;
    PoolOptions {
        size: user.pool_size.unwrap_or(p.size),
        checkout_timeout: Duration::from_millis(p.checkout_timeout_ms),
        min_idle: p.min_idle,
        idle_timeout: Duration::from_millis(p.idle_timeout_ms),
        max_lifetime: Duration::from_millis(p.max_lifetime_ms),
        reset_timeout: Duration::from_secs(5),
    }
}

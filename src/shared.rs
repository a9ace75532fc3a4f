//! The handles every session shares, passed explicitly (never global): config, the shards'
//! pools and health, the router behind `ArcSwap`, the plan cache, SCRAM verifiers, the cancel
//! registry and the client count. Below the session and the accept loop; never serves a client.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::auth::ScramVerifier;
use crate::backend::connection::LoginParams;
use crate::backend::health::{self, CheckTiming, Health};
use crate::backend::wal::{self, ShardWal, WalServer, WalTiming};
use crate::backend::{catalog, BackendManager, ServerConnection, ServerPool};
use crate::cancel::CancelRegistry;
use crate::config::{Config, PoolMode, ReadFrom, ShardConfig, UserConfig};
use crate::pool::{Pool, PoolOptions};
use crate::router::{Isolation, Plan, PlanCache, Router, Volatility};

/// One server (a primary or a replica): its pools, keyed by client user name, and its health.
pub struct Backend {
    pub addr: String,
    pub pools: HashMap<String, ServerPool>,
    pub health: Arc<Health>,
}

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
    /// The database collation is C (or POSIX): text sorts by bytes, so pgshard may merge rows
    /// that shards sorted by a text column. Learned with the volatility table.
    pub text_is_bytewise: std::sync::atomic::AtomicBool,
    /// The servers' `default_transaction_isolation` is REPEATABLE READ or SERIALIZABLE (set in
    /// postgresql.conf or with ALTER ROLE/DATABASE). Learned with the volatility table.
    pub server_isolation_is_snapshot: std::sync::atomic::AtomicBool,
    /// False when there is nothing to decide (one shard, reads from its primary): statements
    /// then go to that primary without being parsed.
    pub routing: bool,
    /// SCRAM verifiers of the configured users, derived once at start.
    pub verifiers: HashMap<String, ScramVerifier>,
    pub cancel: Arc<CancelRegistry>,
    pub clients: AtomicUsize,
}

impl Shared {
    /// Builds pools and verifiers for a validated config. Needs a tokio runtime (pool reapers).
    pub fn new(config: Config) -> Shared {
        let shards = config
            .shards
            .iter()
            .map(|shard| {
                let primary = backend(&config, shard, &shard.primary);
                let replicas: Vec<Backend> = shard
                    .replicas
                    .iter()
                    .map(|r| backend(&config, shard, r))
                    .collect();
                let wal = wal_watch(&config, shard, &primary, &replicas);
                ShardPools {
                    name: shard.name.clone(),
                    primary,
                    replicas,
                    next_replica: AtomicUsize::new(0),
                    wal,
                }
            })
            .collect();
        let verifiers = config
            .users
            .iter()
            .map(|u| (u.name.clone(), ScramVerifier::from_password(&u.password)))
            .collect();
        let routing = config.shards.len() > 1
            || config
                .shards
                .iter()
                .any(|s| !s.replicas.is_empty() && s.read_from == ReadFrom::Replicas);
        let router = ArcSwap::from_pointee(Router::new(&config, Volatility::builtin()));
        Shared {
            text_is_bytewise: std::sync::atomic::AtomicBool::new(false),
            server_isolation_is_snapshot: std::sync::atomic::AtomicBool::new(false),
            router,
            plans: Mutex::new(PlanCache::new(PLAN_CACHE_BYTES)),
            routing,
            config,
            shards,
            verifiers,
            cancel: Arc::new(CancelRegistry::default()),
            clients: AtomicUsize::new(0),
        }
    }
}

/// Bytes of query text (plus overhead) the simple-query plan cache holds.
const PLAN_CACHE_BYTES: usize = 16 << 20;

impl Shared {
    /// The servers' default isolation level, as learned at start (READ COMMITTED until then).
    pub fn server_default_isolation(&self) -> Isolation {
        if self.server_isolation_is_snapshot.load(Ordering::Relaxed) {
            Isolation::Snapshot
        } else {
            Isolation::ReadCommitted
        }
    }

    /// The plan of a simple query's text, from the cache or made now.
    pub fn plan(&self, sql: &str) -> Arc<Plan> {
        let lock = || self.plans.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(plan) = lock().get(sql) {
            return plan;
        }
        // Parsed outside the lock: sessions never wait for each other's parses.
        let plan = self.router.load().plan(sql);
        lock().insert(sql, plan.clone());
        plan
    }

    /// Learns the database collation (whether text sorts by bytes) and which functions are
    /// volatile from the default shard's `pg_proc`, then swaps in a
    /// router that knows (and drops plans made without it). Best effort: on failure the
    /// built-in list stays, which sends unknown functions to the primary.
    pub async fn learn_volatility(&self) {
        let router = self.router.load();
        let shard = &self.config.shards[router.default_shard()];
        let Some(user) = self.config.users.first() else {
            return;
        };
        let login = login(&self.config, shard, &shard.primary, user);
        let facts = async {
            let mut conn = ServerConnection::connect(&login).await?;
            catalog::server_facts(&mut conn).await
        };
        let facts = match facts.await {
            Ok(facts) => facts,
            Err(e) => {
                tracing::warn!("cannot read the catalog (function volatility, collation): {e}");
                return;
            }
        };
        let bytewise = matches!(facts.collation.as_str(), "C" | "POSIX");
        self.text_is_bytewise.store(bytewise, Ordering::Relaxed);
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
            .store(Arc::new(Router::new(&self.config, volatility)));
        self.plans.lock().unwrap_or_else(|e| e.into_inner()).clear();
        tracing::info!(
            "learned function volatility from pg_proc ({} functions)",
            facts.functions.len()
        );
    }
}

/// Pools for every user on one server, and a health watch over them.
fn backend(config: &Config, shard: &ShardConfig, addr: &str) -> Backend {
    let pools: HashMap<String, ServerPool> = config
        .users
        .iter()
        .map(|user| {
            (
                user.name.clone(),
                server_pool(config, user, login(config, shard, addr, user)),
            )
        })
        .collect();
    let health = Arc::new(Health::default());
    let timing = CheckTiming {
        interval: Duration::from_millis(config.pool.health_check_interval_ms),
        timeout: Duration::from_millis(config.pool.health_check_timeout_ms),
    };
    if let Some(user) = config.users.first() {
        let pools = pools.values().cloned().collect();
        health::spawn_watch(login(config, shard, addr, user), &health, pools, timing);
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
        login: login(config, shard, &b.addr, user),
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

fn login(config: &Config, shard: &ShardConfig, addr: &str, user: &UserConfig) -> LoginParams {
    LoginParams {
        addr: addr.to_string(),
        database: config.shard_database(shard).to_string(),
        user: user.server_user().to_string(),
        password: user.server_password().to_string(),
        connect_timeout: Duration::from_millis(config.pool.connect_timeout_ms),
    }
}

fn server_pool(config: &Config, user: &UserConfig, login: LoginParams) -> ServerPool {
    let p = &config.pool;
    let manager = BackendManager { login };
    Pool::new(
        manager,
        PoolOptions {
            size: user.pool_size.unwrap_or(p.size),
            checkout_timeout: Duration::from_millis(p.checkout_timeout_ms),
            min_idle: p.min_idle,
            idle_timeout: Duration::from_millis(p.idle_timeout_ms),
            max_lifetime: Duration::from_millis(p.max_lifetime_ms),
            reset_timeout: Duration::from_secs(5),
        },
    )
}

//! The accept loop: takes client sockets and hands each to a [`crate::session`] task with the
//! current generation of [`Shared`] handles; carries out [`Command`]s (reload: a new generation
//! built from the re-read file; shutdown: graceful or at once). Holds no protocol logic itself.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::control::{Command, Control};
use crate::sharding::ShardMap;
use crate::shared::Shared;

/// Why the proxy could not keep serving.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("accept failed: {0}")]
    Accept(#[from] std::io::Error),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error("cannot start without the live shard map: {0}")]
    Catalog(#[from] crate::catalog::CatalogError),
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// Binds the client listener at `listen` (`host:port`; the first address it resolves to) with
/// room for `backlog` connections waiting to be accepted (tokio's own `bind` leaves 1024).
pub async fn bind(listen: &str, backlog: u32) -> std::io::Result<TcpListener> {
    let addr = tokio::net::lookup_host(listen)
        .await?
        .next()
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "the address resolves to nothing",
            )
        })?;
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// Serves clients on `listener` until `shutdown` resolves; then closes every client session.
/// (No config file to reload from: a reload request is refused.)
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let (control, commands) = Control::channel();
    serve(config, None, listener, (control, commands), shutdown).await
}

/// Serves clients on `listener`, reloading `config_path` and shutting down as `commands` ask
/// (signals, the admin console: any holder of the [`Control`]), or closing everything at once
/// when `stop_now` resolves.
pub async fn serve(
    config: Config,
    config_path: Option<PathBuf>,
    listener: TcpListener,
    (control, mut commands): (Arc<Control>, UnboundedReceiver<Command>),
    stop_now: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let listening = listener
        .local_addr()
        .map_or_else(|_| config.server.listen.clone(), |a| a.to_string());
    let (map, watcher) = live_map(&config, &control, &listening).await?;
    let mut current = Arc::new(Shared::serving(config, control, map));
    learn(&current);
    let metrics = crate::metrics::bind(&current)
        .await?
        .map(|listener| tokio::spawn(crate::metrics::serve(listener, current.clone())));
    tokio::pin!(stop_now);
    let graceful = loop {
        tokio::select! {
            _ = &mut stop_now => break false,
            Some(command) = commands.recv() => match command {
                Command::Reload { done } => {
                    let outcome = reload(&mut current, config_path.as_ref());
                    if let Some(done) = done {
                        let _ = done.send(outcome);
                    }
                }
                Command::InstallMap { map, installed } => {
                    install_map(&mut current, map);
                    if let Some(installed) = installed {
                        let _ = installed.send(());
                    }
                }
                Command::Shutdown { graceful } => break graceful,
            },
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    // Detached: `shared.clients` counts the sessions, and the client registry
                    // reaches each to close it (no handle per session kept here).
                    tokio::spawn(crate::session::run(stream, current.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    };
    drop(listener);
    if graceful {
        let limit = Duration::from_millis(current.config.server.shutdown_timeout_ms);
        current.lifecycle.draining.store(true, Ordering::SeqCst);
        tracing::info!(
            "shutting down: no new clients; {} open sessions get up to {limit:?} to finish their \
             transactions",
            current.clients.load(Ordering::Relaxed)
        );
        drain(&current, limit, &mut commands, stop_now).await;
    }
    close_all(&current).await;
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    Ok(())
}

/// The map to route by: with a `[catalog]` section, the live map (the catalog is created from
/// the config's slots on first start), followed by a watcher task that sends each newer map
/// to the accept loop; without one, the config's own slots.
async fn live_map(
    config: &Config,
    control: &Arc<Control>,
    listening: &str,
) -> Result<(ShardMap, Option<JoinHandle<()>>), ServerError> {
    let toml = config.shard_map();
    let Some(catalog) = &config.catalog else {
        return Ok((toml, None));
    };
    let url = config.catalog_url();
    let tls = config.server_tls()?;
    let mut client = crate::catalog::connect(&url, tls.as_deref()).await?;
    let live = crate::catalog::open(&mut client, &toml).await?;
    let poll = std::time::Duration::from_millis(catalog.poll_interval_ms);
    // Registered before the holds are read: a mover that does not count this router yet
    // requested its hold before, and this router sees it below.
    // Unique per start: the process, its address, and when it started.
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    let router_id = format!("{}:{listening}:{started}", std::process::id());
    let lease = catalog.lease();
    crate::catalog::cutover::heartbeat(&client, &router_id, poll, lease).await?;
    let view = crate::catalog::cutover::router_view(&client).await?;
    drop(client);
    control.holds.enable();
    crate::catalog::watch::take_up_holds(&control.holds, &view).await;
    let names: Vec<String> = config.shards.iter().map(|s| s.name.clone()).collect();
    let map = live.to_shard_map(&names)?;
    crate::catalog::warn_disagreements(&toml, &map);
    tracing::info!("routing by the live shard map, epoch {}", live.epoch);
    let commands = control.clone();
    let follower = crate::catalog::watch::Follower {
        url,
        tls,
        poll,
        lease,
        known_epoch: live.epoch,
        router_id,
        holds: control.holds.clone(),
        install: Box::new(move |map| {
            let (installed, done) = tokio::sync::oneshot::channel();
            commands.send(Command::InstallMap {
                map,
                installed: Some(installed),
            });
            done
        }),
    };
    let watcher = tokio::spawn(follower.follow());
    Ok((map, Some(watcher)))
}

/// Makes a generation routing by `live` current, unless it is not newer than the current map
/// or names a shard the config lacks (then the current map stays, with an error logged).
fn install_map(current: &mut Arc<Shared>, live: crate::catalog::LiveMap) {
    let running = current.router.load().shard_map().version();
    if live.epoch <= running {
        return;
    }
    let names: Vec<String> = current
        .config
        .shards
        .iter()
        .map(|s| s.name.clone())
        .collect();
    let map = match live.to_shard_map(&names) {
        Ok(map) => map,
        Err(e) => {
            tracing::error!(
                "the live shard map of epoch {} is not routed by: {e}",
                live.epoch
            );
            return;
        }
    };
    let next = Arc::new(current.with_map(map));
    learn(&next);
    current.replace_with(next.clone());
    *current = next;
    tracing::info!(
        "routing by the live shard map of epoch {} (generation {})",
        live.epoch,
        current.generation
    );
}

/// Ends every session still open (after the graceful shutdown's limit, or at once): each
/// registered client is told to close and leaves with 57P01 at its next wake-up (its server
/// connections are cancelled or reset as they are dropped); sessions still logging in are
/// refused by the draining flag. Waits for them a bounded time (a client that reads nothing
/// gets its error written for at most a second).
async fn close_all(current: &Shared) {
    current.lifecycle.draining.store(true, Ordering::SeqCst);
    current.stats.clients.close_all();
    let deadline = Instant::now() + Duration::from_secs(3);
    while current.clients.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Lets sessions finish their transactions until none is left or `limit` passes; sessions
/// waiting between transactions are closed as they get there.
async fn drain(
    current: &Shared,
    limit: Duration,
    commands: &mut UnboundedReceiver<Command>,
    stop_now: std::pin::Pin<&mut impl Future<Output = ()>>,
) {
    let deadline = Instant::now() + limit;
    let mut stop_now = stop_now;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    while current.clients.load(Ordering::Relaxed) > 0 {
        current.stats.clients.close_waiting();
        tokio::select! {
            _ = tokio::time::sleep_until(deadline.into()) => {
                tracing::warn!(
                    "shutdown timeout: closing {} sessions still in a transaction",
                    current.clients.load(Ordering::Relaxed)
                );
                return;
            }
            _ = &mut stop_now => return,
            Some(command) = commands.recv() => match command {
                Command::Shutdown { graceful: false } => return,
                Command::Shutdown { graceful: true } => {}
                Command::Reload { done } => {
                    if let Some(done) = done {
                        let _ = done.send(Err("pgshard is shutting down".to_string()));
                    }
                }
                Command::InstallMap { .. } => {}
            },
            _ = tick.tick() => {}
        }
    }
}

/// Re-reads the config and, if it is valid and reloadable, makes the next generation current.
fn reload(current: &mut Arc<Shared>, path: Option<&PathBuf>) -> Result<u64, String> {
    let Some(path) = path else {
        let e = "pgshard was started without a config file to reload".to_string();
        tracing::warn!("reload refused: {e}");
        return Err(e);
    };
    let outcome = Config::load(path).and_then(|config| {
        config.check_reload_from(&current.config)?;
        Ok(config)
    });
    let config = match outcome {
        Ok(config) => config,
        Err(e) => {
            current.metrics.record_reload(false);
            let e = format!("{} was not reloaded: {e}", path.display());
            tracing::error!("{e}; the running config stays");
            return Err(e);
        }
    };
    let next = Arc::new(current.reloaded(config));
    next.metrics.record_reload(true);
    learn(&next);
    current.replace_with(next.clone());
    *current = next;
    tracing::info!(
        "reloaded {} (generation {})",
        path.display(),
        current.generation
    );
    Ok(current.generation)
}

/// Learns, in the background, what the router needs from the servers' catalogs.
fn learn(shared: &Arc<Shared>) {
    if !shared.routing {
        return;
    }
    let learner = shared.clone();
    tokio::spawn(async move {
        learner.learn_volatility().await;
        learner.learn_columns().await;
        if learner.shards.len() > 1 {
            learner.learn_collations().await;
        }
    });
}

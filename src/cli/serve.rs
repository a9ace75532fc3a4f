//! `pgshard serve --config FILE`: loads the config, binds the listener and runs the proxy;
//! SIGHUP reloads the config, SIGTERM shuts down gracefully, SIGINT (Ctrl-C) at once. Glue only.

use std::path::PathBuf;

use std::sync::Arc;

use anyhow::Context;

use crate::config::Config;
use crate::control::{Command, Control};

/// Arguments of `pgshard serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Path to the TOML config file.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Worker threads (default: one per core). 1 runs everything on one thread, with no
    /// hand-offs between threads: the least CPU per transaction where the proxy shares few
    /// cores with PostgreSQL or the application.
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Runs `pgshard serve`.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_tracing();
    let config = Config::load(&args.config)
        .with_context(|| format!("invalid config {}", args.config.display()))?;
    raise_fd_limit();
    one_malloc_arena();
    let mut runtime = match args.threads {
        Some(0) => anyhow::bail!("--threads must be at least 1"),
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut runtime = tokio::runtime::Builder::new_multi_thread();
            runtime.worker_threads(n);
            runtime
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let runtime = runtime.enable_all().build()?;
    runtime.block_on(async move {
        let listen = config.server.listen.clone();
        let listener = crate::server::bind(&listen, config.server.listen_backlog)
            .await
            .with_context(|| {
                format!("cannot listen on {listen} (server.listen); is another process using it?")
            })?;
        match args.threads {
            Some(1) => tracing::info!("serving on one thread"),
            _ => tracing::info!(
                "serving on {} worker threads",
                tokio::runtime::Handle::current().metrics().num_workers()
            ),
        }
        tracing::info!("pgshard listening on {}", listener.local_addr()?);
        let (control, commands) = Control::channel();
        forward_signals(control.clone())?;
        let path = args.config.clone();
        crate::server::serve(
            config,
            Some(path),
            listener,
            (control, commands),
            std::future::pending(),
        )
        .await?;
        tracing::info!("pgshard stopped");
        Ok(())
    })
}

/// SIGHUP asks for a reload, SIGTERM for a graceful shutdown, SIGINT for an immediate one.
fn forward_signals(control: Arc<Control>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?;
    let mut term = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    tokio::spawn(async move {
        loop {
            let command = tokio::select! {
                _ = hup.recv() => Command::Reload { done: None },
                _ = term.recv() => Command::Shutdown { graceful: true },
                _ = int.recv() => Command::Shutdown { graceful: false },
            };
            control.send(command);
        }
    });
    Ok(())
}

/// Logs to stderr; `RUST_LOG` filters (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Thousands of clients need thousands of file descriptors: raise the soft limit to the hard one.
/// glibc's malloc gives each thread that contends for it an arena of its own; an idle client's
/// few long-lived allocations (its session, its socket's registration, its registry entry) then
/// spread over several arenas with the login's short-lived ones between them. One arena holds
/// ~0.2 KiB less per idle client, and costs no measurable throughput (the per-thread caches serve
/// the hot path without the arena's lock; see README's memory section). `MALLOC_ARENA_MAX` in
/// the environment, read by glibc itself, wins.
fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets a malloc tunable; called before any other thread starts.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 1);
        }
    }
}

pub fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

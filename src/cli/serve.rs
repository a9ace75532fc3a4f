//! `pgshard serve --config FILE`: loads the config, binds the listener and runs the proxy;
//! SIGHUP reloads the config, SIGTERM shuts down gracefully, SIGINT (Ctrl-C) at once. Glue only.

use std::path::PathBuf;

use std::sync::Arc;

use anyhow::Context;

use crate::config::{Config, RuntimeKind};
use crate::control::{Command, Control};

/// Arguments of `pgshard serve`.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Path to the TOML config file.
    #[arg(long, short)]
    pub config: PathBuf,
    /// Worker threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Runs `pgshard serve`.
pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_tracing();
    let config = Config::load(&args.config)
        .with_context(|| format!("invalid config {}", args.config.display()))?;
    raise_fd_limit();
    let per_core = config.server.runtime == RuntimeKind::PerCore;
    // Per core: this thread only accepts and carries out commands; the workers serve.
    let runtime = if per_core {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        let mut runtime = tokio::runtime::Builder::new_multi_thread();
        if let Some(n) = args.threads {
            runtime.worker_threads(n);
        }
        runtime.enable_all().build()?
    };
    let workers = if per_core {
        let n = args.threads.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        Workers::start(n)?
    } else {
        Workers::default()
    };
    let handles = workers.handles();
    let served = runtime.block_on(async move {
        let listen = config.server.listen.clone();
        let listener = crate::server::bind(&listen, config.server.listen_backlog)
            .await
            .with_context(|| {
                format!("cannot listen on {listen} (server.listen); is another process using it?")
            })?;
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
            handles,
        )
        .await?;
        tracing::info!("pgshard stopped");
        Ok(())
    });
    workers.stop();
    served
}

/// `server.runtime = "per-core"`: one thread per core, each running a single-threaded runtime
/// until stopped.
#[derive(Default)]
struct Workers {
    running: Vec<(
        tokio::runtime::Handle,
        tokio::sync::oneshot::Sender<()>,
        std::thread::JoinHandle<()>,
    )>,
}

impl Workers {
    fn start(n: usize) -> anyhow::Result<Workers> {
        let mut workers = Workers::default();
        for i in 0..n.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("pgshard-worker-{i}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        let _ = stopped.await;
                    })
                })
                .context("cannot start a worker thread")?;
            workers.running.push((handle, stop, thread));
        }
        Ok(workers)
    }

    fn handles(&self) -> Vec<tokio::runtime::Handle> {
        self.running.iter().map(|(h, _, _)| h.clone()).collect()
    }

    /// Ends every worker's runtime (its remaining tasks are dropped) and waits for its thread.
    fn stop(self) {
        for (_, stop, thread) in self.running {
            let _ = stop.send(());
            let _ = thread.join();
        }
    }
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

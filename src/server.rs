//! The accept loop: takes client sockets and hands each to a [`crate::session`] task with the
//! [`Shared`] handles. Holds no protocol logic itself.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::config::Config;
use crate::shared::Shared;

/// Why the proxy could not keep serving.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("accept failed: {0}")]
    Accept(#[from] std::io::Error),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
}

/// Serves clients on `listener` until `shutdown` resolves; then closes every client session.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), ServerError> {
    let shared = Arc::new(Shared::new(config));
    if shared.routing {
        let learner = shared.clone();
        tokio::spawn(async move {
            learner.learn_volatility().await;
            learner.learn_columns().await;
            if learner.shards.len() > 1 {
                learner.learn_collations().await;
            }
        });
    }
    let metrics = crate::metrics::bind(&shared)
        .await?
        .map(|listener| tokio::spawn(crate::metrics::serve(listener, shared.clone())));
    let mut sessions = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    sessions.spawn(crate::session::run(stream, shared.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    sessions.abort_all();
    if let Some(metrics) = metrics {
        metrics.abort();
    }
    Ok(())
}

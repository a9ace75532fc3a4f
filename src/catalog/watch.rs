//! Following the catalog: one dedicated connection LISTENs on `pgshard_map` and reads the
//! epoch at every notification and every poll interval (in case a notification was lost or
//! the connection dropped); a higher epoch loads the whole map and hands it on. Reconnects
//! after any failure. Never changes the catalog and never touches a session.

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::AsyncMessage;

use crate::tls::BackendTls;

use super::{describe, detail, epoch, load, parse_url, CatalogError, LiveMap, CHANNEL};

/// Follows the catalog at `url` forever, calling `on_change` with each map whose epoch is
/// above `known_epoch` (then above the last one handed on). Run it as a task; abort it to stop.
pub async fn follow(
    url: String,
    tls: Option<Arc<BackendTls>>,
    poll: Duration,
    mut known_epoch: u64,
    mut on_change: impl FnMut(LiveMap) + Send,
) {
    loop {
        if let Err(e) =
            follow_once(&url, tls.as_deref(), poll, &mut known_epoch, &mut on_change).await
        {
            tracing::warn!("following the live shard map: {e}; trying again in {poll:?}");
        }
        tokio::time::sleep(poll).await;
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One connection's worth of following; returns on the first failure.
async fn follow_once(
    url: &str,
    tls: Option<&BackendTls>,
    poll: Duration,
    known_epoch: &mut u64,
    on_change: &mut (impl FnMut(LiveMap) + Send),
) -> Result<(), CatalogError> {
    let mut config = parse_url(url)?;
    let (mode, connector) = crate::tls::for_tokio_postgres(tls);
    let (mut client, mut connection) =
        config
            .ssl_mode(mode)
            .connect(connector)
            .await
            .map_err(|e| CatalogError::Connect {
                at: describe(&config),
                problem: detail(&e),
            })?;
    let notified = Arc::new(tokio::sync::Notify::new());
    let wake = notified.clone();
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(_))) => wake.notify_one(),
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!("catalog listener connection failed: {e}");
                    break;
                }
                None => break,
            }
        }
        // The client's next query fails, and `follow` reconnects.
    });
    let _driver = AbortOnDrop(driver.abort_handle());
    client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
    let mut warned_back = false;
    loop {
        let now = epoch(&client).await?;
        if now > *known_epoch {
            let live = load(&mut client).await?;
            tracing::info!(
                "the live shard map moved to epoch {} (was {known_epoch})",
                live.epoch
            );
            *known_epoch = live.epoch;
            on_change(live);
        } else if now < *known_epoch && !warned_back {
            warned_back = true;
            tracing::warn!(
                "the catalog's epoch went back from {known_epoch} to {now} (was it recreated?); \
                 keeping the map of epoch {known_epoch}"
            );
        }
        tokio::select! {
            _ = notified.notified() => {}
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

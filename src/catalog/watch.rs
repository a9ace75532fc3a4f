//! Following the catalog: one dedicated connection LISTENs on `pgshard_map`; at every
//! notification and poll interval (in case a notification was lost or the connection dropped)
//! it notes that this router is alive, reads the epoch and the cutover holds from one snapshot,
//! installs a newer map (and waits until sessions see it), then takes up new holds (answering
//! each once the transactions older than it have ended) and lets go of the ones that ended.
//! Reconnects after any failure. Never changes the map and never touches a session.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio_postgres::{AsyncMessage, Client};

use crate::holds::{Hold, Holds};
use crate::rebalance::SlotSet;
use crate::tls::BackendTls;

use super::cutover::{acknowledge, heartbeat, router_view, HeldMove, RouterView};
use super::{describe, detail, load, parse_url, CatalogError, LiveMap, CHANNEL};

/// How long a router waits for its older transactions to end before it answers a hold; a
/// mover waiting longer gives up the attempt and retries.
const DRAIN_WAIT: Duration = Duration::from_secs(5);

/// Makes a newer map current; the receiver answers once sessions can see it.
pub type Install = Box<dyn FnMut(LiveMap) -> oneshot::Receiver<()> + Send + Sync>;

/// What a router follows the catalog with.
pub struct Follower {
    pub url: String,
    pub tls: Option<Arc<BackendTls>>,
    pub poll: Duration,
    /// The epoch routed by now.
    pub known_epoch: u64,
    /// This router's name in `pgshard.routers`.
    pub router_id: String,
    pub holds: Arc<Holds>,
    pub install: Install,
}

/// Takes up the holds in `view` at once (before a router serves: no transaction is open, so
/// nothing to wait for); the watcher answers them later.
pub async fn take_up_holds(holds: &Holds, view: &RouterView) {
    for held in &view.holds {
        if let Some(hold) = hold_of(held) {
            holds.hold_and_drain(hold).await;
        }
    }
}

/// The hold a router keeps for `held`: its slots, or none once its map flipped.
fn hold_of(held: &HeldMove) -> Option<Hold> {
    let (move_id, slots) = (&held.move_id, &held.slots);
    match crate::sharding::parse_slot_spec(slots) {
        Ok(ranges) if held.slots_held => Some(Hold {
            move_id: move_id.to_string(),
            slots: SlotSet::from_ranges(ranges),
        }),
        Ok(_) => Some(Hold {
            move_id: move_id.to_string(),
            slots: SlotSet::from_ranges([]),
        }),
        Err(e) => {
            tracing::error!("the catalog's hold of move {move_id} names bad slots {slots:?}: {e}");
            None
        }
    }
}

impl Follower {
    /// Follows the catalog forever. Run it as a task; abort it to stop.
    pub async fn follow(mut self) {
        let mut answered = HashSet::new();
        loop {
            if let Err(e) = self.follow_once(&mut answered).await {
                tracing::warn!(
                    "following the live shard map: {e}; trying again in {:?}",
                    self.poll
                );
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    /// One connection's worth of following; returns on the first failure.
    async fn follow_once(&mut self, answered: &mut HashSet<String>) -> Result<(), CatalogError> {
        let mut config = parse_url(&self.url)?;
        let (mode, connector) = crate::tls::for_tokio_postgres(self.tls.as_deref());
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
            heartbeat(&client, &self.router_id, self.poll).await?;
            let view = router_view(&client).await?;
            if view.epoch > self.known_epoch {
                self.install_newer(&mut client).await?;
            } else if view.epoch < self.known_epoch && !warned_back {
                warned_back = true;
                tracing::warn!(
                    "the catalog's epoch went back from {} to {} (was it recreated?); keeping \
                     the map of epoch {}",
                    self.known_epoch,
                    view.epoch,
                    self.known_epoch
                );
            }
            self.follow_holds(&client, &view, answered).await?;
            tokio::select! {
                _ = notified.notified() => {}
                _ = tokio::time::sleep(self.poll) => {}
            }
        }
    }

    async fn install_newer(&mut self, client: &mut Client) -> Result<(), CatalogError> {
        let live = load(client).await?;
        tracing::info!(
            "the live shard map moved to epoch {} (was {})",
            live.epoch,
            self.known_epoch
        );
        self.known_epoch = live.epoch;
        let installed = (self.install)(live);
        // An accept loop that has stopped never answers: nothing is routed any more.
        let _ = installed.await;
        Ok(())
    }

    /// Lets go of holds that ended (after the map they flipped was installed, above), then
    /// takes up new ones, answering each once drained.
    async fn follow_holds(
        &self,
        client: &Client,
        view: &RouterView,
        answered: &mut HashSet<String>,
    ) -> Result<(), CatalogError> {
        for held in self.holds.held() {
            match view.holds.iter().find(|h| h.move_id == held.move_id) {
                None => {
                    tracing::info!("the cutover hold of move {} ended", held.move_id);
                    self.holds.release(&held.move_id);
                }
                // Flipped (the new map is installed above): only keyless reads wait now.
                Some(h) if !h.slots_held && !held.slots.is_empty() => {
                    self.holds.narrow(&held.move_id);
                }
                Some(_) => {}
            }
        }
        answered.retain(|id| view.holds.iter().any(|h| h.move_id == *id));
        for held in &view.holds {
            let move_id = &held.move_id;
            if answered.contains(move_id) {
                continue;
            }
            let Some(hold) = hold_of(held) else {
                continue;
            };
            tracing::info!(
                "holding slots {} for the cutover of move {move_id}",
                held.slots
            );
            match tokio::time::timeout(DRAIN_WAIT, self.holds.hold_and_drain(hold)).await {
                Ok(()) => {
                    acknowledge(client, move_id, &self.router_id).await?;
                    answered.insert(move_id.clone());
                }
                Err(_) => tracing::warn!(
                    "transactions older than the hold of move {move_id} are still open after \
                     {DRAIN_WAIT:?}; not answering yet (the mover retries)"
                ),
            }
        }
        Ok(())
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

//! Following the catalog: one dedicated connection LISTENs on `pgshard_map`; at every
//! notification and poll interval (in case a notification was lost or the connection dropped)
//! it notes that this router is alive, reads the epoch and the cutover holds from one snapshot,
//! installs a newer map (and waits until sessions see it), then takes up new holds (answering
//! each once the transactions older than it have ended) and lets go of the ones that ended.
//! Reconnects after any failure. Never changes the map and never touches a session.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio_postgres::{AsyncMessage, Client};

use crate::holds::{Hold, Holds};
use crate::rebalance::SlotSet;
use crate::tls::BackendTls;

use super::cutover::{acknowledge, heartbeat, router_view, HeldMove, RouterView};
use super::{load, open_connection, CatalogError, LiveMap, CHANNEL};

/// How long a router waits for its older transactions to end before it answers a hold; a
/// mover waiting longer gives up the attempt and retries.
const DRAIN_WAIT: Duration = Duration::from_secs(5);

/// A router cut off from the catalog for this long (two poll intervals and a second, less than
/// the three and two seconds after which a mover stops waiting for it) holds the slots of the
/// moves that were unfinished at its last contact, and keyless statements, until it is back.
pub fn fence_after(poll: Duration) -> Duration {
    poll * 2 + Duration::from_secs(1)
}

/// What the fence knows: the last contact with the catalog, the moves unfinished then, and
/// whether their slots are fenced now.
struct Fence {
    last_contact: Instant,
    unfinished: Vec<(String, String)>,
    fenced: Vec<String>,
}

/// What [`Fence::fenced`] lists for the fence of every slot when the lease ran out.
const LEASE: &str = "lease";

/// Name of the hold fencing `move_id`'s slots (or every slot: [`LEASE`]).
fn fence_name(move_id: &str) -> String {
    format!("fence:{move_id}")
}

/// Makes a newer map current; the receiver answers once sessions can see it.
pub type Install = Box<dyn FnMut(LiveMap) -> oneshot::Receiver<()> + Send + Sync>;

/// What a router follows the catalog with.
pub struct Follower {
    pub url: String,
    pub tls: Option<Arc<BackendTls>>,
    pub poll: Duration,
    /// How long it routes by its map without hearing from the catalog (`catalog.lease_ms`).
    pub lease: Duration,
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
            fence: false,
        }),
        Ok(_) => Some(Hold {
            move_id: move_id.to_string(),
            slots: SlotSet::default(),
            fence: false,
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
        let fence = Arc::new(Mutex::new(Fence {
            last_contact: Instant::now(),
            unfinished: Vec::new(),
            fenced: Vec::new(),
        }));
        let watchdog = tokio::spawn(watch_contact(
            fence.clone(),
            self.holds.clone(),
            self.poll,
            self.lease,
        ));
        let _watchdog = AbortOnDrop(watchdog.abort_handle());
        loop {
            if let Err(e) = self.follow_once(&mut answered, &fence).await {
                tracing::warn!(
                    "following the live shard map: {e}; trying again in {:?}",
                    self.poll
                );
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    /// One connection's worth of following; returns on the first failure.
    async fn follow_once(
        &mut self,
        answered: &mut HashSet<String>,
        fence: &Mutex<Fence>,
    ) -> Result<(), CatalogError> {
        let (mut client, mut connection) = open_connection(&self.url, self.tls.as_deref()).await?;
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
            heartbeat(&client, &self.router_id, self.poll, self.lease).await?;
            let view = router_view(&client).await?;
            {
                // The catalog answered (before a drain below, which may take a while).
                let mut fence = fence.lock().unwrap_or_else(|e| e.into_inner());
                fence.last_contact = Instant::now();
                fence.unfinished = view.unfinished.clone();
            }
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
            self.in_contact(fence);
            tokio::select! {
                _ = notified.notified() => {}
                _ = tokio::time::sleep(self.poll) => {}
            }
        }
    }

    /// The map and the holds are current again: lift a fence.
    fn in_contact(&self, fence: &Mutex<Fence>) {
        let mut fence = fence.lock().unwrap_or_else(|e| e.into_inner());
        for move_id in std::mem::take(&mut fence.fenced) {
            tracing::info!("the catalog is back: lifting the fence ({move_id})");
            self.holds.release(&fence_name(&move_id));
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
            // Writers first (the mover verifies meanwhile), then read-only statements (before
            // the mover swaps the rows in).
            let drained =
                match tokio::time::timeout(DRAIN_WAIT, self.holds.hold_and_drain(hold)).await {
                    Ok(eras) => {
                        acknowledge(client, move_id, &self.router_id, false).await?;
                        tokio::time::timeout(DRAIN_WAIT, Holds::drain_readers(&eras))
                            .await
                            .is_ok()
                    }
                    Err(_) => false,
                };
            if drained {
                acknowledge(client, move_id, &self.router_id, true).await?;
                answered.insert(move_id.clone());
            } else {
                tracing::warn!(
                    "transactions older than the hold of move {move_id} are still open after \
                     {DRAIN_WAIT:?}; not answering yet (the mover retries)"
                );
            }
        }
        Ok(())
    }
}

/// Fences the slots of unfinished moves once the catalog has not answered for
/// [`fence_after`] (a mover stops waiting for a router it has not heard from, and could flip
/// those slots while this router still routes by the old map), and every slot once it has not
/// answered for the lease (a move may have begun since the last contact).
async fn watch_contact(
    fence: Arc<Mutex<Fence>>,
    holds: Arc<Holds>,
    poll: Duration,
    lease: Duration,
) {
    let limit = fence_after(poll);
    let mut tick = tokio::time::interval((poll / 2).max(Duration::from_millis(50)));
    loop {
        tick.tick().await;
        let to_fence: Vec<Hold> = {
            let mut fence = fence.lock().unwrap_or_else(|e| e.into_inner());
            let silent = fence.last_contact.elapsed();
            let mut out = Vec::new();
            if silent >= limit && fence.fenced.is_empty() {
                for (move_id, slots) in fence.unfinished.clone() {
                    let held = HeldMove {
                        move_id: fence_name(&move_id),
                        slots,
                        slots_held: true,
                    };
                    if let Some(hold) = hold_of(&held) {
                        out.push(Hold {
                            fence: true,
                            ..hold
                        });
                        fence.fenced.push(move_id);
                    }
                }
            }
            if silent >= lease && !fence.fenced.iter().any(|id| id == LEASE) {
                out.push(Hold {
                    move_id: fence_name(LEASE),
                    slots: SlotSet::from_ranges([0..=crate::sharding::SLOT_COUNT - 1]),
                    fence: true,
                });
                fence.fenced.push(LEASE.to_string());
            }
            // Held while the lock is held: contact coming back cannot lift them first.
            for hold in &out {
                holds.hold(hold.clone());
            }
            out
        };
        for hold in to_fence {
            if hold.move_id == fence_name(LEASE) {
                tracing::warn!(
                    "no answer from the catalog for the lease ({lease:?}): holding statements \
                     on every slot (and keyless ones) until it is back, since a move may have \
                     flipped slots meanwhile"
                );
            } else {
                tracing::warn!(
                    "no answer from the catalog for {limit:?}: holding slots of unfinished \
                     move {} (and keyless statements) until it is back",
                    hold.move_id
                );
            }
        }
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

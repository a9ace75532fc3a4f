//! Operator control over the running proxy, held by `Shared` as explicit handles: RELOAD and
//! SHUTDOWN requests (the accept loop and the config reloader listen to them), PAUSE/RESUME
//! (checkouts hold while a shard is paused) and DISABLE/ENABLE (new logins refused). Sessions
//! read it with one Relaxed load per checkout; it never touches a connection itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tokio::sync::{mpsc, oneshot, watch};

/// A RELOAD request: answer `Ok` once the new config is in use, or why it was refused.
pub type ReloadReply = oneshot::Sender<Result<(), String>>;

/// What the console asked for, and what the proxy listens to.
pub struct Control {
    reload_tx: mpsc::UnboundedSender<ReloadReply>,
    /// Taken by whoever carries out reloads; while still here, nobody does.
    reload_rx: Mutex<Option<mpsc::UnboundedReceiver<ReloadReply>>>,
    shutdown: watch::Sender<bool>,
    disabled: AtomicBool,
    /// Some shard (or all) is paused: the one flag a checkout reads.
    any_paused: AtomicBool,
    paused: Mutex<Paused>,
    /// Bumped on every RESUME: held checkouts look again.
    resumed: watch::Sender<u64>,
}

#[derive(Default)]
struct Paused {
    all: bool,
    shards: Vec<String>,
}

impl Default for Control {
    fn default() -> Self {
        let (reload_tx, reload_rx) = mpsc::unbounded_channel();
        Control {
            reload_tx,
            reload_rx: Mutex::new(Some(reload_rx)),
            shutdown: watch::Sender::new(false),
            disabled: AtomicBool::new(false),
            any_paused: AtomicBool::new(false),
            paused: Mutex::new(Paused::default()),
            resumed: watch::Sender::new(0),
        }
    }
}

/// Why a control request could not be carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("this pgshard process does not reload its config on request")]
    ReloadUnavailable,
    #[error("the config was not reloaded: {0}")]
    ReloadFailed(String),
}

impl Control {
    /// The RELOAD requests, for the one task that carries them out (`None` once taken).
    pub fn take_reload_requests(&self) -> Option<mpsc::UnboundedReceiver<ReloadReply>> {
        lock(&self.reload_rx).take()
    }

    /// Asks for a config reload and waits for its outcome.
    pub async fn request_reload(&self) -> Result<(), ControlError> {
        if lock(&self.reload_rx).is_some() {
            return Err(ControlError::ReloadUnavailable);
        }
        let (reply, outcome) = oneshot::channel();
        self.reload_tx
            .send(reply)
            .map_err(|_| ControlError::ReloadUnavailable)?;
        match outcome.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(ControlError::ReloadFailed(why)),
            Err(_) => Err(ControlError::ReloadUnavailable),
        }
    }

    /// Asks the proxy to shut down (the accept loop watches [`Control::shutdown_requested`]).
    pub fn request_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Becomes `true` when a shutdown was requested.
    pub fn shutdown_requested(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// DISABLE (`true`) / ENABLE (`false`): whether new client logins are refused.
    pub fn set_disabled(&self, disabled: bool) {
        self.disabled.store(disabled, Ordering::Relaxed);
    }

    pub fn is_disabled(&self) -> bool {
        self.disabled.load(Ordering::Relaxed)
    }

    /// PAUSE: checkouts of `shard`'s connections (every shard's for `None`) hold until RESUME.
    pub fn pause(&self, shard: Option<&str>) {
        let mut paused = lock(&self.paused);
        match shard {
            None => paused.all = true,
            Some(name) if !paused.shards.iter().any(|s| s == name) => {
                paused.shards.push(name.to_string())
            }
            Some(_) => {}
        }
        self.any_paused.store(true, Ordering::Relaxed);
    }

    /// RESUME: ends the pause of `shard` (`None`: every pause).
    pub fn resume(&self, shard: Option<&str>) {
        {
            let mut paused = lock(&self.paused);
            match shard {
                None => *paused = Paused::default(),
                Some(name) => paused.shards.retain(|s| s != name),
            }
            self.any_paused
                .store(paused.all || !paused.shards.is_empty(), Ordering::Relaxed);
        }
        self.resumed.send_modify(|n| *n += 1);
    }

    /// The one check on a checkout's path: is anything paused?
    pub fn any_paused(&self) -> bool {
        self.any_paused.load(Ordering::Relaxed)
    }

    /// Whether checkouts of `shard` hold now.
    pub fn is_paused(&self, shard: &str) -> bool {
        let paused = lock(&self.paused);
        paused.all || paused.shards.iter().any(|s| s == shard)
    }

    /// What is paused: every shard, or these.
    pub fn paused(&self) -> (bool, Vec<String>) {
        let paused = lock(&self.paused);
        (paused.all, paused.shards.clone())
    }

    /// Waits while `shard` is paused.
    pub async fn wait_unpaused(&self, shard: &str) {
        let mut resumed = self.resumed.subscribe();
        while self.is_paused(shard) {
            if resumed.changed().await.is_err() {
                return;
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every value behind these locks stays valid whatever panicked.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test]
    async fn a_paused_shard_holds_until_resumed() {
        let control = Arc::new(Control::default());
        assert!(!control.any_paused());
        control.pause(Some("s1"));
        assert!(control.any_paused());
        assert!(control.is_paused("s1") && !control.is_paused("s0"));
        let waiter = {
            let control = control.clone();
            tokio::spawn(async move { control.wait_unpaused("s1").await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        control.resume(Some("s1"));
        waiter.await.unwrap();
        assert!(!control.any_paused());
        control.pause(None);
        assert!(control.is_paused("s0"));
        control.resume(None);
        assert!(!control.is_paused("s0"));
    }

    #[tokio::test]
    async fn reload_without_a_listener_says_so_and_with_one_waits_for_it() {
        let control = Arc::new(Control::default());
        assert_eq!(
            control.request_reload().await,
            Err(ControlError::ReloadUnavailable)
        );
        let mut requests = control.take_reload_requests().unwrap();
        tokio::spawn(async move {
            while let Some(reply) = requests.recv().await {
                let _ = reply.send(Err("bad key".into()));
            }
        });
        assert_eq!(
            control.request_reload().await,
            Err(ControlError::ReloadFailed("bad key".into()))
        );
    }
}

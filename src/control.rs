//! Operator control over the running proxy, held by `Shared` as an explicit handle (kept across
//! reloads): RELOAD and SHUTDOWN requests, sent as [`Command`]s to the accept loop (by signal
//! handlers and the admin console), PAUSE/RESUME (checkouts hold while a shard is paused),
//! DISABLE/ENABLE (new logins refused). Sessions read it with one
//! Relaxed load per checkout; it never touches a connection itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, watch};

/// What the accept loop is asked to do.
#[derive(Debug)]
pub enum Command {
    /// Re-read the config file; the answer is the new generation's number or why the file was
    /// refused (the running config then stays).
    Reload {
        done: Option<oneshot::Sender<Result<u64, String>>>,
    },
    /// Route by this live shard map from now on (the catalog watcher saw a new epoch): the
    /// accept loop builds a new generation with it.
    /// `installed` is answered once sessions can see it.
    InstallMap {
        map: crate::catalog::LiveMap,
        installed: Option<oneshot::Sender<()>>,
    },
    /// Stop: gracefully (stop accepting, let transactions finish up to
    /// `server.shutdown_timeout_ms`) or at once.
    Shutdown { graceful: bool },
}

/// What the console and the signals asked for, and what the proxy listens to.
pub struct Control {
    commands: mpsc::UnboundedSender<Command>,
    disabled: AtomicBool,
    /// Some shard (or all) is paused: the one flag a checkout reads.
    any_paused: AtomicBool,
    paused: Mutex<Paused>,
    /// Bumped on every RESUME: held checkouts look again.
    resumed: watch::Sender<u64>,
    /// Slots held by a mover's cutover, and the eras of transactions it waits for.
    pub holds: Arc<crate::holds::Holds>,
}

#[derive(Default)]
struct Paused {
    all: bool,
    shards: Vec<String>,
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
    /// A handle, and the receiving end of its commands for the accept loop.
    pub fn channel() -> (Arc<Control>, mpsc::UnboundedReceiver<Command>) {
        let (commands, rx) = mpsc::unbounded_channel();
        let control = Control {
            commands,
            disabled: AtomicBool::new(false),
            any_paused: AtomicBool::new(false),
            paused: Mutex::new(Paused::default()),
            resumed: watch::Sender::new(0),
            holds: Arc::default(),
        };
        (Arc::new(control), rx)
    }

    /// A handle whose commands nobody carries out (a proxy built without an accept loop, as
    /// in unit tests): RELOAD answers [`ControlError::ReloadUnavailable`].
    pub fn detached() -> Arc<Control> {
        Control::channel().0
    }

    /// Asks for a config reload and waits for its outcome.
    pub async fn request_reload(&self) -> Result<(), ControlError> {
        let (done, outcome) = oneshot::channel();
        self.commands
            .send(Command::Reload { done: Some(done) })
            .map_err(|_| ControlError::ReloadUnavailable)?;
        match outcome.await {
            Ok(Ok(_generation)) => Ok(()),
            Ok(Err(why)) => Err(ControlError::ReloadFailed(why)),
            Err(_) => Err(ControlError::ReloadUnavailable),
        }
    }

    /// Asks for a graceful shutdown (as SIGTERM); returns at once.
    pub fn request_shutdown(&self) {
        self.send(Command::Shutdown { graceful: true });
    }

    /// Sends a command as is (signal handlers).
    pub fn send(&self, command: Command) {
        let _ = self.commands.send(command);
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

    #[tokio::test]
    async fn a_paused_shard_holds_until_resumed() {
        let control = Control::detached();
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
        assert_eq!(
            Control::detached().request_reload().await,
            Err(ControlError::ReloadUnavailable)
        );
        let (control, mut commands) = Control::channel();
        tokio::spawn(async move {
            while let Some(command) = commands.recv().await {
                if let Command::Reload { done: Some(done) } = command {
                    let _ = done.send(Err("bad key".into()));
                }
            }
        });
        assert_eq!(
            control.request_reload().await,
            Err(ControlError::ReloadFailed("bad key".into()))
        );
    }
}

//! Asking the running proxy to reload its config or shut down (from signals and the admin
//! console), and each session's presence flag that lets a graceful shutdown close clients
//! waiting between transactions. Messages and flags only: the accept loop acts on them.

use std::sync::atomic::{AtomicU8, Ordering};

use tokio::sync::{mpsc, oneshot};

/// What the accept loop is asked to do.
#[derive(Debug)]
pub enum Command {
    /// Re-read the config file; the answer is the new generation's number or why the file was
    /// refused (the running config then stays).
    Reload {
        done: Option<oneshot::Sender<Result<u64, String>>>,
    },
    /// Stop: gracefully (stop accepting, let transactions finish up to
    /// `server.shutdown_timeout_ms`) or at once.
    Shutdown { graceful: bool },
}

/// A handle that sends [`Command`]s to the accept loop. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Control {
    tx: mpsc::UnboundedSender<Command>,
}

impl Control {
    /// A handle and the receiving end the accept loop reads.
    pub fn channel() -> (Control, mpsc::UnboundedReceiver<Command>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Control { tx }, rx)
    }

    /// A handle nobody listens to (a proxy built without an accept loop, as in unit tests).
    pub fn detached() -> Control {
        Control::channel().0
    }

    /// Asks for a reload and waits for its outcome.
    pub async fn reload(&self) -> Result<u64, String> {
        let (done, answer) = oneshot::channel();
        self.tx
            .send(Command::Reload { done: Some(done) })
            .map_err(|_| "this pgshard cannot reload (no accept loop runs)".to_string())?;
        answer
            .await
            .map_err(|_| "the reload was interrupted by a shutdown".to_string())?
    }

    /// Asks for a shutdown; returns at once.
    pub fn shutdown(&self, graceful: bool) {
        let _ = self.tx.send(Command::Shutdown { graceful });
    }

    /// Sends a command as is (signal handlers).
    pub fn send(&self, command: Command) {
        let _ = self.tx.send(command);
    }
}

/// Where a session stands, for a graceful shutdown: waiting between transactions (it may be
/// closed), busy, or being closed. Claimed with compare-and-swap on both sides, so a session
/// that just received a request is never closed under it.
#[derive(Debug, Default)]
pub struct Presence(AtomicU8);

const BUSY: u8 = 0;
const WAITING: u8 = 1;
const CLOSING: u8 = 2;

impl Presence {
    /// The session waits for its client between transactions, holding nothing.
    pub fn waiting(&self) {
        let _ = self
            .0
            .compare_exchange(BUSY, WAITING, Ordering::AcqRel, Ordering::Relaxed);
    }

    /// The session has work; `false` when the shutdown claimed it first (it must leave).
    pub fn busy(&self) -> bool {
        match self
            .0
            .compare_exchange(WAITING, BUSY, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(now) => now != CLOSING,
        }
    }

    /// The shutdown claims a waiting session; `true` when it may be closed now.
    pub fn claim_if_waiting(&self) -> bool {
        self.0
            .compare_exchange(WAITING, CLOSING, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_waiting_session_is_claimed_once_and_then_must_leave() {
        let p = Presence::default();
        assert!(!p.claim_if_waiting(), "a busy session is never claimed");
        p.waiting();
        assert!(p.busy());
        p.waiting();
        assert!(p.claim_if_waiting());
        assert!(!p.busy(), "claimed: the session leaves instead of serving");
        assert!(!p.claim_if_waiting());
    }
}

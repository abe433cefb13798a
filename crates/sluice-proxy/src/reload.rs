//! Configuration reloads: SIGHUP, a changed file and `POST /api/v1/reload` all ask the
//! serve loop, which re-reads the file, binds new listeners, swaps the snapshot and stops
//! the listeners the new file dropped, or rejects the whole change.

use sluice_config::{Config, ConfigErrors};
use tokio::sync::{mpsc, oneshot};

/// What asked for a reload, for the log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Signal,
    FileChanged,
    AdminApi,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Signal => "SIGHUP",
            Trigger::FileChanged => "file changed",
            Trigger::AdminApi => "admin API",
        }
    }
}

/// One reload asked for, with where to send its outcome.
#[derive(Debug)]
pub struct ReloadRequest {
    pub trigger: Trigger,
    pub reply: oneshot::Sender<Result<u64, String>>,
}

/// Reads the configuration again (the file, or the built-in default).
pub type Loader = Box<dyn Fn() -> Result<Config, ConfigErrors> + Send + Sync>;

/// Asks the serve loop for reloads; cheap to clone.
#[derive(Debug, Clone)]
pub struct Reloader(mpsc::Sender<ReloadRequest>);

/// The receiving side, handed to [`crate::serve`] with the loader.
#[derive(Debug)]
pub struct ReloadRequests(pub(crate) mpsc::Receiver<ReloadRequest>);

/// A reloader and the requests it sends.
pub fn channel() -> (Reloader, ReloadRequests) {
    let (tx, rx) = mpsc::channel(16);
    (Reloader(tx), ReloadRequests(rx))
}

impl Reloader {
    /// Whether the serve loop has stopped taking reloads.
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }

    /// Reloads now and waits for the outcome: the new generation, or every reason the
    /// configuration was rejected (one per line).
    pub async fn reload(&self, trigger: Trigger) -> Result<u64, String> {
        let (reply, outcome) = oneshot::channel();
        self.0
            .send(ReloadRequest { trigger, reply })
            .await
            .map_err(|_| "the gateway is shutting down".to_string())?;
        outcome
            .await
            .map_err(|_| "the gateway is shutting down".to_string())?
    }
}

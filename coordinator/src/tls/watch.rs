//! Reload triggers: SIGHUP, and a change of the certificate files (modification time or size,
//! polled).

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::task::JoinHandle;

use super::ServerTls;

/// What identifies a version of the files: each file's modification time and size (`None`
/// while a file cannot be read, e.g. in the middle of a replacement).
pub(super) type FileStamps = Vec<Option<(SystemTime, u64)>>;

/// The current stamps of `paths`.
pub(super) fn stamps<'a>(paths: impl Iterator<Item = &'a Path>) -> FileStamps {
    paths
        .map(|path| {
            let meta = std::fs::metadata(path).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        })
        .collect()
}

/// Spawns the task that reloads `tls` on SIGHUP and when its files change, until `shutdown`
/// resolves. The SIGHUP handler is installed before this returns.
pub(super) fn spawn(
    tls: Arc<ServerTls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> JoinHandle<()> {
    tokio::spawn(watch(tls, Hangup::new(), shutdown))
}

async fn watch(tls: Arc<ServerTls>, mut hangup: Hangup, shutdown: impl Future<Output = ()> + Send) {
    let polling = !tls.poll_interval.is_zero();
    let mut poll = tokio::time::interval(if polling {
        tls.poll_interval
    } else {
        std::time::Duration::from_secs(3600)
    });
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    poll.reset();
    tokio::pin!(shutdown);
    loop {
        let trigger = tokio::select! {
            _ = &mut shutdown => return,
            _ = poll.tick(), if polling => Trigger::FileChange,
            _ = hangup.recv() => Trigger::Sighup,
        };
        let reloading = tls.clone();
        // File I/O and key parsing: off the async workers.
        let outcome = tokio::task::spawn_blocking(move || match trigger {
            Trigger::FileChange => reloading.reload_if_changed(),
            Trigger::Sighup => Some(reloading.reload_because("SIGHUP")),
        })
        .await;
        if let Err(err) = outcome {
            tracing::error!(error = %err, "the TLS reload task failed");
        }
        // Failures were logged by the reload; the old configuration stays.
    }
}

#[derive(Debug, Clone, Copy)]
enum Trigger {
    FileChange,
    Sighup,
}

/// SIGHUP deliveries (never, where there are no signals or the handler cannot be installed).
struct Hangup {
    #[cfg(unix)]
    signal: Option<tokio::signal::unix::Signal>,
}

impl Hangup {
    fn new() -> Hangup {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            let signal = signal(SignalKind::hangup())
                .inspect_err(|err| {
                    tracing::warn!(error = %err, "cannot listen for SIGHUP; TLS reloads on file changes only");
                })
                .ok();
            Hangup { signal }
        }
        #[cfg(not(unix))]
        Hangup {}
    }

    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(signal) = &mut self.signal {
            if signal.recv().await.is_some() {
                return;
            }
            self.signal = None;
        }
        std::future::pending::<()>().await;
    }
}

//! Work announcements between the coordinators of one database.
//!
//! A long-polling LeaseTask waits on its own process's signal ([`Coordinator::work`]), so tasks
//! made claimable by another coordinator — an optimize round created by the leader, leases
//! requeued by the leader's sweep, a job submitted elsewhere — would only be seen when the poll
//! ends. Each coordinator therefore announces its new work through the database
//! ([`nat_store::LeaderStore::announce_work`]: PostgreSQL `NOTIFY`, coalesced to one per
//! [`COALESCE`]) and listens to the others', waking its own long-polls when one arrives. A lost
//! listening connection wakes every poll (announcements may have been missed) and is re-opened.
//! With SQLite there is one coordinator and nothing to announce.
//!
//! [`Coordinator::work`]: crate::state::Coordinator::work

use std::sync::Arc;
use std::time::Duration;

use crate::state::Coordinator;

/// Announcements of one process are at most this frequent; a burst becomes one.
pub const COALESCE: Duration = Duration::from_millis(20);
/// Pause before the listener retries after an error.
const RETRY: Duration = Duration::from_secs(1);

/// Sends this process's announcements until shutdown.
pub(crate) async fn announcer(c: Arc<Coordinator>) {
    let mut shutdown = c.shutdown_signal();
    loop {
        tokio::select! {
            _ = c.work_to_announce() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        if let Err(err) = c.store.announce_work(c.leader.instance_id()).await {
            tracing::debug!(error = %err, "cannot announce work to the other coordinators");
        }
        tokio::time::sleep(COALESCE).await;
    }
}

/// Wakes this process's long-polls on the other coordinators' announcements until shutdown.
pub(crate) async fn listener(c: Arc<Coordinator>) {
    let mut shutdown = c.shutdown_signal();
    loop {
        let listening = tokio::select! {
            l = c.store.work_announcements() => l,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        let mut listener = match listening {
            Ok(Some(l)) => l,
            Ok(None) => return,
            Err(err) => {
                tracing::debug!(error = %err, "cannot listen to the other coordinators; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(RETRY) => continue,
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
            }
        };
        loop {
            let next = tokio::select! {
                n = listener.next() => n,
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            match next {
                Ok(Some(from)) if from == c.leader.instance_id() => {}
                Ok(Some(_)) => c.wake_local_workers(),
                Ok(None) => {
                    // Reconnected: what was announced meanwhile is lost.
                    c.wake_local_workers();
                }
                Err(err) => {
                    tracing::debug!(error = %err, "work announcements interrupted; re-listening");
                    c.wake_local_workers();
                    tokio::select! {
                        _ = tokio::time::sleep(RETRY) => break,
                        _ = shutdown.wait_for(|stop| *stop) => return,
                    }
                }
            }
        }
    }
}

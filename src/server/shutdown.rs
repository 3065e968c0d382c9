//! Graceful shutdown, core by core, in the reverse order of start-up.
//!
//! The signal is caught once, by `io::signal`, and every core sees it at the same time. Each core
//! then runs [`run_core`], whose phases end at a barrier of all cores, because a core's work
//! reaches the others' partitions through the mesh:
//! 1. stop accepting (its listener is dropped), stop reading requests on its connections, and
//!    wait up to `shutdown_grace_ms` for their in-flight requests to be answered; long-polling
//!    fetches are woken at once. Connections still busy after that are cut: their sockets close,
//!    and the requests they started run on, detached (never cancelled inside an append); the
//!    partitions refuse appends they had not yet begun once phase 3 starts.
//! 2. stop the background work that appends or rewrites (housekeeping: flush policy, offset
//!    expiry, compaction; the group metadata writer, which first writes what is queued).
//! 3. close every partition it owns: write and fdatasync what was appended, trim the active
//!    segment, write the index files (`PartitionLog::close`). Nothing new opens afterwards.
//!
//! The main thread waits for every core, then writes the clean-shutdown marker (only if every
//! partition closed cleanly) and logs "shutdown complete".

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use super::shard::Shard;
use super::{AllCores, Round};
use crate::config::limits::SHUTDOWN_CUT_WAIT_MS;
use crate::io::rt;
use crate::sync::Notify;

/// Where a core is in its life: serving, stopping (phase 1), closed (phase 3). Owned by the
/// core's shard.
#[derive(Default)]
pub struct Lifecycle {
    stopping: Cell<bool>,
    stopping_started: Notify,
    background_stopping: Cell<bool>,
    closed: Cell<bool>,
    connections: Cell<usize>,
    connection_ended: Notify,
    cut: Cell<bool>,
    cut_started: Notify,
}

/// Counts a connection as open until dropped.
pub struct OpenConnection<'a>(&'a Lifecycle);

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.connections.set(self.0.connections.get() - 1);
        self.0.connection_ended.notify_all();
    }
}

impl Lifecycle {
    /// Phase 1 began: connections stop reading requests and long polls return.
    pub fn is_stopping(&self) -> bool {
        self.stopping.get()
    }

    /// Completes when phase 1 begins (at once if it has).
    pub async fn stopping(&self) {
        while !self.stopping.get() {
            self.stopping_started.wait().await;
        }
    }

    /// Phase 2 began: background tasks end at their next turn.
    pub fn is_background_stopping(&self) -> bool {
        self.background_stopping.get()
    }

    /// Phase 3 began: the partitions are closing or closed, none may open.
    pub fn is_closed(&self) -> bool {
        self.closed.get()
    }

    /// Registers an open connection, until the returned guard drops.
    pub fn connection_opened(&self) -> OpenConnection<'_> {
        self.connections.set(self.connections.get() + 1);
        OpenConnection(self)
    }

    pub fn open_connections(&self) -> usize {
        self.connections.get()
    }

    /// Completes when the grace period is over and connections must go (at once if it is).
    pub async fn cut(&self) {
        while !self.cut.get() {
            self.cut_started.wait().await;
        }
    }

    async fn all_connections_closed(&self) {
        while self.connections.get() > 0 {
            self.connection_ended.wait().await;
        }
    }
}

/// Runs the three phases on this core (see the module doc); call once the shutdown signal came
/// and the listener is dropped. `housekeeping` is the core's housekeeping task, which ends once
/// it sees phase 2. Errors name the partitions that did not close cleanly.
pub async fn run_core(shard: &Rc<Shard>, all: &AllCores, housekeeping: rt::Task<()>, group_writer: rt::Task<()>) -> anyhow::Result<()> {
    let core = shard.core;
    let life = &shard.lifecycle;
    // Phase 1: in-flight requests.
    life.stopping.set(true);
    life.stopping_started.notify_all();
    shard.data_arrived.notify_all();
    let open = life.open_connections();
    if open > 0 {
        tracing::info!(core, connections = open, "stopped accepting; finishing in-flight requests");
    }
    let grace = Duration::from_millis(shard.config.shutdown_grace_ms.max(0) as u64);
    if rt::timeout(grace, life.all_connections_closed()).await.is_none() {
        tracing::warn!(
            core,
            connections = life.open_connections(),
            grace_ms = shard.config.shutdown_grace_ms,
            "requests still in flight after the shutdown grace period; closing their connections"
        );
        life.cut.set(true);
        life.cut_started.notify_all();
        let _ = rt::timeout(Duration::from_millis(SHUTDOWN_CUT_WAIT_MS), life.all_connections_closed()).await;
    }
    all.wait(Round::Drained).await;
    // Phase 2: background appends and rewrites.
    life.background_stopping.set(true);
    housekeeping.await;
    shard.groups.stop_writer();
    group_writer.await;
    all.wait(Round::Quiet).await;
    // Phase 3: partitions.
    life.closed.set(true);
    let closing: Vec<_> = shard
        .partitions()
        .into_iter()
        .map(|log| rt::spawn(async move { (log.dir().to_path_buf(), log.close().await) }))
        .collect();
    let total = closing.len();
    let mut failed = Vec::new();
    for task in closing {
        let (dir, result) = task.await;
        if let Err(e) = result {
            tracing::error!(core, dir = %dir.display(), error = %e, "closing a partition failed");
            failed.push(dir.display().to_string());
        }
    }
    tracing::debug!(core, partitions = total, "partitions closed");
    if !failed.is_empty() {
        anyhow::bail!("core {core}: {} of {total} partitions did not close cleanly: {}", failed.len(), failed.join(", "));
    }
    Ok(())
}

//! Cross-core calls over glommio's channel mesh: `invoke_on(core, f)` runs `f` on `core` and
//! returns its result, the way Seastar's `invoke_on` does.
//!
//! Each ordered pair of cores has a bounded lock-free channel carrying boxed jobs; each core runs
//! one receiving task per peer that starts every job as a local task. Replies travel on a
//! one-shot channel whose waker is safe to wake from a foreign thread. A job aimed at the calling
//! core runs inline, with no hop.

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;

use glommio::channels::channel_mesh::{Full, MeshBuilder, Receivers, Senders};

use crate::config::limits;

type Job = Box<dyn FnOnce() + Send>;

/// The mesh as built on the main thread, before the executors join it.
#[derive(Clone)]
pub struct MeshSeed(MeshBuilder<Job, Full>);

impl MeshSeed {
    pub fn new(cores: usize) -> MeshSeed {
        MeshSeed(MeshBuilder::full(cores, limits::MESH_CHANNEL_DEPTH))
    }
}

/// One core's end of the mesh. Owned by that core (not `Send`).
pub struct Mesh {
    senders: Senders<Job>,
    receivers: RefCell<Option<Receivers<Job>>>,
}

impl Mesh {
    /// Joins the mesh; returns this core's end. The shard index is `Mesh::core()`.
    pub async fn join(seed: MeshSeed) -> anyhow::Result<Rc<Mesh>> {
        let (senders, receivers) =
            seed.0.join().await.map_err(|_| anyhow::anyhow!("joining the cross-core mesh failed"))?;
        Ok(Rc::new(Mesh { senders, receivers: RefCell::new(Some(receivers)) }))
    }

    /// This core's shard index, 0..cores.
    pub fn core(&self) -> usize {
        self.senders.peer_id()
    }

    pub fn cores(&self) -> usize {
        self.senders.nr_consumers()
    }

    /// Starts the tasks that run jobs sent here by other cores. Call once.
    pub fn serve(&self) {
        let mut receivers = self.receivers.borrow_mut().take().expect("Mesh::serve called twice");
        for (_peer, rx) in receivers.streams() {
            glommio::spawn_local(async move {
                while let Some(job) = rx.recv().await {
                    job();
                }
            })
            .detach();
        }
    }

    /// Runs `f` on `core` and returns its output. `f` is built here and sent; the future it makes
    /// is created and polled on the target core only.
    pub async fn invoke_on<R, F, Fut>(&self, core: usize, f: F) -> R
    where
        R: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
    {
        if core == self.core() {
            return f().await;
        }
        let (tx, rx) = flume::bounded::<R>(1);
        let job: Job = Box::new(move || {
            glommio::spawn_local(async move {
                let _ = tx.send(f().await);
            })
            .detach();
        });
        if self.senders.send_to(core, job).await.is_err() {
            panic!("cross-core channel to core {core} closed while the broker runs");
        }
        rx.recv_async().await.expect("a core dropped a cross-core reply")
    }

    /// Closes this core's senders (at shutdown).
    pub fn close(&self) {
        self.senders.close();
    }
}

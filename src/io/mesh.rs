//! Cross-core calls: `invoke_on(core, f)` runs `f` on `core` and returns its result, the way
//! Seastar's `invoke_on` does.
//!
//! Each ordered pair of cores has a bounded lock-free channel (glommio's `shared_channel`)
//! carrying boxed jobs; each core runs one receiving task per peer that starts every job as a
//! local task. Replies travel on a one-shot channel whose waker is safe to wake from a foreign
//! thread. A job aimed at the calling core runs inline, with no hop.
//!
//! Every channel is made on the main thread, and each core is handed its own ends whole: an end
//! moves to one thread once and is never cloned. glommio's `MeshBuilder` is not used because it
//! is not safe to share: it is `Send` and `Clone` but counts its clones with an `Rc`, so cores
//! cloning or dropping their copies at the same moment corrupt the count (AddressSanitizer caught
//! a use after free there, and a broker in CI once aborted with "double free detected").

use std::cell::RefCell;
use std::future::Future;
use std::rc::Rc;
use std::sync::Mutex;

use glommio::channels::shared_channel::{self, ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender};

use crate::config::limits;
use crate::sync::Turns;

type Job = Box<dyn FnOnce() + Send>;

/// One core's unconnected ends: a sender to every other core, a receiver from every other core.
struct Ends {
    core: usize,
    to: Vec<Option<SharedSender<Job>>>,
    from: Vec<SharedReceiver<Job>>,
}

/// The mesh as built on the main thread, before the executors join it; shared by them (in an
/// `Arc`), each taking one core's ends.
pub struct MeshSeed {
    cores: usize,
    unclaimed: Mutex<Vec<Ends>>,
}

impl MeshSeed {
    pub fn new(cores: usize) -> MeshSeed {
        let mut to: Vec<Vec<Option<SharedSender<Job>>>> = (0..cores).map(|_| (0..cores).map(|_| None).collect()).collect();
        let mut from: Vec<Vec<SharedReceiver<Job>>> = (0..cores).map(|_| Vec::new()).collect();
        for (a, to_a) in to.iter_mut().enumerate() {
            for (b, slot) in to_a.iter_mut().enumerate() {
                if a != b {
                    let (tx, rx) = shared_channel::new_bounded(limits::MESH_CHANNEL_DEPTH);
                    *slot = Some(tx);
                    from[b].push(rx);
                }
            }
        }
        let mut unclaimed: Vec<Ends> =
            to.into_iter().zip(from).enumerate().map(|(core, (to, from))| Ends { core, to, from }).collect();
        // Claimed by popping: core 0 first.
        unclaimed.reverse();
        MeshSeed { cores, unclaimed: Mutex::new(unclaimed) }
    }
}

/// One core's end of the mesh. Owned by that core (not `Send`).
pub struct Mesh {
    core: usize,
    /// `None` at this core's own index.
    senders: Vec<Option<ConnectedSender<Job>>>,
    /// One line per peer: jobs go into its channel in the order `invoke_on` was called, also
    /// when the channel is full and several callers wait for room (glommio releases waiting
    /// senders last-in first-out).
    send_turns: Vec<Turns>,
    receivers: RefCell<Option<Vec<ConnectedReceiver<Job>>>>,
}

impl Mesh {
    /// Joins the mesh: claims the ends of a core no executor has claimed yet, and connects them.
    /// Returns this core's end; the shard index is `Mesh::core()`. Call once per executor.
    pub async fn join(seed: &MeshSeed) -> anyhow::Result<Rc<Mesh>> {
        let ends = seed
            .unclaimed
            .lock()
            .map_err(|_| anyhow::anyhow!("the cross-core mesh's lock was poisoned"))?
            .pop()
            .ok_or_else(|| anyhow::anyhow!("more executors than the {} cores of the mesh", seed.cores))?;
        // A sender's connect waits for its receiver's, and the other way round: every end is
        // connected in a task of its own, all at once, or two cores would wait on each other.
        let sending: Vec<_> = ends.to.into_iter().map(|tx| tx.map(|tx| glommio::spawn_local(tx.connect()))).collect();
        let receiving: Vec<_> = ends.from.into_iter().map(|rx| glommio::spawn_local(rx.connect())).collect();
        let mut senders = Vec::with_capacity(sending.len());
        for task in sending {
            senders.push(match task {
                Some(task) => Some(task.await),
                None => None,
            });
        }
        let mut receivers = Vec::with_capacity(receiving.len());
        for task in receiving {
            receivers.push(task.await);
        }
        let send_turns = senders.iter().map(|_| Turns::default()).collect();
        Ok(Rc::new(Mesh { core: ends.core, senders, send_turns, receivers: RefCell::new(Some(receivers)) }))
    }

    /// This core's shard index, 0..cores.
    pub fn core(&self) -> usize {
        self.core
    }

    pub fn cores(&self) -> usize {
        self.senders.len()
    }

    /// Starts the tasks that run jobs sent here by other cores. Call once.
    pub fn serve(&self) {
        let receivers = self.receivers.borrow_mut().take().expect("Mesh::serve called twice");
        for rx in receivers {
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
    ///
    /// Order: jobs from this core to one core start there in the order of the `invoke_on` calls
    /// (the place in line is taken by the call itself, not by the first poll), and a local job
    /// runs inline at once. Pipelined requests rely on this to reach a partition or a group in
    /// the order they arrived. So await (or drop) the returned future promptly: one kept
    /// unpolled holds its place, and every later job to that core waits behind it.
    pub fn invoke_on<R, F, Fut>(&self, core: usize, f: F) -> impl Future<Output = R> + '_
    where
        R: Send + 'static,
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
    {
        let remote = (core != self.core()).then(|| self.send_turns[core].ticket());
        async move {
            let Some(mut turn) = remote else {
                return f().await;
            };
            let (tx, rx) = flume::bounded::<R>(1);
            let job: Job = Box::new(move || {
                glommio::spawn_local(async move {
                    let _ = tx.send(f().await);
                })
                .detach();
            });
            let sender = self.senders[core].as_ref().expect("invoke_on another core has a sender to it");
            turn.turn().await;
            if sender.send(job).await.is_err() {
                panic!("cross-core channel to core {core} closed while the broker runs");
            }
            drop(turn);
            rx.recv_async().await.expect("a core dropped a cross-core reply")
        }
    }

    /// Closes this core's senders (at shutdown).
    pub fn close(&self) {
        for tx in self.senders.iter().flatten() {
            tx.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    /// Every core claims a distinct index, and a job sent to each other core runs there and
    /// answers. Run a few times: the cores join at the same moment, which is where sharing one
    /// builder between them once corrupted its reference count.
    #[test]
    fn every_core_claims_its_own_index_and_reaches_every_other() {
        for _ in 0..5 {
            let cores = 2;
            let seed = Arc::new(MeshSeed::new(cores));
            let claimed = Arc::new(Mutex::new(Vec::new()));
            let done = Arc::new(AtomicUsize::new(0));
            crate::io::rt::run_pinned(cores, {
                let (seed, claimed, done) = (seed.clone(), claimed.clone(), done.clone());
                move || {
                    let (seed, claimed, done) = (seed.clone(), claimed.clone(), done.clone());
                    async move {
                        let mesh = Mesh::join(&seed).await?;
                        claimed.lock().unwrap().push(mesh.core());
                        mesh.serve();
                        for other in 0..mesh.cores() {
                            let ran_on = mesh.invoke_on(other, move || async move { other }).await;
                            assert_eq!(ran_on, other);
                        }
                        // Stay until every core has had its answers: a core that has ended runs
                        // no more jobs.
                        done.fetch_add(1, Ordering::AcqRel);
                        while done.load(Ordering::Acquire) < cores {
                            crate::io::rt::sleep(Duration::from_millis(1)).await;
                        }
                        mesh.close();
                        Ok(())
                    }
                }
            })
            .unwrap();
            let mut claimed = claimed.lock().unwrap().clone();
            claimed.sort();
            assert_eq!(claimed, vec![0, 1]);
            assert!(seed.unclaimed.lock().unwrap().is_empty());
        }
    }

    /// More jobs than a channel holds, sent while the receiving core is not yet taking any: the
    /// senders wait for room, and still start on the other core in the order of their calls.
    #[test]
    fn jobs_sent_to_a_full_channel_start_in_call_order() {
        let jobs = limits::MESH_CHANNEL_DEPTH * 3;
        let seed = Arc::new(MeshSeed::new(2));
        let started = Arc::new(Mutex::new(Vec::new()));
        let done = Arc::new(AtomicUsize::new(0));
        crate::io::rt::run_pinned(2, {
            let (seed, started, done) = (seed.clone(), started.clone(), done.clone());
            move || {
                let (seed, started, done) = (seed.clone(), started.clone(), done.clone());
                async move {
                    let mesh = Mesh::join(&seed).await?;
                    if mesh.core() == 1 {
                        // Let core 0 fill the channel and queue up behind it first.
                        crate::io::rt::sleep(Duration::from_millis(100)).await;
                        mesh.serve();
                    } else {
                        mesh.serve();
                        let calls: Vec<_> = (0..jobs)
                            .map(|i| {
                                let (mesh, started) = (mesh.clone(), started.clone());
                                glommio::spawn_local(async move {
                                    mesh.invoke_on(1, move || async move { started.lock().unwrap().push(i) }).await
                                })
                            })
                            .collect();
                        for c in calls {
                            c.await;
                        }
                    }
                    done.fetch_add(1, Ordering::AcqRel);
                    while done.load(Ordering::Acquire) < 2 || started.lock().unwrap().len() < jobs {
                        crate::io::rt::sleep(Duration::from_millis(1)).await;
                    }
                    mesh.close();
                    Ok(())
                }
            }
        })
        .unwrap();
        let started = started.lock().unwrap();
        assert_eq!(started.len(), jobs);
        // (glommio alone releases waiting senders last-in first-out: 1032, 1031, ... 1024.)
        let misplaced = started.iter().enumerate().find(|(at, job)| at != *job);
        assert_eq!(misplaced, None, "(position, job) of the first job started out of call order");
    }
}

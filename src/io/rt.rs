//! Executors pinned one per core, local tasks, timers and the blocking pool.

use std::future::Future;
use std::time::Duration;

use glommio::{CpuSet, LocalExecutorPoolBuilder, PoolPlacement};

/// A task running on the current core. Dropping it cancels the task; call [`Task::detach`] to let
/// it run on its own.
pub type Task<T> = glommio::Task<T>;

/// Runs `f(())` on `cores` executors, each pinned to its own CPU, and waits for all of them.
/// Each executor learns its shard index from the cross-core mesh (see [`super::mesh`]).
pub fn run_pinned<F, Fut>(cores: usize, f: F) -> anyhow::Result<()>
where
    F: Fn() -> Fut + Send + Clone + 'static,
    Fut: Future<Output = anyhow::Result<()>> + 'static,
{
    let cpus = CpuSet::online().map_err(|e| anyhow::anyhow!("listing online CPUs: {e}"))?;
    let handles = LocalExecutorPoolBuilder::new(PoolPlacement::MaxSpread(cores, Some(cpus)))
        .on_all_shards(move || {
            let f = f.clone();
            async move { f().await }
        })
        .map_err(|e| anyhow::anyhow!("starting executors: {e}"))?;
    let mut first_err = None;
    for r in handles.join_all() {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => first_err = first_err.or(Some(e)),
            Err(e) => first_err = first_err.or(Some(anyhow::anyhow!("executor failed: {e}"))),
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Spawns a task on the current core.
pub fn spawn<T: 'static>(fut: impl Future<Output = T> + 'static) -> Task<T> {
    glommio::spawn_local(fut)
}

/// Sleeps on the current core's timer wheel.
pub async fn sleep(d: Duration) {
    glommio::timer::sleep(d).await;
}

/// Runs `fut` for at most `d`; `None` when the time ran out first.
pub async fn timeout<T>(d: Duration, fut: impl Future<Output = T>) -> Option<T> {
    futures_lite::future::or(async { Some(fut.await) }, async {
        sleep(d).await;
        None
    })
    .await
}

/// Runs a blocking function (rare metadata file work) on the executor's helper thread.
pub async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    glommio::executor().spawn_blocking(f).await
}

/// Lets other tasks on this core run.
pub async fn yield_now() {
    glommio::yield_if_needed().await;
}

/// Runs `fut` to completion on a fresh single executor on this thread (tests and tools).
pub fn run_local<T: 'static>(fut: impl Future<Output = T> + 'static) -> T {
    glommio::LocalExecutorBuilder::default()
        .make()
        .expect("creating a local executor")
        .run(fut)
}

//! Executors pinned one per core, local tasks, timers and the blocking pool, and the checks that
//! the host can run them (io_uring allowed, enough locked memory), made before they start.

use std::future::Future;
use std::time::Duration;

use glommio::{CpuSet, LocalExecutorPoolBuilder, PoolPlacement};

/// A task running on the current core. Dropping it cancels the task; call [`Task::detach`] to let
/// it run on its own.
pub type Task<T> = glommio::Task<T>;

/// Runs `f(())` on `cores` executors, each pinned to its own CPU, and waits for all of them.
/// Each executor learns its shard index from the cross-core mesh (see [`super::mesh`]).
///
/// `f` is cloned on the executors' threads, all at once: what it captures must be safe to clone
/// and drop from several threads together (an `Arc`, not a `Send` type that counts with an `Rc`).
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

/// Runs a blocking function on the process's background file thread, not the core's helper
/// thread: for work nothing on the data path waits for (deleting segments below the log start,
/// saving the start). Each core's helper thread is one thread with one queue, and a roll waits
/// in it for its truncate, index files and directory sync while appends wait for the roll; a
/// retention pass's dozens of unlinks queued there first held produce back by tens of
/// milliseconds (perf/README.md, retention). One thread for the whole process: this work is
/// rare and its order does not matter across partitions.
pub async fn background<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    type Job = Box<dyn FnOnce() + Send>;
    static QUEUE: std::sync::OnceLock<flume::Sender<Job>> = std::sync::OnceLock::new();
    let queue = QUEUE.get_or_init(|| {
        let (tx, rx) = flume::unbounded::<Job>();
        std::thread::Builder::new()
            .name("spate-bg-files".into())
            .spawn(move || {
                for job in rx.iter() {
                    job();
                }
            })
            .expect("starting the background file thread");
        tx
    });
    let (done_tx, done_rx) = flume::bounded(1);
    let job: Job = Box::new(move || {
        let _ = done_tx.send(f());
    });
    queue.send(job).expect("the background file thread never ends");
    done_rx.recv_async().await.expect("the background file thread runs every job it takes")
}

/// Lets other tasks on this core run.
pub async fn yield_now() {
    glommio::yield_if_needed().await;
}

/// Lets every other task on this core run and the rings be polled before this task goes on
/// (for a task that polls something itself).
pub async fn yield_to_io() {
    glommio::executor().yield_task_queue_now().await;
}

/// Runs `fut` to completion on a fresh single executor on this thread (tests and tools).
pub fn run_local<T: 'static>(fut: impl Future<Output = T> + 'static) -> T {
    glommio::LocalExecutorBuilder::default()
        .make()
        .expect("creating a local executor")
        .run(fut)
}

/// The soft RLIMIT_MEMLOCK in bytes; `None` when unlimited.
pub fn memlock_limit_bytes() -> std::io::Result<Option<u64>> {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes one rlimit through a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((r.rlim_cur != libc::RLIM_INFINITY).then_some(r.rlim_cur))
}

/// The value of `kernel.io_uring_disabled` (0 allowed, 1 only for `kernel.io_uring_group` and
/// CAP_SYS_ADMIN, 2 never), `None` on kernels without the setting.
pub fn io_uring_disabled_sysctl() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").ok().map(|s| s.trim().to_string())
}

/// Sets up (and closes) a one-entry io_uring, as every executor will: fails as they would when
/// the kernel has no io_uring (ENOSYS), forbids it (EPERM: the sysctl above, or a seccomp
/// profile), or is short of memory for it.
pub fn probe_io_uring() -> std::io::Result<()> {
    // struct io_uring_params is 120 bytes of u32 and u64 fields; zeroed asks for defaults.
    let mut params = [0u64; 15];
    // SAFETY: io_uring_setup reads and writes the params struct through a valid pointer of the
    // right size, and returns a file descriptor we own (closed below) or -1.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is the ring io_uring_setup just returned, closed once.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

//! Shutdown signals, caught once for the whole process and fanned out to every core.
//!
//! [`install`] blocks SIGTERM and SIGINT in the calling (main) thread before any other thread
//! starts, so every executor and helper thread inherits the mask and no signal handler ever
//! interrupts a core. One thread, `spate-signals`, takes the signals with `sigwait`:
//! - the first asks for a graceful shutdown: every clone of the returned [`Shutdown`] sees it
//!   (the thread drops the only sender of a channel, which wakes every receiver, on any core);
//! - the second exits the process at once with status 128 + the signal number, without flushing
//!   or closing anything (the next start recovers as after a crash).

use std::io;

use nix::sys::signal::{SigSet, Signal};

/// Completes once a shutdown was asked for. Cheap to clone; one clone per core.
#[derive(Clone)]
pub struct Shutdown(flume::Receiver<()>);

impl Shutdown {
    pub fn is_requested(&self) -> bool {
        self.0.is_disconnected()
    }

    /// Completes when a shutdown is asked for (at once if it already was).
    pub async fn requested(&self) {
        // Nothing is ever sent: the channel only ever disconnects.
        while self.0.recv_async().await.is_ok() {}
    }
}

impl Shutdown {
    /// A shutdown that is requested once this one is and `first` has then run to its end, on a
    /// thread of its own (`name`): for what must happen before the cores stop serving (the
    /// broker's controlled shutdown). `first` must bound its own time.
    pub fn after(&self, name: &str, first: impl FnOnce() + Send + 'static) -> io::Result<Shutdown> {
        let (tx, rx) = flume::bounded::<()>(1);
        let signal = self.clone();
        std::thread::Builder::new().name(name.into()).spawn(move || {
            // Nothing is ever sent: the channel only ever disconnects.
            while signal.0.recv().is_ok() {}
            first();
            drop(tx);
        })?;
        Ok(Shutdown(rx))
    }
}

/// Blocks SIGTERM and SIGINT in this thread and in every thread it starts afterwards, and starts
/// the thread that takes them. Call on the main thread before any other thread exists.
pub fn install() -> io::Result<Shutdown> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.thread_block().map_err(io::Error::from)?;
    let (tx, rx) = flume::bounded::<()>(1);
    std::thread::Builder::new().name("spate-signals".into()).spawn(move || {
        let mut tx = Some(tx);
        loop {
            let sig = match set.wait() {
                Ok(sig) => sig,
                Err(e) => {
                    tracing::error!(error = %e, "waiting for signals failed; SIGTERM and SIGINT stay blocked");
                    return;
                }
            };
            match tx.take() {
                Some(tx) => {
                    tracing::info!(
                        signal = sig.as_str(),
                        "shutting down gracefully; send the signal again to exit at once"
                    );
                    drop(tx);
                }
                None => {
                    let code = 128 + sig as i32;
                    tracing::error!(
                        signal = sig.as_str(),
                        exit_code = code,
                        "second signal during shutdown: exiting at once, without finishing; the next start recovers as after a crash"
                    );
                    std::process::exit(code);
                }
            }
        }
    })?;
    Ok(Shutdown(rx))
}

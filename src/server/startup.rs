//! Start-up checks, made on the main thread before any core starts, and the clean-shutdown
//! marker.
//!
//! Each check fails with a message that names the path, port or limit and says what to do, in
//! this order: the data directory is a writable directory; no other Spate uses it (an exclusive
//! `flock` on `<data_dir>/.lock`, which holds the owner's pid); its filesystem accepts O_DIRECT;
//! io_uring is allowed; RLIMIT_MEMLOCK is enough for glommio; the port is free (probed again for
//! up to 2 s, see `limits::PORT_IN_USE_WAIT_MS`). Nothing in the data directory changes before
//! they all pass.
//!
//! A clean shutdown writes `<data_dir>/clean-shutdown` last; the next start reads and removes it
//! (durably, before anything else is written) to log whether it follows a clean shutdown or
//! recovers after a crash. Recovery is the same either way: every segment's tail is still
//! CRC-checked from its last index entry. After a clean shutdown that is at most
//! `index.interval.bytes` plus one batch per segment, since the close wrote every index; skipping
//! it would save little and trust bytes that may have changed while the broker was down.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::config::limits::{GLOMMIO_MEMLOCK_MIN_BYTES, PORT_IN_USE_WAIT_MS};
use crate::config::Config;
use crate::io::file::SegmentFile;
use crate::io::fs::{self, FileLock, LockError};
use crate::io::net::{self, PortReservation};
use crate::io::rt;

/// The lock file in the data directory.
pub const LOCK_FILE: &str = ".lock";
/// Written last by a clean shutdown, removed at start.
pub const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown";

/// What the checks hold on to while the broker runs: the data directory's lock and the ports,
/// one per listener, in the order of `Config::listeners`.
pub struct Checked {
    pub lock: FileLock,
    pub reservations: Vec<PortReservation>,
}

/// Runs every start-up check, in order; the first that fails is the error.
pub fn check(config: &Config) -> anyhow::Result<Checked> {
    let dir = &config.data_dir;
    fs::prepare_data_dir(dir).map_err(|e| anyhow::anyhow!(data_dir_message(dir, &e)))?;
    let lock_path = dir.join(LOCK_FILE);
    let lock = FileLock::acquire(&lock_path).map_err(|e| match e {
        LockError::Held { holder } => anyhow::anyhow!(
            "data directory {} is in use by another Spate (pid {}, which holds {}): stop that broker \
             first, or give this one another --data-dir",
            dir.display(),
            if holder.is_empty() { "unknown" } else { holder.as_str() },
            lock_path.display()
        ),
        LockError::Io(e) => anyhow::anyhow!("cannot lock {}: {e}", lock_path.display()),
    })?;
    SegmentFile::check_direct_io(dir).map_err(|e| anyhow::anyhow!(direct_io_message(dir, &e)))?;
    if let Err(e) = rt::probe_io_uring() {
        anyhow::bail!(io_uring_message(rt::io_uring_disabled_sysctl().as_deref(), &e));
    }
    let memlock = rt::memlock_limit_bytes().map_err(|e| anyhow::anyhow!("reading RLIMIT_MEMLOCK: {e}"))?;
    if let Some(m) = memlock_message(memlock) {
        anyhow::bail!(m);
    }
    let reservations = config.listeners.iter().map(|l| reserve_port(l.bind)).collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Checked { lock, reservations })
}

/// Checks that nothing listens on `addr`, then reserves it. A port in use is probed again for up
/// to `PORT_IN_USE_WAIT_MS`: a broker killed just before still holds it for a few milliseconds.
fn reserve_port(addr: SocketAddr) -> anyhow::Result<PortReservation> {
    let deadline = Instant::now() + Duration::from_millis(PORT_IN_USE_WAIT_MS);
    loop {
        match net::check_port_free(addr).and_then(|()| PortReservation::new(addr)) {
            Ok(r) => return Ok(r),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => anyhow::bail!(port_message(addr, &e)),
        }
    }
}

/// How the previous run of this data directory ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Previous {
    /// Nothing here yet.
    New,
    /// It left the clean-shutdown marker.
    Clean,
    /// No marker: killed, crashed, or lost power.
    Crashed,
}

/// Reads and removes the clean-shutdown marker, durably, so a crash of this run is never taken
/// for a clean shutdown. Call after [`check`] (under the lock), before anything is written.
pub fn take_clean_shutdown_marker(data_dir: &Path) -> anyhow::Result<Previous> {
    let marker = data_dir.join(CLEAN_SHUTDOWN_FILE);
    let clean = fs::take_file_sync(&marker).map_err(|e| anyhow::anyhow!("removing {}: {e}", marker.display()))?;
    Ok(if clean {
        Previous::Clean
    } else if fs::exists_sync(&data_dir.join("cluster.toml")) {
        Previous::Crashed
    } else {
        Previous::New
    })
}

/// Writes the clean-shutdown marker, durably. Call last, once every core closed its partitions.
pub fn mark_clean_shutdown(data_dir: &Path) -> anyhow::Result<()> {
    let marker = data_dir.join(CLEAN_SHUTDOWN_FILE);
    let text = format!("spate {} shut down cleanly (pid {})\n", env!("CARGO_PKG_VERSION"), std::process::id());
    fs::write_atomic_sync(&marker, text.as_bytes()).map_err(|e| anyhow::anyhow!("writing {}: {e}", marker.display()))
}

fn data_dir_message(dir: &Path, e: &io::Error) -> String {
    let d = dir.display();
    match e.kind() {
        io::ErrorKind::NotADirectory | io::ErrorKind::AlreadyExists => format!(
            "data directory {d} is not a directory ({e}): move what is there away, or choose another --data-dir"
        ),
        io::ErrorKind::ReadOnlyFilesystem => format!(
            "data directory {d} is on a read-only filesystem ({e}): remount it read-write, or choose another --data-dir"
        ),
        _ => format!(
            "data directory {d} is not writable ({e}): make it writable by the user spate runs as, or choose another --data-dir"
        ),
    }
}

fn direct_io_message(dir: &Path, e: &io::Error) -> String {
    let d = dir.display();
    if e.kind() == io::ErrorKind::InvalidInput {
        format!(
            "data directory {d} is on a filesystem without O_DIRECT (direct I/O), which segment files \
             need ({e}): use ext4 or xfs (tmpfs works from Linux 6.6, ramfs never), or choose another --data-dir"
        )
    } else {
        format!("cannot write an O_DIRECT test file in data directory {d} ({e}): check the disk and its free space")
    }
}

/// The message for a failed io_uring set-up (ENOSYS reads as `Unsupported`, EPERM as
/// `PermissionDenied`), given `kernel.io_uring_disabled` if the kernel has it.
fn io_uring_message(sysctl: Option<&str>, e: &io::Error) -> String {
    const SYSCTL: &str = "kernel.io_uring_disabled (/proc/sys/kernel/io_uring_disabled)";
    if e.kind() == io::ErrorKind::Unsupported {
        return format!(
            "io_uring is not available: this kernel has none (io_uring_setup: {e}); Spate needs Linux 5.8 or later built with io_uring"
        );
    }
    match sysctl {
        Some("2") => format!(
            "io_uring is disabled on this host: {SYSCTL} is 2 (io_uring_setup: {e}); set it to 0 with `sysctl -w kernel.io_uring_disabled=0`"
        ),
        Some("1") => format!(
            "io_uring is disabled for this user: {SYSCTL} is 1 (io_uring_setup: {e}); run spate in the group named by \
             kernel.io_uring_group, or set kernel.io_uring_disabled=0"
        ),
        _ if e.kind() == io::ErrorKind::PermissionDenied => format!(
            "io_uring is not permitted (io_uring_setup: {e}) although {SYSCTL} allows it: a container's seccomp \
             profile probably blocks it; allow io_uring_setup, io_uring_enter and io_uring_register \
             (docker: --security-opt seccomp=<a profile that allows them>)"
        ),
        _ => format!("io_uring could not be set up (io_uring_setup: {e}); Spate's runtime needs it"),
    }
}

/// The message when the soft RLIMIT_MEMLOCK (`None`: unlimited) is below what glommio needs.
fn memlock_message(limit: Option<u64>) -> Option<String> {
    let limit = limit?;
    if limit >= GLOMMIO_MEMLOCK_MIN_BYTES {
        return None;
    }
    let need = GLOMMIO_MEMLOCK_MIN_BYTES / 1024;
    Some(format!(
        "the locked-memory limit (RLIMIT_MEMLOCK, `ulimit -l`) is {} KiB but Spate's io_uring runtime needs at \
         least {need} KiB: raise it (`ulimit -l {need}` in the shell, LimitMEMLOCK={need}K in a \
         systemd unit, --ulimit memlock={} with docker, or memlock in /etc/security/limits.conf)",
        limit / 1024,
        GLOMMIO_MEMLOCK_MIN_BYTES
    ))
}

fn port_message(addr: SocketAddr, e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::AddrInUse => format!(
            "port {addr} is already in use (another process, perhaps another Spate, listens on it): stop it, or choose another --listen"
        ),
        io::ErrorKind::AddrNotAvailable => {
            format!("cannot listen on {addr}: no such address on this host ({e}); check --listen")
        }
        _ => format!("cannot listen on {addr} ({e}); check --listen"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(code: i32) -> io::Error {
        io::Error::from_raw_os_error(code)
    }

    #[test]
    fn io_uring_messages_say_why_and_what_to_do() {
        const EPERM: i32 = 1;
        const ENOSYS: i32 = 38;
        let m = io_uring_message(Some("2"), &os(EPERM));
        assert!(m.contains("kernel.io_uring_disabled") && m.contains("is 2") && m.contains("sysctl -w"), "{m}");
        let m = io_uring_message(Some("1"), &os(EPERM));
        assert!(m.contains("is 1") && m.contains("io_uring_group"), "{m}");
        let m = io_uring_message(Some("0"), &os(EPERM));
        assert!(m.contains("seccomp"), "{m}");
        let m = io_uring_message(None, &os(ENOSYS));
        assert!(m.contains("this kernel has none"), "{m}");
    }

    #[test]
    fn memlock_below_what_the_runtime_needs_is_refused() {
        assert_eq!(memlock_message(None), None);
        assert_eq!(memlock_message(Some(GLOMMIO_MEMLOCK_MIN_BYTES)), None);
        let m = memlock_message(Some(64 * 1024)).unwrap();
        assert!(m.contains("RLIMIT_MEMLOCK") && m.contains("64 KiB") && m.contains("512 KiB") && m.contains("ulimit -l 512"), "{m}");
    }

    #[test]
    fn data_dir_and_port_messages_name_the_place() {
        let m = data_dir_message(Path::new("/x/d"), &io::Error::from(io::ErrorKind::NotADirectory));
        assert!(m.contains("/x/d") && m.contains("not a directory"), "{m}");
        let m = data_dir_message(Path::new("/x/d"), &os(30));
        assert!(m.contains("read-only") && m.contains("--data-dir"), "{m}");
        let m = port_message("127.0.0.1:9092".parse().unwrap(), &io::Error::from(io::ErrorKind::AddrInUse));
        assert!(m.contains("127.0.0.1:9092") && m.contains("already in use") && m.contains("--listen"), "{m}");
    }
}

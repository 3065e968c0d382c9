//! Small, rare, blocking file-system work (topic metadata, index files, directories), run on the
//! executor's blocking helper thread so a core never stalls on it.
//!
//! In tests, the async calls a partition's log makes go to [`super::sim_disk::SimDisk`] instead
//! when one is installed on the thread.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::rt::blocking;

/// The process's resident memory (Linux `/proc/self/statm`), for the metrics.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok().filter(|p| *p > 0)?)
}

/// The filesystem holding `path`: (total bytes, bytes available to this process), as `df` shows.
pub fn space(path: &Path) -> io::Result<(u64, u64)> {
    let s = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
    let block = s.fragment_size() as u64;
    Ok((s.blocks() as u64 * block, s.blocks_available() as u64 * block))
}

/// Reads a whole file; `None` when it does not exist.
pub async fn read(path: PathBuf) -> io::Result<Option<Vec<u8>>> {
    #[cfg(test)]
    if let Some(disk) = super::sim_disk::current() {
        return disk.read(&path).await;
    }
    blocking(move || match std::fs::read(&path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    })
    .await
}

/// Replaces `path` with `data` atomically and durably: temp file, fsync, rename, fsync directory.
pub async fn write_atomic(path: PathBuf, data: Vec<u8>) -> io::Result<()> {
    #[cfg(test)]
    if let Some(disk) = super::sim_disk::current() {
        return disk.write_atomic(&path, data).await;
    }
    blocking(move || write_atomic_sync(&path, &data)).await
}

/// Turns the file at `from` into preallocated space named `to`, on the background file thread:
/// its blocks are kept but read as zeros again (`FALLOC_FL_ZERO_RANGE`, which on ext4 marks the
/// extents unwritten instead of freeing them), durably, then it is renamed. A deleted segment
/// becomes the next segment's file this way: freeing and reallocating its blocks instead costs
/// journal commits that appends' fdatasyncs wait for, and with online discard (the `discard`
/// mount option) a discard of every freed extent (perf/README.md, retention). `Ok(false)`, with
/// the file untouched, when the file system cannot zero a range: the caller deletes it instead.
/// The caller makes sure no open handle still reads the file.
pub async fn recycle_file(from: PathBuf, to: PathBuf) -> io::Result<bool> {
    #[cfg(test)]
    if let Some(disk) = super::sim_disk::current() {
        // A spare file: its failed fdatasync is not a segment's.
        let file = disk.open(&from, false).await?.spare();
        file.truncate(0).await?;
        file.sync().await?;
        disk.rename(&from, &to).await?;
        return Ok(true);
    }
    super::rt::background(move || {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new().write(true).open(&from)?;
        let len = file.metadata()?.len();
        if len > 0 {
            let zeroed = nix::fcntl::fallocate(
                file.as_raw_fd(),
                nix::fcntl::FallocateFlags::FALLOC_FL_ZERO_RANGE | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
                0,
                len as libc::off_t,
            );
            match zeroed {
                Ok(()) => {}
                Err(nix::errno::Errno::EOPNOTSUPP | nix::errno::Errno::EINVAL | nix::errno::Errno::ENOSYS) => return Ok(false),
                Err(e) => return Err(io::Error::from(e)),
            }
        }
        file.sync_data()?;
        std::fs::rename(&from, &to)?;
        Ok(true)
    })
    .await
}

/// Renames a file without syncing its directory: for a caller that syncs the directory itself
/// before anything depends on the new name.
pub async fn rename_unsynced(from: PathBuf, to: PathBuf) -> io::Result<()> {
    #[cfg(test)]
    if let Some(disk) = super::sim_disk::current() {
        return disk.rename(&from, &to).await;
    }
    blocking(move || std::fs::rename(&from, &to)).await
}

/// [`write_atomic`] on the background file thread ([`super::rt::background`]).
pub async fn write_atomic_in_background(path: PathBuf, data: Vec<u8>) -> io::Result<()> {
    #[cfg(test)]
    if let Some(disk) = super::sim_disk::current() {
        return disk.write_atomic(&path, data).await;
    }
    super::rt::background(move || write_atomic_sync(&path, &data)).await
}

pub fn write_atomic_sync(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Creates a directory and its parents, then fsyncs the parent so the entry survives a crash.
pub async fn create_dir_all(path: PathBuf) -> io::Result<()> {
    #[cfg(test)]
    if let Some(disk) = super::sim_disk::current() {
        return disk.create_dir_all(&path).await;
    }
    blocking(move || {
        std::fs::create_dir_all(&path)?;
        if let Some(parent) = path.parent() {
            std::fs::File::open(parent)?.sync_all()?;
        }
        Ok(())
    })
    .await
}

/// Names of the entries in a directory (empty if it does not exist).
pub async fn list_dir(path: PathBuf) -> io::Result<Vec<String>> {
    #[cfg(test)]
    if let Some(disk) = super::sim_disk::current() {
        return disk.list_dir(&path).await;
    }
    blocking(move || {
        let rd = match std::fs::read_dir(&path) {
            Ok(rd) => rd,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut names = Vec::new();
        for e in rd {
            names.push(e?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    })
    .await
}

/// Renames, then fsyncs the directory of the new name.
pub async fn rename(from: PathBuf, to: PathBuf) -> io::Result<()> {
    #[cfg(test)]
    if let Some(disk) = super::sim_disk::current() {
        return disk.rename(&from, &to).await;
    }
    blocking(move || {
        std::fs::rename(&from, &to)?;
        if let Some(dir) = to.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })
    .await
}

pub async fn remove_dir_all(path: PathBuf) -> io::Result<()> {
    blocking(move || std::fs::remove_dir_all(&path)).await
}

pub async fn remove_file(path: PathBuf) -> io::Result<()> {
    #[cfg(test)]
    if let Some(disk) = super::sim_disk::current() {
        return disk.remove_file(&path).await;
    }
    blocking(move || match std::fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    })
    .await
}

/// [`remove_file`] on the background file thread ([`super::rt::background`]): for deletions
/// nothing on the data path waits for, so they never queue ahead of a roll's file work.
pub async fn remove_file_in_background(path: PathBuf) -> io::Result<()> {
    #[cfg(test)]
    if let Some(disk) = super::sim_disk::current() {
        return disk.remove_file(&path).await;
    }
    super::rt::background(move || match std::fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    })
    .await
}

/// Creates the data directory if needed and checks that it is writable. Runs on the main thread
/// before the executors start, so start-up problems are reported plainly. A file where the
/// directory should be is `NotADirectory`.
pub fn prepare_data_dir(path: &Path) -> io::Result<()> {
    if std::fs::metadata(path).is_ok_and(|m| !m.is_dir()) {
        return Err(io::Error::new(io::ErrorKind::NotADirectory, "it exists and is not a directory"));
    }
    std::fs::create_dir_all(path)?;
    let probe = path.join(".spate-write-probe");
    std::fs::write(&probe, b"probe")?;
    std::fs::remove_file(&probe)
}

/// An exclusive `flock` on a lock file that holds the owner's pid. The kernel releases it when
/// the process ends in any way (kill -9 included), so a stale file whose lock is free is harmless
/// and is simply taken over. Held by the main thread for the life of the broker.
pub struct FileLock {
    _file: std::fs::File,
}

/// Why a [`FileLock`] was not taken.
#[derive(Debug)]
pub enum LockError {
    /// Another process holds it; what it wrote there (its pid), if readable.
    Held { holder: String },
    Io(io::Error),
}

impl FileLock {
    /// Start-up only: takes the lock without waiting and writes this process's pid into the file.
    pub fn acquire(path: &Path) -> Result<FileLock, LockError> {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(LockError::Io)?;
        // SAFETY: flock on a descriptor we own; no memory is involved.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(LockError::Io(e));
            }
            let mut holder = String::new();
            let _ = f.read_to_string(&mut holder);
            return Err(LockError::Held { holder: holder.trim().to_string() });
        }
        f.set_len(0).map_err(LockError::Io)?;
        f.write_all(format!("{}\n", std::process::id()).as_bytes()).map_err(LockError::Io)?;
        Ok(FileLock { _file: f })
    }
}

/// Start-up only: whether `path` exists.
pub fn exists_sync(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// Start-up only: removes `path` if it exists, durably (the directory is fsynced). Returns
/// whether it existed.
pub fn take_file_sync(path: &Path) -> io::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(true)
}

/// Start-up only (main thread, before the cores run): a file's text, `None` if it does not exist.
pub fn read_to_string_sync(path: &Path) -> io::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Start-up only: creates `dir` if needed and lists its entries as (name, path), sorted.
pub fn list_dir_sync(dir: &Path) -> io::Result<Vec<(String, PathBuf)>> {
    std::fs::create_dir_all(dir)?;
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        out.push((e.file_name().to_string_lossy().into_owned(), e.path()));
    }
    out.sort();
    Ok(out)
}

/// Start-up only: creates a directory and its parents.
pub fn create_dir_all_sync(path: &Path) -> io::Result<()> {
    std::fs::create_dir_all(path)
}

/// Start-up only: removes a directory tree.
pub fn remove_dir_all_sync(path: &Path) -> io::Result<()> {
    std::fs::remove_dir_all(path)
}

/// fsyncs a directory, making the entries created in it (new segment files) durable.
pub async fn sync_dir(path: PathBuf) -> io::Result<()> {
    #[cfg(test)]
    if let Some(disk) = super::sim_disk::current() {
        return disk.sync_dir(&path).await;
    }
    blocking(move || std::fs::File::open(&path)?.sync_all()).await
}

//! The fault-injecting twin of [`super::file`] and [`super::fs`], for tests only: an in-memory
//! disk with a volatile write cache, a crash button, and a fault plan drawn from one seed.
//!
//! Installed on a thread ([`SimDisk::install`]), it takes the place of the real files for every
//! `SegmentFile` and `io::fs` call that thread makes, so `PartitionLog` runs unchanged on top of
//! it. Nothing here exists outside `cfg(test)`; the production path has no branch for it.
//!
//! The model. Each file has what reads see (`data`, the page cache) and what a power loss keeps
//! (`durable`, the platter), plus the ordered writes and truncations made since the last
//! successful fdatasync. Directory entries are the same: created, removed and renamed names are
//! volatile until the directory is fsync'd (`fs::sync_dir`, `fs::rename`, `fs::write_atomic` and
//! `fs::create_dir_all` all do that, as their real versions do).
//!
//! Faults (rates in the [`FaultPlan`], every draw from the disk's [`Rng`]):
//! - **torn write**: a segment write fails with EIO after only a prefix of its bytes (cut at any
//!   byte) reached the file; `write_atomic` fails with EIO and changes nothing (it is atomic);
//! - **lost writes**: writes that reported success but were not fdatasync'd are, at a power loss
//!   ([`SimDisk::power_loss`]), each kept, torn at a random byte, or dropped: either a prefix of
//!   them in order (the usual case) or any subset (a reordering write cache);
//! - **failed fdatasync**: EIO; nothing it should have covered becomes durable (the writes stay
//!   volatile and readable, as O_DIRECT writes sitting in a device's write cache do; Linux's
//!   buffered-I/O "fsyncgate", where a later fdatasync silently skips the lost pages, is not
//!   modelled: segments never go through the page cache);
//! - **full disk** ([`SimDisk::set_full`]): every write or preallocation that would grow a file,
//!   and every `write_atomic`, fails with ENOSPC and writes nothing; writing into allocated
//!   blocks (overwrites, or what a preallocation grew the file by) works;
//! - **slow I/O**: every operation yields to other tasks a random number of times before it
//!   takes effect and again before it returns, so concurrent appends interleave with it.
//!
//! A crash is either [`SimDisk::kill`] (the process dies: everything written survives, unsynced
//! or not) or [`SimDisk::power_loss`] (only what fdatasync and directory fsyncs covered survives,
//! plus whatever the dice keep). Either way handles opened before the crash stop working: a dead
//! process does no more I/O.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;

use crate::config::limits::DMA_ALIGNMENT_BYTES;

/// xorshift64*: the one source of randomness of a simulated scenario. Seeded through splitmix64,
/// so neighbouring seeds give unrelated streams.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(z.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// True with probability `per_mille`/1000.
    pub fn chance(&mut self, per_mille: u32) -> bool {
        self.below(1000) < per_mille as u64
    }

    /// An independent stream derived from this one.
    pub fn fork(&mut self) -> Rng {
        Rng::new(self.next_u64())
    }
}

/// How often each fault fires.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultPlan {
    /// A write fails with EIO, torn (segment files) or not done at all (`write_atomic`).
    pub write_error_per_mille: u32,
    /// An fdatasync of a file or a directory fails with EIO.
    pub sync_error_per_mille: u32,
    /// Yields before an operation takes effect, and again before it returns: from the least to
    /// the most, uniformly.
    pub delay_yields_min: u32,
    pub delay_yields_max: u32,
}

/// Operations a targeted test can make fail once ([`SimDisk::fail_after`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// A segment write: fails with EIO, torn at a random byte.
    Write,
    /// `fs::write_atomic` (index files, producer snapshots): fails with EIO, changing nothing.
    WriteAtomic,
    /// An fdatasync of a file: fails with EIO.
    Sync,
    /// An fsync of a directory (`fs::sync_dir`): fails with EIO, making no entry durable.
    SyncDir,
}

/// What the disk has done and suffered, for reports and for the checks of a simulation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultStats {
    pub writes: u64,
    pub torn_writes: u64,
    pub enospc: u64,
    pub syncs: u64,
    pub sync_errors: u64,
    /// Failed fdatasyncs of segment files (`*.log`), the ones that must take a partition offline.
    pub segment_sync_errors: u64,
    pub kills: u64,
    pub power_losses: u64,
    /// Unsynced writes a power loss dropped.
    pub writes_lost: u64,
    pub writes_torn_at_crash: u64,
}

#[derive(Debug, Clone)]
enum Op {
    Write { pos: u64, bytes: Vec<u8> },
    Truncate(u64),
}

#[derive(Debug, Default)]
struct Inode {
    /// What reads see.
    data: Vec<u8>,
    /// What survives a power loss.
    durable: Vec<u8>,
    /// Changes since the last fdatasync, oldest first.
    unsynced: Vec<Op>,
}

fn apply(img: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Write { pos, bytes } => {
            let (pos, end) = (*pos as usize, *pos as usize + bytes.len());
            if img.len() < end {
                img.resize(end, 0);
            }
            img[pos..end].copy_from_slice(bytes);
        }
        Op::Truncate(len) => img.resize(*len as usize, 0),
    }
}

#[derive(Default)]
struct Disk {
    rng: Option<Rng>,
    plan: FaultPlan,
    full: bool,
    /// Bumped by every crash; handles of an earlier incarnation are dead.
    incarnation: u64,
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    names: BTreeMap<PathBuf, u64>,
    durable_names: BTreeMap<PathBuf, u64>,
    /// Directories (made durable when created, as `fs::create_dir_all` does).
    dirs: BTreeSet<PathBuf>,
    stats: FaultStats,
    /// One-shot faults: (kind, operations of that kind to let through first).
    armed: Vec<(OpKind, u32)>,
    /// FNV-1a over every operation, to check that a seed replays identically.
    trace: u64,
}

impl Disk {
    fn rng(&mut self) -> &mut Rng {
        self.rng.as_mut().expect("a disk always has a generator")
    }

    fn note(&mut self, what: &[u64]) {
        for w in what {
            for b in w.to_le_bytes() {
                self.trace = (self.trace ^ b as u64).wrapping_mul(0x0100_0000_01b3);
            }
        }
    }

    fn alive(&self, incarnation: u64) -> io::Result<()> {
        if incarnation != self.incarnation {
            return Err(io::Error::other("simulated crash: this handle belongs to a process that died"));
        }
        Ok(())
    }

    /// Whether this operation of `kind` fails: a one-shot fault due now, or the plan's dice.
    fn fault(&mut self, kind: OpKind, per_mille: u32) -> bool {
        if let Some(i) = self.armed.iter().position(|a| a.0 == kind) {
            if self.armed[i].1 == 0 {
                self.armed.remove(i);
                return true;
            }
            self.armed[i].1 -= 1;
        }
        per_mille > 0 && self.rng().chance(per_mille)
    }

    /// Applies `ops` to `img` as a crash would: each kept, torn at a random byte, or dropped.
    fn settle(&mut self, mut img: Vec<u8>, ops: Vec<Op>) -> Vec<u8> {
        let in_order = self.rng().chance(700);
        let cut = self.rng().below(ops.len() as u64 + 1) as usize;
        for (i, op) in ops.into_iter().enumerate() {
            // 0 keep, 1 tear, 2 drop
            let fate = if in_order {
                match i.cmp(&cut) {
                    std::cmp::Ordering::Less => 0,
                    std::cmp::Ordering::Equal => 1 + self.rng().below(2),
                    std::cmp::Ordering::Greater => 2,
                }
            } else {
                self.rng().below(3)
            };
            match (op, fate) {
                (op, 0) => apply(&mut img, &op),
                (Op::Write { pos, mut bytes }, 1) => {
                    let keep = self.rng().below(bytes.len() as u64) as usize;
                    bytes.truncate(keep);
                    apply(&mut img, &Op::Write { pos, bytes });
                    self.stats.writes_torn_at_crash += 1;
                }
                (Op::Truncate(n), 1) => apply(&mut img, &Op::Truncate(n)),
                _ => self.stats.writes_lost += 1,
            }
        }
        img
    }

    /// An fsync of directory `dir`: its entries as they are now become durable.
    fn sync_entries(&mut self, dir: &Path) {
        let paths: BTreeSet<PathBuf> = self
            .names
            .keys()
            .chain(self.durable_names.keys())
            .filter(|p| p.parent() == Some(dir))
            .cloned()
            .collect();
        for p in paths {
            match self.names.get(&p) {
                Some(&ino) => self.durable_names.insert(p, ino),
                None => self.durable_names.remove(&p),
            };
        }
    }

    fn inode(&mut self, ino: u64) -> &mut Inode {
        self.inodes.get_mut(&ino).expect("open handles keep their inode")
    }

    fn new_inode(&mut self, data: Vec<u8>) -> u64 {
        self.next_inode += 1;
        let ino = self.next_inode;
        self.inodes.insert(ino, Inode { durable: data.clone(), data, unsynced: Vec::new() });
        ino
    }
}

fn errno(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

/// The simulated disk. Core-local, like everything it stands in for.
pub struct SimDisk {
    st: RefCell<Disk>,
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<SimDisk>>> = const { RefCell::new(None) };
}

/// The disk installed on this thread, if any (asked by `file` and `fs` before real I/O).
pub(super) fn current() -> Option<Rc<SimDisk>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Keeps a disk installed on this thread; uninstalls it when dropped.
pub struct Installed(());

impl Drop for Installed {
    fn drop(&mut self) {
        CURRENT.with(|c| c.borrow_mut().take());
    }
}

impl SimDisk {
    pub fn new(seed: u64, plan: FaultPlan) -> Rc<SimDisk> {
        let disk = Disk { rng: Some(Rng::new(seed)), plan, trace: 0xcbf2_9ce4_8422_2325, ..Disk::default() };
        Rc::new(SimDisk { st: RefCell::new(disk) })
    }

    /// Routes this thread's segment-file and `io::fs` calls to this disk until the guard drops.
    pub fn install(self: &Rc<Self>) -> Installed {
        CURRENT.with(|c| {
            let mut c = c.borrow_mut();
            assert!(c.is_none(), "a simulated disk is already installed on this thread");
            *c = Some(self.clone());
        });
        Installed(())
    }

    pub fn plan(&self) -> FaultPlan {
        self.st.borrow().plan
    }

    pub fn set_plan(&self, plan: FaultPlan) {
        self.st.borrow_mut().plan = plan;
    }

    /// Fills the disk (writes that need space fail with ENOSPC) or frees it.
    pub fn set_full(&self, full: bool) {
        let mut d = self.st.borrow_mut();
        d.full = full;
        d.note(&[10, full as u64]);
    }

    /// Makes the operation of `kind` after the next `skip` ones fail, once.
    pub fn fail_after(&self, kind: OpKind, skip: u32) {
        self.st.borrow_mut().armed.push((kind, skip));
    }

    pub fn is_full(&self) -> bool {
        self.st.borrow().full
    }

    pub fn stats(&self) -> FaultStats {
        self.st.borrow().stats
    }

    /// A digest of every operation so far (same seed, same digest).
    pub fn trace(&self) -> u64 {
        self.st.borrow().trace
    }

    /// Every file: name, bytes readable, bytes durable, changes not yet synced (for debugging).
    pub fn describe(&self) -> String {
        let d = self.st.borrow();
        let mut out = String::new();
        for (path, ino) in &d.names {
            let i = &d.inodes[ino];
            let durable = if d.durable_names.get(path) == Some(ino) { "" } else { " (name not durable)" };
            out += &format!("\n  {}: {} bytes, {} durable, {} unsynced{durable}", path.display(), i.data.len(), i.durable.len(), i.unsynced.len());
        }
        out
    }

    /// The files directly in `dir` and what reads of them see, without drawing on the
    /// generator (so looking does not change the run).
    pub fn files_in(&self, dir: &Path) -> Vec<(String, Vec<u8>)> {
        let d = self.st.borrow();
        let in_dir = d.names.iter().filter(|(p, _)| p.parent() == Some(dir));
        in_dir.filter_map(|(p, ino)| Some((p.file_name()?.to_string_lossy().into_owned(), d.inodes[ino].data.clone()))).collect()
    }

    /// The process dies (kill -9): written bytes and names survive, synced or not.
    pub fn kill(&self) {
        let mut d = self.st.borrow_mut();
        d.incarnation += 1;
        d.stats.kills += 1;
        d.note(&[11]);
    }

    /// The machine loses power: files keep what fdatasync covered plus whatever of the later
    /// writes the dice keep (whole, torn, or not at all); names keep what directory fsyncs covered.
    pub fn power_loss(&self) {
        let mut d = self.st.borrow_mut();
        d.incarnation += 1;
        d.stats.power_losses += 1;
        d.note(&[12]);
        let inos: Vec<u64> = d.inodes.keys().copied().collect();
        for ino in inos {
            let inode = d.inode(ino);
            let (img, ops) = (std::mem::take(&mut inode.durable), std::mem::take(&mut inode.unsynced));
            let img = d.settle(img, ops);
            let inode = d.inode(ino);
            inode.data = img.clone();
            inode.durable = img;
        }
        d.names = d.durable_names.clone();
        let live: BTreeSet<u64> = d.names.values().copied().collect();
        d.inodes.retain(|ino, _| live.contains(ino));
    }

    /// Yields to other tasks a random number of times (slow I/O).
    async fn delay(&self) {
        let n = {
            let mut d = self.st.borrow_mut();
            let (min, max) = (d.plan.delay_yields_min as u64, d.plan.delay_yields_max as u64);
            min + d.rng().below(max.saturating_sub(min) + 1)
        };
        for _ in 0..n {
            futures_lite::future::yield_now().await;
        }
    }

    // --- io::fs ---

    pub(super) async fn read(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        self.delay().await;
        let d = self.st.borrow();
        Ok(d.names.get(path).map(|ino| d.inodes[ino].data.clone()))
    }

    pub(super) async fn write_atomic(&self, path: &Path, data: Vec<u8>) -> io::Result<()> {
        self.delay().await;
        {
            let mut d = self.st.borrow_mut();
            d.note(&[1, data.len() as u64]);
            if d.full {
                d.stats.enospc += 1;
                return Err(errno(libc::ENOSPC));
            }
            let rate = d.plan.write_error_per_mille;
            if d.fault(OpKind::WriteAtomic, rate) {
                d.stats.torn_writes += 1;
                return Err(errno(libc::EIO));
            }
            d.stats.writes += 1;
            let ino = d.new_inode(data);
            d.names.insert(path.to_path_buf(), ino);
            d.sync_entries(path.parent().expect("files live in a directory"));
        }
        self.delay().await;
        Ok(())
    }

    pub(super) async fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut d = self.st.borrow_mut();
        for a in path.ancestors() {
            d.dirs.insert(a.to_path_buf());
        }
        Ok(())
    }

    pub(super) async fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.delay().await;
        let d = self.st.borrow();
        let files = d.names.keys().filter(|p| p.parent() == Some(path));
        let dirs = d.dirs.iter().filter(|p| p.parent() == Some(path));
        let mut out: Vec<String> =
            files.chain(dirs).filter_map(|p| Some(p.file_name()?.to_string_lossy().into_owned())).collect();
        out.sort();
        Ok(out)
    }

    pub(super) async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.delay().await;
        let mut d = self.st.borrow_mut();
        d.note(&[2]);
        let ino = d.names.remove(from).ok_or_else(|| errno(libc::ENOENT))?;
        d.names.insert(to.to_path_buf(), ino);
        d.sync_entries(to.parent().expect("files live in a directory"));
        Ok(())
    }

    pub(super) async fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.delay().await;
        let mut d = self.st.borrow_mut();
        d.note(&[3]);
        d.names.remove(path);
        Ok(())
    }

    pub(super) async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.delay().await;
        let mut d = self.st.borrow_mut();
        d.note(&[4]);
        let rate = d.plan.sync_error_per_mille;
        if d.fault(OpKind::SyncDir, rate) {
            d.stats.sync_errors += 1;
            return Err(errno(libc::EIO));
        }
        d.sync_entries(path);
        Ok(())
    }

    // --- io::file ---

    /// Opens (creating if asked) a file; the new name is durable only after a directory fsync.
    pub(super) async fn open(self: &Rc<Self>, path: &Path, create: bool) -> io::Result<SimFile> {
        self.delay().await;
        let mut d = self.st.borrow_mut();
        d.note(&[5, create as u64]);
        let ino = match d.names.get(path) {
            Some(&ino) => ino,
            None if !create => return Err(errno(libc::ENOENT)),
            None => {
                if !path.parent().is_some_and(|p| d.dirs.contains(p)) {
                    return Err(errno(libc::ENOENT));
                }
                let ino = d.new_inode(Vec::new());
                d.names.insert(path.to_path_buf(), ino);
                ino
            }
        };
        Ok(SimFile { disk: self.clone(), ino, incarnation: d.incarnation, segment: path.extension().is_some_and(|e| e == "log") })
    }
}

/// An open simulated file (a file descriptor: it follows the inode across renames).
#[derive(Clone)]
pub struct SimFile {
    disk: Rc<SimDisk>,
    ino: u64,
    incarnation: u64,
    /// A `*.log` segment file: its failed fdatasyncs are counted apart.
    segment: bool,
}

impl SimFile {
    /// The same open file of the same disk (inode and incarnation).
    pub fn same_file(&self, other: &SimFile) -> bool {
        Rc::ptr_eq(&self.disk, &other.disk) && self.ino == other.ino && self.incarnation == other.incarnation
    }

    /// The same file, not counted as a segment (a deleted segment's file being recycled).
    pub(super) fn spare(mut self) -> SimFile {
        self.segment = false;
        self
    }

    pub(super) async fn size(&self) -> io::Result<u64> {
        self.disk.delay().await;
        let mut d = self.disk.st.borrow_mut();
        d.alive(self.incarnation)?;
        Ok(d.inode(self.ino).data.len() as u64)
    }

    /// Writes `data` at `pos`, zero-padded to whole blocks (as the O_DIRECT path does).
    pub(super) async fn write_aligned(&self, pos: u64, data: &[u8]) -> io::Result<()> {
        let padded = data.len().div_ceil(DMA_ALIGNMENT_BYTES) * DMA_ALIGNMENT_BYTES;
        let mut bytes = data.to_vec();
        bytes.resize(padded, 0);
        self.disk.delay().await;
        let result = {
            let mut d = self.disk.st.borrow_mut();
            d.alive(self.incarnation)?;
            d.note(&[6, pos, padded as u64]);
            let len = d.inode(self.ino).data.len() as u64;
            let write_error = d.plan.write_error_per_mille;
            if d.full && pos + padded as u64 > len {
                d.stats.enospc += 1;
                Err(errno(libc::ENOSPC))
            } else if d.fault(OpKind::Write, write_error) {
                let keep = d.rng().below(padded as u64) as usize;
                bytes.truncate(keep);
                d.note(&[7, keep as u64]);
                d.stats.torn_writes += 1;
                let op = Op::Write { pos, bytes };
                let inode = d.inode(self.ino);
                apply(&mut inode.data, &op);
                inode.unsynced.push(op);
                Err(errno(libc::EIO))
            } else {
                d.stats.writes += 1;
                let op = Op::Write { pos, bytes };
                let inode = d.inode(self.ino);
                apply(&mut inode.data, &op);
                inode.unsynced.push(op);
                Ok(())
            }
        };
        self.disk.delay().await;
        result
    }

    /// Reads up to `len` bytes at `pos` (fewer at the end of the file).
    pub(super) async fn read(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        self.disk.delay().await;
        let mut d = self.disk.st.borrow_mut();
        d.alive(self.incarnation)?;
        let data = &d.inode(self.ino).data;
        let start = (pos as usize).min(data.len());
        let end = (start + len).min(data.len());
        Ok(Bytes::copy_from_slice(&data[start..end]))
    }

    /// fdatasync: on success every change so far is durable. On failure (EIO) nothing new is:
    /// the changes stay volatile (a power loss may still drop or tear them) and readable. A
    /// failure is counted when it is reported, so a caller that checks the counts sees it no
    /// earlier than the code under test does.
    pub(super) async fn sync(&self) -> io::Result<()> {
        self.disk.delay().await;
        let failed = {
            let mut d = self.disk.st.borrow_mut();
            d.alive(self.incarnation)?;
            d.note(&[8]);
            let rate = d.plan.sync_error_per_mille;
            let failed = d.fault(OpKind::Sync, rate);
            if !failed {
                d.stats.syncs += 1;
                let inode = d.inode(self.ino);
                for op in std::mem::take(&mut inode.unsynced) {
                    apply(&mut inode.durable, &op);
                }
            }
            failed
        };
        self.disk.delay().await;
        if failed {
            let mut d = self.disk.st.borrow_mut();
            d.stats.sync_errors += 1;
            d.stats.segment_sync_errors += self.segment as u64;
            return Err(errno(libc::EIO));
        }
        Ok(())
    }

    /// fallocate (mode 0): grows the file to `len` with zeros if it is shorter, like a
    /// truncation that grows it (volatile until an fdatasync). On a full disk it fails with
    /// ENOSPC and changes nothing; writes inside what it allocated then still succeed.
    pub(super) async fn allocate(&self, len: u64) -> io::Result<()> {
        self.disk.delay().await;
        let result = {
            let mut d = self.disk.st.borrow_mut();
            d.alive(self.incarnation)?;
            d.note(&[10, len]);
            let size = d.inode(self.ino).data.len() as u64;
            if len <= size {
                Ok(())
            } else if d.full {
                d.stats.enospc += 1;
                Err(errno(libc::ENOSPC))
            } else {
                let inode = d.inode(self.ino);
                apply(&mut inode.data, &Op::Truncate(len));
                inode.unsynced.push(Op::Truncate(len));
                Ok(())
            }
        };
        self.disk.delay().await;
        result
    }

    pub(super) async fn truncate(&self, len: u64) -> io::Result<()> {
        self.disk.delay().await;
        let mut d = self.disk.st.borrow_mut();
        d.alive(self.incarnation)?;
        d.note(&[9, len]);
        let size = d.inode(self.ino).data.len() as u64;
        if len > size && d.full {
            d.stats.enospc += 1;
            return Err(errno(libc::ENOSPC));
        }
        let inode = d.inode(self.ino);
        apply(&mut inode.data, &Op::Truncate(len));
        inode.unsynced.push(Op::Truncate(len));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<T: 'static>(f: impl std::future::Future<Output = T> + 'static) -> T {
        super::super::rt::run_local(f)
    }

    #[test]
    fn unsynced_writes_and_names_do_not_survive_a_power_loss() {
        run(async {
            let disk = SimDisk::new(1, FaultPlan::default());
            let dir = Path::new("/sim/p");
            disk.create_dir_all(dir).await.unwrap();
            let a = disk.open(&dir.join("a.log"), true).await.unwrap();
            a.write_aligned(0, b"durable").await.unwrap();
            a.sync().await.unwrap();
            disk.sync_dir(dir).await.unwrap();
            let b = disk.open(&dir.join("b.log"), true).await.unwrap();
            b.write_aligned(0, b"never synced").await.unwrap();
            b.sync().await.unwrap();
            disk.kill();
            assert!(a.size().await.is_err(), "a dead process's handles are dead");
            let a = disk.open(&dir.join("a.log"), false).await.unwrap();
            assert_eq!(&a.read(0, 7).await.unwrap()[..], b"durable");
            assert!(disk.open(&dir.join("b.log"), false).await.is_ok(), "a kill keeps unsynced names");
            disk.power_loss();
            assert!(disk.open(&dir.join("b.log"), false).await.is_err(), "b's name was never fsync'd");
            let a = disk.open(&dir.join("a.log"), false).await.unwrap();
            assert_eq!(&a.read(0, 7).await.unwrap()[..], b"durable");
        });
    }

    #[test]
    fn a_power_loss_keeps_each_unsynced_write_whole_torn_or_not_at_all() {
        let mut outcomes = BTreeSet::new();
        for seed in 0..200 {
            let got = run(async move {
                let disk = SimDisk::new(seed, FaultPlan::default());
                let dir = Path::new("/sim");
                disk.create_dir_all(dir).await.unwrap();
                let f = disk.open(&dir.join("f.log"), true).await.unwrap();
                disk.sync_dir(dir).await.unwrap();
                f.write_aligned(0, &[1u8; 10]).await.unwrap();
                f.sync().await.unwrap();
                f.write_aligned(0, &[2u8; 4096]).await.unwrap();
                disk.power_loss();
                let f = disk.open(&dir.join("f.log"), false).await.unwrap();
                let b = f.read(0, 4096).await.unwrap();
                assert_eq!(b.len(), 4096, "the synced write's padding is durable");
                let twos = b.iter().take_while(|&&x| x == 2).count();
                assert!(b[twos.min(10)..10].iter().all(|&x| x == 1), "the old bytes behind a tear");
                twos
            });
            outcomes.insert(got);
        }
        assert!(outcomes.contains(&0) && outcomes.contains(&4096), "{outcomes:?}");
        assert!(outcomes.len() > 10, "tears at many bytes: {outcomes:?}");
    }

    #[test]
    fn a_full_disk_refuses_growth_but_not_overwrites_and_a_failed_sync_makes_nothing_durable() {
        run(async {
            let disk = SimDisk::new(7, FaultPlan::default());
            let dir = Path::new("/sim");
            disk.create_dir_all(dir).await.unwrap();
            let f = disk.open(&dir.join("f.log"), true).await.unwrap();
            f.write_aligned(0, b"x").await.unwrap();
            disk.set_full(true);
            f.write_aligned(0, b"xy").await.unwrap();
            let e = f.write_aligned(4096, b"z").await.unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
            assert_eq!(disk.write_atomic(&dir.join("m"), vec![1]).await.unwrap_err().raw_os_error(), Some(libc::ENOSPC));
            disk.set_full(false);
            f.write_aligned(4096, b"z").await.unwrap();
            disk.set_plan(FaultPlan { sync_error_per_mille: 1000, ..FaultPlan::default() });
            assert!(f.sync().await.is_err());
            assert_eq!(disk.stats().segment_sync_errors, 1);
            assert_eq!(f.size().await.unwrap(), 8192, "still readable after the failed sync");
            disk.power_loss();
            let f = disk.open(&dir.join("f.log"), false).await;
            assert!(f.is_err(), "the name was never fsync'd: {:?}", f.map(|_| ()).err());
        });
    }

    #[test]
    fn the_generator_is_deterministic_and_spread() {
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        assert!((0..100).all(|_| a.next_u64() == b.next_u64()));
        let mut r = Rng::new(0);
        let mut counts = [0u32; 10];
        for _ in 0..10_000 {
            counts[r.below(10) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (800..1200).contains(&c)), "{counts:?}");
    }
}

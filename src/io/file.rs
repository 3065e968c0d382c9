//! Segment files: O_DIRECT (glommio DMA) writes of aligned buffers, reads, fdatasync, truncate.
//!
//! A write always starts on an alignment boundary and is padded with zeros to a whole number of
//! blocks; the caller (the segment appender) keeps the partial tail block in memory and rewrites it,
//! grown, on the next append. The file may also be grown ahead of the writes with
//! [`SegmentFile::preallocate`]. The file's logical length is tracked by the caller and set with
//! [`SegmentFile::truncate`] when a segment is closed.
//!
//! In tests, a thread may install [`super::sim_disk::SimDisk`]; segment files opened on it then
//! live there (with its injected faults) instead of on the real disk.

use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use glommio::io::{DmaFile, OpenOptions};

use crate::config::limits::DMA_ALIGNMENT_BYTES;

/// Bytes read from a segment file, still in the buffer the read filled (a DMA buffer of this
/// core's; not `Send`).
pub struct ReadChunk(Raw);

enum Raw {
    Dma(glommio::io::ReadResult),
    Bytes(Bytes),
}

impl std::ops::Deref for ReadChunk {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            Raw::Dma(r) => r,
            Raw::Bytes(b) => b,
        }
    }
}

/// Copies the bytes of `parts`, taken as one stream, from byte `from` on into `dst`, and fills
/// what is left of `dst` past their end with zeros.
pub fn copy_from_parts(parts: &[&[u8]], mut from: usize, dst: &mut [u8]) {
    let mut at = 0;
    for p in parts {
        if from >= p.len() {
            from -= p.len();
            continue;
        }
        let n = (p.len() - from).min(dst.len() - at);
        dst[at..at + n].copy_from_slice(&p[from..from + n]);
        (at, from) = (at + n, 0);
        if at == dst.len() {
            return;
        }
    }
    dst[at..].fill(0);
}

/// An open segment file. Owned by the core that owns the partition.
#[derive(Clone)]
pub struct SegmentFile {
    file: Backend,
    path: PathBuf,
}

/// Where a segment file's bytes live: a real O_DIRECT file, or, in tests that install one, the
/// fault-injecting [`super::sim_disk`]. Outside `cfg(test)` the enum has one variant, so every
/// `match` below is a plain call.
#[derive(Clone)]
enum Backend {
    Dma(Rc<DmaFile>),
    #[cfg(test)]
    Sim(Rc<super::sim_disk::SimFile>),
}

fn to_io(e: glommio::GlommioError<()>) -> io::Error {
    io::Error::from(e)
}

thread_local! {
    /// This core's segment-file operations submitted and not yet completed, and the most at once
    /// since [`ops_in_flight`] was last called.
    static IN_FLIGHT: std::cell::Cell<(usize, usize)> = const { std::cell::Cell::new((0, 0)) };
}

/// This core's file operations in flight now.
pub fn ops_pending() -> usize {
    IN_FLIGHT.with(|c| c.get().0)
}

/// (now, most since the last call) of this core's file operations in flight: io_uring's queue
/// depth as Spate sees it (glommio 0.9 does not report its rings' own).
pub fn ops_in_flight() -> (usize, usize) {
    IN_FLIGHT.with(|c| {
        let (now, peak) = c.get();
        c.set((now, now));
        (now, peak)
    })
}

/// Counts one operation in flight for as long as it lives.
struct Op;

impl Op {
    fn start() -> Op {
        IN_FLIGHT.with(|c| {
            let (now, peak) = c.get();
            c.set((now + 1, peak.max(now + 1)));
        });
        Op
    }
}

impl Drop for Op {
    fn drop(&mut self) {
        IN_FLIGHT.with(|c| {
            let (now, peak) = c.get();
            c.set((now - 1, peak));
        });
    }
}

impl SegmentFile {
    /// Makes glommio learn the truth about the data directory's device before any segment opens.
    ///
    /// glommio 0.9 decides whether a device supports io_uring IOPOLL by reading the first block of
    /// the first DMA file it opens there, and caches the answer for the device. A read of an empty
    /// file (a new segment) succeeds at EOF whatever the device supports, so the cache then says
    /// "pollable" and every later read fails with EOPNOTSUPP on devices without polled I/O (virtio,
    /// most SATA). Opening a one-block file first makes the probe real. Call on every core at
    /// start, before opening segments.
    pub async fn prime_device_probe(dir: &Path, core: usize) -> io::Result<()> {
        let probe = dir.join(format!(".spate-dma-probe-{core}"));
        let p = probe.clone();
        super::rt::blocking(move || {
            std::fs::write(&p, vec![0u8; DMA_ALIGNMENT_BYTES])?;
            std::fs::File::open(&p)?.sync_all()
        })
        .await?;
        let f = OpenOptions::new().read(true).dma_open(&probe).await.map_err(to_io);
        let _ = std::fs::remove_file(&probe);
        f?.close().await.map_err(to_io)
    }

    /// Start-up only (main thread): checks that files in `dir` accept O_DIRECT, by creating a
    /// probe file with it, writing one aligned block and fdatasyncing it. Fails with the open's
    /// error (EINVAL) on filesystems without direct I/O, such as ramfs or tmpfs before Linux 6.6.
    pub fn check_direct_io(dir: &Path) -> io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let probe = dir.join(".spate-direct-io-probe");
        let result = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .custom_flags(libc::O_DIRECT)
                .open(&probe)?;
            // O_DIRECT needs an aligned buffer: take an aligned block out of a larger one.
            let buf = vec![0u8; 2 * DMA_ALIGNMENT_BYTES];
            let at = buf.as_ptr().align_offset(DMA_ALIGNMENT_BYTES);
            f.write_all(&buf[at..at + DMA_ALIGNMENT_BYTES])?;
            f.sync_data()
        })();
        let _ = std::fs::remove_file(&probe);
        result
    }

    /// Opens (creating if asked) a segment file for reading and writing with O_DIRECT.
    pub async fn open(path: &Path, create: bool) -> io::Result<SegmentFile> {
        #[cfg(test)]
        if let Some(disk) = super::sim_disk::current() {
            let file = disk.open(path, create).await?;
            return Ok(SegmentFile { file: Backend::Sim(Rc::new(file)), path: path.to_path_buf() });
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .dma_open(path)
            .await
            .map_err(to_io)?;
        Ok(SegmentFile { file: Backend::Dma(Rc::new(file)), path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `other` is this very open file (a compacted segment's replacement is not).
    pub fn same_file(&self, other: &SegmentFile) -> bool {
        match (&self.file, &other.file) {
            (Backend::Dma(a), Backend::Dma(b)) => Rc::ptr_eq(a, b),
            #[cfg(test)]
            (Backend::Sim(a), Backend::Sim(b)) => a.same_file(b),
            #[cfg(test)]
            _ => false,
        }
    }

    /// Whether this is the only handle to the open file: no reader holds a clone, so nothing
    /// can read the file after its name is gone (a segment about to be recycled).
    pub fn is_only_handle(&self) -> bool {
        match &self.file {
            Backend::Dma(f) => Rc::strong_count(f) == 1,
            #[cfg(test)]
            Backend::Sim(f) => Rc::strong_count(f) == 1,
        }
    }

    /// The file's size on disk (may include zero padding past the logical end).
    pub async fn size(&self) -> io::Result<u64> {
        match &self.file {
            Backend::Dma(f) => f.file_size().await.map_err(to_io),
            #[cfg(test)]
            Backend::Sim(f) => f.size().await,
        }
    }

    /// Writes `data` at `pos` (a multiple of the alignment), zero-padding to whole blocks.
    pub async fn write_aligned(&self, pos: u64, data: &[u8]) -> io::Result<()> {
        self.write_aligned_parts(pos, &[data], false).await
    }

    /// Writes the concatenation of `parts` at `pos` (a multiple of the alignment), zero-padding
    /// to whole blocks. The parts are copied once, into the DMA buffers.
    ///
    /// With `first_block_apart`, the first block and the rest go as two writes issued together:
    /// when the first block is already written and the rest lies in preallocated blocks inside
    /// the file's size, each write is then an overwrite of one kind of extent, which ext4 takes
    /// without blocking; one write across both kinds it would not (see [`Self::preallocate`]).
    pub async fn write_aligned_parts(&self, pos: u64, parts: &[&[u8]], first_block_apart: bool) -> io::Result<()> {
        assert_eq!(pos % DMA_ALIGNMENT_BYTES as u64, 0, "unaligned segment write position");
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let padded = len.div_ceil(DMA_ALIGNMENT_BYTES) * DMA_ALIGNMENT_BYTES;
        if padded == 0 {
            return Ok(());
        }
        let file = match &self.file {
            Backend::Dma(f) => f,
            #[cfg(test)]
            Backend::Sim(f) => return f.write_aligned(pos, &parts.concat()).await,
        };
        let first = if first_block_apart && padded > DMA_ALIGNMENT_BYTES { DMA_ALIGNMENT_BYTES } else { padded };
        let mut head = file.alloc_dma_buffer(first);
        copy_from_parts(parts, 0, head.as_bytes_mut());
        let rest = (first < padded).then(|| {
            let mut rest = file.alloc_dma_buffer(padded - first);
            copy_from_parts(parts, first, rest.as_bytes_mut());
            rest
        });
        let op = Op::start();
        let written = match rest {
            None => file.write_at(head, pos).await.map_err(to_io)?,
            Some(rest) => {
                let (a, b) = futures_lite::future::zip(file.write_at(head, pos), file.write_at(rest, pos + first as u64)).await;
                a.map_err(to_io)? + b.map_err(to_io)?
            }
        };
        drop(op);
        if written != padded {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short O_DIRECT write to {}: {written} of {padded} bytes", self.path.display()),
            ));
        }
        Ok(())
    }

    /// Reads up to `len` bytes at `pos` (fewer at the end of the file).
    pub async fn read(&self, pos: u64, len: usize) -> io::Result<Bytes> {
        Ok(match self.read_raw(pos, len).await?.0 {
            Raw::Dma(r) => Bytes::copy_from_slice(&r[..]),
            Raw::Bytes(b) => b,
        })
    }

    /// [`read`](Self::read), leaving the bytes in the buffer they were read into: a
    /// [`ReadChunk`] stays on this core, and whoever needs the bytes elsewhere copies them once.
    pub async fn read_raw(&self, pos: u64, len: usize) -> io::Result<ReadChunk> {
        if len == 0 {
            return Ok(ReadChunk(Raw::Bytes(Bytes::new())));
        }
        match &self.file {
            Backend::Dma(f) => {
                let op = Op::start();
                let r = f.read_at(pos, len).await.map_err(to_io)?;
                drop(op);
                Ok(ReadChunk(Raw::Dma(r)))
            }
            #[cfg(test)]
            Backend::Sim(f) => f.read(pos, len).await.map(|b| ReadChunk(Raw::Bytes(b))),
        }
    }

    /// fdatasync: every byte written so far, and the file size, are on stable storage.
    pub async fn sync(&self) -> io::Result<()> {
        match &self.file {
            Backend::Dma(f) => {
                let _op = Op::start();
                f.fdatasync().await.map_err(to_io)
            }
            #[cfg(test)]
            Backend::Sim(f) => f.sync().await,
        }
    }

    /// Grows the file to at least `len` bytes with allocated, zero-reading blocks (fallocate,
    /// mode 0: the size grows too; blocks already there are left as they are).
    ///
    /// Why: ext4 cannot take an O_DIRECT write that grows the file, or needs blocks allocated,
    /// without blocking, so io_uring hands every such write to an io-wq worker thread (a wake-up
    /// and two context switches on the core's CPU per write). A write into preallocated blocks
    /// inside the file's size is issued from the core's own thread (kernel-notes/segment-preallocation.md).
    pub async fn preallocate(&self, len: u64) -> io::Result<()> {
        match &self.file {
            Backend::Dma(f) => {
                let _op = Op::start();
                f.pre_allocate(len, false).await.map_err(to_io)
            }
            #[cfg(test)]
            Backend::Sim(f) => f.allocate(len).await,
        }
    }

    pub async fn truncate(&self, len: u64) -> io::Result<()> {
        match &self.file {
            Backend::Dma(f) => f.truncate(len).await.map_err(to_io),
            #[cfg(test)]
            Backend::Sim(f) => f.truncate(len).await,
        }
    }
}

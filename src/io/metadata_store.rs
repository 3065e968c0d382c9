//! The metadata quorum's files under `<data_dir>/metadata/`: small state files replaced
//! atomically and durably ([`MetadataDir::replace`]: temp file, fsync, rename, fsync of the
//! directory), and one append-only log of records ([`RecordLog`]) that is fdatasync'd before an
//! append returns.
//!
//! Used by the controller thread only, synchronously: the metadata log is small and rarely
//! written (a topic change, a broker registration), and an fdatasync of it holds that one thread
//! for about a millisecond, far below the quorum's heartbeat and election timers.
//!
//! A log record on disk: a 4-byte little-endian length, the CRC-32C of the payload (4 bytes,
//! little-endian), the payload. Opening the log reads every record and cuts the file at the
//! first one that is short or fails its CRC (a torn tail: records are appended and synced in
//! order, and none is reported durable before its sync, so what a crash tears was never
//! acknowledged), with a log line saying how much was cut.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// `<data_dir>/metadata/`, created on open.
pub struct MetadataDir {
    path: PathBuf,
}

/// One record read back from a [`RecordLog`]: where it starts in the file, and its payload.
pub struct LoggedRecord {
    pub offset: u64,
    pub data: Vec<u8>,
}

const HEADER_BYTES: u64 = 8;

impl MetadataDir {
    /// Creates the directory if needed (the parent is fsync'd so its entry survives a crash).
    pub fn open(path: &Path) -> io::Result<MetadataDir> {
        if !path.is_dir() {
            std::fs::create_dir_all(path)?;
            if let Some(parent) = path.parent() {
                File::open(parent)?.sync_all()?;
            }
        }
        Ok(MetadataDir { path: path.to_path_buf() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the directory holds anything yet (a node that never ran the quorum has nothing).
    pub fn is_empty(&self) -> io::Result<bool> {
        Ok(std::fs::read_dir(&self.path)?.next().is_none())
    }

    /// The contents of the file `name`, or None if there is none.
    pub fn read(&self, name: &str) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(self.path.join(name)) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Replaces the file `name` with `data`, atomically and durably.
    pub fn replace(&self, name: &str, data: &[u8]) -> io::Result<()> {
        super::fs::write_atomic_sync(&self.path.join(name), data)
    }

    /// Opens (creating) the record log `name` and reads it: every intact record, in order. A torn
    /// tail is cut off first. A record announcing more than `record_max_bytes` counts as torn.
    pub fn open_log(&self, name: &str, record_max_bytes: usize) -> io::Result<(RecordLog, Vec<LoggedRecord>)> {
        let path = self.path.join(name);
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let mut records = Vec::new();
        let mut pos = 0usize;
        while pos < bytes.len() {
            let Some(header) = bytes.get(pos..pos + HEADER_BYTES as usize) else { break };
            let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes")) as usize;
            let crc = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
            let start = pos + HEADER_BYTES as usize;
            if len > record_max_bytes {
                break;
            }
            let Some(payload) = bytes.get(start..start + len) else { break };
            if crc32c::crc32c(payload) != crc {
                break;
            }
            records.push(LoggedRecord { offset: pos as u64, data: payload.to_vec() });
            pos = start + len;
        }
        if pos < bytes.len() {
            tracing::warn!(
                file = %path.display(), offset = pos, cut_bytes = bytes.len() - pos,
                "metadata log: cutting a torn tail (records never reported durable)"
            );
            file.set_len(pos as u64)?;
            file.sync_data()?;
        }
        file.seek(SeekFrom::Start(pos as u64))?;
        Ok((RecordLog { file, path, len: pos as u64 }, records))
    }
}

/// An append-only file of CRC-checked records. Owned by the controller's log store.
pub struct RecordLog {
    file: File,
    path: PathBuf,
    len: u64,
}

impl RecordLog {
    /// Appends `records` in one write and fdatasyncs them; returns the offset each starts at.
    /// On an error nothing is reported durable, and the file is cut back to where it was.
    pub fn append<'a>(&mut self, records: impl IntoIterator<Item = &'a [u8]>) -> io::Result<Vec<u64>> {
        let (buf, offsets) = frame(self.len, records);
        let result = self.file.write_all(&buf).and_then(|_| self.file.sync_data());
        if let Err(e) = result {
            // Best effort: a later open cuts a torn tail anyway.
            let _ = self.file.set_len(self.len);
            let _ = self.file.seek(SeekFrom::Start(self.len));
            return Err(e);
        }
        self.len += buf.len() as u64;
        Ok(offsets)
    }

    /// Cuts the file at `len` (a record's start offset) and fdatasyncs it.
    pub fn truncate(&mut self, len: u64) -> io::Result<()> {
        assert!(len <= self.len, "a truncation never grows the log");
        self.file.set_len(len)?;
        self.file.sync_data()?;
        self.file.seek(SeekFrom::Start(len))?;
        self.len = len;
        Ok(())
    }

    /// Replaces the whole log with `records` (after a purge): written to a temp file, fsync'd,
    /// renamed over the log, directory fsync'd. Returns the offset each record starts at.
    pub fn rewrite<'a>(&mut self, records: impl IntoIterator<Item = &'a [u8]>) -> io::Result<Vec<u64>> {
        let (buf, offsets) = frame(0, records);
        let tmp = self.path.with_extension("rewrite");
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&buf)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        let mut file = OpenOptions::new().read(true).write(true).open(&self.path)?;
        file.seek(SeekFrom::End(0))?;
        self.file = file;
        self.len = buf.len() as u64;
        Ok(offsets)
    }

    /// Bytes in the log.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The on-disk form of `records` placed from `start`, and the offset each begins at.
fn frame<'a>(start: u64, records: impl IntoIterator<Item = &'a [u8]>) -> (Vec<u8>, Vec<u64>) {
    let mut buf = Vec::new();
    let mut offsets = Vec::new();
    for r in records {
        offsets.push(start + buf.len() as u64);
        let len = u32::try_from(r.len()).expect("a metadata record is far below 4 GiB");
        buf.extend_from_slice(&len.to_le_bytes());
        buf.extend_from_slice(&crc32c::crc32c(r).to_le_bytes());
        buf.extend_from_slice(r);
    }
    (buf, offsets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_back_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let md = MetadataDir::open(&dir.path().join("metadata")).unwrap();
        assert!(md.is_empty().unwrap());
        let (mut log, read) = md.open_log("log", 1024).unwrap();
        assert!(read.is_empty());
        let offsets = log.append([b"one".as_slice(), b"two".as_slice()]).unwrap();
        assert_eq!(offsets, vec![0, 11]);
        log.append([b"three".as_slice()]).unwrap();
        let full = log.len();
        drop(log);
        // Tear the last record: its payload is cut short.
        OpenOptions::new().write(true).open(md.path().join("log")).unwrap().set_len(full - 2).unwrap();
        let (mut log, read) = md.open_log("log", 1024).unwrap();
        let texts: Vec<&[u8]> = read.iter().map(|r| r.data.as_slice()).collect();
        assert_eq!(texts, vec![b"one".as_slice(), b"two".as_slice()]);
        assert_eq!(log.len(), 22);
        log.truncate(11).unwrap();
        log.append([b"2".as_slice()]).unwrap();
        drop(log);
        // A flipped payload byte fails the CRC: cut there.
        let (log, read) = md.open_log("log", 1024).unwrap();
        assert_eq!(read.iter().map(|r| r.data.clone()).collect::<Vec<_>>(), vec![b"one".to_vec(), b"2".to_vec()]);
        drop(log);
        let mut bytes = std::fs::read(md.path().join("log")).unwrap();
        let n = bytes.len();
        bytes[n - 1] ^= 0xff;
        std::fs::write(md.path().join("log"), &bytes).unwrap();
        let (mut log, read) = md.open_log("log", 1024).unwrap();
        assert_eq!(read.len(), 1);
        let offsets = log.rewrite([b"x".as_slice(), b"y".as_slice()]).unwrap();
        assert_eq!(offsets, vec![0, 9]);
        log.append([b"z".as_slice()]).unwrap();
        drop(log);
        let (_, read) = md.open_log("log", 1024).unwrap();
        assert_eq!(read.iter().map(|r| r.data.clone()).collect::<Vec<_>>(), vec![b"x".to_vec(), b"y".to_vec(), b"z".to_vec()]);
        md.replace("vote", b"v").unwrap();
        assert_eq!(md.read("vote").unwrap(), Some(b"v".to_vec()));
        assert_eq!(md.read("nothing").unwrap(), None);
    }
}

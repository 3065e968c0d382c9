//! Unit tests of the partition log: appends, reads and read-ahead, rolls, recovery, compaction,
//! retention and DeleteRecords, and faults injected through `io::sim_disk`.

use super::*;
use super::read::{read_len, DISK_READS, READ_AHEAD_BYTES, READ_AHEAD_CHUNKS};
use crate::config::{Config, ServeArgs};
use crate::io::rt;
use crate::io::sim_disk::{FaultPlan, OpKind, SimDisk};

fn config() -> TopicConfig {
    let c = Config::from_args(&ServeArgs { cores: Some(1), ..Default::default() }).unwrap();
    TopicConfig::resolve(&c.topic_defaults, &Default::default()).unwrap()
}

/// A valid uncompressed batch of `n` records.
fn batch(n: i32) -> (Bytes, BatchHeader) {
    let b = crate::protocol::batch::tests::make_batch(n, 1_000);
    let h = batch::validate(&b).unwrap();
    (b, h)
}

/// Found by fuzzing: recovery trusted base offsets, which the CRC does not cover, so one
/// flipped bit could move a segment's end backwards. Such a batch is now damage.
#[test]
fn recovery_refuses_batches_whose_offsets_go_back_or_overflow() {
    let mut walk = SegmentScan {
        base: 100,
        index_interval: 0,
        index: SegmentIndex::default(),
        bytes_since_index: 0,
        max_ts: -1,
        next_offset: 100,
        controls: Vec::new(),
    };
    let at = |base: i64| {
        let mut m = crate::protocol::batch::tests::make_batch(3, 1_000).to_vec();
        batch::patch(&mut m, base, 0, None);
        batch::validate(&m).unwrap()
    };
    assert!(walk.batch(0, &at(99)).is_err(), "before the segment's base");
    walk.batch(0, &at(100)).unwrap();
    assert_eq!(walk.next_offset, 103);
    assert!(walk.batch(200, &at(101)).is_err(), "overlaps the batch before");
    walk.batch(200, &at(110)).unwrap();
    assert_eq!(walk.next_offset, 113, "a gap (compaction) is fine");
    assert!(walk.batch(400, &at(i64::MAX - 1)).is_err(), "last offset overflows");
    walk.batch(400, &at(100 + (1 << 33))).unwrap();
    assert_eq!(walk.index.offsets, vec![(0, 0), (10, 200)], "too far for a 32-bit relative offset: not indexed");
}

#[test]
fn the_batch_cache_keeps_to_its_cap_and_serves_the_newest_batches() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    rt::run_local(async move {
        io_probe(&path).await;
        let log = PartitionLog::open(path.join("p"), config(), Rc::new(Notify::default())).await.unwrap();
        let one = batch(10);
        let size = one.0.len();
        log.set_cache_cap(5 * size);
        for _ in 0..50 {
            log.append(std::slice::from_ref(&one), false).await.unwrap();
        }
        assert_eq!(log.disk_stats().cache_bytes, 5 * size as u64, "the cap holds");
        // The newest batches come from memory, older ones from the segment: both the same.
        let newest = log.read(490, usize::MAX).await.unwrap();
        let oldest = log.read(0, size).await.unwrap();
        assert_eq!(newest.records.len(), size);
        assert_eq!(oldest.records.len(), size);
        assert_eq!(&newest.records[12..], &oldest.records[12..], "same records after the base offset");
        log.set_cache_cap(0);
        log.append(std::slice::from_ref(&one), false).await.unwrap();
        assert_eq!(log.disk_stats().cache_bytes, size as u64, "at least one batch is kept");
        log.close().await.unwrap();
    });
}

/// A log of 400 batches of 100 records, about 1.2 KiB each (offsets 0 to 39,999), with no
/// batch cache: every read but the newest batch's goes to the segment file, and there is room
/// for every read ahead (64 KiB each) to be in flight.
async fn log_read_from_disk(path: &Path) -> Rc<PartitionLog> {
    io_probe(path).await;
    let log = PartitionLog::open(path.join("p"), config(), Rc::new(Notify::default())).await.unwrap();
    log.set_cache_cap(0);
    let one = batch(100);
    for _ in 0..400 {
        log.append(std::slice::from_ref(&one), false).await.unwrap();
    }
    log
}

/// Drops the log's read-ahead and checks its chunks give their bytes back (reads still in
/// flight hold theirs until they end).
async fn drop_read_ahead(log: &PartitionLog) {
    log.st.borrow_mut().read_ahead = ReadAhead::default();
    for _ in 0..1000 {
        if READ_AHEAD_BYTES.with(Cell::get) == 0 {
            break;
        }
        rt::sleep(std::time::Duration::from_millis(1)).await;
    }
    assert_eq!(READ_AHEAD_BYTES.with(Cell::get), 0, "dropped chunks give their bytes back");
}

#[test]
fn a_consumer_reading_from_disk_in_order_is_served_by_read_ahead() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    rt::run_local(async move {
        let log = log_read_from_disk(&path).await;
        let (mut offset, mut served_ahead, mut deepest) = (0i64, 0, 0);
        while offset < 39_900 {
            let ahead_before = log.st.borrow().read_ahead.cursors.back().map(|c| c.next_offset);
            deepest = deepest.max(log.st.borrow().read_ahead.chunks.len());
            let r = log.read(offset, 2048).await.unwrap();
            let mut next = offset;
            batch::scan(&r.records, |_, h| {
                assert_eq!(h.base_offset, next, "batches follow each other from the asked offset");
                next = h.last_offset() + 1;
            });
            assert!(next > offset, "a read returns something");
            if ahead_before == Some(offset) {
                served_ahead += 1;
            }
            offset = next;
        }
        assert!(served_ahead >= 5, "only {served_ahead} reads found a read-ahead waiting");
        // The chunk the consumer stands in, and the reads ahead of it.
        assert!((READ_AHEAD_CHUNKS..=READ_AHEAD_CHUNKS + 1).contains(&deepest), "reads ahead are issued back to back: {deepest}");
        // A read elsewhere ignores the read-ahead and still reads the right batch.
        let r = log.read(115, 1).await.unwrap();
        assert_eq!(batch::parse_header(&r.records).unwrap().base_offset, 100);
        drop_read_ahead(&log).await;
        log.close().await.unwrap();
    });
}

#[test]
fn consumers_reading_the_same_stretch_together_read_it_from_disk_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    rt::run_local(async move {
        let log = log_read_from_disk(&path).await;
        let bytes = log.st.borrow().segments.values().map(|s| s.written).sum::<u64>() as usize;
        // Reads the next batches after `offset` and checks they follow on from it.
        let fetch = |offset: i64| {
            let log = &log;
            async move {
                let r = log.read(offset, 8192).await.unwrap();
                let mut next = offset;
                batch::scan(&r.records, |_, h| {
                    assert_eq!(h.base_offset, next, "batches follow each other from the asked offset");
                    next = h.last_offset() + 1;
                });
                assert!(next > offset, "a read returns something");
                next
            }
        };
        DISK_READS.with(|n| n.set(0));
        // Two consumers from the start, their fetches at once, one a fetch behind the other.
        let (mut a, mut b) = (fetch(0).await, 0);
        while b < 39_900 {
            let ahead = async { if a < 39_900 { fetch(a).await } else { a } };
            (a, b) = futures_lite::future::zip(ahead, fetch(b)).await;
        }
        let reads = DISK_READS.with(Cell::get);
        let once = bytes.div_ceil(read_len(8192));
        assert!(reads <= once + READ_AHEAD_CHUNKS, "{reads} reads for {once} reads' worth of log: the second consumer read its own");
        // A third, far behind, reads for itself and still reads the right batches.
        let mut c = 0;
        while c < 39_900 {
            c = fetch(c).await;
        }
        assert!(DISK_READS.with(Cell::get) > reads, "a consumer outside every window reads for itself");
        // Two in step: each fetch of one, answered, then the same fetch of the other.
        log.st.borrow_mut().read_ahead = ReadAhead::default();
        DISK_READS.with(|n| n.set(0));
        let mut a = 0;
        while a < 39_900 {
            let next = fetch(a).await;
            assert_eq!(fetch(a).await, next, "the same fetch reads the same batches");
            a = next;
        }
        let in_step = DISK_READS.with(Cell::get);
        assert!(in_step <= once + READ_AHEAD_CHUNKS, "{in_step} reads for {once} reads' worth of log by consumers in step");
        drop_read_ahead(&log).await;
        log.close().await.unwrap();
    });
}

/// Reads the log from offset 0 to `end` from the segment file (the cache turned off),
/// checking that every batch follows the one before.
async fn read_back_in_order(log: &PartitionLog, end: i64) {
    log.set_cache_cap(0);
    let (mut next, mut offset) = (0, 0);
    while offset < end {
        let r = log.read(offset, 1 << 20).await.unwrap();
        batch::scan(&r.records, |_, h| {
            assert_eq!(h.base_offset, next);
            next = h.last_offset() + 1;
        });
        assert!(next > offset, "a read at {offset} found nothing");
        offset = next;
    }
}

#[test]
fn appends_beyond_the_write_cap_are_written_in_turns_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    rt::run_local(async move {
        io_probe(&path).await;
        let log = PartitionLog::open(path.join("p"), config(), Rc::new(Notify::default())).await.unwrap();
        let one = batch(3).0.len();
        log.set_write_max(2 * one); // two batches per write
        let tasks: Vec<_> = (0..40)
            .map(|i| {
                let log = log.clone();
                rt::spawn(async move { log.append(&[batch(3)], i % 2 == 0).await.unwrap().base_offset })
            })
            .collect();
        let mut bases = Vec::new();
        for t in tasks {
            bases.push(t.await);
        }
        assert_eq!(bases, (0..40).map(|i| i * 3).collect::<Vec<_>>(), "offsets in append order");
        let o = log.offsets();
        assert_eq!((o.log_end, o.high_watermark), (120, 120));
        let writes = log.stats().writes;
        assert!(writes >= 20, "40 batches, at most two per write, in {writes} writes");
        // Everything reads back in order, from the segment file too.
        read_back_in_order(&log, 120).await;
        log.close().await.unwrap();
        let log = PartitionLog::open(path.join("p"), config(), Rc::new(Notify::default())).await.unwrap();
        assert_eq!(log.offsets().log_end, 120, "all of it is in the segment after a reopen");
        log.close().await.unwrap();
    });
}

#[test]
fn a_preallocated_segment_is_trimmed_at_close_and_by_recovery_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    rt::run_local(async move {
        io_probe(&path).await;
        let seg_path = segment_path(&path.join("p"), 0, "log");
        let log = PartitionLog::open(path.join("p"), config(), Rc::new(Notify::default())).await.unwrap();
        log.set_preallocate_step(1 << 20);
        let one = batch(300).0.len() as u64;
        // One batch (about 3.4 KiB) per write, so most writes rewrite a tail block and
        // cross into the next: they go as two, the tail block apart.
        for i in 0..50 {
            log.append(&[batch(300)], i % 5 == 0).await.unwrap();
        }
        let on_disk = SegmentFile::open(&seg_path, false).await.unwrap().size().await.unwrap();
        assert!(on_disk >= 1 << 20 && on_disk > 50 * one, "grown ahead of the data: {on_disk} bytes for {}", 50 * one);
        // A crash: no close, so the zeros past the data stay in the file.
        drop(log);
        let log = PartitionLog::open(path.join("p"), config(), Rc::new(Notify::default())).await.unwrap();
        assert_eq!(log.offsets().log_end, 15_000, "every batch is found again");
        let on_disk = SegmentFile::open(&seg_path, false).await.unwrap().size().await.unwrap();
        assert_eq!(on_disk, 50 * one, "recovery trims the preallocated zeros");
        log.set_preallocate_step(1 << 20);
        for _ in 0..30 {
            log.append(&[batch(300)], false).await.unwrap();
        }
        // Everything reads back in order from the segment file.
        read_back_in_order(&log, 24_000).await;
        log.close().await.unwrap();
        let on_disk = SegmentFile::open(&seg_path, false).await.unwrap().size().await.unwrap();
        assert_eq!(on_disk, 80 * one, "a clean close trims the file to its data");
    });
}

#[test]
fn concurrent_durable_appends_share_writes_and_fdatasyncs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    rt::run_local(async move {
        io_probe(&path).await;
        let log = PartitionLog::open(path.join("p"), config(), Rc::new(Notify::default())).await.unwrap();
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let log = log.clone();
                rt::spawn(async move { log.append(&[batch(3)], true).await.unwrap().base_offset })
            })
            .collect();
        let mut bases = Vec::new();
        for t in tasks {
            bases.push(t.await);
        }
        bases.sort();
        assert_eq!(bases, (0..64).map(|i| i * 3).collect::<Vec<_>>());
        let o = log.offsets();
        assert_eq!((o.log_end, o.high_watermark, o.durable), (192, 192, 192));
        let s = log.stats();
        assert_eq!(s.appends, 64);
        // Group commit: 64 durable appends rode on a handful of writes and fdatasyncs.
        assert!(s.writes < 8, "{s:?}");
        assert!(s.syncs < 8, "{s:?}");
    });
}

#[test]
fn reopen_recovers_offsets_and_reads_across_the_tail_block() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    rt::run_local(async move {
        io_probe(&path).await;
        let p = path.join("p");
        {
            let log = PartitionLog::open(p.clone(), config(), Rc::new(Notify::default())).await.unwrap();
            for _ in 0..100 {
                log.append(&[batch(5)], false).await.unwrap();
            }
        }
        let log = PartitionLog::open(p, config(), Rc::new(Notify::default())).await.unwrap();
        assert_eq!(log.offsets().log_end, 500);
        // Appends after recovery continue in the partial tail block.
        log.append(&[batch(1)], true).await.unwrap();
        let r = log.read(0, 1 << 20).await.unwrap();
        let mut n = 0;
        let mut next = 0;
        batch::scan(&r.records, |_, h| {
            assert_eq!(h.base_offset, next);
            next = h.last_offset() + 1;
            n += 1;
        });
        assert_eq!((n, next), (101, 501));
        let r = log.read(497, 1).await.unwrap();
        assert_eq!(batch::parse_header(&r.records).unwrap().base_offset, 495);
        assert!(matches!(log.read(502, 1).await, Err(LogError::OffsetOutOfRange { .. })));
    });
}

fn small_segments() -> TopicConfig {
    let mut c = config();
    c.segment_bytes = 1000;
    c
}

#[test]
fn appends_keep_arrival_order_across_segment_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    rt::run_local(async move {
        io_probe(&path).await;
        let log = PartitionLog::open(path.join("p"), small_segments(), Rc::new(Notify::default())).await.unwrap();
        // ~130-byte batches into 1000-byte segments: a roll every few appends, while later
        // appends are already waiting.
        // Arrivals are staggered so that new appends come in while earlier ones wait out a
        // roll's write and fdatasync, as pipelined produce requests do.
        let mut tasks = Vec::new();
        for _ in 0..200 {
            let log = log.clone();
            tasks.push(rt::spawn(async move { log.append(&[batch(10)], true).await.unwrap().base_offset }));
            rt::sleep(std::time::Duration::from_micros(20)).await;
        }
        let mut bases = Vec::new();
        for t in tasks {
            bases.push(t.await);
        }
        assert_eq!(bases, (0..200).map(|i| i * 10).collect::<Vec<_>>(), "offsets out of arrival order");
        assert!(log.st.borrow().segments.len() > 20);
    });
}

/// Every batch from the log start to the high watermark, in order, each with the offset the
/// read that returned it was asked for (its records below that were returned before).
async fn batches_from_start(log: &PartitionLog) -> Vec<(Bytes, BatchHeader, i64)> {
    let mut out = Vec::new();
    let mut at = log.offsets().log_start;
    while at < log.offsets().high_watermark {
        let r = log.read(at, 1 << 20).await.unwrap();
        assert!(!r.records.is_empty(), "no progress at offset {at}");
        batch::scan(&r.records, |pos, h| {
            out.push((r.records.slice(pos..pos + h.total_len()), *h, at));
            at = at.max(h.last_offset() + 1);
        });
    }
    out
}

/// Every record from the log start: (offset, key, value).
async fn read_all(log: &PartitionLog) -> Vec<(i64, Option<Bytes>, Option<Bytes>)> {
    let mut out = Vec::new();
    for (b, h, at) in batches_from_start(log).await {
        let mut offsets = Vec::new();
        batch::visit(&b, &h, |rec, _| offsets.push(rec.offset)).unwrap();
        for (o, (k, v)) in offsets.into_iter().zip(batch::key_values(&b, &h).unwrap()) {
            if o >= at {
                out.push((o, k, v));
            }
        }
    }
    out
}

/// A partition log of small segments with `cleanup.policy=compact` and a minute's
/// `delete.retention.ms`: (its directory, its config, the log).
async fn compacted_log(path: &Path) -> (PathBuf, TopicConfig, Rc<PartitionLog>) {
    io_probe(path).await;
    let mut c = small_segments();
    c.cleanup_policy = "compact".into();
    c.delete_retention_ms = 60_000;
    let p = path.join("p");
    let log = PartitionLog::open(p.clone(), c.clone(), Rc::new(Notify::default())).await.unwrap();
    (p, c, log)
}

#[test]
fn compaction_keeps_each_keys_latest_record_at_its_offset_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    rt::run_local(async move {
        let (p, c, log) = compacted_log(&path).await;
        let now = now_ms();
        let key = |i: usize| Some(Bytes::from(format!("k{i}")));
        // (key, value or tombstone, timestamp)
        let mut writes: Vec<(Option<Bytes>, Option<Bytes>, i64)> = Vec::new();
        for i in 0..60 {
            writes.push((key(i % 6), Some(Bytes::from(format!("v{i}"))), now));
        }
        writes.push((key(0), None, 1_000)); // a tombstone older than delete.retention.ms
        writes.push((key(1), None, now)); // a fresh one
        writes.push((None, Some(Bytes::from("unkeyed")), now));
        for i in 60..90 {
            writes.push((key(i % 4 + 2), Some(Bytes::from(format!("v{i}"))), now));
        }
        for (k, v, ts) in &writes {
            let b = batch::build(&[(k.clone(), v.clone())], *ts);
            let h = batch::validate(&b).unwrap();
            log.append(&[(b, h)], false).await.unwrap();
        }
        let end = log.offsets().log_end;
        assert_eq!(end, writes.len() as i64);
        assert!(log.st.borrow().segments.len() > 5);
        let before = read_all(&log).await;
        assert_eq!(before.len(), writes.len());

        let (rewritten, dropped) = log.compact(now).await.unwrap();
        assert!(rewritten > 0 && dropped > 0, "{rewritten} {dropped}");
        assert_eq!(log.compact(now).await.unwrap(), (0, 0), "nothing new to clean");
        let after = read_all(&log).await;
        // Every surviving record is one of the originals, at its own offset.
        for (o, k, v) in &after {
            assert_eq!((k, v), (&writes[*o as usize].0, &writes[*o as usize].1), "offset {o} changed");
        }
        assert!(after.windows(2).all(|w| w[0].0 < w[1].0));
        // Replaying what is left gives the same table as replaying everything.
        let table = |recs: &[(i64, Option<Bytes>, Option<Bytes>)]| {
            let mut t = BTreeMap::new();
            for (_, k, v) in recs {
                match (k, v) {
                    (Some(k), Some(v)) => t.insert(k.clone(), v.clone()),
                    (Some(k), None) => t.remove(k),
                    (None, _) => None,
                };
            }
            t
        };
        assert_eq!(table(&after), table(&before));
        let keys: Vec<&Option<Bytes>> = after.iter().map(|(_, k, _)| k).collect();
        assert!(!keys.contains(&&key(0)), "the old tombstone and everything it deleted are gone: {after:?}");
        assert!(after.iter().any(|(_, k, v)| *k == key(1) && v.is_none()), "the fresh tombstone stays");
        assert!(after.iter().any(|(_, k, _)| k.is_none()), "records without a key stay");
        assert!(after.len() < 25, "{} records left of {}", after.len(), writes.len());
        assert_eq!(log.offsets().log_end, end);
        drop(log);

        let log = PartitionLog::open(p, c, Rc::new(Notify::default())).await.unwrap();
        assert_eq!(log.offsets().log_end, end, "recovery keeps every segment despite the gaps");
        let reopened = read_all(&log).await;
        assert_eq!(reopened, after);
        let next = log.append(&[batch(1)], true).await.unwrap().base_offset;
        assert_eq!(next, end);
    });
}

/// An idempotent batch of `n` records from producer `pid`, epoch `epoch`, first sequence `seq`.
fn idem(pid: i64, epoch: i16, seq: i32, n: usize) -> (Bytes, BatchHeader) {
    idem_with(pid, epoch, seq, n, 0)
}

/// `idem` with the transactional attribute.
fn txn_batch(pid: i64, epoch: i16, seq: i32, n: usize) -> (Bytes, BatchHeader) {
    idem_with(pid, epoch, seq, n, 0x10)
}

fn idem_with(pid: i64, epoch: i16, seq: i32, n: usize, attributes: i16) -> (Bytes, BatchHeader) {
    let recs: Vec<_> = (0..n).map(|i| (None, Some(Bytes::from(format!("r{}", seq as usize + i))))).collect();
    producer_batch(&recs, pid, epoch, seq, attributes)
}

/// A batch of `recs` from producer `pid` at `epoch` and sequence `seq`, with `attributes`.
fn producer_batch(recs: &[(Option<Bytes>, Option<Bytes>)], pid: i64, epoch: i16, seq: i32, attributes: i16) -> (Bytes, BatchHeader) {
    let mut b = batch::build(recs, 1_000).to_vec();
    b[21..23].copy_from_slice(&attributes.to_be_bytes());
    b[43..51].copy_from_slice(&pid.to_be_bytes());
    b[51..53].copy_from_slice(&epoch.to_be_bytes());
    b[53..57].copy_from_slice(&seq.to_be_bytes());
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    let b = Bytes::from(b);
    let h = batch::validate(&b).unwrap();
    (b, h)
}

#[test]
fn idempotent_retries_get_their_first_offsets_even_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    rt::run_local(async move {
        io_probe(&path).await;
        let p = path.join("p");
        let log = PartitionLog::open(p.clone(), small_segments(), Rc::new(Notify::default())).await.unwrap();
        let mut firsts = Vec::new();
        for i in 0..30 {
            firsts.push(log.append(&[idem(5, 0, i * 3, 3)], true).await.unwrap().base_offset);
            log.append(&[batch(2)], true).await.unwrap(); // a non-idempotent producer in between
        }
        let end = log.offsets().log_end;
        assert!(log.st.borrow().segments.len() > 3, "rolls wrote producer snapshots");
        // The last five batches are recognised; the log does not grow.
        for i in 25..30 {
            let again = log.append(&[idem(5, 0, i * 3, 3)], true).await.unwrap();
            assert_eq!(again.base_offset, firsts[i as usize]);
        }
        assert_eq!(log.offsets().log_end, end);
        let gap = log.append(&[idem(5, 0, 95, 1)], true).await;
        assert!(matches!(gap, Err(LogError::OutOfOrderSequence(_))), "{gap:?}");
        let two = log.append(&[idem(6, 0, 0, 1), idem(6, 0, 1, 1)], true).await;
        assert!(matches!(two, Err(LogError::InvalidRecord(_))), "{two:?}");
        drop(log);
        for reopen in 0..2 {
            // Once from the roll snapshot plus a replay, then from the snapshot open wrote.
            let log = PartitionLog::open(p.clone(), small_segments(), Rc::new(Notify::default())).await.unwrap();
            let again = log.append(&[idem(5, 0, 87, 3)], true).await.unwrap();
            assert_eq!(again.base_offset, firsts[29], "reopen {reopen}: the retry is still a duplicate");
            assert_eq!(log.offsets().log_end, end);
            drop(log);
        }
        let log = PartitionLog::open(p, small_segments(), Rc::new(Notify::default())).await.unwrap();
        assert_eq!(log.append(&[idem(5, 0, 90, 1)], true).await.unwrap().base_offset, end, "the sequence goes on");
        assert_eq!(log.append(&[idem(5, 1, 0, 1)], true).await.unwrap().base_offset, end + 1, "a new epoch starts at 0");
        let stale = log.append(&[idem(5, 0, 91, 1)], true).await;
        assert!(matches!(stale, Err(LogError::InvalidProducerEpoch(_))), "{stale:?}");
    });
}

fn marker_batch(pid: i64, epoch: i16, commit: bool, coordinator_epoch: i32) -> (Bytes, BatchHeader) {
    let b = batch::build_marker(pid, epoch, batch::Marker { commit, coordinator_epoch }, 2_000);
    let h = batch::validate(&b).unwrap();
    (b, h)
}

/// Transactions in the partition: open ones hold the first unstable offset back, markers
/// close them (and are refused from an older coordinator or producer epoch), and a reopen
/// rebuilds the open ones from the snapshot at a roll plus the batches after it.
#[test]
fn markers_close_transactions_and_open_ones_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    rt::run_local(async move {
        io_probe(&path).await;
        let p = path.join("p");
        let log = PartitionLog::open(p.clone(), small_segments(), Rc::new(Notify::default())).await.unwrap();
        log.append(&[batch(3)], true).await.unwrap();
        let a = log.append(&[txn_batch(7, 0, 0, 2)], true).await.unwrap().base_offset;
        let b = log.append(&[txn_batch(8, 0, 0, 2)], true).await.unwrap().base_offset;
        assert_eq!(log.first_unstable_offset(), Some(a));
        // Producer 7 commits; many more batches roll segments (each roll snapshots the state).
        let m = log.append(&[marker_batch(7, 0, true, 5)], true).await.unwrap();
        assert_eq!(m.end, m.base_offset + 1, "a marker is one record");
        assert_eq!(log.first_unstable_offset(), Some(b));
        for i in 0..40 {
            log.append(&[txn_batch(7, 0, 2 + i, 1)], true).await.unwrap();
        }
        assert!(log.st.borrow().segments.len() > 3, "rolls wrote producer snapshots");
        let fenced = log.append(&[marker_batch(7, 0, true, 4)], true).await;
        assert!(matches!(fenced, Err(LogError::CoordinatorFenced(_))), "{fenced:?}");
        let end = log.offsets().log_end;
        drop(log);
        for reopen in 0..2 {
            let log = PartitionLog::open(p.clone(), small_segments(), Rc::new(Notify::default())).await.unwrap();
            assert_eq!(log.offsets().log_end, end);
            assert_eq!(log.first_unstable_offset(), Some(b), "reopen {reopen}: producer 8's transaction is open");
            let producers = log.active_producers();
            let p7 = producers.iter().find(|p| p.producer_id == 7).unwrap();
            assert_eq!((p7.txn_start_offset, p7.coordinator_epoch), (m.end, 5), "reopen {reopen}: producer 7's second transaction");
            drop(log);
        }
        let log = PartitionLog::open(p, small_segments(), Rc::new(Notify::default())).await.unwrap();
        let old = log.append(&[marker_batch(7, 0, true, 4)], true).await;
        assert!(matches!(old, Err(LogError::CoordinatorFenced(_))), "the coordinator epoch survives a reopen: {old:?}");
        log.append(&[marker_batch(7, 0, false, 5)], true).await.unwrap();
        log.append(&[marker_batch(8, 0, false, 5)], true).await.unwrap();
        assert_eq!(log.first_unstable_offset(), None);
    });
}

#[test]
fn aborted_transactions_are_indexed_per_segment_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    rt::run_local(async move {
        io_probe(&path).await;
        let p = path.join("p");
        let log = PartitionLog::open(p.clone(), small_segments(), Rc::new(Notify::default())).await.unwrap();
        let a = log.append(&[txn_batch(7, 0, 0, 2)], true).await.unwrap().base_offset;
        let b = log.append(&[txn_batch(8, 0, 0, 2)], true).await.unwrap().base_offset;
        assert_eq!(log.last_stable_offset(), a, "the LSO stops at the oldest open transaction");
        let abort7 = log.append(&[marker_batch(7, 0, false, 1)], true).await.unwrap().base_offset;
        assert_eq!(log.last_stable_offset(), b);
        let commit8 = log.append(&[marker_batch(8, 0, true, 1)], true).await.unwrap().base_offset;
        assert_eq!(log.last_stable_offset(), log.offsets().high_watermark);
        // Rolls close the first segment: its .txnindex is written, in Kafka's 34-byte entries.
        for i in 0..40 {
            log.append(&[txn_batch(9, 0, i, 1)], true).await.unwrap();
        }
        let abort9 = log.append(&[marker_batch(9, 0, false, 1)], true).await.unwrap().base_offset;
        let first = *log.st.borrow().segments.keys().next().unwrap();
        let file = fs::read(p.join(format!("{first:020}.txnindex"))).await.unwrap().expect("the closed segment's .txnindex");
        assert_eq!(file.len(), 34);
        assert_eq!(crate::storage::txn_index::decode(&file).unwrap()[0].last_offset, abort7);
        let expect = |log: &PartitionLog, what: &str| {
            assert_eq!(log.aborted_transactions(0, i64::MAX), vec![(7, a), (9, commit8 + 1)], "{what}");
            assert_eq!(log.aborted_transactions(abort7 + 1, i64::MAX), vec![(9, commit8 + 1)], "{what}: aborted before the fetch offset");
            assert_eq!(log.aborted_transactions(0, a), vec![], "{what}: begun at or past the upper bound");
            assert_eq!(log.aborted_transactions(abort9, abort9 + 1), vec![(9, commit8 + 1)], "{what}: the marker itself");
        };
        expect(&log, "appended");
        let end = log.offsets().log_end;
        log.close().await.unwrap();
        drop(log);
        let log = PartitionLog::open(p.clone(), small_segments(), Rc::new(Notify::default())).await.unwrap();
        assert_eq!(log.offsets().log_end, end);
        expect(&log, "after a clean close");
        drop(log);
        // Without the producer snapshots and the active segment's files, the entries come back
        // from the closed segments' .txnindex and from replaying the rest.
        for name in fs::list_dir(p.clone()).await.unwrap() {
            if name.ends_with(".producers") {
                fs::remove_file(p.join(name)).await.unwrap();
            }
        }
        let log = PartitionLog::open(p.clone(), small_segments(), Rc::new(Notify::default())).await.unwrap();
        expect(&log, "after replaying the whole log");
        assert_eq!(log.last_stable_offset(), end);
    });
}

#[test]
fn a_cancelled_append_does_not_wedge_the_partition() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    rt::run_local(async move {
        io_probe(&path).await;
        let log = PartitionLog::open(path.join("p"), small_segments(), Rc::new(Notify::default())).await.unwrap();
        for _ in 0..7 {
            log.append(&[batch(10)], false).await.unwrap();
        }
        // The next append rolls; two more queue behind it; the middle one is cancelled while
        // waiting for its turn, and the first is cancelled during its I/O.
        let spawn = |log: Rc<PartitionLog>| rt::spawn(async move { log.append(&[batch(10)], true).await.map(|a| a.base_offset) });
        let a = spawn(log.clone());
        let b = spawn(log.clone());
        let c = spawn(log.clone());
        rt::sleep(std::time::Duration::from_micros(50)).await;
        drop(b);
        drop(a);
        let c = c.await.unwrap();
        let d = log.append(&[batch(10)], true).await.unwrap().base_offset;
        assert_eq!(d, c + 10);
        let o = log.offsets();
        assert_eq!((o.log_end, o.high_watermark, o.durable), (d + 10, d + 10, d + 10));
        let st = log.st.borrow();
        assert!(!st.writing && !st.syncing && !st.rolling);
        drop(st);
        assert!(log.turns.idle());
    });
}

#[test]
fn close_leaves_every_index_on_disk_and_refuses_later_appends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    rt::run_local(async move {
        io_probe(&path).await;
        let p = path.join("p");
        let mut c = small_segments();
        c.index_interval_bytes = 200;
        let log = PartitionLog::open(p.clone(), c.clone(), Rc::new(Notify::default())).await.unwrap();
        for _ in 0..30 {
            log.append(&[batch(4)], false).await.unwrap();
        }
        // Appends in flight when the close starts are completed by it; later ones are refused.
        let tasks: Vec<_> = (0..40)
            .map(|_| {
                let log = log.clone();
                rt::spawn(async move { log.append(&[batch(4)], false).await.map(|a| a.base_offset) })
            })
            .collect();
        rt::sleep(std::time::Duration::from_micros(50)).await;
        log.close().await.unwrap();
        let mut done = 30;
        for t in tasks {
            if t.await.is_ok() {
                done += 1;
            }
        }
        let end = log.offsets().log_end;
        assert_eq!(end, done * 4);
        assert_eq!(log.offsets().durable, end);
        assert!(matches!(log.append(&[batch(1)], true).await, Err(LogError::Storage(_))));
        let (segments, active_size) = {
            let st = log.st.borrow();
            assert!(st.segments.values().all(|s| s.index_saved));
            (st.segments.keys().copied().collect::<Vec<_>>(), st.segments.values().next_back().unwrap().size)
        };
        assert!(segments.len() > 1, "{segments:?}");
        drop(log);
        let names = fs::list_dir(p.clone()).await.unwrap();
        for base in &segments {
            for ext in ["index", "timeindex"] {
                assert!(names.contains(&format!("{base:020}.{ext}")), "{base}.{ext} missing: {names:?}");
            }
        }
        let last = SegmentFile::open(&segment_path(&p, *segments.last().unwrap(), "log"), false).await.unwrap();
        assert_eq!(last.size().await.unwrap(), active_size, "O_DIRECT padding trimmed");

        let log = PartitionLog::open(p, c, Rc::new(Notify::default())).await.unwrap();
        assert_eq!(log.offsets().log_end, end);
        assert!(log.st.borrow().segments.values().all(|s| s.index_saved), "nothing rebuilt");
        assert_eq!(log.append(&[batch(1)], true).await.unwrap().base_offset, end);
        assert_eq!(read_all(&log).await.len() as i64, end + 1);
    });
}

async fn io_probe(dir: &Path) {
    SegmentFile::prime_device_probe(dir, 0).await.unwrap();
}

// Regression tests for what the storage simulation (`super::super::simulation`) found, each
// on the simulated disk with one targeted fault.

/// Runs `f` with a simulated disk installed on this thread.
fn on_sim_disk<Fut: std::future::Future<Output = ()> + 'static>(plan: FaultPlan, f: impl FnOnce(Rc<SimDisk>) -> Fut) {
    let disk = SimDisk::new(1, plan);
    let _installed = disk.install();
    rt::run_local(f(disk));
}

async fn open_sim(c: TopicConfig) -> Rc<PartitionLog> {
    PartitionLog::open(PathBuf::from("/sim/p"), c, Rc::new(Notify::default())).await.unwrap()
}

fn segments_of(bytes: i64) -> TopicConfig {
    let mut c = config();
    c.segment_bytes = bytes;
    c
}

fn record(key: &str, value: &str, ts: i64) -> (Bytes, BatchHeader) {
    let b = batch::build(&[(Some(Bytes::from(key.to_string())), Some(Bytes::from(value.to_string())))], ts);
    let h = batch::validate(&b).unwrap();
    (b, h)
}

fn is_storage_error<T: std::fmt::Debug>(r: &Result<T, LogError>) -> bool {
    matches!(r, Err(LogError::Storage(_)))
}

/// ListOffsets MAX_TIMESTAMP names the first record holding the log's largest timestamp,
/// inside a compressed batch whose timestamps are out of order too (KIP-734, KAFKA-16310).
#[test]
fn max_timestamp_names_the_record_holding_it() {
    use crate::protocol::batch::tests::make_batch_with;
    use crate::protocol::codec;
    on_sim_disk(FaultPlan::default(), |_disk| async move {
        let log = open_sim(config()).await;
        let batch = |deltas: &[i64], base_ts: i64| {
            let b = make_batch_with(deltas, base_ts, codec::GZIP);
            let h = batch::validate(&b).unwrap();
            (b, h)
        };
        assert_eq!(log.max_timestamp().await.unwrap(), None, "an empty log has none");
        log.append(&[batch(&[100, 400, 250], 1_000)], true).await.unwrap();
        assert_eq!(log.max_timestamp().await.unwrap(), Some((1, 1_400)));
        log.append(&[batch(&[0, 50], 1_400)], true).await.unwrap();
        assert_eq!(log.max_timestamp().await.unwrap(), Some((4, 1_450)));
        // A tie keeps the first record that reached it.
        log.append(&[batch(&[0], 1_450)], true).await.unwrap();
        assert_eq!(log.max_timestamp().await.unwrap(), Some((4, 1_450)));
    });
}

#[test]
fn a_rolled_back_append_is_not_left_as_the_largest_timestamp() {
    on_sim_disk(FaultPlan::default(), |disk| async move {
        let log = open_sim(config()).await;
        log.append(&[record("a", "1", 5_000)], true).await.unwrap();
        disk.fail_after(OpKind::Write, 0);
        assert!(is_storage_error(&log.append(&[record("a", "2", 9_000)], true).await));
        assert_eq!(log.max_timestamp().await.unwrap(), Some((0, 5_000)), "offset 1 was rolled back");
        assert_eq!(log.append(&[record("a", "3", 7_000)], true).await.unwrap().base_offset, 1);
        assert_eq!(log.max_timestamp().await.unwrap(), Some((1, 7_000)));
    });
}

#[test]
fn after_a_failed_fdatasync_an_acks_1_append_already_in_flight_is_refused() {
    // Every I/O takes two yields: the acks=1 append's write completes after the fdatasync of
    // the acks=all append before it has failed.
    let plan = FaultPlan { delay_yields_min: 2, delay_yields_max: 2, ..FaultPlan::default() };
    on_sim_disk(plan, |disk| async move {
        let log = open_sim(config()).await;
        disk.fail_after(OpKind::Sync, 0);
        let (l1, l2) = (log.clone(), log.clone());
        let all = rt::spawn(async move { l1.append(&[batch(1)], true).await });
        let one = rt::spawn(async move { l2.append(&[batch(1)], false).await });
        assert!(is_storage_error(&all.await));
        let one = one.await;
        assert!(is_storage_error(&one), "acknowledged after a failed fdatasync: {one:?}");
        assert!(is_storage_error(&log.append(&[batch(1)], false).await), "offline until reopened");
        assert_eq!(log.offsets().durable, 0);
    });
}

#[test]
fn a_failed_fdatasync_while_closing_a_segment_takes_the_partition_offline() {
    on_sim_disk(FaultPlan::default(), |disk| async move {
        let log = open_sim(segments_of(1000)).await;
        for _ in 0..6 {
            log.append(&[batch(10)], false).await.unwrap();
        }
        // The next append rolls: the roll's own fdatasync passes, the one closing the
        // segment (after trimming its padding) fails.
        disk.fail_after(OpKind::Sync, 1);
        assert!(is_storage_error(&log.append(&[batch(10)], true).await));
        let again = log.append(&[batch(10)], true).await;
        assert!(is_storage_error(&again), "acknowledged after a failed fdatasync: {again:?}");
    });
}

#[test]
fn a_roll_that_fails_after_creating_the_next_segment_loses_nothing_on_reopen() {
    on_sim_disk(FaultPlan::default(), |disk| async move {
        let c = segments_of(1100);
        let log = open_sim(c.clone()).await;
        for _ in 0..6 {
            log.append(&[batch(10)], true).await.unwrap();
        }
        // The roll writes the two index files, creates the next segment (at offset 60),
        // then fails writing the producer snapshot.
        disk.fail_after(OpKind::WriteAtomic, 2);
        assert!(is_storage_error(&log.append(&[batch(10)], true).await));
        // A smaller batch still fits in the old segment: offset 60 now lives there.
        assert_eq!(log.append(&[batch(1)], true).await.unwrap().base_offset, 60);
        assert_eq!(log.st.borrow().segments.len(), 1);
        for _ in 0..20 {
            log.append(&[batch(10)], true).await.unwrap();
        }
        let end = log.offsets().log_end;
        assert!(log.st.borrow().segments.len() > 2);
        drop(log);
        disk.kill();
        let log = open_sim(c).await;
        assert_eq!(log.offsets().log_end, end, "recovery dropped the segments after the empty one");
        assert_eq!(read_all(&log).await.len() as i64, end);
    });
}

#[test]
fn compaction_never_drops_a_durable_record_for_one_a_power_loss_can_take() {
    on_sim_disk(FaultPlan::default(), |disk| async move {
        let mut c = segments_of(1000);
        c.cleanup_policy = "compact".into();
        let log = open_sim(c.clone()).await;
        log.append(&[record("k", "durable", 1_000)], true).await.unwrap();
        while log.st.borrow().segments.len() < 2 {
            log.append(&[record("other", "x", 1_000)], true).await.unwrap();
        }
        // A newer value of k, written but not fdatasync'd (acks=1), in the active segment.
        log.append(&[record("k", "volatile", 1_000)], false).await.unwrap();
        let (rewritten, _) = log.compact(now_ms()).await.unwrap();
        assert_eq!(rewritten, 1, "the closed segment's older `other` records go");
        drop(log);
        disk.power_loss();
        let log = open_sim(c).await;
        let k: Vec<_> = read_all(&log).await.into_iter().filter(|r| r.1.as_deref() == Some(&b"k"[..])).collect();
        assert_eq!(k.first().map(|r| r.2.clone()), Some(Some(Bytes::from("durable"))), "{k:?}");
    });
}

#[test]
fn a_segment_left_by_a_roll_cut_short_is_made_durable_before_it_takes_writes() {
    on_sim_disk(FaultPlan::default(), |disk| async move {
        let c = segments_of(1000);
        let log = open_sim(c.clone()).await;
        for _ in 0..6 {
            log.append(&[batch(10)], true).await.unwrap();
        }
        drop(log);
        disk.kill();
        // This open leaves a producer snapshot at 60, so the next one writes none (whose
        // directory fsync would hide the bug).
        let log = open_sim(c.clone()).await;
        // The roll creates the next segment's file; the directory fsync after it fails.
        disk.fail_after(OpKind::SyncDir, 0);
        assert!(is_storage_error(&log.append(&[batch(10)], true).await));
        drop(log);
        disk.kill();
        let log = open_sim(c.clone()).await;
        assert_eq!(log.st.borrow().segments.len(), 2, "the empty new segment is the active one");
        assert_eq!(log.append(&[batch(10)], true).await.unwrap().base_offset, 60);
        drop(log);
        disk.power_loss();
        let log = open_sim(c).await;
        assert_eq!(log.offsets().log_end, 70, "an acknowledged acks=all batch was lost");
    });
}

#[test]
fn recovery_cuts_a_batch_whose_base_offset_does_not_follow() {
    on_sim_disk(FaultPlan::default(), |disk| async move {
        let log = open_sim(config()).await;
        for _ in 0..3 {
            log.append(&[batch(1)], true).await.unwrap();
        }
        drop(log);
        disk.kill();
        // What a power loss leaves when the block holding the last batch's first bytes is
        // lost and the next block is not: its base offset (outside the CRC) reads as zeros.
        let file = SegmentFile::open(Path::new("/sim/p/00000000000000000000.log"), false).await.unwrap();
        let len = file.size().await.unwrap();
        let mut bytes = file.read(0, len as usize).await.unwrap().to_vec();
        let mut last = 0;
        batch::scan(&bytes, |pos, _| last = pos);
        bytes[last..last + 8].fill(0);
        file.write_aligned(0, &bytes).await.unwrap();
        file.truncate(len).await.unwrap();
        disk.kill();
        let log = open_sim(config()).await;
        assert_eq!(log.offsets().log_end, 2, "the batch claiming offset 0 after offset 1 is damage");
        assert_eq!(read_all(&log).await.iter().map(|r| r.0).collect::<Vec<_>>(), vec![0, 1]);
    });
}

#[test]
fn a_partition_opens_on_a_full_disk_and_takes_writes_again_once_there_is_room() {
    on_sim_disk(FaultPlan::default(), |disk| async move {
        let log = open_sim(config()).await;
        for seq in 0..3 {
            log.append(&[idem(9, 0, seq, 1)], true).await.unwrap();
        }
        drop(log);
        disk.kill();
        disk.set_full(true);
        // Recovery wants to write a producer snapshot; without room it does without.
        let log = open_sim(config()).await;
        assert_eq!(log.offsets().log_end, 3);
        assert!(is_storage_error(&log.append(&[batch(1)], true).await));
        assert_eq!(log.append(&[idem(9, 0, 2, 1)], true).await.unwrap().base_offset, 2, "a retry needs no room");
        disk.set_full(false);
        assert_eq!(log.append(&[batch(1)], true).await.unwrap().base_offset, 3);
        assert_eq!(log.append(&[idem(9, 0, 3, 1)], true).await.unwrap().base_offset, 4);
    });
}

#[test]
fn two_compaction_passes_at_once_do_not_share_the_cleaned_file() {
    let plan = FaultPlan { delay_yields_min: 1, delay_yields_max: 1, ..FaultPlan::default() };
    on_sim_disk(plan, |disk| async move {
        let mut c = segments_of(1000);
        c.cleanup_policy = "compact".into();
        let log = open_sim(c.clone()).await;
        for i in 0..40 {
            log.append(&[record(&format!("k{}", i % 3), &format!("v{i}"), 1_000)], true).await.unwrap();
        }
        let (a, b) = futures_lite::future::zip(log.compact(now_ms()), log.compact(now_ms())).await;
        let (a, b) = (a.unwrap(), b.unwrap());
        assert!(a.0 > 0 && b == (0, 0), "one pass ran, the other found one running: {a:?} {b:?}");
        let after = read_all(&log).await;
        drop(log);
        disk.kill();
        let log = open_sim(c).await;
        assert_eq!(log.offsets().log_end, 40);
        assert_eq!(read_all(&log).await, after);
    });
}

/// Segment base offsets, in order.
fn bases(log: &PartitionLog) -> Vec<i64> {
    log.st.borrow().segments.keys().copied().collect()
}

/// A batch of `n` records stamped `ts` (ms).
fn batch_at(n: i32, ts: i64) -> (Bytes, BatchHeader) {
    let b = crate::protocol::batch::tests::make_batch(n, ts);
    let h = batch::validate(&b).unwrap();
    (b, h)
}

#[test]
fn delete_records_moves_the_start_durably_and_deletes_the_segments_below_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    rt::run_local(async move {
        io_probe(&path).await;
        let p = path.join("p");
        let log = PartitionLog::open(p.clone(), small_segments(), Rc::new(Notify::default())).await.unwrap();
        for _ in 0..40 {
            log.append(&[batch(10)], true).await.unwrap();
        }
        let before = bases(&log);
        assert!(before.len() > 5, "{before:?}");
        assert!(matches!(log.delete_records(401).await, Err(LogError::OffsetOutOfRange { .. })), "past the high watermark");
        let cut = before[3] + 5; // inside the fourth segment
        assert_eq!(log.delete_records(cut).await.unwrap(), cut);
        assert_eq!(log.offsets().log_start, cut);
        assert_eq!(bases(&log), before[3..].to_vec(), "the segments wholly below the start are gone");
        for b in &before[..3] {
            assert!(!segment_path(&p, *b, "log").exists() && !segment_path(&p, *b, "index").exists());
        }
        assert!(matches!(log.read(cut - 1, 1 << 20).await, Err(LogError::OffsetOutOfRange { .. })));
        assert!(!log.read(cut, 1 << 20).await.unwrap().records.is_empty());
        assert_eq!(log.delete_records(cut - 3).await.unwrap(), cut, "an earlier offset changes nothing");
        assert_eq!(log.offset_for_timestamp(0).await.unwrap().map(|(o, _)| o), Some(cut), "nothing below the start is found");
        log.close().await.unwrap();
        drop(log);

        let log = PartitionLog::open(p.clone(), small_segments(), Rc::new(Notify::default())).await.unwrap();
        assert_eq!(log.offsets().log_start, cut, "the start survives a reopen");
        assert_eq!(log.delete_records(-1).await.unwrap(), 400, "-1 is the high watermark");
        assert_eq!(bases(&log).len(), 1, "only the active segment is left: {:?}", bases(&log));
        assert_eq!(log.append(&[batch(10)], true).await.unwrap().base_offset, 400);
        assert_eq!(read_all(&log).await.first().map(|r| r.0), Some(400));
    });
}

/// What a crash between saving the start and deleting the segments leaves: `open` finishes the
/// deletion. A start file past the log's end (damage) is ignored, keeping the records.
#[test]
fn open_deletes_the_segments_below_a_saved_start_and_ignores_one_past_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    rt::run_local(async move {
        io_probe(&path).await;
        let p = path.join("p");
        let log = PartitionLog::open(p.clone(), small_segments(), Rc::new(Notify::default())).await.unwrap();
        for _ in 0..40 {
            log.append(&[batch(10)], true).await.unwrap();
        }
        let before = bases(&log);
        log.close().await.unwrap();
        drop(log);
        crate::io::fs::write_atomic_sync(&p.join("log-start-offset"), format!("{}\n", before[2] + 1).as_bytes()).unwrap();
        let log = PartitionLog::open(p.clone(), small_segments(), Rc::new(Notify::default())).await.unwrap();
        assert_eq!(log.offsets().log_start, before[2] + 1);
        assert_eq!(bases(&log), before[2..].to_vec());
        assert!(!segment_path(&p, before[1], "log").exists());
        log.close().await.unwrap();
        drop(log);
        crate::io::fs::write_atomic_sync(&p.join("log-start-offset"), b"999999\n").unwrap();
        let log = PartitionLog::open(p.clone(), small_segments(), Rc::new(Notify::default())).await.unwrap();
        assert_eq!(log.offsets().log_start, before[2], "a start past the end is ignored");
        assert_eq!(log.offsets().log_end, 400);
    });
}

#[test]
fn retention_deletes_the_oldest_closed_segments_by_size_then_by_age_never_the_active_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    rt::run_local(async move {
        io_probe(&path).await;
        let mut c = small_segments();
        c.retention_ms = -1;
        c.retention_bytes = 3000;
        let log = PartitionLog::open(path.join("p"), c.clone(), Rc::new(Notify::default())).await.unwrap();
        let now = now_ms();
        // The first half is a day old, the second half new.
        for i in 0..40 {
            log.append(&[batch_at(10, if i < 20 { now - 86_400_000 } else { now })], true).await.unwrap();
        }
        let before = bases(&log);
        assert!(log.enforce_retention(now).await.unwrap() > 0);
        let bytes = |log: &PartitionLog| log.disk_stats().bytes;
        let active_size = log.st.borrow().segments.values().next_back().unwrap().size;
        assert!(bytes(&log) <= 3000 + active_size.max(1000), "{} bytes kept", bytes(&log));
        assert!(bytes(&log) + 1000 > 3000, "no more deleted than the bound asks: {} bytes kept", bytes(&log));
        assert_eq!(log.offsets().log_start, bases(&log)[0]);
        assert_eq!(log.enforce_retention(now).await.unwrap(), 0, "nothing more is due");

        // By age: an hour's retention drops every closed segment of day-old records, and stops
        // at the first new one.
        let mut c2 = c.clone();
        c2.retention_bytes = -1;
        c2.retention_ms = 3_600_000;
        log.set_config(c2.clone());
        let after_size = bases(&log)[0];
        log.enforce_retention(now).await.unwrap();
        // Batches of 10 records: offsets 0..200 are a day old. The first segment holding a new
        // record is the one holding offset 200.
        let first_new = before.iter().copied().filter(|b| *b <= 200).max().unwrap();
        assert_eq!(bases(&log)[0], first_new.max(after_size), "{before:?}");
        assert_eq!(log.offsets().log_start, bases(&log)[0]);

        // `compact` alone never deletes; `compact,delete` does.
        c2.retention_ms = 0;
        c2.cleanup_policy = "compact".into();
        log.set_config(c2.clone());
        assert_eq!(log.enforce_retention(now + 10).await.unwrap(), 0);
        c2.cleanup_policy = "compact,delete".into();
        log.set_config(c2);
        assert!(log.enforce_retention(now + 10).await.unwrap() > 0);
        assert_eq!(bases(&log).len(), 1, "only the active segment is left");
        assert_eq!(log.offsets().log_start, *bases(&log).first().unwrap());
    });
}

/// Found by the storage simulation: a DeleteRecords whose save failed (a full disk) left the new
/// start in memory, and the same DeleteRecords asked again was answered from memory without
/// saving it, so a crash took back a start the client had been told.
#[test]
fn a_delete_records_whose_save_failed_is_saved_when_asked_again() {
    on_sim_disk(FaultPlan::default(), |disk| async move {
        let log = open_sim(segments_of(700)).await;
        for _ in 0..20 {
            log.append(&[batch(5)], true).await.unwrap();
        }
        disk.set_full(true);
        assert!(is_storage_error(&log.delete_records(40).await));
        disk.set_full(false);
        assert_eq!(log.delete_records(40).await.unwrap(), 40);
        drop(log);
        disk.kill();
        assert_eq!(open_sim(segments_of(700)).await.offsets().log_start, 40, "the answered start survived");
    });
}

/// Found by the storage simulation: of two DeleteRecords at once, the one with the lower offset
/// answered the start the other had set in memory but not yet saved. Each answers only a start
/// that is saved.
#[test]
fn concurrent_delete_records_answer_only_saved_starts() {
    let plan = FaultPlan { delay_yields_min: 1, delay_yields_max: 3, ..FaultPlan::default() };
    on_sim_disk(plan, |disk| async move {
        let log = open_sim(segments_of(700)).await;
        for _ in 0..20 {
            log.append(&[batch(5)], true).await.unwrap();
        }
        let (a, b) = (log.clone(), log.clone());
        let low = rt::spawn(async move { a.delete_records(10).await.unwrap() });
        let high = rt::spawn(async move { b.delete_records(-1).await.unwrap() });
        let (low, high) = (low.await, high.await);
        assert!(low >= 10 && high == 100, "answers {low} and {high}");
        drop(log);
        disk.kill();
        let start = open_sim(segments_of(700)).await.offsets().log_start;
        assert!(start >= low.max(high), "start {start} after answers {low} and {high}");
    });
}

/// Found by the storage simulation: once segments that compaction emptied lay wholly below the
/// log start and were deleted, the first segment began past the start, and a read at the start
/// found no segment at or before it and answered nothing, though records followed.
#[test]
fn a_read_at_a_start_before_the_first_segment_finds_the_records_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    rt::run_local(async move {
        io_probe(&path).await;
        let p = path.join("p");
        let log = PartitionLog::open(p.clone(), small_segments(), Rc::new(Notify::default())).await.unwrap();
        for _ in 0..30 {
            log.append(&[batch(10)], true).await.unwrap();
        }
        let bases = bases(&log);
        log.close().await.unwrap();
        drop(log);
        // What compaction can leave: a segment emptied (its records all superseded), the start
        // saved inside the gap it left.
        let empty = bases[1];
        crate::io::fs::write_atomic_sync(&segment_path(&p, empty, "log"), b"").unwrap();
        crate::io::fs::write_atomic_sync(&p.join("log-start-offset"), format!("{}\n", empty + 1).as_bytes()).unwrap();
        let log = PartitionLog::open(p.clone(), small_segments(), Rc::new(Notify::default())).await.unwrap();
        assert_eq!(log.offsets().log_start, empty + 1);
        assert_eq!(log.st.borrow().segments.keys().next(), Some(&bases[2]), "the emptied segment below the start is gone");
        let r = log.read(empty + 1, 1 << 20).await.unwrap();
        let mut first = None;
        batch::scan(&r.records, |_, h| {
            first.get_or_insert(h.base_offset);
        });
        assert_eq!(first, Some(bases[2]), "the read goes on from the next segment");
    });
}

/// A producer whose every batch went with deleted segments is still recognised, live and after
/// a reopen (the producer-state snapshots outlive the segments, as Kafka's do): its next
/// sequence is accepted, a retry of its last batch is answered as a duplicate, a gap and a stale
/// epoch are still refused.
#[test]
fn a_producer_whose_batches_were_all_deleted_is_still_recognised() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    rt::run_local(async move {
        io_probe(&path).await;
        let p = path.join("p");
        let log = PartitionLog::open(p.clone(), small_segments(), Rc::new(Notify::default())).await.unwrap();
        log.append(&[idem(9, 1, 0, 3)], true).await.unwrap();
        let last = log.append(&[idem(9, 1, 3, 3)], true).await.unwrap().base_offset;
        for _ in 0..20 {
            log.append(&[batch(10)], true).await.unwrap();
        }
        let end = log.offsets().log_end;
        assert_eq!(log.delete_records(end).await.unwrap(), end);
        assert!(bases(&log).iter().all(|b| *b > last), "the producer's segments are gone: {:?}", bases(&log));
        for reopen in [false, true] {
            let log = if reopen {
                PartitionLog::open(p.clone(), small_segments(), Rc::new(Notify::default())).await.unwrap()
            } else {
                log.clone()
            };
            let dup = log.append(&[idem(9, 1, 3, 3)], true).await.unwrap();
            assert_eq!(dup.base_offset, last, "reopen {reopen}: the retry of the last batch is a duplicate");
            assert!(matches!(log.append(&[idem(9, 1, 9, 1)], true).await, Err(LogError::OutOfOrderSequence(_))), "reopen {reopen}");
            assert!(matches!(log.append(&[idem(9, 0, 6, 1)], true).await, Err(LogError::InvalidProducerEpoch(_))), "reopen {reopen}");
            if reopen {
                let next = log.append(&[idem(9, 1, 6, 1)], true).await.unwrap();
                assert_eq!(next.base_offset, end, "the next sequence goes on");
            } else {
                log.close().await.unwrap();
            }
        }
    });
}

/// The `.free` files in a partition directory (deleted segments kept for the next rolls).
async fn free_files(dir: &Path) -> Vec<String> {
    crate::io::fs::list_dir(dir.to_path_buf()).await.unwrap().into_iter().filter(|n| n.ends_with(".free")).collect()
}

#[test]
fn deleted_segments_files_are_zeroed_and_reused_by_the_next_rolls_and_removed_when_none_takes_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    rt::run_local(async move {
        io_probe(&path).await;
        let p = path.join("p");
        let mut c = small_segments();
        c.retention_ms = -1;
        c.retention_bytes = 3000;
        let log = PartitionLog::open(p.clone(), c.clone(), Rc::new(Notify::default())).await.unwrap();
        for _ in 0..150 {
            log.append(&[batch(10)], true).await.unwrap();
        }
        let now = now_ms();
        let deleted = log.enforce_retention(now).await.unwrap();
        assert!(deleted > RECYCLED_FILES_MAX, "{deleted} segments deleted");
        let free = free_files(&p).await;
        assert_eq!(free.len(), RECYCLED_FILES_MAX, "{free:?}");
        for f in &free {
            let bytes = crate::io::fs::read(p.join(f)).await.unwrap().unwrap();
            assert!(!bytes.is_empty() && bytes.iter().all(|b| *b == 0), "{f} holds data");
            let base: i64 = f.strip_suffix(".free").unwrap().parse().unwrap();
            assert!(!segment_path(&p, base, "index").exists(), "{f}'s index was not removed");
        }

        // The next rolls take the kept files, newest first; every record reads back.
        let start = log.offsets().log_start;
        for _ in 0..20 {
            log.append(&[batch(10)], true).await.unwrap();
        }
        let left = free_files(&p).await.len();
        assert!(left < RECYCLED_FILES_MAX, "no roll took a kept file");
        let records = read_all(&log).await;
        assert_eq!(records.len() as i64, log.offsets().log_end - start);
        assert!(records.iter().zip(start..).all(|((o, _, _), want)| *o == want));

        // A roll cut short after taking a kept file leaves zeros under the next segment's name
        // while appends go on in the previous segment: recovery removes it and keeps the rest.
        let end = log.offsets().log_end;
        drop(log);
        let spare = free_files(&p).await.pop().unwrap();
        crate::io::fs::rename(p.join(&spare), segment_path(&p, end - 5, "log")).await.unwrap();
        let log = PartitionLog::open(p.clone(), c.clone(), Rc::new(Notify::default())).await.unwrap();
        assert_eq!(log.offsets().log_end, end);
        assert_eq!(read_all(&log).await.len() as i64, end - start);
        assert!(!segment_path(&p, end - 5, "log").exists());
        assert_eq!(free_files(&p).await.len(), left - 1, "the kept files are found again on open");

        // Kept files no roll takes go after a minute.
        c.retention_bytes = -1;
        log.set_config(c);
        log.enforce_retention(now_ms() + RECYCLED_KEEP_MS).await.unwrap();
        assert!(free_files(&p).await.is_empty());
    });
}

/// A follower's log: the leader's batches appended as they are (offsets and epochs kept, the
/// epoch cache learnt from them, the bytes identical), the high watermark replication allows
/// holding reads back, and a cut back to where it agrees with a new leader surviving reopen.
#[test]
fn a_follower_appends_the_leaders_batches_as_they_are_and_cuts_back_where_it_diverges() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    rt::run_local(async move {
        io_probe(&path).await;
        let leader = PartitionLog::open(path.join("leader"), small_segments(), Rc::new(Notify::default())).await.unwrap();
        let follower = PartitionLog::open(path.join("follower"), small_segments(), Rc::new(Notify::default())).await.unwrap();
        for epoch in [1, 3] {
            leader.set_leader_epoch(epoch).await.unwrap();
            for _ in 0..20 {
                leader.append(&[batch(5)], false).await.unwrap();
            }
        }
        // Copy it over in fetch-sized pieces, as a fetcher does.
        while follower.offsets().log_end < leader.offsets().log_end {
            let r = leader.read_for_replica(follower.offsets().log_end, 700).await.unwrap();
            let batches = batch::split(&r.records).unwrap();
            follower.append_replica(batches, 3, true).await.unwrap();
        }
        assert_eq!(follower.offsets().log_end, 200);
        assert_eq!(follower.end_offset_for_epoch(1), (1, 100), "epoch 1 ended where epoch 3 began");
        assert_eq!((follower.leader_epoch(), follower.last_fetched_epoch()), (3, 3));
        let (a, b) = (leader.read_for_replica(0, usize::MAX).await.unwrap(), follower.read_for_replica(0, usize::MAX).await.unwrap());
        assert_eq!(a.records, b.records, "the same bytes at the same offsets");
        // Replication holds what readers see back.
        follower.set_replicated_high_watermark(Some(50));
        assert_eq!(follower.offsets().high_watermark, 50);
        let r = follower.read(40, usize::MAX).await.unwrap();
        let mut last = 0;
        batch::scan(&r.records, |_, h| last = h.last_offset());
        assert!(!r.records.is_empty() && last < 50, "nothing past the high watermark: last offset {last}");
        assert!(follower.read(50, usize::MAX).await.unwrap().records.is_empty());
        follower.set_replicated_high_watermark(Some(30));
        assert_eq!(follower.offsets().high_watermark, 50, "never back");
        // A new leader had epoch 1 only up to offset 75: cut back there, reopen.
        follower.cut_for_reopen(75, false).await.unwrap();
        let reopened = PartitionLog::open(path.join("follower"), small_segments(), Rc::new(Notify::default())).await.unwrap();
        assert_eq!(reopened.offsets().log_end, 75);
        assert_eq!((reopened.leader_epoch(), reopened.last_fetched_epoch()), (1, 1), "epoch 3's entry went with its records");
        let again = leader.read_for_replica(75, usize::MAX).await.unwrap();
        let mut from_75 = batch::split(&again.records).unwrap();
        from_75.retain(|(_, h)| h.base_offset < 100);
        reopened.append_replica(from_75, 3, true).await.unwrap();
        assert_eq!(reopened.offsets().log_end, 100);
        // A replica the leader has deleted past starts over at the leader's log start.
        reopened.cut_for_reopen(150, true).await.unwrap();
        let fresh = PartitionLog::open(path.join("follower"), small_segments(), Rc::new(Notify::default())).await.unwrap();
        let o = fresh.offsets();
        assert_eq!((o.log_start, o.log_end), (150, 150));
        let rest = batch::split(&leader.read_for_replica(150, usize::MAX).await.unwrap().records).unwrap();
        fresh.append_replica(rest, 3, true).await.unwrap();
        assert_eq!(fresh.offsets().log_end, 200);
        // Once this replica leads (epoch 4 began here), a fetch the old leader answered is not
        // appended after the new epoch's start.
        fresh.set_leader_epoch(4).await.unwrap();
        let stale = fresh.append_replica(vec![batch(1)], 3, true).await;
        assert!(matches!(stale, Err(LogError::FencedLeaderEpoch(_))), "{stale:?}");
        assert_eq!(fresh.offsets().log_end, 200);
        for log in [leader, fresh] {
            log.close().await.unwrap();
        }
    });
}

/// A transactional batch of keyed records (`None` value: a tombstone).
fn keyed_txn(pid: i64, epoch: i16, seq: i32, recs: &[(&str, Option<&str>)]) -> (Bytes, BatchHeader) {
    let recs: Vec<_> = recs.iter().map(|(k, v)| (Some(Bytes::from(k.to_string())), v.map(|v| Bytes::from(v.to_string())))).collect();
    producer_batch(&recs, pid, epoch, seq, 0x10)
}

/// The control batches in the log: (offset, header).
async fn markers_in(log: &PartitionLog) -> Vec<(i64, BatchHeader)> {
    batches_from_start(log).await.into_iter().filter(|(_, h, at)| h.is_control() && h.base_offset >= *at).map(|(_, h, _)| (h.base_offset, h)).collect()
}

/// Kafka's cleaner's rules for transactions: an aborted transaction's records go (and never
/// supersede), a committed one's are compacted as others, a marker stays while its
/// transaction has records in the log, is then stamped with a delete horizon, and goes after
/// it, taking its aborted-index entry along; nothing at or past the last stable offset is
/// cleaned.
#[test]
fn compaction_drops_aborted_transactions_then_their_markers_after_the_delete_horizon() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    rt::run_local(async move {
        let (p, c, log) = compacted_log(&path).await;
        let plain = |k: &str, v: &str| {
            let b = batch::build(&[(Some(Bytes::from(k.to_string())), Some(Bytes::from(v.to_string())))], 1_000);
            let h = batch::validate(&b).unwrap();
            (b, h)
        };
        let filler = |log: Rc<PartitionLog>, n: usize, tag: &'static str| async move {
            for i in 0..n {
                log.append(&[plain(&format!("{tag}{}", i % 3), "x")], true).await.unwrap();
            }
        };
        let v0 = log.append(&[plain("k0", "v0")], true).await.unwrap().base_offset;
        // Producer 7 aborts k0 and k1; producer 8 commits k1 and k2; k2 is then written again.
        let aborted = log.append(&[keyed_txn(7, 0, 0, &[("k0", Some("a")), ("k1", Some("a"))])], true).await.unwrap().base_offset;
        let abort_at = log.append(&[marker_batch(7, 0, false, 0)], true).await.unwrap().base_offset;
        let committed = log.append(&[keyed_txn(8, 0, 0, &[("k1", Some("c")), ("k2", Some("c"))])], true).await.unwrap().base_offset;
        let commit_at = log.append(&[marker_batch(8, 0, true, 0)], true).await.unwrap().base_offset;
        log.append(&[plain("k2", "v2")], true).await.unwrap();
        filler(log.clone(), 30, "f").await;
        assert_eq!(log.aborted_transactions(0, i64::MAX), vec![(7, aborted)]);
        let now = now_ms();

        let (rewritten, dropped) = log.compact(now).await.unwrap();
        assert!(rewritten > 0, "{rewritten} {dropped}");
        let values: Vec<(i64, Option<Bytes>, Option<Bytes>)> = read_all(&log).await;
        let at = |o: i64| values.iter().find(|(x, _, _)| *x == o).map(|(_, k, v)| (k.clone(), v.clone()));
        assert_eq!(at(v0), Some((Some(Bytes::from("k0")), Some(Bytes::from("v0")))), "an aborted record supersedes nothing");
        assert_eq!(at(aborted), None, "the aborted transaction's records are gone");
        assert_eq!(at(aborted + 1), None);
        assert_eq!(at(committed), Some((Some(Bytes::from("k1")), Some(Bytes::from("c")))), "a committed record stays");
        assert_eq!(at(committed + 1), None, "a committed record superseded by a later one goes");
        let m: Vec<i64> = markers_in(&log).await.iter().map(|(o, _)| *o).collect();
        assert_eq!(m, vec![abort_at, commit_at], "the pass that drops a transaction's records keeps its marker");

        // The next pass (a segment closed since) finds the abort marker alone: stamped.
        filler(log.clone(), 30, "g").await;
        log.compact(now).await.unwrap();
        let m = markers_in(&log).await;
        assert_eq!(m.iter().map(|(o, _)| *o).collect::<Vec<_>>(), vec![abort_at, commit_at]);
        assert_eq!(m[0].1.delete_horizon(), Some(now + 60_000), "the abort marker's delete horizon");
        assert_eq!(m[1].1.delete_horizon(), None, "the commit marker's transaction still has a record");
        assert_eq!(log.aborted_transactions(0, i64::MAX), vec![(7, aborted)], "the index keeps the entry while its marker is there");

        // Before the horizon nothing changes; past it, without a new segment, the marker goes,
        // and its index entry with it, also after a reopen.
        assert_eq!(log.compact(now + 59_000).await.unwrap(), (0, 0));
        let (rewritten, _) = log.compact(now + 60_001).await.unwrap();
        assert!(rewritten > 0);
        assert_eq!(markers_in(&log).await.iter().map(|(o, _)| *o).collect::<Vec<_>>(), vec![commit_at]);
        assert_eq!(log.aborted_transactions(0, i64::MAX), vec![]);
        let end = log.offsets().log_end;
        drop(log);
        let log = PartitionLog::open(p.clone(), c.clone(), Rc::new(Notify::default())).await.unwrap();
        assert_eq!(log.aborted_transactions(0, i64::MAX), vec![], "after a reopen too");
        assert_eq!(log.offsets().log_end, end);
        assert_eq!(log.read_committed(0, 1 << 20).await.unwrap().records.is_empty(), false);

        // An open transaction holds compaction back at its first offset: nothing from there on
        // is cleaned, not even plain records superseded before it.
        let open = log.append(&[keyed_txn(9, 0, 0, &[("k1", Some("open"))])], true).await.unwrap().base_offset;
        filler(log.clone(), 40, "h").await;
        let before = read_all(&log).await;
        log.compact(now + 120_000).await.unwrap();
        let after = read_all(&log).await;
        assert_eq!(
            before.iter().filter(|r| r.0 >= open).collect::<Vec<_>>(),
            after.iter().filter(|r| r.0 >= open).collect::<Vec<_>>(),
            "records at or past the last stable offset {open} are not cleaned"
        );
        assert_eq!(at(committed), read_all(&log).await.iter().find(|r| r.0 == committed).map(|(_, k, v)| (k.clone(), v.clone())), "the open transaction's k1 supersedes nothing yet");
    });
}

/// Kafka's verification guard: a transactional batch verified before a marker of its producer
/// landed is refused (the marker may have ended the verified transaction), one verified after
/// it, or after another producer's marker, is taken.
#[test]
fn a_verification_is_stale_once_a_marker_of_its_producer_lands() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    rt::run_local(async move {
        io_probe(&path).await;
        let log = PartitionLog::open(path.join("p"), config(), Rc::new(Notify::default())).await.unwrap();
        let owned = |(b, h): (Bytes, BatchHeader)| vec![(bytes::BytesMut::from(&b[..]), h)];
        log.append(&[txn_batch(5, 0, 0, 2)], true).await.unwrap();
        let verified = log.marker_token(5);
        log.append(&[marker_batch(5, 0, true, 0)], true).await.unwrap();
        assert_ne!(log.marker_token(5), verified);
        let late = log.append_owned_verified(owned(txn_batch(5, 0, 2, 1)), true, Some(verified)).await;
        assert!(matches!(late, Err(LogError::VerificationStale(_))), "{late:?}");
        assert!(!log.in_transaction(5, 0), "the stale batch opened nothing");
        let other = log.marker_token(5);
        log.append(&[txn_batch(6, 0, 0, 1)], true).await.unwrap();
        log.append(&[marker_batch(6, 0, false, 0)], true).await.unwrap();
        assert_eq!(log.marker_token(5), other, "another producer's marker leaves it");
        log.append_owned_verified(owned(txn_batch(5, 0, 2, 1)), true, Some(other)).await.unwrap();
        assert!(log.in_transaction(5, 0));
        // Once its transaction is open here, a further batch needs no verification.
        log.append_owned_verified(owned(txn_batch(5, 0, 3, 1)), true, Some(verified)).await.unwrap();
    });
}

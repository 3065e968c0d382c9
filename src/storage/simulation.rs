//! Deterministic simulation of one partition's storage: a [`PartitionLog`] (with its producer
//! state and compaction) on the fault-injecting [`SimDisk`], driven by random steps drawn from
//! one seed and checked against a model after every step.
//!
//! A scenario (all from the seed): a topic config (segment size, flush policy, compaction), a
//! fault plan (torn writes, failed fdatasyncs, slow I/O, or none at all), and a few hundred steps:
//! appends (acks=all and acks=1, idempotent producers with retries and epoch bumps, plain
//! producers with blind retries, one or two batches; transactional producers' batches and
//! their COMMIT/ABORT markers, some at the bumped epoch of transaction version 2, a fencing ABORT
//! at a bumped epoch after a failure or a crash),
//! left in flight so they pipeline and
//! group-commit; settling them; reads; compaction passes, interval flushes, DeleteRecords and
//! (in seeds with a `retention.bytes`) retention passes running beside the appends; a full disk for a while (then a check that writes resume); clean restarts; kills
//! (the process dies, the OS keeps what was written); power losses (unsynced writes dropped or
//! torn), sometimes again during recovery.
//!
//! What is checked, after every step and across every crash:
//! - offsets: `log_start <= durable <= high_watermark <= log_end`; the high watermark, the
//!   durable offset and the log start never go back while the log is open, and the log start
//!   never falls below one a DeleteRecords was answered with, across any crash; a reopened log ends at or past what the
//!   crash promised to keep (the durable offset at a power loss, the high watermark at a kill);
//! - contents: every batch read is one that was appended, at an offset where its records keep
//!   their bytes (compaction may drop records, never change them); an idempotent batch is in the
//!   log at most once; every acknowledged append is readable at its offset until a crash may
//!   take it (acks=all with the default flush policy: never), and everything below the durable
//!   offset at a power loss is still there after it (on a compacted topic a record may instead be
//!   superseded by a later one of its key that is still there, and an aborted transaction's
//!   batch may be gone whole; a marker may carry a delete horizon), unless it lies below the log
//!   start;
//! - errors: a storage error only when a fault was injected; idempotence errors only for
//!   idempotent batches; after a failed fdatasync of a segment nothing more is acknowledged
//!   past the durable offset, and nothing new is accepted, until the log is reopened;
//! - transactions: read as a consumer reads them (transactional batches open one per producer,
//!   markers close it), no transaction still open may begin below the last stable offset the
//!   log gave, and every aborted one is in the aborted-transaction index, across every crash;
//!   once every producer's transaction is aborted, the last stable offset is the high watermark,
//!   also after a restart;
//! - liveness: after a full disk frees, or any failed write, a fault-free append succeeds.
//!
//! Replay one seed with `SPATE_SIM_SEED=<seed>` (add `SPATE_SIM_VERBOSE=1` for every step); run
//! many with `SPATE_SIM_SEEDS=<n> cargo test --lib simulation::many_seeds -- --ignored`.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;

use super::log::{AppendInfo, LogError, Offsets, PartitionLog};
use crate::sync::Notify;
use crate::config::{Config, ServeArgs, TopicConfig};
use crate::io::rt;
use crate::io::sim_disk::{FaultPlan, FaultStats, Rng, SimDisk};
use crate::protocol::batch::{self, BatchHeader};

/// Batch timestamps are `T0 + id`: they name the batch, and compaction keeps them.
const T0: i64 = 1_600_000_000_000;

/// How long a settle may wait for in-flight work before the partition counts as wedged.
const WEDGED_AFTER: Duration = Duration::from_secs(20);

/// One batch the simulation built.
struct Sent {
    bytes: Bytes,
    header: BatchHeader,
    /// Each record's bytes by offset delta, to check records that compaction left.
    records: Vec<Vec<u8>>,
    /// Each record's key by offset delta.
    keys: Vec<Option<Bytes>>,
}

/// An acknowledged append the log must still hold.
#[derive(Debug, Clone, Copy)]
struct Ack {
    id: u64,
    base: i64,
    end: i64,
    /// acks=all under the default flush policy: must survive any crash.
    durable: bool,
}

/// A transactional producer as a client and its coordinator drive it: data batches (with
/// sequences) while a transaction is open, then a COMMIT or ABORT marker.
struct TxnProducer {
    pid: i64,
    epoch: i16,
    next_seq: i32,
    /// A transaction may be open (data sent since its last marker was acknowledged).
    open: bool,
    /// A batch of it failed, or the broker crashed: the next step is an ABORT marker at a bumped
    /// epoch, as its coordinator fences and aborts (then sequences start again at 0).
    fence: bool,
}

/// An idempotent producer as a client drives it.
struct Producer {
    pid: i64,
    epoch: i16,
    next_seq: i32,
    /// Its last batches in this epoch (the ones a retry may resend).
    recent: VecDeque<u64>,
}

enum Job {
    /// `txn`: a transactional producer's batch or marker (by index into `Sim::txns`).
    Append { ids: Vec<u64>, wait_durable: bool, producer: Option<usize>, txn: Option<usize> },
    Compact,
    Flush,
    DeleteRecords { target: i64 },
    Retention,
}

enum Outcome {
    Append { result: Result<AppendInfo, LogError>, at: Offsets, segment_sync_errors: u64 },
    Done(Result<(), LogError>),
    Deleted(Result<i64, LogError>),
}

struct InFlight {
    job: Job,
    task: rt::Task<Outcome>,
}

/// A record as read back: (offset, key), by batch.
struct Seen {
    base: i64,
    end: i64,
    id: u64,
    bytes: Bytes,
    records: Vec<(i64, Option<Bytes>)>,
}

/// Totals over seeds, for the report of a long run.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub seeds: u64,
    pub steps: u64,
    pub acked: u64,
    pub refused: u64,
    pub restarts: u64,
    /// DeleteRecords answered.
    pub deletes: u64,
    pub faults: FaultStats,
}

impl Summary {
    fn add(&mut self, o: &Summary) {
        self.seeds += o.seeds;
        self.steps += o.steps;
        self.acked += o.acked;
        self.refused += o.refused;
        self.restarts += o.restarts;
        self.deletes += o.deletes;
        let (a, b) = (&mut self.faults, &o.faults);
        a.writes += b.writes;
        a.torn_writes += b.torn_writes;
        a.enospc += b.enospc;
        a.syncs += b.syncs;
        a.sync_errors += b.sync_errors;
        a.segment_sync_errors += b.segment_sync_errors;
        a.kills += b.kills;
        a.power_losses += b.power_losses;
        a.writes_lost += b.writes_lost;
        a.writes_torn_at_crash += b.writes_torn_at_crash;
    }
}

struct Sim {
    seed: u64,
    rng: Rng,
    /// Draws for DeleteRecords and retention, apart from `rng`, so that every seed's other
    /// choices stay what they were before these steps existed.
    rng2: Rng,
    /// Draws for transactions, apart from the others for the same reason.
    rng3: Rng,
    txns: Vec<TxnProducer>,
    /// The highest log start a DeleteRecords was answered with: never lost, by any crash.
    acked_start: i64,
    disk: Rc<SimDisk>,
    dir: PathBuf,
    config: TopicConfig,
    compacted: bool,
    plan: FaultPlan,
    keys: u64,
    verbose: bool,
    step: usize,
    log: Option<Rc<PartitionLog>>,
    tasks: Vec<InFlight>,
    sent: Vec<Sent>,
    acks: Vec<Ack>,
    producers: Vec<Producer>,
    /// Plain batches that failed, for blind retries.
    failed_plain: Vec<u64>,
    /// Steps left before a full disk frees.
    full_for: u32,
    // Per open log:
    last: Offsets,
    segment_sync_errors_at_open: u64,
    /// The durable offset when a failed segment fdatasync was first seen, if one was.
    offline_at: Option<i64>,
    faults_at_open: u64,
    summary: Summary,
}

fn fail(msg: String) -> ! {
    panic!("{msg}")
}

macro_rules! check {
    ($sim:expr, $cond:expr, $($arg:tt)+) => {
        if !$cond {
            fail(format!("seed {} step {}: {}", $sim.seed, $sim.step, format!($($arg)+)))
        }
    };
}

fn topic_config(rng: &mut Rng) -> (TopicConfig, bool) {
    let c = Config::from_args(&ServeArgs { cores: Some(1), ..Default::default() }).expect("default config");
    let mut t = TopicConfig::resolve(&c.topic_defaults, &Default::default()).expect("default topic config");
    t.segment_bytes = [700, 1500, 4000, 30_000][rng.below(4) as usize];
    t.index_interval_bytes = [0, 200, 1000, 4096][rng.below(4) as usize];
    if rng.chance(250) {
        // Kafka's interval flush: acks=all no longer waits for fdatasync.
        t.flush_messages = 2 + rng.below(20) as i64;
        t.flush_ms = if rng.chance(500) { 0 } else { i64::MAX };
    }
    let compacted = rng.chance(350);
    if compacted {
        t.cleanup_policy = "compact".into();
        // Tombstones are kept: the model checks that a record is still there or superseded.
        t.delete_retention_ms = i64::MAX / 4;
    }
    (t, compacted)
}

fn fault_plan(rng: &mut Rng) -> FaultPlan {
    if rng.chance(200) {
        return FaultPlan::default();
    }
    FaultPlan {
        write_error_per_mille: [0, 5, 20, 60][rng.below(4) as usize],
        sync_error_per_mille: [0, 0, 5, 20][rng.below(4) as usize],
        delay_yields_min: 0,
        delay_yields_max: [0, 1, 3, 8][rng.below(4) as usize],
    }
}

/// Every batch from the log start to the high watermark, checked against what was sent.
async fn scan(sim: &Sim, log: &PartitionLog) -> Vec<Seen> {
    let hw = log.offsets().high_watermark;
    let mut at = log.offsets().log_start;
    let mut out: Vec<Seen> = Vec::new();
    while at < hw {
        let r = match log.read(at, 16 * 1024).await {
            Ok(r) => r,
            // The start moved past `at` meanwhile (DeleteRecords or retention in flight): go on
            // from it, without what now lies below it.
            Err(LogError::OffsetOutOfRange { log_start, .. }) if at < log_start => {
                at = log_start;
                out.retain(|s| s.end > log_start);
                continue;
            }
            Err(e) => fail(format!("seed {} step {}: reading at {at}: {e}", sim.seed, sim.step)),
        };
        if r.records.is_empty() {
            break;
        }
        let mut batches = Vec::new();
        let end = batch::scan(&r.records, |pos, h| batches.push((pos, *h)));
        check!(sim, end.problem.is_none() && end.valid_len == r.records.len(), "read at {at} returned damaged bytes: {end:?}");
        for (pos, h) in batches {
            check!(sim, h.last_offset() >= at, "read at {at} returned batch {}..={} wholly before it", h.base_offset, h.last_offset());
            check!(sim, h.base_offset < r.high_watermark, "batch at {} is past the high watermark {}", h.base_offset, r.high_watermark);
            check!(sim, out.last().is_none_or(|p| h.base_offset >= p.end), "batches overlap or go back at {}", h.base_offset);
            out.push(sim.identify(&r.records.slice(pos..pos + h.total_len()), &h));
            at = h.last_offset() + 1;
        }
    }
    out
}

impl Sim {
    fn new(seed: u64, verbose: bool) -> Sim {
        let mut rng = Rng::new(seed);
        let (mut config, compacted) = topic_config(&mut rng);
        let mut rng2 = Rng::new(seed ^ 0x5eed_de1e7e);
        if rng2.chance(300) {
            // Retention by size; on a compacted topic, `compact,delete`.
            config.retention_bytes = [1_500, 4_000, 12_000][rng2.below(3) as usize];
            if compacted {
                config.cleanup_policy = "compact,delete".into();
            }
        }
        let plan = fault_plan(&mut rng);
        let disk = SimDisk::new(rng.next_u64(), plan);
        let keys = 1 + rng.below(8);
        let producers = (0..rng.below(4))
            .map(|i| Producer { pid: 1000 + i as i64, epoch: 0, next_seq: 0, recent: VecDeque::new() })
            .collect();
        let mut rng3 = Rng::new(seed ^ 0x7a_c7_10_75);
        let txns = (0..rng3.below(4)).map(|i| TxnProducer { pid: 5000 + i as i64, epoch: 0, next_seq: 0, open: false, fence: false }).collect();
        Sim {
            seed,
            rng,
            rng2,
            rng3,
            txns,
            acked_start: 0,
            disk,
            dir: PathBuf::from(format!("/sim/{seed}/topic-0")),
            config,
            compacted,
            plan,
            keys,
            verbose,
            step: 0,
            log: None,
            tasks: Vec::new(),
            sent: Vec::new(),
            acks: Vec::new(),
            producers,
            failed_plain: Vec::new(),
            full_for: 0,
            last: Offsets { log_start: 0, high_watermark: 0, log_end: 0, durable: 0, written: 0 },
            segment_sync_errors_at_open: 0,
            offline_at: None,
            faults_at_open: 0,
            summary: Summary { seeds: 1, ..Summary::default() },
        }
    }

    fn say(&self, what: impl FnOnce() -> String) {
        if self.verbose {
            eprintln!("[seed {} step {}] {}", self.seed, self.step, what());
        }
    }

    fn log(&self) -> Rc<PartitionLog> {
        self.log.clone().expect("the log is open between steps")
    }

    fn faults_seen(&self) -> u64 {
        let s = self.disk.stats();
        s.torn_writes + s.enospc + s.sync_errors
    }

    /// Whether a storage error may be explained by an injected fault.
    fn faulty(&self) -> bool {
        self.disk.plan() != FaultPlan::default() || self.disk.is_full() || self.faults_seen() > self.faults_at_open
    }

    fn offline(&self) -> bool {
        self.disk.stats().segment_sync_errors > self.segment_sync_errors_at_open
    }

    // --- building batches ---

    fn build(&mut self, producer: Option<(i64, i16, i32)>, n: usize) -> u64 {
        let id = self.sent.len() as u64;
        let mut recs = Vec::new();
        for i in 0..n {
            let key = if self.compacted && !self.rng.chance(100) {
                Some(Bytes::from(format!("k{}", self.rng.below(self.keys))))
            } else {
                None
            };
            let value = if self.compacted && key.is_some() && self.rng.chance(100) {
                None
            } else {
                Some(Bytes::from(format!("v{id}.{i}{}", "x".repeat(self.rng.below(40) as usize))))
            };
            recs.push((key, value));
        }
        let mut b = batch::build(&recs, T0 + id as i64).to_vec();
        if let Some((pid, epoch, seq)) = producer {
            b[43..51].copy_from_slice(&pid.to_be_bytes());
            b[51..53].copy_from_slice(&epoch.to_be_bytes());
            b[53..57].copy_from_slice(&seq.to_be_bytes());
            let crc = crc32c::crc32c(&b[21..]);
            b[17..21].copy_from_slice(&crc.to_be_bytes());
        }
        self.register(Bytes::from(b))
    }

    /// Keeps a batch the simulation built (named by its id, `T0 + id` in its timestamp) with
    /// its records and keys, for checking what reads return.
    fn register(&mut self, bytes: Bytes) -> u64 {
        let id = self.sent.len() as u64;
        let header = batch::validate(&bytes).expect("a batch the simulation built is valid");
        let mut records = Vec::new();
        let mut keys = Vec::new();
        batch::visit(&bytes, &header, |r, rb| {
            records.push(rb.to_vec());
            keys.push(r.key.map(Bytes::copy_from_slice));
        })
        .expect("an uncompressed batch");
        self.sent.push(Sent { bytes, header, records, keys });
        id
    }

    /// A transactional batch of producer `pid` (its sequence `seq`), or with `marker` its
    /// COMMIT/ABORT control batch; registered like any other so reads can name it.
    fn build_txn(&mut self, pid: i64, epoch: i16, seq: i32, n: usize, marker: Option<bool>) -> u64 {
        let id = self.sent.len() as u64;
        let bytes = match marker {
            Some(commit) => batch::build_marker(pid, epoch, batch::Marker { commit, coordinator_epoch: 0 }, T0 + id as i64),
            None => {
                // On a compacted topic the records share the plain ones' keys, so committed
                // transactions supersede and are superseded, and aborted ones must not.
                let (compacted, keys) = (self.compacted, self.keys);
                let recs: Vec<_> = (0..n)
                    .map(|i| {
                        let key = compacted.then(|| Bytes::from(format!("k{}", self.rng3.below(keys))));
                        (key, Some(Bytes::from(format!("t{id}.{i}"))))
                    })
                    .collect();
                let mut b = batch::build_transactional(&recs, T0 + id as i64, pid, epoch).to_vec();
                b[53..57].copy_from_slice(&seq.to_be_bytes());
                let crc = crc32c::crc32c(&b[21..]);
                b[17..21].copy_from_slice(&crc.to_be_bytes());
                Bytes::from(b)
            }
        };
        self.register(bytes)
    }

    /// One step of a transactional producer that has nothing in flight: a fencing ABORT marker
    /// after a failure or a crash, or the end of its open transaction, or more data in it.
    fn txn_step(&mut self) {
        let t = self.rng3.below(self.txns.len() as u64) as usize;
        let busy = self.tasks.iter().any(|f| matches!(f.job, Job::Append { txn: Some(x), .. } if x == t));
        if busy {
            return;
        }
        let wait_durable = self.rng3.chance(600);
        let pr = &self.txns[t];
        let (pid, epoch, seq) = (pr.pid, pr.epoch, pr.next_seq);
        let id = if pr.fence {
            let id = self.build_txn(pid, epoch + 1, 0, 1, Some(false));
            let pr = &mut self.txns[t];
            (pr.epoch, pr.next_seq, pr.fence) = (epoch + 1, 0, false);
            id
        } else if pr.open && self.rng3.chance(300) {
            let commit = self.rng3.chance(500);
            if self.rng3.chance(500) {
                // Transaction version 2: the marker carries the epoch its coordinator bumped
                // to, and the producer goes on at that epoch with sequences from 0.
                let id = self.build_txn(pid, epoch + 1, 0, 1, Some(commit));
                let pr = &mut self.txns[t];
                (pr.epoch, pr.next_seq) = (epoch + 1, 0);
                id
            } else {
                self.build_txn(pid, epoch, 0, 1, Some(commit))
            }
        } else {
            let n = 1 + self.rng3.below(4) as usize;
            let id = self.build_txn(pid, epoch, seq, n, None);
            let pr = &mut self.txns[t];
            pr.next_seq += n as i32;
            pr.open = true;
            id
        };
        self.spawn_append_as(vec![id], wait_durable, None, Some(t));
    }

    /// Checks a batch read from the log against the one sent, and names it.
    fn identify(&self, b: &Bytes, h: &BatchHeader) -> Seen {
        // A marker compaction stamped with a delete horizon carries it as its base timestamp;
        // its one record keeps its time, the batch's largest.
        let stamped = h.is_control() && h.delete_horizon().is_some();
        let named = if stamped { h.max_timestamp } else { h.base_timestamp };
        let id = (named - T0) as u64;
        check!(self, named >= T0 && (id as usize) < self.sent.len(), "batch at {} was never appended", h.base_offset);
        let s = &self.sent[id as usize];
        let sh = &s.header;
        let attributes = if stamped { sh.attributes | 0x40 } else { sh.attributes };
        let same = (h.producer_id, h.producer_epoch, h.base_sequence, h.last_offset_delta, h.attributes, h.max_timestamp)
            == (sh.producer_id, sh.producer_epoch, sh.base_sequence, sh.last_offset_delta, attributes, sh.max_timestamp);
        check!(self, same, "batch {id} at {} has a header that was never sent: {h:?} vs {sh:?}", h.base_offset);
        let mut records = Vec::new();
        if stamped {
            check!(self, self.compacted, "marker {id} at {} stamped without compaction", h.base_offset);
            let horizon = h.delete_horizon().expect("stamped");
            let want = batch::with_delete_horizon(&s.bytes, sh, horizon);
            check!(
                self,
                want.is_some_and(|w| b[8..12] == w[8..12] && b[16..] == w[16..]),
                "marker {id} at {} changed beyond its delete horizon",
                h.base_offset
            );
            for (i, k) in s.keys.iter().enumerate() {
                records.push((h.base_offset + i as i64, k.clone()));
            }
        } else if h.records_count == sh.records_count {
            check!(self, b[8..12] == s.bytes[8..12] && b[16..] == s.bytes[16..], "batch {id} at {} has changed bytes", h.base_offset);
            for (i, k) in s.keys.iter().enumerate() {
                records.push((h.base_offset + i as i64, k.clone()));
            }
        } else {
            check!(self, self.compacted, "batch {id} at {} lost records without compaction", h.base_offset);
            let ok = batch::visit(b, h, |r, rb| {
                let delta = (r.offset - h.base_offset) as usize;
                let sent = s.records.get(delta);
                check!(self, sent.is_some_and(|x| x[..] == *rb), "record {} of batch {id} is not one that was sent", r.offset);
                records.push((r.offset, r.key.map(Bytes::copy_from_slice)));
            });
            check!(self, ok.is_some(), "batch {id} at {} does not parse", h.base_offset);
        }
        Seen { base: h.base_offset, end: h.last_offset() + 1, id, bytes: b.clone(), records }
    }

    // --- the steps ---

    fn spawn_append(&mut self, ids: Vec<u64>, wait_durable: bool, producer: Option<usize>) {
        self.spawn_append_as(ids, wait_durable, producer, None)
    }

    fn spawn_append_as(&mut self, ids: Vec<u64>, wait_durable: bool, producer: Option<usize>, txn: Option<usize>) {
        let log = self.log();
        let disk = self.disk.clone();
        let batches: Vec<(Bytes, BatchHeader)> =
            ids.iter().map(|&id| (self.sent[id as usize].bytes.clone(), self.sent[id as usize].header)).collect();
        self.say(|| format!("append {ids:?} acks={} producer {producer:?} txn {txn:?}", if wait_durable { "all" } else { "1" }));
        let task = rt::spawn(async move {
            let result = log.append(&batches, wait_durable).await;
            Outcome::Append { result, at: log.offsets(), segment_sync_errors: disk.stats().segment_sync_errors }
        });
        self.tasks.push(InFlight { job: Job::Append { ids, wait_durable, producer, txn }, task });
    }

    fn append_step(&mut self) {
        let wait_durable = self.rng.chance(600);
        if !self.producers.is_empty() && self.rng.chance(500) {
            let p = self.rng.below(self.producers.len() as u64) as usize;
            if self.rng.chance(20) {
                let pr = &mut self.producers[p];
                pr.epoch += 1;
                pr.next_seq = 0;
                pr.recent.clear();
            }
            let retry = self.rng.chance(200) && !self.producers[p].recent.is_empty();
            let id = if retry {
                let pr = &self.producers[p];
                pr.recent[self.rng.below(pr.recent.len() as u64) as usize]
            } else {
                let n = 1 + self.rng.below(4) as usize;
                let (pid, epoch, seq) = (self.producers[p].pid, self.producers[p].epoch, self.producers[p].next_seq);
                let id = self.build(Some((pid, epoch, seq)), n);
                let pr = &mut self.producers[p];
                pr.next_seq += n as i32;
                pr.recent.push_back(id);
                while pr.recent.len() > 5 {
                    pr.recent.pop_front();
                }
                id
            };
            self.spawn_append(vec![id], wait_durable, Some(p));
            return;
        }
        if !self.failed_plain.is_empty() && self.rng.chance(100) {
            let id = self.failed_plain[self.rng.below(self.failed_plain.len() as u64) as usize];
            self.spawn_append(vec![id], wait_durable, None);
            return;
        }
        let batches = if self.rng.chance(150) { 2 } else { 1 };
        let ids = (0..batches)
            .map(|_| {
                let n = 1 + self.rng.below(5) as usize;
                self.build(None, n)
            })
            .collect();
        self.spawn_append(ids, wait_durable, None);
    }

    /// Takes in a finished job's outcome.
    fn absorb(&mut self, job: Job, outcome: Outcome) {
        match (job, outcome) {
            (Job::Append { ids, wait_durable, producer, txn }, Outcome::Append { result, at, segment_sync_errors }) => match result {
                Ok(info) => {
                    self.summary.acked += 1;
                    if let Some(t) = txn.filter(|_| self.sent[ids[0] as usize].header.is_control()) {
                        // The marker is written: its producer's transaction is over (a newer
                        // one begun meanwhile cannot be: data waits for the marker's answer).
                        self.txns[t].open = false;
                    }
                    let mut base = info.base_offset;
                    for id in ids {
                        let end = base + self.sent[id as usize].header.last_offset_delta as i64 + 1;
                        self.say(|| format!("acked {id} at {base}..{end} (durable {})", at.durable));
                        if segment_sync_errors > self.segment_sync_errors_at_open {
                            check!(self, end <= at.durable, "batch {id} acknowledged up to {end} after a failed fdatasync (durable {})", at.durable);
                        }
                        let durable = wait_durable && self.config.sync_on_ack();
                        if let Some(prev) = self.acks.iter().find(|a| a.id == id && (producer.is_some() || txn.is_some())) {
                            check!(self, prev.base == base, "idempotent batch {id} acknowledged at {} and again at {base}", prev.base);
                        }
                        self.acks.push(Ack { id, base, end, durable });
                        base = end;
                    }
                }
                Err(e) => {
                    self.summary.refused += 1;
                    self.say(|| format!("append {ids:?} refused: {e}"));
                    if let Some(t) = txn {
                        self.txns[t].fence = true;
                    }
                    match &e {
                        LogError::Storage(_) => check!(self, self.faulty(), "storage error without a fault: {e}"),
                        LogError::OutOfOrderSequence(_) | LogError::InvalidProducerEpoch(_) if txn.is_some() => {
                            // Pipelined after a refused batch of its own, or an older epoch's
                            // batch after a fencing marker: the transaction goes on fenced.
                            let t = txn.expect("checked");
                            check!(self, !self.sent[ids[0] as usize].header.is_control(), "a marker refused: {e}");
                            self.txns[t].open = true;
                            self.txns[t].fence = true;
                        }
                        LogError::OutOfOrderSequence(_) | LogError::InvalidProducerEpoch(_) => {
                            check!(self, producer.is_some(), "an idempotence error for a plain batch: {e}");
                            let p = producer.expect("checked");
                            let epoch = self.sent[ids[0] as usize].header.producer_epoch;
                            if self.producers[p].epoch == epoch && self.rng.chance(500) {
                                let pr = &mut self.producers[p];
                                pr.epoch += 1;
                                pr.next_seq = 0;
                                pr.recent.clear();
                            }
                        }
                        _ => fail(format!("seed {} step {}: unexpected error {e:?}", self.seed, self.step)),
                    }
                    if producer.is_none() && txn.is_none() {
                        self.failed_plain.extend(ids);
                    }
                }
            },
            (Job::Compact, Outcome::Done(r)) | (Job::Flush, Outcome::Done(r)) | (Job::Retention, Outcome::Done(r)) => {
                if let Err(e) = r {
                    self.say(|| format!("compaction, flush or retention failed: {e}"));
                    check!(self, self.faulty(), "compaction, flush or retention failed without a fault: {e}");
                }
            }
            (Job::DeleteRecords { target }, Outcome::Deleted(r)) => match r {
                Ok(start) => {
                    self.say(|| format!("DeleteRecords to {target}: start {start}"));
                    check!(self, start >= target, "DeleteRecords to {target} answered the start {start}");
                    self.acked_start = self.acked_start.max(start);
                    self.summary.deletes += 1;
                }
                Err(e) => {
                    self.say(|| format!("DeleteRecords to {target} failed: {e}"));
                    check!(self, matches!(e, LogError::Storage(_)) && self.faulty(), "DeleteRecords to {target} failed: {e}");
                }
            },
            _ => unreachable!("a job and its outcome match"),
        }
    }

    /// Waits for the oldest `n` jobs in flight.
    async fn settle(&mut self, n: usize) {
        let n = n.min(self.tasks.len());
        for job in self.tasks.drain(..n).collect::<Vec<_>>() {
            let Some(outcome) = rt::timeout(WEDGED_AFTER, job.task).await else {
                fail(format!("seed {} step {}: the partition is wedged", self.seed, self.step));
            };
            self.absorb(job.job, outcome);
        }
    }

    /// A crash's view of the jobs in flight: those done were answered, the rest die unanswered.
    async fn abandon_jobs(&mut self) {
        for mut job in std::mem::take(&mut self.tasks) {
            if let Some(outcome) = futures_lite::future::poll_once(&mut job.task).await {
                self.absorb(job.job, outcome);
            }
        }
    }

    async fn yield_some(&mut self) {
        for _ in 0..self.rng.below(20) {
            futures_lite::future::yield_now().await;
        }
    }

    async fn read_step(&mut self) {
        let log = self.log();
        let o = log.offsets();
        let offset = o.log_start + self.rng.below((o.log_end - o.log_start + 1) as u64) as i64;
        let max = 1 + self.rng.below(3000) as usize;
        let r = match log.read(offset, max).await {
            Ok(r) => r,
            // The start moved past the offset meanwhile (DeleteRecords or retention in flight).
            Err(LogError::OffsetOutOfRange { log_start, .. }) if offset < log_start => return,
            Err(e) => fail(format!("seed {} step {}: read at {offset}: {e}", self.seed, self.step)),
        };
        let mut batches = Vec::new();
        let end = batch::scan(&r.records, |pos, h| batches.push((pos, *h)));
        check!(self, end.problem.is_none() && end.valid_len == r.records.len(), "read at {offset} returned damaged bytes");
        let mut prev_end = None;
        for (i, (pos, h)) in batches.iter().enumerate() {
            self.identify(&r.records.slice(*pos..pos + h.total_len()), h);
            check!(self, h.last_offset() >= offset, "read at {offset} returned a batch ending before it");
            check!(self, prev_end.is_none_or(|p| h.base_offset >= p), "read at {offset} returned batches out of order");
            check!(self, i == 0 || pos + h.total_len() <= max, "read at {offset} returned more than {max} bytes");
            prev_end = Some(h.last_offset() + 1);
        }
        if batches.is_empty() && self.tasks.is_empty() {
            let all = scan(self, &log).await;
            check!(self, !all.iter().any(|s| s.end > offset), "read at {offset} returned nothing though records follow");
        }
    }

    fn spawn_compact(&mut self) {
        let log = self.log();
        let now = T0 + self.sent.len() as i64;
        self.say(|| "compaction pass".into());
        let task = rt::spawn(async move { Outcome::Done(log.compact(now).await.map(|_| ())) });
        self.tasks.push(InFlight { job: Job::Compact, task });
    }

    /// DeleteRecords to an offset between the start and the high watermark (-1 sometimes).
    fn spawn_delete_records(&mut self) {
        let log = self.log();
        let o = log.offsets();
        let (asked, target) = if self.rng2.chance(100) {
            (-1, o.high_watermark)
        } else {
            let t = o.log_start + self.rng2.below((o.high_watermark - o.log_start + 1) as u64) as i64;
            (t, t)
        };
        self.say(|| format!("DeleteRecords to {asked}"));
        let task = rt::spawn(async move { Outcome::Deleted(log.delete_records(asked).await) });
        self.tasks.push(InFlight { job: Job::DeleteRecords { target }, task });
    }

    fn spawn_retention(&mut self) {
        let log = self.log();
        let now = T0 + self.sent.len() as i64;
        self.say(|| "retention pass".into());
        let task = rt::spawn(async move { Outcome::Done(log.enforce_retention(now).await.map(|_| ())) });
        self.tasks.push(InFlight { job: Job::Retention, task });
    }

    fn spawn_flush(&mut self) {
        let log = self.log();
        let task = rt::spawn(async move { Outcome::Done(log.flush_if_due().await) });
        self.tasks.push(InFlight { job: Job::Flush, task });
    }

    /// A fault-free append must succeed unless the partition is offline after a failed fdatasync.
    async fn probe(&mut self, why: &str) {
        self.settle(usize::MAX).await;
        let plan = self.disk.plan();
        self.disk.set_plan(FaultPlan::default());
        let id = self.build(None, 1);
        self.spawn_append(vec![id], true, None);
        let job = self.tasks.pop().expect("just spawned");
        let Some(Outcome::Append { result, .. }) = rt::timeout(WEDGED_AFTER, job.task).await else {
            fail(format!("seed {} step {}: the partition is wedged", self.seed, self.step));
        };
        self.disk.set_plan(plan);
        match (&result, self.offline()) {
            (Ok(_), false) => {}
            (Err(LogError::Storage(_)), true) => {}
            _ => fail(format!(
                "seed {} step {}: {why}: a fault-free append gave {result:?} (offline: {})",
                self.seed,
                self.step,
                self.offline()
            )),
        }
        self.absorb(job.job, Outcome::Append { result, at: self.log().offsets(), segment_sync_errors: self.disk.stats().segment_sync_errors });
    }

    // --- crashes and restarts ---

    async fn open(&mut self) {
        let mut attempt = 0;
        let log = loop {
            let opened = PartitionLog::open(self.dir.clone(), self.config.clone(), Rc::new(Notify::default())).await;
            match opened {
                Ok(log) => break log,
                Err(e) => {
                    self.say(|| format!("open failed: {e}"));
                    // A full disk alone must not keep a partition closed.
                    let explained = self.disk.plan() != FaultPlan::default() && e.kind() != std::io::ErrorKind::StorageFull;
                    check!(self, explained, "open failed without a fault (disk full: {}): {e}", self.disk.is_full());
                    attempt += 1;
                    check!(self, attempt < 20, "open keeps failing: {e}");
                    self.disk.kill();
                }
            }
        };
        let o = log.offsets();
        check!(self, o.durable == o.log_end && o.high_watermark == o.log_end, "a reopened log is not all durable: {o:?}");
        // Half the seeds write in small turns (a few batches, or one, per segment write), so
        // appends that arrive during a write are split over several. Drawn from the seed, not
        // the generator, to leave every seed's other choices as they were.
        if self.seed % 2 == 0 {
            log.set_write_max([1, 2_000, 20_000][(self.seed / 2 % 3) as usize]);
        }
        // Three seeds in four grow the segment file ahead of the writes (fallocate), by a block,
        // a few blocks or a megabyte, so crashes meet zeros past the data and full disks meet
        // preallocated room.
        log.set_preallocate_step([0, 4_096, 10_000, 1 << 20][(self.seed / 6 % 4) as usize]);
        self.log = Some(log);
        self.last = o;
        self.segment_sync_errors_at_open = self.disk.stats().segment_sync_errors;
        self.faults_at_open = self.faults_seen();
        self.offline_at = None;
    }

    /// A crash: `power` loses what was not fdatasync'd, else only the process dies. Checks
    /// that the reopened log keeps what the crash must not take.
    async fn crash(&mut self, power: bool) {
        self.abandon_jobs().await;
        // A transaction left open by a crash is aborted by its coordinator, under a new epoch.
        for t in self.txns.iter_mut().filter(|t| t.open) {
            t.fence = true;
        }
        let log = self.log.take().expect("open");
        let o = log.offsets();
        let before = scan(self, &log).await;
        let mut keep = if power { o.durable } else { o.high_watermark };
        self.say(|| format!("{} at {o:?}; must keep below {keep}", if power { "power loss" } else { "kill" }));
        drop(log);
        if power {
            self.disk.power_loss();
        } else {
            self.disk.kill();
        }
        self.acks.retain(|a| !power || a.durable || a.end <= keep);
        if self.rng.chance(100) {
            // Crash again during recovery. A power loss now may take what the kill left unsynced.
            let (dir, config) = (self.dir.clone(), self.config.clone());
            let mut opening = rt::spawn(async move { PartitionLog::open(dir, config, Rc::new(Notify::default())).await });
            for _ in 0..self.rng.below(30) {
                futures_lite::future::yield_now().await;
            }
            let done = futures_lite::future::poll_once(&mut opening).await;
            drop(done);
            drop(opening);
            let power = self.rng.chance(500);
            self.say(|| format!("{} during recovery", if power { "power loss" } else { "kill" }));
            if power {
                self.disk.power_loss();
                keep = keep.min(o.durable);
                self.acks.retain(|a| a.durable || a.end <= keep);
            } else {
                self.disk.kill();
            }
        }
        self.say(|| format!("disk before recovery:{}", self.disk.describe()));
        if self.verbose {
            self.dump_segments();
        }
        self.open().await;
        let log = self.log();
        let o = log.offsets();
        check!(self, o.log_end >= keep, "the log ends at {} after the crash; {keep} was promised", o.log_end);
        let after = scan(self, &log).await;
        self.kept(&before, &after, keep);
        self.summary.restarts += 1;
    }

    /// Everything of `before` below `keep` is in `after`, byte for byte, or (compacted) its records
    /// are, or are superseded by later records of their key.
    fn kept(&self, before: &[Seen], after: &[Seen], keep: i64) {
        let by_base: HashMap<i64, &Seen> = after.iter().map(|s| (s.base, s)).collect();
        let markers = markers_by_producer(self, after);
        let newest = newest_by_key(self, after, &markers);
        let records: HashMap<i64, u64> = after.iter().flat_map(|s| s.records.iter().map(move |r| (r.0, s.id))).collect();
        for b in before.iter().filter(|b| b.end <= keep) {
            if let Some(a) = by_base.get(&b.base) {
                if a.bytes == b.bytes {
                    continue;
                }
            }
            check!(self, self.compacted, "batch {} at {}..{} below {keep} did not survive the crash intact", b.id, b.base, b.end);
            if aborted(self, &markers, b.id, b.base) {
                continue;
            }
            for (off, key) in &b.records {
                let there = records.get(off) == Some(&b.id);
                let superseded = key.as_ref().is_some_and(|k| newest.get(k).is_some_and(|n| n > off));
                check!(self, there || superseded, "record {off} of batch {} (below {keep}) was lost in the crash", b.id);
            }
        }
    }

    /// Prints every batch header of every segment file as it is on the disk (verbose mode).
    fn dump_segments(&self) {
        for (name, bytes) in self.disk.files_in(&self.dir).iter().filter(|f| f.0.ends_with(".log")) {
            let mut out = Vec::new();
            let end = batch::scan(&bytes, |pos, h| out.push(format!("{pos}:{}..={}", h.base_offset, h.last_offset())));
            eprintln!("  {name}: {} [{end:?}]", out.join(" "));
        }
    }

    async fn restart(&mut self) {
        self.settle(usize::MAX).await;
        let log = self.log();
        let closed = log.close().await;
        self.say(|| format!("restart; close: {closed:?}"));
        if let Err(e) = &closed {
            check!(self, self.faulty(), "close failed without a fault: {e}");
            return self.crash(false).await;
        }
        let o = log.offsets();
        check!(self, o.durable == o.log_end, "close left {o:?}");
        self.crash(false).await;
    }

    // --- the model check ---

    async fn check(&mut self) {
        let log = self.log();
        let o = log.offsets();
        check!(self, o.log_start <= o.durable, "{o:?}");
        check!(self, o.durable <= o.high_watermark, "{o:?}");
        check!(self, o.high_watermark <= o.log_end, "{o:?}");
        check!(self, o.high_watermark >= self.last.high_watermark, "the high watermark went back: {:?} -> {o:?}", self.last);
        check!(self, o.durable >= self.last.durable, "the durable offset went back: {:?} -> {o:?}", self.last);
        check!(self, o.log_start >= self.last.log_start, "the log start went back: {:?} -> {o:?}", self.last);
        check!(self, o.log_start >= self.acked_start, "the log start {} is below one DeleteRecords answered: {}", o.log_start, self.acked_start);
        if self.offline() {
            let at = *self.offline_at.get_or_insert(o.durable);
            check!(self, o.durable == at, "the durable offset moved from {at} to {} after a failed fdatasync", o.durable);
        }
        self.last = o;
        // A read the plan fails is no answer to check.
        if let Ok(Some((max_ts_offset, _))) = log.max_timestamp().await {
            check!(self, max_ts_offset < o.high_watermark, "max_timestamp names offset {max_ts_offset}, past the high watermark {}", o.high_watermark);
        }
        let lso = log.last_stable_offset();
        check!(self, o.log_start <= lso && lso <= log.offsets().high_watermark, "last stable offset {lso} outside [{}, {}]", o.log_start, o.high_watermark);
        let seen = scan(self, &log).await;
        self.check_transactions(&log, &seen, lso);
        // What lies below the start is gone by right (the start may have moved during the scan).
        let start = log.offsets().log_start;
        self.acks.retain(|a| a.end > start);
        let mut idempotent = HashMap::new();
        for s in &seen {
            let h = &self.sent[s.id as usize].header;
            if h.producer_id >= 0 && !h.is_control() {
                let prev = idempotent.insert((h.producer_id, h.producer_epoch, h.base_sequence), s.base);
                check!(self, prev.is_none(), "idempotent batch {} is in the log twice: at {:?} and {}", s.id, prev, s.base);
            }
        }
        let by_base: HashMap<i64, &Seen> = seen.iter().map(|s| (s.base, s)).collect();
        let markers = markers_by_producer(self, &seen);
        let newest = newest_by_key(self, &seen, &markers);
        let records: HashMap<i64, u64> = seen.iter().flat_map(|s| s.records.iter().map(move |r| (r.0, s.id))).collect();
        for a in &self.acks {
            if by_base.get(&a.base).is_some_and(|s| s.id == a.id && s.end == a.end) {
                continue;
            }
            check!(self, self.compacted, "acknowledged batch {} at {}..{} is not in the log (durable: {})", a.id, a.base, a.end, a.durable);
            if aborted(self, &markers, a.id, a.base) {
                continue;
            }
            let sent = &self.sent[a.id as usize];
            for (i, key) in sent.keys.iter().enumerate() {
                let off = a.base + i as i64;
                if off < start {
                    continue;
                }
                let there = records.get(&off) == Some(&a.id);
                let superseded = key.as_ref().is_some_and(|k| newest.get(k).is_some_and(|n| *n > off));
                check!(self, there || superseded, "record {off} of acknowledged batch {} is gone and not superseded", a.id);
            }
        }
    }

    /// The transactions the log holds, read from it as a consumer would (transactional batches
    /// open one per producer, markers close it), against the partition's own view: no
    /// transaction still open in what was read (up to the high watermark) may begin below the
    /// last stable offset the log gave before the read, and every aborted one read must be in the
    /// aborted-transaction index (a read_committed consumer would otherwise see its records).
    fn check_transactions(&self, log: &PartitionLog, seen: &[Seen], lso: i64) {
        // Per producer: its open transaction's first offset read, and whether that is where it
        // began (a marker of the producer was read before it, or nothing lies below the read):
        // else it may have begun below the log start, in what DeleteRecords or retention took.
        let from_zero = seen.first().is_none_or(|s| s.base == 0);
        let mut marker_seen: HashMap<i64, bool> = HashMap::new();
        let mut open: HashMap<i64, (i64, bool)> = HashMap::new();
        let mut aborted: Vec<(i64, i64, bool)> = Vec::new();
        for s in seen {
            let sent = &self.sent[s.id as usize];
            let h = &sent.header;
            if h.is_control() {
                let m = batch::parse_marker(&sent.bytes, h);
                check!(self, m.is_some(), "control batch {} at {} is not a marker", s.id, s.base);
                if let Some((first, known)) = open.remove(&h.producer_id) {
                    if !m.expect("checked").commit {
                        aborted.push((h.producer_id, first, known));
                    }
                }
                marker_seen.insert(h.producer_id, true);
            } else if h.is_transactional() {
                let known = from_zero || marker_seen.contains_key(&h.producer_id);
                open.entry(h.producer_id).or_insert((s.base, known));
            }
        }
        let start = log.offsets().log_start;
        for (pid, (first, _)) in &open {
            // DeleteRecords may have moved the start into its first batch.
            check!(self, (*first).max(start) >= lso, "producer {pid}'s transaction from {first} is open, yet the last stable offset was {lso}");
        }
        let listed = log.aborted_transactions(start, i64::MAX);
        for (pid, first, known) in aborted.iter().filter(|a| a.1 >= start) {
            // Compaction may have dropped the transaction's first batches (those below the
            // last stable offset when it ran).
            let found = listed.iter().any(|(p, f)| p == pid && (f == first || ((!known || self.compacted) && f < first)));
            check!(self, found, "aborted transaction ({pid}, {first}) is not in the index {listed:?}");
        }
    }

    async fn run(&mut self) {
        let _installed = self.disk.install();
        self.disk.set_plan(FaultPlan::default());
        self.open().await;
        self.disk.set_plan(self.plan);
        let steps = 100 + self.rng.below(200) as usize;
        self.say(|| format!("config {:?} plan {:?} producers {} steps {steps}", self.config, self.plan, self.producers.len()));
        for step in 0..steps {
            self.step = step;
            if self.full_for > 0 {
                self.full_for -= 1;
                if self.full_for == 0 {
                    self.say(|| "the disk has room again".into());
                    self.disk.set_full(false);
                    self.probe("after the disk freed").await;
                }
            }
            if self.rng2.chance(25) {
                self.spawn_delete_records();
            }
            if self.config.retention_bytes >= 0 && self.rng2.chance(60) {
                self.spawn_retention();
            }
            if !self.txns.is_empty() && self.rng3.chance(200) {
                self.txn_step();
            }
            let r = self.rng.below(1000);
            match r {
                0..=449 => self.append_step(),
                450..=599 => {
                    let n = 1 + self.rng.below(self.tasks.len() as u64 + 1) as usize;
                    self.settle(n).await;
                }
                600..=699 => self.yield_some().await,
                700..=799 => self.read_step().await,
                800..=839 if self.compacted => self.spawn_compact(),
                840..=869 => self.spawn_flush(),
                870..=889 if self.full_for == 0 && self.plan != FaultPlan::default() => {
                    self.say(|| "the disk is full".into());
                    self.disk.set_full(true);
                    self.full_for = 1 + self.rng.below(15) as u32;
                }
                890..=909 if !self.disk.is_full() => self.probe("a fault-free append").await,
                910..=934 => self.restart().await,
                935..=959 => self.crash(false).await,
                960..=999 => self.crash(true).await,
                _ => self.append_step(),
            }
            self.check().await;
        }
        self.step = steps;
        self.disk.set_full(false);
        self.disk.set_plan(FaultPlan::default());
        self.settle(usize::MAX).await;
        self.check().await;
        // Every transaction ends (aborted by its coordinator): then nothing is unstable. After
        // a restart, as a partition offline after a failed fdatasync takes no markers.
        self.restart().await;
        self.check().await;
        for t in 0..self.txns.len() {
            self.txns[t].fence = true;
            let pr = &self.txns[t];
            let id = self.build_txn(pr.pid, pr.epoch + 1, 0, 1, Some(false));
            self.spawn_append_as(vec![id], true, None, Some(t));
        }
        self.settle(usize::MAX).await;
        self.check().await;
        let log = self.log();
        check!(self, log.last_stable_offset() == log.offsets().high_watermark, "transactions still unstable at the end: LSO {} HW {}", log.last_stable_offset(), log.offsets().high_watermark);
        self.restart().await;
        self.check().await;
        let log = self.log();
        check!(self, log.last_stable_offset() == log.offsets().high_watermark, "transactions unstable after the last restart: LSO {} HW {}", log.last_stable_offset(), log.offsets().high_watermark);
        self.summary.steps = steps as u64;
        self.summary.faults = self.disk.stats();
    }
}

/// Each producer's markers in `seen`: (offset, commit), in log order.
fn markers_by_producer(sim: &Sim, seen: &[Seen]) -> HashMap<i64, Vec<(i64, bool)>> {
    let mut out: HashMap<i64, Vec<(i64, bool)>> = HashMap::new();
    for s in seen {
        let sent = &sim.sent[s.id as usize];
        if sent.header.is_control() {
            if let Some(m) = batch::parse_marker(&sent.bytes, &sent.header) {
                out.entry(sent.header.producer_id).or_default().push((s.base, m.commit));
            }
        }
    }
    out
}

/// How the transaction of producer `pid`'s batch at `base` ended: the first marker of the
/// producer after it (`None`: not ended in what was read).
fn outcome(markers: &HashMap<i64, Vec<(i64, bool)>>, pid: i64, base: i64) -> Option<bool> {
    markers.get(&pid)?.iter().find(|(o, _)| *o > base).map(|(_, commit)| *commit)
}

/// Whether sent batch `id` at `base` belongs to an aborted transaction (compaction may drop it
/// whole).
fn aborted(sim: &Sim, markers: &HashMap<i64, Vec<(i64, bool)>>, id: u64, base: i64) -> bool {
    let h = &sim.sent[id as usize].header;
    h.is_transactional() && !h.is_control() && outcome(markers, h.producer_id, base) == Some(false)
}

/// The newest offset of each key among the records that may supersede others: plain ones and
/// committed transactions' (an aborted or open transaction's records, and markers, supersede
/// nothing).
fn newest_by_key(sim: &Sim, seen: &[Seen], markers: &HashMap<i64, Vec<(i64, bool)>>) -> HashMap<Bytes, i64> {
    let mut newest = HashMap::new();
    for s in seen {
        let h = &sim.sent[s.id as usize].header;
        if h.is_control() || (h.is_transactional() && outcome(markers, h.producer_id, s.base) != Some(true)) {
            continue;
        }
        for (off, key) in &s.records {
            if let Some(k) = key {
                let n = newest.entry(k.clone()).or_insert(*off);
                *n = (*n).max(*off);
            }
        }
    }
    newest
}

/// Prints how to replay a seed if the simulation panics while running it.
struct ReplayHint(u64);

impl Drop for ReplayHint {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("simulation failed at seed {0}; replay with SPATE_SIM_SEED={0} (SPATE_SIM_VERBOSE=1 for each step)", self.0);
        }
    }
}

/// Runs one seed; returns its totals and the disk's operation digest.
pub async fn run_seed(seed: u64, verbose: bool) -> (Summary, u64) {
    let hint = ReplayHint(seed);
    let mut sim = Sim::new(seed, verbose);
    sim.run().await;
    drop(hint);
    (sim.summary.clone(), sim.disk.trace())
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.trim().parse().unwrap_or_else(|_| panic!("{name}={v:?} is not a number")))
}

/// Runs `seeds` (or just `SPATE_SIM_SEED` when set) on one executor, going on past failures;
/// panics at the end naming every seed that failed.
fn run_seeds(seeds: std::ops::Range<u64>) -> Summary {
    use futures_lite::FutureExt;
    let verbose = std::env::var("SPATE_SIM_VERBOSE").is_ok_and(|v| v != "0");
    if verbose {
        let _ = tracing_subscriber::fmt().with_writer(std::io::stderr).with_max_level(tracing::Level::DEBUG).try_init();
    }
    let seeds = match env_u64("SPATE_SIM_SEED") {
        Some(s) => s..s + 1,
        None => seeds,
    };
    let (total, failed) = rt::run_local(async move {
        let mut total = Summary::default();
        let mut failed = Vec::new();
        let (started, long) = (std::time::Instant::now(), seeds.end - seeds.start > 1000);
        for seed in seeds {
            match std::panic::AssertUnwindSafe(run_seed(seed, verbose)).catch_unwind().await {
                Ok((s, _)) => total.add(&s),
                Err(_) => failed.push(seed),
            }
            if long && (seed + 1) % 1000 == 0 {
                eprintln!("{} seeds, up to {seed}, in {:?}; failed: {failed:?}", total.seeds + failed.len() as u64, started.elapsed());
            }
        }
        (total, failed)
    });
    assert!(failed.is_empty(), "the simulation failed at seeds {failed:?} (replay each with SPATE_SIM_SEED)");
    total
}

#[test]
fn quick_seeds() {
    let n = env_u64("SPATE_SIM_QUICK_SEEDS").unwrap_or(300);
    let started = std::time::Instant::now();
    let s = run_seeds(0..n);
    eprintln!("{} seeds in {:?}: {s:?}", s.seeds, started.elapsed());
}

#[test]
#[ignore = "long: SPATE_SIM_SEEDS=<n> (default 100000), SPATE_SIM_FIRST=<seed>"]
fn many_seeds() {
    let first = env_u64("SPATE_SIM_FIRST").unwrap_or(1_000_000);
    let n = env_u64("SPATE_SIM_SEEDS").unwrap_or(100_000);
    let started = std::time::Instant::now();
    let s = run_seeds(first..first + n);
    eprintln!("{} seeds from {first} in {:?}: {s:?}", s.seeds, started.elapsed());
}

/// Seeds that found storage bugs (each also has a targeted test in `log/tests.rs`), replayed as they
/// ran on the simulation that found them. A change to how scenarios are drawn changes what a
/// seed does; the targeted tests are the ones that keep pinning the bugs.
#[test]
fn regression_seeds() {
    for (seed, bug) in [
        (0, "a rolled-back append stayed the segment's largest timestamp"),
        (1, "an open on a full disk failed writing the producer snapshot"),
        (29, "a failed fdatasync while closing a segment left the partition online"),
        (65, "an acks=1 append in flight was acknowledged after a failed fdatasync"),
        (66, "two compaction passes at once shared the .cleaned file"),
        (107, "an empty segment left by a failed roll made recovery drop the segments after it"),
        (252, "compaction dropped a durable record for a newer one that a power loss took"),
        (1_002_101, "a segment created by a roll cut short took writes before its name was durable"),
        (1_000_088, "recovery took a batch whose base offset a reordered power loss had torn"),
    ] {
        let (s, _) = rt::run_local(run_seed(seed, false));
        assert_eq!(s.seeds, 1, "seed {seed} ({bug})");
    }
}

#[test]
fn a_seed_replays_identically() {
    let (a, b) = rt::run_local(async {
        let a = run_seed(7, false).await;
        let b = run_seed(7, false).await;
        (a, b)
    });
    assert_eq!(a.1, b.1, "the same seed took different paths");
    assert_eq!(format!("{:?}", a.0), format!("{:?}", b.0));
}

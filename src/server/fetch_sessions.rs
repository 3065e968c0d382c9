//! Incremental fetch sessions (KIP-227): one cache per core, of the sessions opened by fetches
//! that core handled. The Fetch handler (`handlers::fetch`) decides what a request is (sessionless,
//! full, incremental) and what to answer; this file keeps the sessions and decides which stay.
//!
//! A session remembers, for each partition a consumer fetches, what it asked (fetch offset, max
//! bytes, its log start offset) and what it was last told (high watermark, last stable offset,
//! log start offset). An incremental fetch then lists only the partitions whose request changed,
//! and its answer lists only the partitions with something new to say.
//!
//! Per-core invariant: a session lives in the cache of the core that created it and is only
//! touched there (`Rc`, never sent). A connection's requests are all handled on its own core, so
//! a consumer finds its session as long as it keeps its connection, or reconnects to the same
//! core; elsewhere it gets FETCH_SESSION_ID_NOT_FOUND and starts a new session, as after an
//! eviction. Session ids are unique across cores without any coordination: core `c` of `n` draws
//! them at random from its own range, `[max(1, c * r), (c + 1) * r)` with `r = i32::MAX / n`
//! (Kafka 3.8 shards its cache the same way), checked against its own cache for a collision. So a
//! client that reconnected elsewhere can never land on another client's session, and a full
//! fetch that closes its old session knows which core to tell.
//!
//! Bounds: each core keeps at most its share of `max_incremental_fetch_session_cache_slots`
//! (divided by the cores, the remainder to the first ones; Kafka's setting is per broker, and so
//! is the total here). A session holds one entry per partition and at most the partitions of the
//! metadata image plus [`UNKNOWN_PARTITIONS_MAX`] (unknown ones are kept, as Kafka does, so that
//! a topic created later is fetched); the handler enforces that.
//!
//! Eviction, as Kafka's `FetchSessionCacheShard.tryEvict` for consumers (Spate has no followers,
//! so no privileged sessions): when a new session finds the core's slots full, it evicts the
//! least recently used session if that one has been unused longer than
//! `min_incremental_fetch_session_eviction_ms`; otherwise the smallest session among those created
//! more than that long before their last use, if it has fewer partitions than the new one;
//! otherwise no session is created and the fetch is answered with session id 0. Kafka keeps two
//! sorted trees for this; a core holds a few hundred sessions at most and looks for a victim only
//! when a full fetch finds its slots full, so a linear scan is enough here.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use uuid::Uuid;

/// The epoch of a full fetch that opens a session.
pub const INITIAL_EPOCH: i32 = 0;
/// The epoch of a sessionless fetch, or of one that closes its session.
pub const FINAL_EPOCH: i32 = -1;
/// Partitions a session may hold beyond the metadata image's: ones the client names that do
/// not exist (yet, or any more).
pub const UNKNOWN_PARTITIONS_MAX: usize = 1000;

/// The epoch after `epoch`: 1 after `i32::MAX`, as Kafka's `FetchMetadata.nextEpoch`.
pub fn next_epoch(epoch: i32) -> i32 {
    match epoch {
        e if e < 0 => FINAL_EPOCH,
        i32::MAX => 1,
        e => e + 1,
    }
}

/// How a session names a topic: by id from Fetch v13 on, by name before.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TopicKey {
    Id(Uuid),
    Name(Rc<str>),
}

/// One partition of a session.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PartKey {
    pub topic: TopicKey,
    pub partition: i32,
}

/// What the client asked for a partition, as its last full or incremental fetch said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asked {
    pub fetch_offset: i64,
    pub max_bytes: i32,
    /// The fetcher's own log start offset (followers'; consumers send -1).
    pub log_start_offset: i64,
    /// The leader epoch the fetcher knows for the partition (-1: not checked), KIP-320.
    pub current_leader_epoch: i32,
}

/// What a response tells the client about a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Told {
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
}

impl Told {
    /// Nothing told yet: the first answer for the partition differs from it.
    const NOTHING: Told = Told { high_watermark: -1, last_stable_offset: -1, log_start_offset: -1 };
}

#[derive(Debug)]
struct Cached {
    /// Place in the session's order.
    seq: u64,
    asked: Asked,
    told: Told,
}

/// One session: its partitions in fetch order, and its place in the cache's eviction order.
#[derive(Debug)]
pub struct FetchSession {
    pub id: i32,
    /// The epoch the next incremental fetch must carry.
    pub epoch: i32,
    /// Made by Fetch v13 or later (topics by id): only such requests may use it.
    pub uses_topic_ids: bool,
    created_ms: i64,
    last_used_ms: i64,
    /// At its last use, created more than the eviction time before (Kafka's `evictableByAll`).
    old: bool,
    parts: HashMap<PartKey, Cached>,
    /// The fetch order: a partition that returned records moves to the back, so that a response
    /// cut at its size limit starts with the others next time.
    order: BTreeMap<u64, PartKey>,
    next_seq: u64,
}

impl FetchSession {
    pub fn len(&self) -> usize {
        self.parts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Adds a partition at the back, or updates what the client asks of one already here.
    pub fn upsert(&mut self, key: PartKey, asked: Asked) {
        if let Some(c) = self.parts.get_mut(&key) {
            c.asked = asked;
            return;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.order.insert(seq, key.clone());
        self.parts.insert(key, Cached { seq, asked, told: Told::NOTHING });
    }

    pub fn forget(&mut self, key: &PartKey) {
        if let Some(c) = self.parts.remove(key) {
            self.order.remove(&c.seq);
        }
    }

    /// Every partition with what the client asked of it, in fetch order.
    pub fn partitions(&self) -> Vec<(PartKey, Asked)> {
        self.order.values().map(|k| (k.clone(), self.parts[k].asked)).collect()
    }

    /// Whether an incremental response must list `key`, remembering what it tells: it must when
    /// it has records or an error, or when its high watermark, last stable offset or log start
    /// offset changed since the client was last told (Kafka's `maybeUpdateResponseData`; Kafka
    /// does not look at the last stable offset, which equals the high watermark in Spate until
    /// it has transactions). After an error the high watermark is forgotten, so the partition is
    /// listed again once the error is gone. A partition with records moves to the back.
    pub fn must_respond(&mut self, key: &PartKey, told: Told, records: bool, error: bool) -> bool {
        let Some(c) = self.parts.get_mut(key) else { return true };
        let changed = c.told != told;
        c.told = told;
        if error {
            c.told.high_watermark = -1;
        }
        if records {
            let seq = self.next_seq;
            self.next_seq += 1;
            self.order.remove(&c.seq);
            self.order.insert(seq, key.clone());
            c.seq = seq;
        }
        records || error || changed
    }
}

/// One core's sessions.
pub struct FetchSessionCache {
    core: usize,
    cores: usize,
    /// This core's share of the slots.
    slots: usize,
    eviction_ms: i64,
    sessions: HashMap<i32, Rc<RefCell<FetchSession>>>,
    /// State of the session id generator (splitmix64).
    rng: u64,
}

impl FetchSessionCache {
    /// Core `core`'s cache, with its share of `total_slots`; `seed` starts its id generator.
    pub fn new(core: usize, cores: usize, total_slots: usize, eviction_ms: i64, seed: u64) -> FetchSessionCache {
        let cores = cores.max(1);
        // At most the ids its range holds, so that a free id can always be found.
        let share = total_slots / cores + usize::from(core < total_slots % cores);
        let slots = share.min(Self::id_range(cores) as usize - 1);
        FetchSessionCache { core, cores, slots, eviction_ms, sessions: HashMap::new(), rng: seed }
    }

    /// Session ids each core draws from, `[max(1, core * range), (core + 1) * range)`.
    fn id_range(cores: usize) -> i32 {
        (i32::MAX as usize / cores.max(1)) as i32
    }

    /// The core whose cache holds session `id`, if any core could.
    pub fn owner_core(id: i32, cores: usize) -> Option<usize> {
        let core = (id > 0).then(|| (id / Self::id_range(cores)) as usize)?;
        (core < cores.max(1)).then_some(core)
    }

    pub fn get(&self, id: i32) -> Option<Rc<RefCell<FetchSession>>> {
        self.sessions.get(&id).cloned()
    }

    /// Removes session `id`; whether it was here.
    pub fn remove(&mut self, id: i32) -> bool {
        self.sessions.remove(&id).is_some()
    }

    /// Sessions held, and their partitions together (for the metrics gauges).
    pub fn sizes(&self) -> (usize, usize) {
        (self.sessions.len(), self.sessions.values().map(|s| s.borrow().len()).sum())
    }

    /// Marks `s` used at `now` (its place in the eviction order).
    pub fn touch(&self, s: &mut FetchSession, now: i64) {
        s.last_used_ms = now;
        s.old = now - s.created_ms > self.eviction_ms;
    }

    /// Creates a session of `parts` (key, what was asked, what the full response told) if there
    /// is a free slot or one can be freed; its id, or `None` (the client goes on without one).
    pub fn create(&mut self, now: i64, uses_topic_ids: bool, parts: Vec<(PartKey, Asked, Told)>) -> Option<i32> {
        if self.sessions.len() >= self.slots && !self.evict_for(parts.len(), now) {
            return None;
        }
        let id = self.new_id();
        let mut s = FetchSession {
            id,
            epoch: next_epoch(INITIAL_EPOCH),
            uses_topic_ids,
            created_ms: now,
            last_used_ms: now,
            old: false,
            parts: HashMap::with_capacity(parts.len()),
            order: BTreeMap::new(),
            next_seq: 0,
        };
        for (key, asked, told) in parts {
            s.upsert(key.clone(), asked);
            if let Some(c) = s.parts.get_mut(&key) {
                c.told = told;
            }
        }
        self.touch(&mut s, now);
        self.sessions.insert(id, Rc::new(RefCell::new(s)));
        Some(id)
    }

    /// Frees one slot for a session of `size` partitions, if the eviction rule allows.
    fn evict_for(&mut self, size: usize, now: i64) -> bool {
        let stale = self
            .sessions
            .values()
            .map(|s| s.borrow())
            .min_by_key(|s| (s.last_used_ms, s.id))
            .filter(|s| now - s.last_used_ms > self.eviction_ms)
            .map(|s| s.id);
        let smaller = || {
            self.sessions
                .values()
                .map(|s| s.borrow())
                .filter(|s| s.old)
                .min_by_key(|s| (s.len(), s.id))
                .filter(|s| s.len() < size)
                .map(|s| s.id)
        };
        let Some(victim) = stale.or_else(smaller) else { return false };
        tracing::debug!(core = self.core, session = victim, "evicted a fetch session for a new one");
        self.sessions.remove(&victim);
        crate::metrics::fetch_session_evicted();
        true
    }

    /// A random id in this core's range that no session here has.
    fn new_id(&mut self) -> i32 {
        let range = Self::id_range(self.cores);
        let low = (self.core as i64 * range as i64).max(1);
        let high = (self.core as i64 + 1) * range as i64;
        loop {
            self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.rng;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            let id = (low + (z % (high - low) as u64) as i64) as i32;
            if !self.sessions.contains_key(&id) {
                return id;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(t: &str, p: i32) -> PartKey {
        PartKey { topic: TopicKey::Name(Rc::from(t)), partition: p }
    }

    fn asked(offset: i64) -> Asked {
        Asked { fetch_offset: offset, max_bytes: 1 << 20, log_start_offset: -1, current_leader_epoch: -1 }
    }

    fn told(hw: i64) -> Told {
        Told { high_watermark: hw, last_stable_offset: hw, log_start_offset: 0 }
    }

    fn parts(n: i32) -> Vec<(PartKey, Asked, Told)> {
        (0..n).map(|p| (key("t", p), asked(0), told(0))).collect()
    }

    #[test]
    fn epochs_wrap_to_one_and_final_stays_final() {
        assert_eq!(next_epoch(INITIAL_EPOCH), 1);
        assert_eq!(next_epoch(41), 42);
        assert_eq!(next_epoch(i32::MAX), 1);
        assert_eq!(next_epoch(FINAL_EPOCH), FINAL_EPOCH);
    }

    #[test]
    fn ids_are_positive_in_the_core_range_and_the_owner_is_found_from_them() {
        for cores in [1, 2, 3, 64] {
            for core in 0..cores {
                let mut c = FetchSessionCache::new(core, cores, 1_000_000, 1000, core as u64 * 7 + 1);
                for _ in 0..200 {
                    let id = c.create(0, false, parts(1)).unwrap();
                    assert!(id > 0);
                    assert_eq!(FetchSessionCache::owner_core(id, cores), Some(core), "id {id} of core {core}/{cores}");
                }
                assert_eq!(c.sizes().0, 200, "no two sessions share an id");
            }
        }
        assert_eq!(FetchSessionCache::owner_core(0, 2), None);
        assert_eq!(FetchSessionCache::owner_core(-5, 2), None);
        assert_eq!(FetchSessionCache::owner_core(i32::MAX, 2), None, "past the last core's range");
    }

    #[test]
    fn slots_are_split_between_cores_with_the_remainder_first() {
        let shares: Vec<usize> = (0..3).map(|c| FetchSessionCache::new(c, 3, 1000, 0, 1).slots).collect();
        assert_eq!(shares, vec![334, 333, 333]);
        let mut none = FetchSessionCache::new(1, 2, 1, 0, 1);
        assert_eq!(none.create(0, false, parts(5)), None, "core 1 of 2 has no share of 1 slot");
    }

    #[test]
    fn full_cache_evicts_the_stale_first_then_a_smaller_old_one_never_a_young_one() {
        let mut c = FetchSessionCache::new(0, 1, 2, 100, 9);
        let a = c.create(0, false, parts(3)).unwrap();
        let b = c.create(10, false, parts(1)).unwrap();
        // Both young and in use: nothing may go.
        assert_eq!(c.create(50, false, parts(10)), None);
        // b used again at 150 (and created over 100 ms before: old); a last used at 0 is stale at 101+.
        c.touch(&mut c.get(b).unwrap().borrow_mut(), 150);
        let d = c.create(160, false, parts(1)).unwrap();
        assert!(c.get(a).is_none() && c.get(b).is_some() && c.get(d).is_some(), "the stale one went");
        // Nothing stale now; b is old with 1 partition; d is young. Same size may not evict.
        assert_eq!(c.create(170, false, parts(1)), None);
        let e = c.create(180, false, parts(2)).unwrap();
        assert!(c.get(b).is_none() && c.get(d).is_some() && c.get(e).is_some(), "the smaller old one went");
    }

    #[test]
    fn sessions_keep_order_and_answer_only_what_changed() {
        let mut c = FetchSessionCache::new(0, 1, 10, 1000, 3);
        let id = c.create(0, false, parts(3)).unwrap();
        let s = c.get(id).unwrap();
        let mut s = s.borrow_mut();
        assert_eq!(s.epoch, 1);
        assert!(!s.must_respond(&key("t", 0), told(0), false, false), "nothing new");
        assert!(s.must_respond(&key("t", 1), told(5), true, false), "records");
        assert!(!s.must_respond(&key("t", 1), told(5), false, false), "the new high watermark was remembered");
        assert!(s.must_respond(&key("t", 2), Told { log_start_offset: 2, ..told(0) }, false, false), "log start moved");
        assert!(s.must_respond(&key("t", 2), told(0), false, true), "errors always");
        assert!(s.must_respond(&key("t", 2), told(0), false, false), "listed again once the error is gone");
        let order: Vec<i32> = s.partitions().iter().map(|(k, _)| k.partition).collect();
        assert_eq!(order, vec![0, 2, 1], "the partition that returned records went to the back");
        s.upsert(key("t", 0), asked(7));
        s.upsert(key("u", 0), asked(1));
        s.forget(&key("t", 2));
        s.forget(&key("nope", 0));
        let now: Vec<(i32, i64)> = s.partitions().iter().map(|(k, a)| (k.partition, a.fetch_offset)).collect();
        assert_eq!(now, vec![(0, 7), (1, 0), (0, 1)]);
        assert_eq!(s.len(), 3);
    }
}

//! Client quotas, Kafka's: byte rates for produce (`producer_byte_rate`) and fetch
//! (`consumer_byte_rate`) and a share of request handling time (`request_percentage`), set per
//! user, per client id, or both, with defaults, and found by Kafka's precedence for a
//! connection's (user, client id):
//!
//! `user+client`, `user+<default client>`, `user`, `<default user>+client`,
//! `<default user>+<default client>`, `<default user>`, `client`, `<default client>`.
//!
//! [`Quotas`] is the set configured (metadata, like the ACLs: a single node's
//! `<data_dir>/quotas.json`, a cluster's metadata log). [`Meter`] is one core's measure of what
//! one (user, client id) used, as Kafka's: the rate over the last [`WINDOWS`] one-second
//! windows, and when it is over the quota, how long the client must pause for the rate to come
//! back to it: `(rate - quota) / quota * window`. The answer carries that time
//! (`throttle_time_ms`, KIP-219: the client waits before sending again) and the connection is
//! not read for as long (Kafka's muting), so a client that ignores the hint is slowed anyway.
//! A client with a quota has its requests read one at a time, as Kafka reads every
//! connection's, so a pipelining client (librdkafka does not wait out throttle times) cannot
//! have a backlog of requests served before the mute begins.
//!
//! Each core measures and throttles the traffic it serves, with no cross-core traffic on the
//! data path: a client's connection is served by one core, so its quota holds; a client with
//! connections on several cores gets up to the quota on each.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::io::fs;

/// The quota keys Spate enforces.
pub const PRODUCER_BYTE_RATE: &str = "producer_byte_rate";
pub const CONSUMER_BYTE_RATE: &str = "consumer_byte_rate";
pub const REQUEST_PERCENTAGE: &str = "request_percentage";
pub const KEYS: [&str; 3] = [PRODUCER_BYTE_RATE, CONSUMER_BYTE_RATE, REQUEST_PERCENTAGE];

/// Entity types.
pub const USER: &str = "user";
pub const CLIENT_ID: &str = "client-id";

/// The one-second windows a rate is measured over (Kafka's `quota.window.num`).
pub const WINDOWS: usize = 11;
/// The longest throttle (Kafka caps it at the measured window).
pub const MAX_THROTTLE_MS: i64 = (WINDOWS as i64) * 1000;

/// One side of an entity: not part of it, the default, or a name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Part {
    Absent,
    Default,
    Named(String),
}

/// An entity quotas are set on: (user part, client-id part); not both absent.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Entity {
    pub user: Part,
    pub client_id: Part,
}

impl Entity {
    /// From Kafka's (type, name) pairs (a null name is the default); None for an unknown type,
    /// a type twice, or no part at all.
    pub fn from_parts<'a>(parts: impl IntoIterator<Item = (&'a str, Option<&'a str>)>) -> Result<Entity, String> {
        let mut e = Entity { user: Part::Absent, client_id: Part::Absent };
        for (t, name) in parts {
            let part = match name {
                None => Part::Default,
                Some(n) => Part::Named(n.to_string()),
            };
            let slot = match t {
                USER => &mut e.user,
                CLIENT_ID => &mut e.client_id,
                other => return Err(format!("unknown quota entity type {other:?} (user or client-id)")),
            };
            if *slot != Part::Absent {
                return Err(format!("entity type {t} given twice"));
            }
            *slot = part;
        }
        if e.user == Part::Absent && e.client_id == Part::Absent {
            return Err("an empty quota entity".into());
        }
        Ok(e)
    }

    /// Kafka's (type, name) pairs.
    pub fn parts(&self) -> Vec<(&'static str, Option<String>)> {
        let mut out = Vec::new();
        for (t, p) in [(USER, &self.user), (CLIENT_ID, &self.client_id)] {
            match p {
                Part::Absent => {}
                Part::Default => out.push((t, None)),
                Part::Named(n) => out.push((t, Some(n.clone()))),
            }
        }
        out
    }
}

/// The quotas configured, by entity, then key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Quotas {
    pub entries: BTreeMap<String, (Entity, BTreeMap<String, f64>)>,
}

/// The map key of an entity (entities are compared whole).
pub fn entity_key(e: &Entity) -> String {
    serde_json::to_string(e).expect("an entity serialises")
}

impl Quotas {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sets (`Some`) or removes a key of an entity.
    pub fn set(&mut self, e: &Entity, key: &str, value: Option<f64>) {
        let k = entity_key(e);
        match value {
            Some(v) => {
                self.entries.entry(k).or_insert_with(|| (e.clone(), BTreeMap::new())).1.insert(key.to_string(), v);
            }
            None => {
                if let Some((_, keys)) = self.entries.get_mut(&k) {
                    keys.remove(key);
                    if keys.is_empty() {
                        self.entries.remove(&k);
                    }
                }
            }
        }
    }

    /// Whether any quota applies to a client (its requests are then read one at a time, so
    /// that a throttle mutes the connection before the next one: see `server::connection`).
    pub fn applies(&self, user: &str, client_id: &str) -> bool {
        !self.entries.is_empty() && KEYS.iter().any(|k| self.limit(user, client_id, k).is_some())
    }

    /// The quota on `key` for a client, by Kafka's precedence (see the module's comment).
    pub fn limit(&self, user: &str, client_id: &str, key: &str) -> Option<f64> {
        if self.entries.is_empty() {
            return None;
        }
        let named = |s: &str| Part::Named(s.to_string());
        let order = [
            (named(user), named(client_id)),
            (named(user), Part::Default),
            (named(user), Part::Absent),
            (Part::Default, named(client_id)),
            (Part::Default, Part::Default),
            (Part::Default, Part::Absent),
            (Part::Absent, named(client_id)),
            (Part::Absent, Part::Default),
        ];
        order.into_iter().find_map(|(user, client_id)| {
            let (_, keys) = self.entries.get(&entity_key(&Entity { user, client_id }))?;
            keys.get(key).copied()
        })
    }

    /// The entries a DescribeClientQuotas filter picks: each component (type, match type 0
    /// exact name / 1 default / 2 any, name) must match that part; `strict`: the entity has no
    /// other part.
    pub fn describe(&self, filter: &[(String, i8, Option<String>)], strict: bool) -> Vec<&(Entity, BTreeMap<String, f64>)> {
        self.entries
            .values()
            .filter(|(e, _)| {
                let part = |t: &str| if t == USER { &e.user } else { &e.client_id };
                let each = filter.iter().all(|(t, m, name)| {
                    let p = part(t);
                    match m {
                        0 => matches!(p, Part::Named(n) if Some(n) == name.as_ref()),
                        1 => *p == Part::Default,
                        _ => *p != Part::Absent,
                    }
                });
                let extra = [USER, CLIENT_ID].iter().any(|t| *part(t) != Part::Absent && !filter.iter().any(|(ft, _, _)| ft == t));
                each && !(strict && extra)
            })
            .collect()
    }
}

impl Quotas {
    /// From the cluster's metadata (an entity or value this build cannot read is skipped with
    /// a log line).
    pub fn from_cluster(stored: &BTreeMap<String, BTreeMap<String, String>>) -> Quotas {
        let mut q = Quotas::default();
        for (entity, keys) in stored {
            let Ok(e) = serde_json::from_str::<Entity>(entity) else {
                tracing::warn!(entity, "client quota of an unreadable entity ignored");
                continue;
            };
            for (k, v) in keys {
                match v.parse::<f64>() {
                    Ok(v) => q.set(&e, k, Some(v)),
                    Err(_) => tracing::warn!(entity, key = k, value = v, "client quota with a value that is not a number ignored"),
                }
            }
        }
        q
    }
}

/// A single node's quota file.
pub fn file(data_dir: &Path) -> PathBuf {
    data_dir.join("quotas.json")
}

pub fn encode(q: &Quotas) -> Vec<u8> {
    serde_json::to_vec_pretty(&q.entries.values().collect::<Vec<_>>()).expect("quotas serialise")
}

/// Reads a single node's quotas (main thread, before the cores start).
pub fn load(data_dir: &Path) -> anyhow::Result<Quotas> {
    let f = file(data_dir);
    let Some(text) = fs::read_to_string_sync(&f).map_err(|e| anyhow::anyhow!("reading {}: {e}", f.display()))? else {
        return Ok(Quotas::default());
    };
    let list: Vec<(Entity, BTreeMap<String, f64>)> = serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?;
    let mut q = Quotas::default();
    for (e, keys) in list {
        q.entries.insert(entity_key(&e), (e, keys));
    }
    tracing::info!(entities = q.entries.len(), file = %f.display(), "client quotas loaded");
    Ok(q)
}

/// What one (user, client id) used on this core, per one-second window.
#[derive(Debug, Clone)]
pub struct Meter {
    /// (window start in whole seconds, amount) for the last [`WINDOWS`] windows, oldest first.
    windows: std::collections::VecDeque<(i64, f64)>,
}

impl Default for Meter {
    fn default() -> Self {
        Meter { windows: std::collections::VecDeque::with_capacity(WINDOWS) }
    }
}

impl Meter {
    /// Adds `amount` at `now_ms` and returns how long the client must now pause (0: within the
    /// quota) for its rate over the windows to come back to `quota` per second.
    pub fn record(&mut self, now_ms: i64, amount: f64, quota: f64) -> i64 {
        let second = now_ms.div_euclid(1000);
        while self.windows.front().is_some_and(|(s, _)| *s <= second - WINDOWS as i64) {
            self.windows.pop_front();
        }
        match self.windows.back_mut() {
            Some((s, a)) if *s == second => *a += amount,
            _ => self.windows.push_back((second, amount)),
        }
        let total: f64 = self.windows.iter().map(|(_, a)| a).sum();
        // The time measured over: the full windows before this one plus this one's elapsed
        // part, at least one second. (Kafka's `Rate.windowSize` pads it to ten whole windows,
        // which lets a new client send about ten seconds of its quota at once; counted this
        // way a new client's burst is about one second of it, and its first seconds run up to
        // twice the quota before the windows even out.)
        let first = self.windows.front().map_or(second, |(s, _)| *s);
        let elapsed_ms = ((second - first) * 1000 + now_ms.rem_euclid(1000)).max(1000) as f64;
        let rate = total / (elapsed_ms / 1000.0);
        if quota <= 0.0 || rate <= quota {
            return 0;
        }
        (((rate - quota) / quota * elapsed_ms) as i64).clamp(1, MAX_THROTTLE_MS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(user: Part, client_id: Part) -> Entity {
        Entity { user, client_id }
    }

    #[test]
    fn precedence_is_kafkas() {
        let mut q = Quotas::default();
        let n = |s: &str| Part::Named(s.into());
        q.set(&e(Part::Absent, Part::Default), PRODUCER_BYTE_RATE, Some(8.0));
        assert_eq!(q.limit("alice", "app", PRODUCER_BYTE_RATE), Some(8.0));
        q.set(&e(Part::Absent, n("app")), PRODUCER_BYTE_RATE, Some(7.0));
        assert_eq!(q.limit("alice", "app", PRODUCER_BYTE_RATE), Some(7.0));
        q.set(&e(Part::Default, Part::Absent), PRODUCER_BYTE_RATE, Some(6.0));
        q.set(&e(Part::Default, Part::Default), PRODUCER_BYTE_RATE, Some(5.0));
        q.set(&e(Part::Default, n("app")), PRODUCER_BYTE_RATE, Some(4.0));
        assert_eq!(q.limit("alice", "app", PRODUCER_BYTE_RATE), Some(4.0));
        assert_eq!(q.limit("alice", "other", PRODUCER_BYTE_RATE), Some(5.0));
        q.set(&e(n("alice"), Part::Absent), PRODUCER_BYTE_RATE, Some(3.0));
        q.set(&e(n("alice"), Part::Default), PRODUCER_BYTE_RATE, Some(2.0));
        q.set(&e(n("alice"), n("app")), PRODUCER_BYTE_RATE, Some(1.0));
        assert_eq!(q.limit("alice", "app", PRODUCER_BYTE_RATE), Some(1.0));
        assert_eq!(q.limit("alice", "other", PRODUCER_BYTE_RATE), Some(2.0));
        assert_eq!(q.limit("bob", "other", PRODUCER_BYTE_RATE), Some(5.0));
        assert_eq!(q.limit("bob", "app", CONSUMER_BYTE_RATE), None);
        q.set(&e(n("alice"), n("app")), PRODUCER_BYTE_RATE, None);
        assert_eq!(q.limit("alice", "app", PRODUCER_BYTE_RATE), Some(2.0));
    }

    #[test]
    fn describe_filters_by_component() {
        let mut q = Quotas::default();
        q.set(&e(Part::Named("alice".into()), Part::Absent), PRODUCER_BYTE_RATE, Some(1.0));
        q.set(&e(Part::Named("alice".into()), Part::Named("app".into())), PRODUCER_BYTE_RATE, Some(1.0));
        q.set(&e(Part::Default, Part::Absent), PRODUCER_BYTE_RATE, Some(1.0));
        let user = |m: i8, n: Option<&str>| vec![(USER.to_string(), m, n.map(String::from))];
        assert_eq!(q.describe(&user(0, Some("alice")), false).len(), 2);
        assert_eq!(q.describe(&user(0, Some("alice")), true).len(), 1);
        assert_eq!(q.describe(&user(1, None), false).len(), 1);
        assert_eq!(q.describe(&user(2, None), false).len(), 3);
        assert_eq!(q.describe(&[], false).len(), 3);
    }

    #[test]
    fn a_meter_throttles_what_goes_over_the_quota_and_only_that() {
        let mut m = Meter::default();
        // 1,000 bytes a second allowed: 500 in the first half second is fine...
        assert_eq!(m.record(10_000, 500.0, 1000.0), 0);
        // ...3,000 more in the same second is 3,500 over a second: (3500 - 1000) / 1000 * 1 s.
        assert_eq!(m.record(10_500, 3000.0, 1000.0), 2500);
        // Eleven seconds later the windows have slid past it.
        assert_eq!(m.record(22_000, 500.0, 1000.0), 0);
        // A steady client a little under its quota is never throttled (one right at it may be,
        // briefly, at a window's edge, where the rate is measured over a little less time than
        // the bytes took).
        let mut m = Meter::default();
        for i in 0..300 {
            assert_eq!(m.record(50_000 + i * 100, 90.0, 1000.0), 0, "at {i}");
        }
    }
}

thread_local! {
    /// This core's meters, by (user, client id, key).
    static METERS: std::cell::RefCell<std::collections::HashMap<(String, String, &'static str), Meter>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// Meters kept per core before idle ones are dropped.
const METERS_MAX: usize = 10_000;

/// Charges `amount` of `key` to a client on this core: how long it must pause (0 without a
/// quota on `key`, or within it).
pub fn charge(quotas: &Quotas, user: &str, client_id: &str, key: &'static str, amount: f64, now_ms: i64) -> i64 {
    let Some(limit) = quotas.limit(user, client_id, key) else { return 0 };
    let limit = if key == REQUEST_PERCENTAGE { limit * 10.0 } else { limit };
    METERS.with(|m| {
        let mut m = m.borrow_mut();
        if m.len() >= METERS_MAX {
            let second = now_ms.div_euclid(1000);
            m.retain(|_, meter| meter.windows.back().is_some_and(|(s, _)| *s > second - WINDOWS as i64));
        }
        m.entry((user.to_string(), client_id.to_string(), key)).or_default().record(now_ms, amount, limit)
    })
}

/// One quota change of AlterClientQuotas: a key of an entity set (`Some`) or removed.
#[derive(Debug, Clone)]
pub struct QuotaChange {
    pub entity: Entity,
    pub key: String,
    pub value: Option<f64>,
}

impl super::shard::Shard {
    /// Core 0: applies quota changes (checked by the caller), durably, then publishes them.
    pub async fn alter_quotas(&self, changes: Vec<QuotaChange>) -> Result<(), (crate::protocol::ResponseError, String)> {
        use crate::protocol::ResponseError;
        if self.cluster.is_some() {
            for c in changes {
                let record = crate::controller::MetadataRecord::ClientQuota {
                    entity: entity_key(&c.entity),
                    key: c.key.clone(),
                    value: c.value.map(|v| v.to_string()),
                };
                self.propose_metadata(record).await?;
            }
            return Ok(());
        }
        self.lock_metadata().await;
        let mut image = (*self.image()).clone();
        let mut quotas = (*image.quotas).clone();
        for c in &changes {
            quotas.set(&c.entity, &c.key, c.value);
        }
        let f = file(&self.config.data_dir);
        let stored = fs::write_atomic(f.clone(), encode(&quotas)).await.map_err(|e| {
            tracing::error!(file = %f.display(), error = %e, "could not store client quotas");
            (ResponseError::KafkaStorageError, format!("storing client quotas: {e}"))
        });
        let mut result = [stored];
        if result[0].is_ok() {
            tracing::info!(changes = ?changes, "client quotas changed");
            image.quotas = std::sync::Arc::new(quotas);
            self.publish(image, &mut result).await;
        }
        self.unlock_metadata();
        let [r] = result;
        r
    }
}

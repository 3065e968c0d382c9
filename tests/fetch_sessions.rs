//! Incremental fetch sessions (KIP-227), driven with raw Fetch requests: a full fetch opens a
//! session, incremental fetches answer only what changed and long-poll over the whole session,
//! forgotten partitions go, wrong epochs and unknown ids get Kafka's errors, epoch -1 closes,
//! the cache is bounded and evicts as Kafka does, and a session lives on its connection's core.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{batch, metric_sum, Broker, Raw};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, StrBytes};
use kafka_protocol::ResponseError;
use uuid::Uuid;

const NOT_FOUND: i16 = 70;
const BAD_EPOCH: i16 = 71;
const TOPIC_ID_ERROR: i16 = 106;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// Creates `topic` with `partitions`; its topic id.
fn create(raw: &mut Raw, topic: &str, partitions: i32) -> Uuid {
    let t = CreatableTopic::default().with_name(name(topic)).with_num_partitions(partitions).with_replication_factor(1);
    let r: CreateTopicsResponse = raw.call(ApiKey::CreateTopics, 7, &CreateTopicsRequest::default().with_topics(vec![t]).with_timeout_ms(5000), 7);
    assert_eq!(r.topics[0].error_code, 0, "{r:?}");
    r.topics[0].topic_id
}

fn produce(raw: &mut Raw, topic: &str, partition: i32, records: Bytes) {
    let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(5000).with_topic_data(vec![TopicProduceData::default()
        .with_name(name(topic))
        .with_partition_data(vec![PartitionProduceData::default().with_index(partition).with_records(Some(records))])]);
    let r: ProduceResponse = raw.call(ApiKey::Produce, 9, &req, 9);
    assert_eq!(r.responses[0].partition_responses[0].error_code, 0);
}

fn part(partition: i32, offset: i64) -> FetchPartition {
    FetchPartition::default().with_partition(partition).with_fetch_offset(offset).with_partition_max_bytes(1 << 20)
}

/// A topic of a request: by name, or by id (v13 and later).
fn by_name(topic: &str, parts: Vec<FetchPartition>) -> FetchTopic {
    FetchTopic::default().with_topic(name(topic)).with_partitions(parts)
}

fn by_id(id: Uuid, parts: Vec<FetchPartition>) -> FetchTopic {
    FetchTopic::default().with_topic_id(id).with_partitions(parts)
}

fn forget_name(topic: &str, parts: Vec<i32>) -> ForgottenTopic {
    ForgottenTopic::default().with_topic(name(topic)).with_partitions(parts)
}

/// What a fetch says: top-level error, session id, and per answered partition (topic name or
/// id, partition) -> (error, record bytes, high watermark, log start offset).
#[derive(Debug)]
struct Answer {
    error: i16,
    session: i32,
    parts: BTreeMap<(String, i32), (i16, usize, i64, i64)>,
}

impl Answer {
    fn partitions(&self) -> Vec<i32> {
        self.parts.keys().map(|(_, p)| *p).collect()
    }
}

struct Fetch<'a> {
    version: i16,
    session: i32,
    epoch: i32,
    wait_ms: i32,
    topics: Vec<FetchTopic>,
    forgotten: Vec<ForgottenTopic>,
    raw: &'a mut Raw,
}

fn fetch(raw: &mut Raw, version: i16, session: i32, epoch: i32) -> Fetch<'_> {
    Fetch { version, session, epoch, wait_ms: 0, topics: vec![], forgotten: vec![], raw }
}

impl Fetch<'_> {
    fn topics(mut self, topics: Vec<FetchTopic>) -> Self {
        self.topics = topics;
        self
    }

    fn forget(mut self, forgotten: Vec<ForgottenTopic>) -> Self {
        self.forgotten = forgotten;
        self
    }

    fn wait(mut self, ms: i32) -> Self {
        self.wait_ms = ms;
        self
    }

    fn send(self) -> Answer {
        let req = FetchRequest::default()
            .with_max_wait_ms(self.wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(1 << 24)
            .with_session_id(self.session)
            .with_session_epoch(self.epoch)
            .with_topics(self.topics)
            .with_forgotten_topics_data(self.forgotten);
        let r: FetchResponse = self.raw.call(ApiKey::Fetch, self.version, &req, self.version);
        Answer::of(&r, self.version)
    }
}

impl Answer {
    fn of(r: &FetchResponse, version: i16) -> Answer {
        let mut parts = BTreeMap::new();
        for t in &r.responses {
            let topic = if version >= 13 { t.topic_id.to_string() } else { t.topic.0.to_string() };
            for p in &t.partitions {
                let bytes = p.records.as_ref().map_or(0, |r| r.len());
                let old = parts.insert((topic.clone(), p.partition_index), (p.error_code, bytes, p.high_watermark, p.log_start_offset));
                assert!(old.is_none(), "partition {topic}-{} answered twice: {r:?}", p.partition_index);
            }
        }
        Answer { error: r.error_code, session: r.session_id, parts }
    }
}

/// Waits (5 s at most) until the sum of metric `name` in `/metrics` is `want`: state gauges are
/// published once a second.
fn wait_metric(broker: &Broker, name: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = metric_sum(&broker.metrics(), name);
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "{name} is {got}, not {want}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn incremental_fetches_answer_only_what_changed() {
    let broker = Broker::start(&[]);
    let mut raw = Raw::connect(broker.port);
    let mut producer = Raw::connect(broker.port);
    create(&mut raw, "s", 4);
    for p in 0..2 {
        produce(&mut producer, "s", p, batch(3));
    }
    let all = |offsets: [i64; 4]| by_name("s", (0..4).map(|p| part(p, offsets[p as usize])).collect());

    // Full fetch: every partition answered, and a session opened.
    let a = fetch(&mut raw, 12, 0, 0).topics(vec![all([0; 4])]).send();
    assert_eq!((a.error, a.partitions()), (0, vec![0, 1, 2, 3]), "{a:?}");
    assert!(a.session > 0, "no session opened: {a:?}");
    assert!(a.parts[&("s".into(), 0)].1 > 0 && a.parts[&("s".into(), 2)].1 == 0);
    let id = a.session;

    // The client moved on past what it got: nothing changed, nothing answered (after the wait).
    let started = Instant::now();
    let a = fetch(&mut raw, 12, id, 1).topics(vec![by_name("s", vec![part(0, 3), part(1, 3)])]).wait(300).send();
    assert_eq!((a.error, a.session, a.partitions()), (0, id, vec![]), "{a:?}");
    assert!(started.elapsed() >= Duration::from_millis(250), "answered before max_wait_ms with nothing to say");

    // New records on a partition the request does not list: only it is answered, from the
    // session's offset.
    produce(&mut producer, "s", 2, batch(4));
    let a = fetch(&mut raw, 12, id, 2).send();
    assert_eq!((a.error, a.session, a.partitions()), (0, id, vec![2]), "{a:?}");
    assert_eq!(a.parts[&("s".into(), 2)].2, 4, "high watermark");
    let a = fetch(&mut raw, 12, id, 3).topics(vec![by_name("s", vec![part(2, 4)])]).send();
    assert_eq!(a.partitions(), Vec::<i32>::new(), "{a:?}");

    // The long poll covers the whole session: an empty incremental fetch is woken by an append
    // to partition 3, which it does not list.
    let port = broker.port;
    let appender = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        produce(&mut Raw::connect(port), "s", 3, batch(2));
    });
    let started = Instant::now();
    let a = fetch(&mut raw, 12, id, 4).wait(10_000).send();
    appender.join().unwrap();
    assert_eq!(a.partitions(), vec![3], "{a:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "the append did not wake the session's long poll");

    // A log start offset that moved is news too, even without records.
    let del = DeleteRecordsRequest::default().with_timeout_ms(5000).with_topics(vec![DeleteRecordsTopic::default()
        .with_name(name("s"))
        .with_partitions(vec![DeleteRecordsPartition::default().with_partition_index(1).with_offset(2)])]);
    let r: DeleteRecordsResponse = producer.call(ApiKey::DeleteRecords, 2, &del, 2);
    assert_eq!(r.topics[0].partitions[0].error_code, 0);
    let a = fetch(&mut raw, 12, id, 5).topics(vec![by_name("s", vec![part(3, 2)])]).send();
    assert_eq!(a.partitions(), vec![1], "{a:?}");
    assert_eq!(a.parts[&("s".into(), 1)], (0, 0, 3, 2));

    // Forgotten partitions are neither read nor waited on.
    let a = fetch(&mut raw, 12, id, 6).forget(vec![forget_name("s", vec![2, 3])]).send();
    assert_eq!((a.error, a.partitions()), (0, vec![]), "{a:?}");
    produce(&mut producer, "s", 3, batch(1));
    let a = fetch(&mut raw, 12, id, 7).wait(200).send();
    assert_eq!((a.error, a.partitions()), (0, vec![]), "a forgotten partition was answered: {a:?}");
    // ... until listed again.
    let a = fetch(&mut raw, 12, id, 8).topics(vec![by_name("s", vec![part(3, 2)])]).send();
    assert_eq!(a.partitions(), vec![3], "{a:?}");

    // Two fetches of the session in flight at once (a client that did not wait for the first):
    // the first, still waiting when the second moved the session on, is stale and answered
    // INVALID_FETCH_SESSION_EPOCH with the session id, as Kafka does; the second is served.
    let pending = |epoch: i32, wait: i32| FetchRequest::default().with_max_wait_ms(wait).with_min_bytes(1).with_session_id(id).with_session_epoch(epoch);
    raw.send(ApiKey::Fetch, 12, &pending(9, 1500).with_topics(vec![by_name("s", vec![part(3, 3)])]));
    raw.send(ApiKey::Fetch, 12, &pending(10, 0));
    let answers: Vec<Answer> = (0..2)
        .map(|_| {
            let mut frame = raw.read_frame().expect("a response");
            kafka_protocol::messages::ResponseHeader::decode(&mut frame, ApiKey::Fetch.response_header_version(12)).unwrap();
            Answer::of(&FetchResponse::decode(&mut frame, 12).unwrap(), 12)
        })
        .collect();
    assert_eq!((answers[0].error, answers[0].session), (BAD_EPOCH, id), "{answers:?}");
    assert_eq!((answers[1].error, answers[1].session), (0, id), "{answers:?}");

    // Session errors are top-level, with session id 0 and no partitions; the session survives them.
    for (session, epoch, version, want) in [(id, 10, 12, BAD_EPOCH), (id, 12, 12, BAD_EPOCH), (id, -7, 12, BAD_EPOCH), (id ^ 1, 11, 12, NOT_FOUND), (0, 1, 12, NOT_FOUND), (id, 11, 13, TOPIC_ID_ERROR)] {
        let a = fetch(&mut raw, version, session, epoch).topics(vec![all([3, 3, 4, 3])]).send();
        assert_eq!((a.error, a.session, a.parts.len()), (want, 0, 0), "session {session} epoch {epoch} v{version}: {a:?}");
    }
    let a = fetch(&mut raw, 12, id, 11).send();
    assert_eq!((a.error, a.session), (0, id), "{a:?}");

    // librdkafka-style sessionless fetches (epoch -1, id 0) are untouched by all this.
    let a = fetch(&mut raw, 12, 0, -1).topics(vec![all([0; 4])]).send();
    assert_eq!((a.error, a.session, a.partitions()), (0, 0, vec![0, 1, 2, 3]), "{a:?}");

    // Epoch -1 with the id closes the session, answered as a sessionless fetch.
    let a = fetch(&mut raw, 12, id, -1).topics(vec![by_name("s", vec![part(0, 0)])]).send();
    assert_eq!((a.error, a.session, a.partitions()), (0, 0, vec![0]), "{a:?}");
    let a = fetch(&mut raw, 12, id, 12).send();
    assert_eq!(a.error, NOT_FOUND, "{a:?}");

    // A full fetch naming a session replaces it.
    let first = fetch(&mut raw, 12, 0, 0).topics(vec![all([0; 4])]).send().session;
    let second = fetch(&mut raw, 12, first, 0).topics(vec![all([0; 4])]).send().session;
    assert!(first > 0 && second > 0 && second != first);
    assert_eq!(fetch(&mut raw, 12, first, 1).send().error, NOT_FOUND);
    assert_eq!(fetch(&mut raw, 12, second, 1).send().error, 0);

    // Forgetting every partition closes the session too.
    let a = fetch(&mut raw, 12, second, 2).forget(vec![forget_name("s", vec![0, 1, 2, 3])]).send();
    assert_eq!((a.error, a.session), (0, 0), "{a:?}");
    assert_eq!(fetch(&mut raw, 12, second, 3).send().error, NOT_FOUND);

    let m = broker.metrics();
    assert!(metric_sum(&m, "spate_fetch_requests_total{core=\"0\",kind=\"incremental\"}") + metric_sum(&m, "spate_fetch_requests_total{core=\"1\",kind=\"incremental\"}") >= 10.0, "{m}");
    assert!(m.contains("kind=\"full\"") && m.contains("kind=\"sessionless\""), "{m}");
    wait_metric(&broker, "spate_core_fetch_sessions", 0.0);
}

#[test]
fn sessions_by_topic_id_see_a_deleted_and_recreated_topic() {
    let broker = Broker::start(&[]);
    let mut raw = Raw::connect(broker.port);
    let old = create(&mut raw, "t", 2);
    produce(&mut raw, "t", 0, batch(2));
    for version in [13, 17, 18] {
        let a = fetch(&mut raw, version, 0, 0).topics(vec![by_id(old, vec![part(0, 0), part(1, 0)])]).send();
        assert!(a.session > 0 && a.partitions() == vec![0, 1], "v{version}: {a:?}");
        assert_eq!(a.parts[&(old.to_string(), 0)].1 > 0, true);
        let a = fetch(&mut raw, version, a.session, 1).topics(vec![by_id(old, vec![part(0, 2)])]).send();
        assert_eq!((a.error, a.partitions()), (0, vec![]), "v{version}: {a:?}");
    }
    let id = fetch(&mut raw, 18, 0, 0).topics(vec![by_id(old, vec![part(0, 2), part(1, 0)])]).send().session;
    // A session by id may not be used by a request by name, and the other way round.
    assert_eq!(fetch(&mut raw, 12, id, 1).send().error, TOPIC_ID_ERROR);
    let by_names = fetch(&mut raw, 12, 0, 0).topics(vec![by_name("t", vec![part(0, 0)])]).send().session;
    assert_eq!(fetch(&mut raw, 13, by_names, 1).send().error, TOPIC_ID_ERROR);

    // Delete and recreate: the old id's partitions are UNKNOWN_TOPIC_ID, answered every time;
    // the client swaps ids in one request (adds the new, forgets the old).
    let r: DeleteTopicsResponse = raw.call(ApiKey::DeleteTopics, 4, &DeleteTopicsRequest::default().with_topic_names(vec![name("t")]).with_timeout_ms(5000), 4);
    assert_eq!(r.responses[0].error_code, 0);
    let new = create(&mut raw, "t", 2);
    produce(&mut raw, "t", 1, batch(5));
    let unknown = ResponseError::UnknownTopicId.code();
    for epoch in [1, 2] {
        let a = fetch(&mut raw, 18, id, epoch).send();
        assert_eq!(a.error, 0, "{a:?}");
        assert_eq!(a.parts.values().map(|p| p.0).collect::<Vec<_>>(), vec![unknown, unknown], "{a:?}");
    }
    let a = fetch(&mut raw, 18, id, 3)
        .topics(vec![by_id(new, vec![part(0, 0), part(1, 0)])])
        .forget(vec![ForgottenTopic::default().with_topic_id(old).with_partitions(vec![0, 1])])
        .send();
    assert_eq!(a.parts.keys().cloned().collect::<Vec<_>>(), vec![(new.to_string(), 0), (new.to_string(), 1)], "{a:?}");
    assert_eq!(a.parts[&(new.to_string(), 1)].0, 0);
    assert!(a.parts[&(new.to_string(), 1)].1 > 0, "records of the new topic");
}

#[test]
fn the_cache_is_bounded_and_evicts_stale_then_smaller_old_sessions() {
    // One core, so that every connection shares one cache of two slots; sessions may be evicted
    // once unused (or, for a bigger one, once created) more than 2 s before.
    let broker = Broker::start(&["--cores", "1", "--max-incremental-fetch-session-cache-slots", "2", "--min-incremental-fetch-session-eviction-ms", "2000"]);
    let mut raw = Raw::connect(broker.port);
    create(&mut raw, "e", 3);
    let one = || vec![by_name("e", vec![part(0, 0)])];
    let two = || vec![by_name("e", vec![part(0, 0), part(1, 0)])];
    let started = Instant::now();
    let a = fetch(&mut raw, 12, 0, 0).topics(one()).send().session;
    let b = fetch(&mut raw, 12, 0, 0).topics(one()).send().session;
    assert!(a > 0 && b > 0);
    // Full: young sessions are never evicted, even for a bigger one.
    assert_eq!(fetch(&mut raw, 12, 0, 0).topics(one()).send().session, 0);
    assert_eq!(fetch(&mut raw, 12, 0, 0).topics(two()).send().session, 0);
    // Keep a in use past the eviction time; b goes stale.
    let mut epoch = 1;
    while started.elapsed() < Duration::from_millis(2500) {
        assert_eq!(fetch(&mut raw, 12, a, epoch).send().error, 0);
        epoch += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(fetch(&mut raw, 12, a, epoch).send().error, 0);
    epoch += 1;
    let c = fetch(&mut raw, 12, 0, 0).topics(one()).send().session;
    assert!(c > 0, "the stale session was not evicted");
    assert_eq!(fetch(&mut raw, 12, b, 1).send().error, NOT_FOUND, "b was the stale one");
    // Nothing stale now: a (old, one partition) may only go for a bigger session.
    assert_eq!(fetch(&mut raw, 12, 0, 0).topics(one()).send().session, 0);
    let d = fetch(&mut raw, 12, 0, 0).topics(two()).send().session;
    assert!(d > 0, "the smaller old session was not evicted for a bigger one");
    assert_eq!(fetch(&mut raw, 12, a, epoch).send().error, NOT_FOUND);
    assert_eq!(fetch(&mut raw, 12, c, 1).send().error, 0, "c is young");
    assert_eq!(metric_sum(&broker.metrics(), "spate_fetch_session_evictions_total"), 2.0);
    wait_metric(&broker, "spate_core_fetch_sessions", 2.0);
    wait_metric(&broker, "spate_core_fetch_session_partitions", 3.0);

    // Off: no session, ever.
    let off = Broker::start(&["--max-incremental-fetch-session-cache-slots", "0"]);
    let mut raw = Raw::connect(off.port);
    create(&mut raw, "e", 1);
    let a = fetch(&mut raw, 12, 0, 0).topics(one()).send();
    assert_eq!((a.error, a.session, a.partitions()), (0, 0, vec![0]));
}

#[test]
fn a_session_holds_no_more_partitions_than_exist_plus_a_thousand_unknown() {
    let broker = Broker::start(&[]);
    let mut raw = Raw::connect(broker.port);
    create(&mut raw, "b", 2);
    // 2 partitions exist: a session may hold 1002.
    let unknown = |from: i32, n: i32| by_name("nope", (from..from + n).map(|p| part(p, 0)).collect());
    let a = fetch(&mut raw, 12, 0, 0).topics(vec![unknown(0, 1003)]).send();
    assert_eq!((a.error, a.session, a.parts.len()), (0, 0, 1003), "too big for a session, answered without one");
    let a = fetch(&mut raw, 12, 0, 0).topics(vec![unknown(0, 1002)]).send();
    assert!(a.session > 0);
    // Growing past the bound closes the session; the request is answered as a sessionless one.
    let a = fetch(&mut raw, 12, a.session, 1).topics(vec![unknown(1002, 1)]).send();
    assert_eq!((a.error, a.session, a.parts.len()), (0, 0, 1), "{a:?}");
}

#[test]
fn a_session_lives_on_its_connection_core_and_the_client_starts_anew_elsewhere() {
    let broker = Broker::start(&[]);
    let mut first = Raw::connect(broker.port);
    create(&mut first, "r", 2);
    produce(&mut first, "r", 0, batch(3));
    let topics = || vec![by_name("r", vec![part(0, 0), part(1, 0)])];
    let id = fetch(&mut first, 12, 0, 0).topics(topics()).send().session;
    assert!(id > 0);
    // New connections, as after a reconnect: those on the session's core continue it, those on
    // the other core do not find it (the kernel spreads connections over both cores' listeners).
    let mut epoch = 1;
    let mut elsewhere = None;
    for _ in 0..40 {
        let mut raw = Raw::connect(broker.port);
        let a = fetch(&mut raw, 12, id, epoch).send();
        match a.error {
            0 => epoch += 1,
            NOT_FOUND => {
                elsewhere = Some(raw);
                break;
            }
            e => panic!("error {e}: {a:?}"),
        }
    }
    let mut raw = elsewhere.expect("40 connections all landed on one core");
    // As the Java client does after an error: a full fetch naming its old session. It gets a new
    // session on this core, and the old one is closed on its own core.
    let a = fetch(&mut raw, 12, id, 0).topics(topics()).send();
    assert!(a.session > 0 && a.session != id, "{a:?}");
    assert_eq!(a.partitions(), vec![0, 1]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while fetch(&mut first, 12, id, epoch).send().error != NOT_FOUND {
        epoch += 1;
        assert!(Instant::now() < deadline, "the old session was not closed on its core");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(fetch(&mut raw, 12, a.session, 1).send().error, 0);
    wait_metric(&broker, "spate_core_fetch_sessions", 1.0);
}

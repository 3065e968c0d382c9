//! Consumer groups with real librdkafka consumers using `subscribe()`: partitions shared among
//! members, each record read once, rebalances when members come, leave or die, and committed
//! offsets that a new member resumes from.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{flush, group_config, group_consumer, producer, Broker};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer};

const GROUP_FLAGS: &[&str] = &["--group-initial-rebalance-delay-ms", "300", "--num-partitions", "6"];


fn produce_numbered(bootstrap: &str, topic: &str, n: usize) {
    let p = producer(bootstrap, &[("acks", "all")]);
    for i in 0..n {
        let k = format!("k{i}");
        let v = format!("{i}");
        p.send(BaseRecord::to(topic).key(&k).payload(&v)).unwrap();
    }
    flush(&p);
    assert_eq!(p.context().ok.lock().unwrap().len(), n);
}

fn assigned(c: &BaseConsumer) -> BTreeSet<i32> {
    c.assignment().unwrap().elements().iter().map(|e| e.partition()).collect()
}

/// Polls every consumer until `done` says the shared state is complete (a hang guard of 90 s).
fn poll_all(consumers: &[BaseConsumer], seen: &mut Vec<Vec<i64>>, mut done: impl FnMut(&[BaseConsumer], &[Vec<i64>]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while !done(consumers, seen) {
        assert!(Instant::now() < deadline, "group did not settle: {:?}", consumers.iter().map(assigned).collect::<Vec<_>>());
        for (i, c) in consumers.iter().enumerate() {
            if let Some(Ok(m)) = c.poll(Duration::from_millis(50)) {
                seen[i].push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap().parse().unwrap());
            }
        }
    }
}

/// As in Kafka, looking up a group coordinator creates `__consumer_offsets`, so neither the
/// first commit nor the first settled group (whose membership is written there) does it inside
/// a member's session.
#[test]
fn the_first_coordinator_lookup_creates_the_offsets_topic() {
    use kafka_protocol::messages::{ApiKey, FindCoordinatorRequest, FindCoordinatorResponse};
    use kafka_protocol::protocol::StrBytes;
    let broker = Broker::start(GROUP_FLAGS);
    let offsets_dir = broker.data_dir().join("topics").join("__consumer_offsets");
    let lookup = |version: i16, key_type: i8| {
        let mut req = FindCoordinatorRequest::default().with_key_type(key_type);
        if version >= 4 {
            req.coordinator_keys = vec![StrBytes::from_static_str("g-lookup")];
        } else {
            req.key = StrBytes::from_static_str("g-lookup");
        }
        let r: FindCoordinatorResponse = common::Raw::connect(broker.port).call(ApiKey::FindCoordinator, version, &req, version);
        if version >= 4 { r.coordinators[0].error_code } else { r.error_code }
    };
    assert_eq!(lookup(3, 7), 42, "an unknown coordinator type: INVALID_REQUEST");
    assert_eq!(lookup(3, 1), 0, "a transactional id's coordinator");
    assert!(!offsets_dir.exists(), "a transaction coordinator lookup creates __transaction_state, not __consumer_offsets");
    let txn_dir = broker.data_dir().join("topics").join("__transaction_state");
    assert_eq!(std::fs::read_dir(&txn_dir).unwrap().filter(|e| e.as_ref().unwrap().path().is_dir()).count(), 50);
    assert_eq!(lookup(3, 0), 0);
    // Answered once every partition exists.
    let partitions = std::fs::read_dir(&offsets_dir).unwrap().filter(|e| e.as_ref().unwrap().path().is_dir()).count();
    assert_eq!(partitions, 50);
    assert_eq!(lookup(4, 0), 0, "later lookups find it");
}

#[test]
fn three_members_share_six_partitions_and_read_every_record_once() {
    let broker = Broker::start(GROUP_FLAGS);
    produce_numbered(&broker.bootstrap(), "shared", 3000);
    let consumers: Vec<BaseConsumer> = (0..3).map(|_| group_consumer(&broker.bootstrap(), "g-share", &[])).collect();
    for c in &consumers {
        c.subscribe(&["shared"]).unwrap();
    }
    let mut seen = vec![Vec::new(); 3];
    poll_all(&consumers, &mut seen, |cs, seen| {
        seen.iter().map(Vec::len).sum::<usize>() >= 3000 && cs.iter().all(|c| assigned(c).len() == 2)
    });
    let mut all: Vec<i64> = seen.concat();
    all.sort();
    assert_eq!(all, (0..3000).collect::<Vec<_>>(), "every record exactly once");
    let parts: BTreeSet<i32> = consumers.iter().flat_map(assigned).collect();
    assert_eq!(parts, (0..6).collect());
}

#[test]
fn a_new_member_resumes_from_committed_offsets() {
    let broker = Broker::start(GROUP_FLAGS);
    produce_numbered(&broker.bootstrap(), "resume", 600);
    let c = group_consumer(&broker.bootstrap(), "g-resume", &[]);
    c.subscribe(&["resume"]).unwrap();
    let mut seen = vec![Vec::new()];
    poll_all(std::slice::from_ref(&c), &mut seen, |_, s| s[0].len() >= 300);
    c.commit_consumer_state(CommitMode::Sync).unwrap();
    let first: BTreeSet<i64> = seen[0].iter().copied().collect();
    drop(c); // close(): LeaveGroup
    let c = group_consumer(&broker.bootstrap(), "g-resume", &[]);
    c.subscribe(&["resume"]).unwrap();
    let mut rest = vec![Vec::new()];
    poll_all(std::slice::from_ref(&c), &mut rest, |_, s| first.len() + s[0].len() >= 600);
    let again: BTreeSet<i64> = rest[0].iter().copied().collect();
    assert!(first.is_disjoint(&again), "records before the committed offsets were read again");
    let all: BTreeSet<i64> = first.union(&again).copied().collect();
    assert_eq!(all, (0..600).collect());
    // The committed offsets are visible to any client of the group.
    let committed = c.committed(Duration::from_secs(10)).unwrap();
    let total: i64 = committed.elements().iter().map(|e| e.offset().to_raw().unwrap().max(0)).sum();
    assert_eq!(total, first.len() as i64);
}

#[test]
fn two_groups_read_the_same_topic_independently() {
    let broker = Broker::start(GROUP_FLAGS);
    produce_numbered(&broker.bootstrap(), "twice", 500);
    let consumers = vec![
        group_consumer(&broker.bootstrap(), "g-one", &[]),
        group_consumer(&broker.bootstrap(), "g-two", &[]),
    ];
    for c in &consumers {
        c.subscribe(&["twice"]).unwrap();
    }
    let mut seen = vec![Vec::new(); 2];
    poll_all(&consumers, &mut seen, |_, s| s.iter().all(|v| v.len() >= 500));
    for v in &mut seen {
        v.sort();
        assert_eq!(*v, (0..500).collect::<Vec<_>>());
    }
}

/// Records every partition revoked from a consumer, as librdkafka reports it.
#[derive(Default)]
struct Revocations(Mutex<Vec<i32>>);

impl rdkafka::ClientContext for Revocations {}

impl rdkafka::consumer::ConsumerContext for Revocations {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, r: &rdkafka::consumer::Rebalance<'_>) {
        if let rdkafka::consumer::Rebalance::Revoke(tpl) = r {
            self.0.lock().unwrap().extend(tpl.elements().iter().map(|e| e.partition()));
        }
    }
}

#[test]
fn cooperative_sticky_rebalance_keeps_partitions_that_stay() {
    let broker = Broker::start(GROUP_FLAGS);
    produce_numbered(&broker.bootstrap(), "sticky", 60);
    let make = || -> BaseConsumer<Revocations> {
        group_config(&broker.bootstrap(), "g-sticky", &[("partition.assignment.strategy", "cooperative-sticky")])
            .create_with_context(Revocations::default())
            .unwrap()
    };
    let owned = |c: &BaseConsumer<Revocations>| -> BTreeSet<i32> {
        c.assignment().unwrap().elements().iter().map(|e| e.partition()).collect()
    };
    let settle = |cs: &[&BaseConsumer<Revocations>], want: usize| {
        let deadline = Instant::now() + Duration::from_secs(90);
        while !cs.iter().all(|c| owned(c).len() == want) {
            assert!(Instant::now() < deadline, "group did not settle at {want} partitions each");
            for c in cs {
                let _ = c.poll(Duration::from_millis(50));
            }
        }
    };
    let a = make();
    a.subscribe(&["sticky"]).unwrap();
    settle(&[&a], 6);
    let b = make();
    b.subscribe(&["sticky"]).unwrap();
    settle(&[&a, &b], 3);
    let c = make();
    c.subscribe(&["sticky"]).unwrap();
    settle(&[&a, &b, &c], 2);
    // Incremental rebalancing: a member is only ever asked to give up partitions that move; what
    // it still owns at the end was never revoked from it.
    for m in [&a, &b, &c] {
        let revoked: BTreeSet<i32> = m.context().0.lock().unwrap().iter().copied().collect();
        assert!(revoked.is_disjoint(&owned(m)), "kept partitions {:?} were revoked: {revoked:?}", owned(m));
    }
    assert_eq!(a.context().0.lock().unwrap().len(), 4, "a gave up 3 to b, then 1 to c");
    let all: BTreeSet<i32> = [&a, &b, &c].iter().flat_map(|m| owned(m)).collect();
    assert_eq!(all, (0..6).collect());
}

#[test]
fn a_fourth_member_moves_only_what_it_must() {
    let broker = Broker::start(GROUP_FLAGS);
    produce_numbered(&broker.bootstrap(), "fourth", 60);
    let make = || -> BaseConsumer<Revocations> {
        group_config(&broker.bootstrap(), "g-fourth", &[("partition.assignment.strategy", "cooperative-sticky")])
            .create_with_context(Revocations::default())
            .unwrap()
    };
    let owned = |c: &BaseConsumer<Revocations>| -> BTreeSet<i32> {
        c.assignment().unwrap().elements().iter().map(|e| e.partition()).collect()
    };
    let poll_until = |cs: &[&BaseConsumer<Revocations>], done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(90);
        while !done() {
            assert!(Instant::now() < deadline, "group did not settle: {:?}", cs.iter().map(|c| owned(c)).collect::<Vec<_>>());
            for c in cs {
                let _ = c.poll(Duration::from_millis(50));
            }
        }
    };
    let three: Vec<BaseConsumer<Revocations>> = (0..3).map(|_| make()).collect();
    for c in &three {
        c.subscribe(&["fourth"]).unwrap();
    }
    let refs: Vec<&BaseConsumer<Revocations>> = three.iter().collect();
    poll_until(&refs, &|| three.iter().all(|c| owned(c).len() == 2));
    let before: Vec<BTreeSet<i32>> = three.iter().map(owned).collect();
    for c in &three {
        c.context().0.lock().unwrap().clear();
    }
    let fourth = make();
    fourth.subscribe(&["fourth"]).unwrap();
    let mut all = refs.clone();
    all.push(&fourth);
    poll_until(&all, &|| {
        let counts: Vec<usize> = all.iter().map(|c| owned(c).len()).collect();
        counts.iter().sum::<usize>() == 6 && counts.iter().all(|n| (1..=2).contains(n))
    });
    // 6 partitions over 4 members: 2, 2, 1, 1. The newcomer takes one partition, and that one
    // partition is the only one revoked from anybody; everyone else keeps what they had.
    let revoked: BTreeSet<i32> = three.iter().flat_map(|c| c.context().0.lock().unwrap().clone()).collect();
    assert_eq!(owned(&fourth).len(), 1, "{:?}", all.iter().map(|c| owned(c)).collect::<Vec<_>>());
    assert_eq!(revoked, owned(&fourth), "only the partition that moved to the newcomer was revoked");
    for (c, had) in three.iter().zip(&before) {
        assert!(owned(c).is_subset(had), "a member gained or swapped partitions: {had:?} -> {:?}", owned(c));
    }
}

#[test]
fn membership_survives_a_broker_restart_without_a_rebalance() {
    let mut broker = Broker::start(GROUP_FLAGS);
    produce_numbered(&broker.bootstrap(), "kept", 60);
    let c: BaseConsumer<Revocations> =
        group_config(&broker.bootstrap(), "g-kept", &[]).create_with_context(Revocations::default()).unwrap();
    c.subscribe(&["kept"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.assignment().unwrap().count() != 6 {
        assert!(Instant::now() < deadline, "never assigned");
        let _ = c.poll(Duration::from_millis(50));
    }
    // The group's snapshot is written in the background once it is Stable; give it a moment.
    let wait = Instant::now() + Duration::from_secs(1);
    while Instant::now() < wait {
        let _ = c.poll(Duration::from_millis(50));
    }
    broker.restart(); // kill -9, then start on the same data directory
    // Before the member could have rejoined, the group is back, Stable, with its member.
    let other = group_consumer(&broker.bootstrap(), "g-observer", &[]);
    let list = other.fetch_group_list(Some("g-kept"), Duration::from_secs(10)).unwrap();
    let g = &list.groups()[0];
    assert_eq!((g.state(), g.members().len()), ("Stable", 1), "{}", broker.log());
    assert!(g.members()[0].assignment().is_some_and(|a| !a.is_empty()));
    assert_eq!(g.members()[0].client_host(), "/127.0.0.1");
    // The member heartbeats through the restart and is never asked to give up its partitions.
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        let _ = c.poll(Duration::from_millis(50));
    }
    assert!(c.context().0.lock().unwrap().is_empty(), "the restart caused a rebalance");
    assert_eq!(c.assignment().unwrap().count(), 6);
}

/// KIP-848 membership is in `__consumer_offsets` too: a librdkafka member under
/// `group.protocol=consumer` goes on through a kill -9 of the broker with its member epoch and
/// partitions, and commits without rejoining.
#[test]
fn consumer_protocol_membership_survives_a_broker_restart_without_a_rebalance() {
    let mut broker = Broker::start(GROUP_FLAGS);
    produce_numbered(&broker.bootstrap(), "kept848", 60);
    let mut cfg = group_config(&broker.bootstrap(), "g-kept-848", &[]);
    cfg.set("group.protocol", "consumer");
    cfg.remove("session.timeout.ms");
    cfg.remove("heartbeat.interval.ms");
    cfg.remove("partition.assignment.strategy");
    let c: BaseConsumer<Revocations> = cfg.create_with_context(Revocations::default()).unwrap();
    c.subscribe(&["kept848"]).unwrap();
    let mut read = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while c.assignment().unwrap().count() != 6 || read < 60 {
        assert!(Instant::now() < deadline, "never assigned and read: {read} records");
        if let Some(Ok(_)) = c.poll(Duration::from_millis(50)) {
            read += 1;
        }
    }
    c.commit_consumer_state(CommitMode::Sync).expect("a commit before the restart");
    // The group's records are written in the background after a change; give them a moment.
    let wait = Instant::now() + Duration::from_secs(1);
    while Instant::now() < wait {
        let _ = c.poll(Duration::from_millis(50));
    }
    broker.restart(); // kill -9, then start on the same data directory
    assert!(broker.log().contains("consumer group restored group=g-kept-848 epoch=1 members=1"), "{}", broker.log());
    // More records, read and committed by the same member at the same epoch: a commit from a
    // member the broker did not know would fail with UNKNOWN_MEMBER_ID.
    produce_numbered(&broker.bootstrap(), "kept848", 60);
    let deadline = Instant::now() + Duration::from_secs(60);
    while read < 120 {
        assert!(Instant::now() < deadline, "read {read} of 120 after the restart; {}", broker.log());
        if let Some(Ok(_)) = c.poll(Duration::from_millis(50)) {
            read += 1;
        }
    }
    c.commit_consumer_state(CommitMode::Sync).expect("a commit after the restart, without rejoining");
    let until = Instant::now() + Duration::from_secs(6); // past librdkafka's 5 s heartbeat interval
    while Instant::now() < until {
        assert!(c.poll(Duration::from_millis(50)).is_none_or(|m| m.is_err()), "a record read twice after the restart");
    }
    assert!(c.context().0.lock().unwrap().is_empty(), "the restart caused a rebalance");
    assert_eq!(c.assignment().unwrap().count(), 6);
    assert!(!broker.log().contains("consumer-protocol member removed"), "{}", broker.log());
}

/// Run as a child process by `a_killed_member_loses_its_partitions_after_the_session_timeout`:
/// joins the group, prints its assignment, and polls until killed.
#[test]
#[ignore = "child process of another test"]
fn child_group_member() {
    let Ok(bootstrap) = std::env::var("SPATE_CHILD_BOOTSTRAP") else { return };
    let c = group_consumer(&bootstrap, "g-kill", &[]);
    c.subscribe(&["killed"]).unwrap();
    let mut last = BTreeSet::new();
    loop {
        let _ = c.poll(Duration::from_millis(100));
        let now = assigned(&c);
        if now != last {
            println!("assigned {}", now.len());
            last = now;
        }
    }
}

#[test]
fn a_killed_member_loses_its_partitions_after_the_session_timeout() {
    let broker = Broker::start(GROUP_FLAGS);
    produce_numbered(&broker.bootstrap(), "killed", 600);
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "child_group_member", "--nocapture"])
        .env("SPATE_CHILD_BOOTSTRAP", broker.bootstrap())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    {
        let lines = lines.clone();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(l);
            }
        });
    }
    let survivor = group_consumer(&broker.bootstrap(), "g-kill", &[]);
    survivor.subscribe(&["killed"]).unwrap();
    let mut seen = vec![Vec::new()];
    poll_all(std::slice::from_ref(&survivor), &mut seen, |cs, _| {
        assigned(&cs[0]).len() == 3 && lines.lock().unwrap().iter().any(|l| l == "assigned 3")
    });
    // kill -9: no LeaveGroup. The group notices through the missing heartbeats.
    child.kill().unwrap();
    child.wait().unwrap();
    let killed_at = Instant::now();
    // Without commits, the survivor rereads its own partitions after the rebalance too: count
    // distinct records.
    poll_all(std::slice::from_ref(&survivor), &mut seen, |cs, s| {
        assigned(&cs[0]).len() == 6 && s[0].iter().collect::<BTreeSet<_>>().len() >= 600
    });
    assert!(killed_at.elapsed() >= Duration::from_secs(3), "partitions moved before the session could have expired");
    let distinct: BTreeSet<i64> = seen[0].iter().copied().collect();
    assert_eq!(distinct, (0..600).collect(), "no record skipped");
}

#[test]
fn committed_offsets_survive_a_broker_crash() {
    let mut broker = Broker::start(GROUP_FLAGS);
    produce_numbered(&broker.bootstrap(), "durable-commits", 600);
    let c = group_consumer(&broker.bootstrap(), "g-durable", &[]);
    c.subscribe(&["durable-commits"]).unwrap();
    let mut seen = vec![Vec::new()];
    poll_all(std::slice::from_ref(&c), &mut seen, |_, s| s[0].len() >= 250);
    c.commit_consumer_state(CommitMode::Sync).unwrap();
    let first: BTreeSet<i64> = seen[0].iter().copied().collect();
    drop(c);
    broker.restart(); // kill -9, then start on the same data directory
    assert!(broker.log().contains("reloaded coordinator state"), "{}", broker.log());
    let c = group_consumer(&broker.bootstrap(), "g-durable", &[]);
    c.subscribe(&["durable-commits"]).unwrap();
    let mut rest = vec![Vec::new()];
    poll_all(std::slice::from_ref(&c), &mut rest, |_, s| first.len() + s[0].len() >= 600);
    let again: BTreeSet<i64> = rest[0].iter().copied().collect();
    assert!(first.is_disjoint(&again), "records before the committed offsets were read again after a crash");
    assert_eq!(first.union(&again).copied().collect::<BTreeSet<_>>(), (0..600).collect());
}

#[test]
fn groups_are_listed_described_and_deleted() {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    use rdkafka::types::RDKafkaErrorCode;
    let mut broker = Broker::start(GROUP_FLAGS);
    produce_numbered(&broker.bootstrap(), "admin-t", 120);
    let consumers: Vec<BaseConsumer> = (0..2).map(|_| group_consumer(&broker.bootstrap(), "g-admin", &[])).collect();
    for c in &consumers {
        c.subscribe(&["admin-t"]).unwrap();
    }
    let mut seen = vec![Vec::new(); 2];
    poll_all(&consumers, &mut seen, |cs, s| {
        cs.iter().all(|c| assigned(c).len() == 3) && s.iter().map(Vec::len).sum::<usize>() >= 120
    });
    for c in &consumers {
        c.commit_consumer_state(CommitMode::Sync).unwrap();
    }
    // ListGroups + DescribeGroups, as librdkafka's group list does them.
    let list = consumers[0].fetch_group_list(Some("g-admin"), Duration::from_secs(10)).unwrap();
    let g = &list.groups()[0];
    assert_eq!((g.name(), g.state(), g.protocol_type()), ("g-admin", "Stable", "consumer"));
    assert_eq!(g.members().len(), 2);
    assert!(g.members().iter().all(|m| m.assignment().is_some_and(|a| !a.is_empty())));
    let all = consumers[0].fetch_group_list(None, Duration::from_secs(10)).unwrap();
    assert!(all.groups().iter().any(|g| g.name() == "g-admin"));

    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", broker.bootstrap()).create().unwrap();
    let delete = |admin: &AdminClient<DefaultClientContext>| {
        futures_lite::future::block_on(admin.delete_groups(&["g-admin"], &AdminOptions::new())).unwrap().remove(0)
    };
    assert_eq!(delete(&admin).unwrap_err().1, RDKafkaErrorCode::NonEmptyGroup);
    drop(consumers); // LeaveGroup from both
    assert_eq!(delete(&admin), Ok("g-admin".to_string()));
    assert_eq!(delete(&admin).unwrap_err().1, RDKafkaErrorCode::GroupIdNotFound);
    // The deletion is durable: after a crash the group's offsets do not come back.
    drop(admin);
    broker.restart();
    let c = group_consumer(&broker.bootstrap(), "g-admin", &[]);
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in 0..6 {
        tpl.add_partition("admin-t", p);
    }
    let committed = c.committed_offsets(tpl, Duration::from_secs(10)).unwrap();
    assert!(committed.elements().iter().all(|e| e.offset() == rdkafka::Offset::Invalid), "{committed:?}");
}

#[test]
fn offset_delete_spares_subscribed_topics_until_the_group_is_empty() {
    use kafka_protocol::messages::offset_delete_request::{OffsetDeleteRequestPartition, OffsetDeleteRequestTopic};
    use kafka_protocol::messages::{ApiKey, GroupId, OffsetDeleteRequest, OffsetDeleteResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let broker = Broker::start(GROUP_FLAGS);
    produce_numbered(&broker.bootstrap(), "od-sub", 30);
    produce_numbered(&broker.bootstrap(), "od-other", 30);
    let c = group_consumer(&broker.bootstrap(), "g-od", &[]);
    c.subscribe(&["od-sub"]).unwrap();
    let mut seen = vec![Vec::new()];
    poll_all(std::slice::from_ref(&c), &mut seen, |_, s| s[0].len() >= 30);
    c.commit_consumer_state(CommitMode::Sync).unwrap();
    // Offsets for a topic the member does not subscribe to (allowed: commit() takes any list).
    let mut other = rdkafka::TopicPartitionList::new();
    other.add_partition_offset("od-other", 0, rdkafka::Offset::Offset(3)).unwrap();
    c.commit(&other, CommitMode::Sync).unwrap();
    let request = |group: &str, topic: &str| {
        let req = OffsetDeleteRequest::default().with_group_id(GroupId(StrBytes::from_string(group.into()))).with_topics(vec![
            OffsetDeleteRequestTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.into())))
                .with_partitions(vec![OffsetDeleteRequestPartition::default().with_partition_index(0)]),
        ]);
        let r: OffsetDeleteResponse = common::Raw::connect(broker.port).call(ApiKey::OffsetDelete, 0, &req, 0);
        (r.error_code, r.topics.first().map(|t| t.partitions[0].error_code))
    };
    let committed = |topic: &str| {
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition(topic, 0);
        c.committed_offsets(tpl, Duration::from_secs(10)).unwrap().elements()[0].offset()
    };
    assert_eq!(request("g-od", "od-sub"), (0, Some(86)), "GROUP_SUBSCRIBED_TO_TOPIC while a member reads it");
    assert_eq!(request("g-od", "od-other"), (0, Some(0)));
    assert_eq!(committed("od-other"), rdkafka::Offset::Invalid, "deleted");
    assert_ne!(committed("od-sub"), rdkafka::Offset::Invalid, "kept");
    assert_eq!(request("no-such-group", "od-sub"), (69, None), "GROUP_ID_NOT_FOUND");
    c.unsubscribe();
    let deadline = Instant::now() + Duration::from_secs(30);
    while request("g-od", "od-sub") != (0, Some(0)) {
        assert!(Instant::now() < deadline, "offsets of an empty group could not be deleted");
        let _ = c.poll(Duration::from_millis(100));
    }
    assert_eq!(committed("od-sub"), rdkafka::Offset::Invalid);
}

#[test]
fn abandoned_offsets_expire_after_the_retention() {
    // The shortest retention Kafka allows is one minute, so this test takes one.
    let mut broker = Broker::start(&["--offsets-retention-minutes", "1", "--offsets-retention-check-interval-ms", "500"]);
    produce_numbered(&broker.bootstrap(), "expiring", 10);
    let committed = |bootstrap: &str| {
        let c = group_consumer(bootstrap, "g-expire", &[]);
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition("expiring", 0);
        c.committed_offsets(tpl, Duration::from_secs(10)).unwrap().elements()[0].offset()
    };
    let c = group_consumer(&broker.bootstrap(), "g-expire", &[]);
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset("expiring", 0, rdkafka::Offset::Offset(7)).unwrap();
    c.commit(&tpl, CommitMode::Sync).unwrap(); // assign()-style commit: the group never had members
    drop(c);
    let committed_at = Instant::now();
    // Meanwhile a KIP-848 member subscribed to "expiring" commits an offset of a topic it does
    // not subscribe to: that offset expires too, and the group, which still has its member,
    // must stay (it was once dropped whole with its offsets).
    produce_numbered(&broker.bootstrap(), "unsubscribed", 1);
    let mut cfg = group_config(&broker.bootstrap(), "g-expire-848", &[]);
    cfg.set("group.protocol", "consumer");
    for k in ["session.timeout.ms", "heartbeat.interval.ms"] {
        cfg.remove(k);
    }
    let member: BaseConsumer<Revocations> = cfg.create_with_context(Revocations::default()).unwrap();
    member.subscribe(&["expiring"]).unwrap();
    while member.assignment().unwrap().count() == 0 {
        assert!(committed_at.elapsed() < Duration::from_secs(30), "the KIP-848 member was never assigned");
        let _ = member.poll(Duration::from_millis(50));
    }
    let mut other = rdkafka::TopicPartitionList::new();
    other.add_partition_offset("unsubscribed", 0, rdkafka::Offset::Offset(1)).unwrap();
    member.commit(&other, CommitMode::Sync).unwrap();
    let poll_for = |d: Duration| {
        let until = Instant::now() + d;
        while Instant::now() < until {
            let _ = member.poll(Duration::from_millis(50));
        }
    };
    poll_for(Duration::from_secs(40).saturating_sub(committed_at.elapsed()));
    assert_eq!(committed(&broker.bootstrap()), rdkafka::Offset::Offset(7), "expired before the retention");
    while committed(&broker.bootstrap()) != rdkafka::Offset::Invalid {
        assert!(committed_at.elapsed() < Duration::from_secs(120), "never expired");
        poll_for(Duration::from_millis(500));
    }
    assert!(committed_at.elapsed() >= Duration::from_secs(59));
    assert!(broker.log().contains("committed offsets expired"), "{}", broker.log());
    poll_for(Duration::from_secs(6)); // past librdkafka's 5 s heartbeat interval
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset("expiring", 0, rdkafka::Offset::Offset(3)).unwrap();
    member.commit(&tpl, CommitMode::Sync).expect("the KIP-848 member is still known after its other offset expired");
    assert!(member.context().0.lock().unwrap().is_empty(), "the member lost its partitions: {}", broker.log());
    assert!(broker.log().contains("group=g-expire-848 partitions=1"), "its unsubscribed offset expired: {}", broker.log());
    broker.restart();
    assert_eq!(committed(&broker.bootstrap()), rdkafka::Offset::Invalid, "the expiry is durable");
}

#[test]
fn consumer_protocol_members_share_partitions_and_rebalance_incrementally() {
    // KIP-848: librdkafka with group.protocol=consumer; the broker computes the assignment.
    let broker = Broker::start(GROUP_FLAGS);
    // Six early records (creating the 6-partition topic), numbered from 1,000,000 so that any
    // re-read of them later is told apart from the 600 counted below.
    {
        let p = producer(&broker.bootstrap(), &[("acks", "all")]);
        for i in 0..6 {
            p.send(BaseRecord::to("kip848").key(&format!("e{i}")).payload(&(1_000_000 + i).to_string())).unwrap();
        }
        flush(&p);
    }
    let make = |name: &str| -> BaseConsumer<Revocations> {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", broker.bootstrap())
            .set("group.id", "g-848")
            .set("group.protocol", "consumer")
            .set("client.id", name)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false");
        c.create_with_context(Revocations::default()).unwrap()
    };
    let owned = |c: &BaseConsumer<Revocations>| -> BTreeSet<i32> {
        c.assignment().unwrap().elements().iter().map(|e| e.partition()).collect()
    };
    let mut seen: Vec<Vec<i64>> = vec![Vec::new(); 4];
    let poll_until = |cs: &[&BaseConsumer<Revocations>], seen: &mut Vec<Vec<i64>>, done: &dyn Fn(&[Vec<i64>]) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(90);
        while !done(seen) {
            assert!(Instant::now() < deadline, "group did not settle: {:?}", cs.iter().map(|c| owned(c)).collect::<Vec<_>>());
            for (i, c) in cs.iter().enumerate() {
                if let Some(Ok(m)) = c.poll(Duration::from_millis(20)) {
                    seen[i].push(String::from_utf8(m.payload().unwrap().to_vec()).unwrap().parse().unwrap());
                }
            }
        }
    };
    let three: Vec<BaseConsumer<Revocations>> = ["a", "b", "c"].iter().map(|n| make(n)).collect();
    for c in &three {
        c.subscribe(&["kip848"]).unwrap();
    }
    let refs: Vec<&BaseConsumer<Revocations>> = three.iter().collect();
    // Without commits, a partition that moves while the group forms is read again from the
    // start by its new owner: wait for all six early records, however often they came.
    poll_until(&refs, &mut seen, &|s| {
        three.iter().all(|c| owned(c).len() == 2) && s.iter().flatten().collect::<BTreeSet<_>>().len() == 6
    });
    let all: BTreeSet<i32> = three.iter().flat_map(owned).collect();
    assert_eq!(all, (0..6).collect(), "each partition has exactly one owner");
    // `spate group describe` shows it through ConsumerGroupDescribe (DescribeGroups does not).
    let out = Command::new(env!("CARGO_BIN_EXE_spate"))
        .args(["group", "-b", &broker.bootstrap(), "describe", "g-848", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let members = json[0]["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "{json}");
    assert!(members.iter().all(|m| m["assignment"].as_array().unwrap().len() == 2), "{json}");
    assert_eq!(json[0]["protocol"], "uniform");
    // With the assignment settled, new records are each read exactly once.
    seen.iter_mut().for_each(Vec::clear);
    produce_numbered(&broker.bootstrap(), "kip848", 600);
    poll_until(&refs, &mut seen, &|s| s.iter().flatten().filter(|v| **v < 1_000_000).count() >= 600);
    let linger = Instant::now() + Duration::from_millis(500);
    poll_until(&refs, &mut seen, &|_| Instant::now() >= linger);
    // Early records may still be re-read by a member that got their partition before any
    // commit; the 600 produced after the group settled are each read exactly once.
    let mut later: Vec<i64> = seen.iter().flat_map(|v| v.iter().copied()).filter(|v| *v < 1_000_000).collect();
    later.sort();
    assert_eq!(later, (0..600).collect::<Vec<_>>(), "every record exactly once");
    for c in &three {
        c.commit_consumer_state(CommitMode::Sync).unwrap(); // OffsetCommit with the member epoch
        c.context().0.lock().unwrap().clear();
    }
    // A fourth member: only what must move moves (6 over 4 is 2, 2, 1, 1).
    let fourth = make("d");
    fourth.subscribe(&["kip848"]).unwrap();
    let mut all_refs = refs.clone();
    all_refs.push(&fourth);
    let before: Vec<BTreeSet<i32>> = three.iter().map(owned).collect();
    poll_until(&all_refs, &mut seen, &|_| {
        let n: Vec<usize> = all_refs.iter().map(|c| owned(c).len()).collect();
        n.iter().sum::<usize>() == 6 && n.iter().all(|x| (1..=2).contains(x))
    });
    let revoked: BTreeSet<i32> = three.iter().flat_map(|c| c.context().0.lock().unwrap().clone()).collect();
    assert_eq!(revoked, owned(&fourth), "only the newcomer's partitions were revoked from anyone");
    for (c, had) in three.iter().zip(&before) {
        assert!(owned(c).is_subset(had));
    }
    // The group as ConsumerGroupDescribe shows it, through the CLI's view of ListGroups.
    let list = fourth.fetch_group_list(None, Duration::from_secs(10)).unwrap();
    assert!(list.groups().iter().any(|g| g.name() == "g-848"));
    // Leaving members hand their partitions to the rest.
    drop(three);
    poll_until(&[&fourth], &mut seen, &|_| owned(&fourth).len() == 6);
}

#[test]
fn commit_metadata_over_4096_bytes_is_refused() {
    use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
    use kafka_protocol::messages::{ApiKey, GroupId, OffsetCommitRequest, OffsetCommitResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let broker = Broker::start(GROUP_FLAGS);
    produce_numbered(&broker.bootstrap(), "meta", 10);
    let commit = |metadata: String| {
        let req = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("g-meta")))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![OffsetCommitRequestTopic::default()
                .with_name(TopicName(StrBytes::from_static_str("meta")))
                .with_partitions(vec![OffsetCommitRequestPartition::default()
                    .with_partition_index(0)
                    .with_committed_offset(5)
                    .with_committed_metadata(Some(StrBytes::from_string(metadata)))])]);
        let r: OffsetCommitResponse = common::Raw::connect(broker.port).call(ApiKey::OffsetCommit, 8, &req, 8);
        r.topics[0].partitions[0].error_code
    };
    assert_eq!(commit("é".repeat(2049)), 12, "OFFSET_METADATA_TOO_LARGE for 4098 bytes");
    assert_eq!(commit("m".repeat(4096)), 0, "4096 bytes is allowed");
}

/// KIP-848 consumers that only assign(): librdkafka under `group.protocol=consumer` commits with
/// its own member id and epoch -1. Kafka accepts that while the group has no members, as for the
/// classic protocol (it was refused with UNKNOWN_MEMBER_ID).
#[test]
fn consumer_protocol_assign_only_consumer_commits() {
    let broker = Broker::start(GROUP_FLAGS);
    produce_numbered(&broker.bootstrap(), "assigned-848", 12);
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "g-848-assign")
        .set("group.protocol", "consumer")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    tpl.add_partition_offset("assigned-848", 0, rdkafka::Offset::Beginning).unwrap();
    c.assign(&tpl).unwrap();
    let mut commit = rdkafka::TopicPartitionList::new();
    commit.add_partition_offset("assigned-848", 0, rdkafka::Offset::Offset(2)).unwrap();
    c.commit(&commit, CommitMode::Sync).expect("an assign()-only consumer-protocol commit");
    let mut ask = rdkafka::TopicPartitionList::new();
    ask.add_partition("assigned-848", 0);
    let got = c.committed_offsets(ask, Duration::from_secs(10)).unwrap();
    assert_eq!(got.elements()[0].offset(), rdkafka::Offset::Offset(2));
}

/// KIP-345: a static member (`group.instance.id`) closed without leaving and back within its
/// session gets its old partitions with no rebalance; the other member keeps its own and is
/// never asked to revoke anything. (Spate rebalanced the whole group.)
#[test]
fn static_member_restart_keeps_assignments_without_a_rebalance() {
    let broker = Broker::start(GROUP_FLAGS);
    produce_numbered(&broker.bootstrap(), "static", 60);
    let make = |instance: &str| -> BaseConsumer<Revocations> {
        group_config(&broker.bootstrap(), "g-static", &[("group.instance.id", instance)])
            .create_with_context(Revocations::default())
            .unwrap()
    };
    let owned = |c: &BaseConsumer<Revocations>| -> BTreeSet<i32> {
        c.assignment().unwrap().elements().iter().map(|e| e.partition()).collect()
    };
    let settle = |cs: &[&BaseConsumer<Revocations>]| {
        let deadline = Instant::now() + Duration::from_secs(90);
        while cs.iter().map(|c| owned(c).len()).sum::<usize>() != 6 || cs.iter().any(|c| owned(c).is_empty()) {
            assert!(Instant::now() < deadline, "group did not settle: {:?}", cs.iter().map(|c| owned(c)).collect::<Vec<_>>());
            for c in cs {
                let _ = c.poll(Duration::from_millis(20));
            }
        }
    };
    let a = make("static-a");
    let b = make("static-b");
    a.subscribe(&["static"]).unwrap();
    b.subscribe(&["static"]).unwrap();
    settle(&[&a, &b]);
    let (a_parts, b_parts) = (owned(&a), owned(&b));
    let b_revoked_before = b.context().0.lock().unwrap().len();
    drop(a); // a static member's close sends no LeaveGroup
    let a2 = make("static-a");
    a2.subscribe(&["static"]).unwrap();
    settle(&[&a2, &b]);
    // Poll on a while: a rebalance would reach b within its heartbeat interval (500 ms).
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until {
        let _ = a2.poll(Duration::from_millis(20));
        let _ = b.poll(Duration::from_millis(20));
    }
    assert_eq!(owned(&a2), a_parts, "the restarted member has its old partitions");
    assert_eq!(owned(&b), b_parts, "the other member keeps its partitions");
    // (Read before asserting: a panic holding the lock would poison it for the close's callback.)
    let b_revoked = b.context().0.lock().unwrap().len();
    assert_eq!(b_revoked, b_revoked_before, "the other member revoked nothing");
}

/// Static members' sessions: a `session.timeout.ms` below the broker's minimum (6000) is refused
/// with INVALID_SESSION_TIMEOUT as for dynamic members; a static member closed without leaving
/// holds the group until its session ends, then the group, empty and without offsets, can be
/// deleted (Kafka deletes an empty group; Spate answered GROUP_ID_NOT_FOUND once the member
/// expired, so a script waiting for the group to become deletable waited forever).
#[test]
fn static_member_session_bounds_and_expiry() {
    use rdkafka::admin::{AdminClient, AdminOptions};
    use rdkafka::client::DefaultClientContext;
    let broker = Broker::start(GROUP_FLAGS);
    produce_numbered(&broker.bootstrap(), "static-s", 6);
    for (group, instance) in [("g-short-dynamic", None), ("g-short-static", Some("short-1"))] {
        let mut extra = vec![("session.timeout.ms", "5000")];
        extra.extend(instance.map(|i| ("group.instance.id", i)));
        let c = group_consumer(&broker.bootstrap(), group, &extra);
        c.subscribe(&["static-s"]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let err = loop {
            assert!(Instant::now() < deadline, "{group}: no error for a 5000 ms session");
            if let Some(Err(e)) = c.poll(Duration::from_millis(100)) {
                break e.to_string();
            }
        };
        assert!(err.contains("InvalidSessionTimeout") || err.contains("session timeout"), "{group}: {err}");
        assert!(c.assignment().unwrap().count() == 0, "{group} got partitions");
    }

    let c = group_consumer(&broker.bootstrap(), "g-expiring", &[("group.instance.id", "expiring-1")]);
    c.subscribe(&["static-s"]).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while assigned(&c).is_empty() {
        assert!(Instant::now() < deadline, "the static member got no partitions");
        let _ = c.poll(Duration::from_millis(50));
    }
    drop(c); // no LeaveGroup from a static member
    let closed = Instant::now();
    let admin: AdminClient<DefaultClientContext> =
        ClientConfig::new().set("bootstrap.servers", broker.bootstrap()).create().unwrap();
    let delete = || {
        futures_lite::future::block_on(admin.delete_groups(&["g-expiring"], &AdminOptions::new())).unwrap().remove(0)
    };
    let first = delete();
    assert!(
        format!("{first:?}").contains("NonEmptyGroup"),
        "the member's session (6 s) still runs {:?} after its close: {first:?}",
        closed.elapsed()
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match delete() {
            Ok(_) => break,
            Err((_, code)) => {
                assert_eq!(format!("{code:?}"), "NonEmptyGroup", "refused for another reason");
                assert!(Instant::now() < deadline, "the session never expired");
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(closed.elapsed() >= Duration::from_secs(5), "expired {:?} after the close, before its session", closed.elapsed());
}

/// KIP-848 regular-expression subscriptions: librdkafka under `group.protocol=consumer` sends
/// `subscribe(["^regex-.*"])` as SubscribedTopicRegex (Spate refused it with INVALID_REQUEST).
/// The member gets the matching topic's partitions, not the other topic's, and a matching topic
/// created later joins the subscription.
#[test]
fn consumer_protocol_regex_subscription_follows_new_topics() {
    let broker = Broker::start(GROUP_FLAGS);
    common::create_topic(&broker.bootstrap(), "regex-a", 2, &[]);
    common::create_topic(&broker.bootstrap(), "other-a", 2, &[]);
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "g-regex")
        .set("group.protocol", "consumer")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("topic.metadata.refresh.interval.ms", "1000")
        .create()
        .unwrap();
    c.subscribe(&["^regex-.*"]).unwrap();
    let owned = |c: &BaseConsumer| -> BTreeSet<(String, i32)> {
        c.assignment().unwrap().elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect()
    };
    let wait_for = |want: BTreeSet<(String, i32)>| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while owned(&c) != want {
            assert!(Instant::now() < deadline, "assignment {:?}, want {want:?}", owned(&c));
            if let Some(Err(e)) = c.poll(Duration::from_millis(50)) {
                panic!("consumer error: {e}");
            }
        }
    };
    let parts = |topics: &[&str]| -> BTreeSet<(String, i32)> {
        topics.iter().flat_map(|t| (0..2).map(move |p| (t.to_string(), p))).collect()
    };
    wait_for(parts(&["regex-a"]));
    common::create_topic(&broker.bootstrap(), "regex-b", 2, &[]);
    wait_for(parts(&["regex-a", "regex-b"]));
}

/// Commits racing the creation of `__consumer_offsets`: clients on many connections (so on both
/// cores) look for their coordinator and commit at once, right after the broker starts. A
/// lookup that succeeds means the group's partition is open on its core, so no commit after it
/// is answered COORDINATOR_NOT_AVAILABLE (it was, when a core installed the new topic before
/// the other core had opened its partitions).
#[test]
fn commits_racing_the_offsets_topic_creation_find_their_partition() {
    use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
    use kafka_protocol::messages::{ApiKey, FindCoordinatorRequest, FindCoordinatorResponse, GroupId, OffsetCommitRequest, OffsetCommitResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;
    for round in 0..3 {
        let broker = Broker::start(GROUP_FLAGS);
        produce_numbered(&broker.bootstrap(), "racing", 10);
        let port = broker.port;
        // Each worker starts a little later than the one before and keeps going with new groups,
        // so that lookups and commits arrive all through the creation.
        let workers: Vec<_> = (0..16u64)
            .map(|i| {
                std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(i * 7));
                    let mut raw = common::Raw::connect(port);
                    let mut refused = Vec::new();
                    for k in 0..40 {
                        let group = format!("g-race-{i}-{k}");
                        let req = FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.clone()));
                        let r: FindCoordinatorResponse = raw.call(ApiKey::FindCoordinator, 3, &req, 3);
                        if r.error_code != 0 {
                            continue; // not yet: a client would look again
                        }
                        let req = OffsetCommitRequest::default()
                            .with_group_id(GroupId(StrBytes::from_string(group.clone())))
                            .with_generation_id_or_member_epoch(-1)
                            .with_topics(vec![OffsetCommitRequestTopic::default()
                                .with_name(TopicName(StrBytes::from_static_str("racing")))
                                .with_partitions(vec![OffsetCommitRequestPartition::default().with_partition_index(0).with_committed_offset(k)])]);
                        let r: OffsetCommitResponse = raw.call(ApiKey::OffsetCommit, 8, &req, 8);
                        let code = r.topics[0].partitions[0].error_code;
                        if code != 0 {
                            refused.push((group, code));
                        }
                    }
                    refused
                })
            })
            .collect();
        let refused: Vec<(String, i16)> = workers.into_iter().flat_map(|w| w.join().unwrap()).collect();
        assert!(refused.is_empty(), "round {round}: {} commits after a successful lookup refused, the first: {:?}", refused.len(), &refused[..refused.len().min(5)]);
    }
}

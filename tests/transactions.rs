//! Transactions at the protocol level, where a test can say exactly what happens when: the last
//! stable offset and the aborted-transaction list a read_committed reader gets, fencing of an
//! older epoch and of partitions never added, a commit answered just before a kill -9 that the
//! restarted coordinator completes, an open transaction aborted at its timeout after a crash,
//! and transactional offset commits. (Real clients' transactions are in the client suites.)

mod common;

use std::time::{Duration, Instant};

use common::{create_topic, Broker, Raw};
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::txn_offset_commit_request::{TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

const UNSTABLE_OFFSET_COMMIT: i16 = 88;
const INVALID_TXN_STATE: i16 = 48;
const PRODUCER_FENCED: i16 = 90;
const INVALID_PRODUCER_EPOCH: i16 = 47;
const CONCURRENT_TRANSACTIONS: i16 = 51;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

fn txn_id(s: &str) -> TransactionalId {
    TransactionalId(StrBytes::from_string(s.to_string()))
}

/// Creates `__transaction_state` (FindCoordinator for the id), then InitProducerId, asking again
/// while the answer is CONCURRENT_TRANSACTIONS (a previous incarnation's transaction is being
/// aborted); (producer id, epoch).
fn init(raw: &mut Raw, id: &str, timeout_ms: i32) -> (i64, i16) {
    let coord: FindCoordinatorResponse =
        raw.call(ApiKey::FindCoordinator, 4, &FindCoordinatorRequest::default().with_key_type(1).with_coordinator_keys(vec![StrBytes::from_string(id.into())]), 4);
    assert_eq!(coord.coordinators[0].error_code, 0, "{coord:?}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r: InitProducerIdResponse = raw.call(
            ApiKey::InitProducerId,
            4,
            &InitProducerIdRequest::default()
                .with_transactional_id(Some(txn_id(id)))
                .with_transaction_timeout_ms(timeout_ms)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
            4,
        );
        if r.error_code == CONCURRENT_TRANSACTIONS && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        assert_eq!(r.error_code, 0, "InitProducerId for {id}: {r:?}");
        return (r.producer_id.0, r.producer_epoch);
    }
}

/// AddPartitionsToTxn; asked again while the previous transaction's markers are being written
/// (CONCURRENT_TRANSACTIONS), as clients do.
fn add(raw: &mut Raw, id: &str, pe: (i64, i16), topic: &str, partitions: &[i32]) -> i16 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let code = add_once(raw, id, pe, topic, partitions);
        if code != CONCURRENT_TRANSACTIONS || Instant::now() > deadline {
            return code;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn add_once(raw: &mut Raw, id: &str, (pid, epoch): (i64, i16), topic: &str, partitions: &[i32]) -> i16 {
    let r: AddPartitionsToTxnResponse = raw.call(
        ApiKey::AddPartitionsToTxn,
        3,
        &AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(txn_id(id))
            .with_v3_and_below_producer_id(ProducerId(pid))
            .with_v3_and_below_producer_epoch(epoch)
            .with_v3_and_below_topics(vec![AddPartitionsToTxnTopic::default().with_name(name(topic)).with_partitions(partitions.to_vec())]),
        3,
    );
    r.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code
}

fn end(raw: &mut Raw, id: &str, (pid, epoch): (i64, i16), commit: bool) -> i16 {
    let r: EndTxnResponse = raw.call(
        ApiKey::EndTxn,
        3,
        &EndTxnRequest::default().with_transactional_id(txn_id(id)).with_producer_id(ProducerId(pid)).with_producer_epoch(epoch).with_committed(commit),
        3,
    );
    r.error_code
}

/// A batch of `recs`: transactional, of producer `pid` at `epoch` from sequence `seq`, or plain
/// for `pid` -1.
fn batch_of((pid, epoch): (i64, i16), seq: i32, recs: &[(Option<bytes::Bytes>, Option<bytes::Bytes>)]) -> Vec<u8> {
    let mut b = spate::protocol::batch::build(recs, 1_000).to_vec();
    if pid >= 0 {
        b[21..23].copy_from_slice(&0x10i16.to_be_bytes()); // transactional
        b[43..51].copy_from_slice(&pid.to_be_bytes());
        b[51..53].copy_from_slice(&epoch.to_be_bytes());
        b[53..57].copy_from_slice(&seq.to_be_bytes());
    }
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b
}

/// A transactional produce of `n` records (values `tag-i`) at sequence `seq`: (error, base offset).
fn produce(raw: &mut Raw, id: &str, (pid, epoch): (i64, i16), topic: &str, partition: i32, seq: i32, n: usize, tag: &str) -> (i16, i64) {
    let recs: Vec<_> = (0..n).map(|i| (None, Some(bytes::Bytes::from(format!("{tag}-{i}"))))).collect();
    let b = batch_of((pid, epoch), seq, &recs);
    let req = ProduceRequest::default()
        .with_transactional_id(Some(txn_id(id)))
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default().with_index(partition).with_records(Some(b.into()))])]);
    let r: ProduceResponse = raw.call(ApiKey::Produce, 9, &req, 9);
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// ListOffsets latest at isolation level 0 (read_uncommitted) or 1 (read_committed).
fn latest(raw: &mut Raw, topic: &str, partition: i32, isolation: i8) -> i64 {
    let r: ListOffsetsResponse = raw.call(
        ApiKey::ListOffsets,
        7,
        &ListOffsetsRequest::default().with_isolation_level(isolation).with_topics(vec![ListOffsetsTopic::default()
            .with_name(name(topic))
            .with_partitions(vec![ListOffsetsPartition::default().with_partition_index(partition).with_timestamp(-1)])]),
        7,
    );
    let p = &r.topics[0].partitions[0];
    assert_eq!(p.error_code, 0, "{p:?}");
    p.offset
}

/// One partition's answer to a Fetch (v11) from `offset` at isolation level `isolation`,
/// checked for no error.
fn fetch_partition(raw: &mut Raw, topic: &str, partition: i32, offset: i64, isolation: i8) -> fetch_response::PartitionData {
    let r: FetchResponse = raw.call(
        ApiKey::Fetch,
        11,
        &FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(0)
            .with_min_bytes(0)
            .with_max_bytes(1 << 20)
            .with_isolation_level(isolation)
            .with_session_epoch(-1)
            .with_topics(vec![FetchTopic::default().with_topic(name(topic)).with_partitions(vec![FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])]),
        11,
    );
    let p = r.responses[0].partitions[0].clone();
    assert_eq!(p.error_code, 0, "{p:?}");
    p
}

/// What a Fetch from `offset` answers: (high watermark, last stable offset, aborted
/// transactions (producer id, first offset), offsets of the data records returned).
fn fetch(raw: &mut Raw, topic: &str, partition: i32, offset: i64, isolation: i8) -> (i64, i64, Option<Vec<(i64, i64)>>, Vec<i64>) {
    let p = &fetch_partition(raw, topic, partition, offset, isolation);
    let aborted = p.aborted_transactions.as_ref().map(|v| v.iter().map(|a| (a.producer_id.0, a.first_offset)).collect());
    let mut offsets = Vec::new();
    let records = p.records.clone().unwrap_or_default();
    spate::protocol::batch::scan(&records, |pos, h| {
        if h.is_control() {
            return;
        }
        let one = &records[pos..pos + h.total_len()];
        for (i, _) in spate::protocol::batch::key_values(one, h).unwrap_or_default().into_iter().enumerate() {
            offsets.push(h.base_offset + i as i64);
        }
    });
    (p.high_watermark, p.last_stable_offset, aborted, offsets)
}

/// Waits until the read_committed end of `topic`-`partition` reaches its high watermark.
fn wait_stable(raw: &mut Raw, topic: &str, partition: i32, broker: &Broker) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (hw, lso) = (latest(raw, topic, partition, 0), latest(raw, topic, partition, 1));
        if hw == lso {
            return;
        }
        assert!(Instant::now() < deadline, "{topic}-{partition}: LSO {lso} stays below HW {hw}; log:\n{}", broker.log());
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn read_committed_stops_at_the_last_stable_offset_and_lists_aborted_transactions() {
    let broker = Broker::start(&[]);
    create_topic(&broker.bootstrap(), "t", 2, &[]);
    let mut raw = Raw::connect(broker.port);
    let a = init(&mut raw, "tx-a", 60_000);
    let b = init(&mut raw, "tx-b", 60_000);
    assert_ne!(a.0, b.0);
    assert_eq!(add(&mut raw, "tx-a", a, "t", &[0]), 0);
    assert_eq!(produce(&mut raw, "tx-a", a, "t", 0, 0, 2, "a"), (0, 0));
    assert_eq!((latest(&mut raw, "t", 0, 0), latest(&mut raw, "t", 0, 1)), (2, 0), "A's open transaction holds the LSO at its start");
    assert_eq!(add(&mut raw, "tx-b", b, "t", &[0]), 0);
    assert_eq!(produce(&mut raw, "tx-b", b, "t", 0, 0, 3, "b"), (0, 2));
    // KIP-890: a partition not added to the transaction is refused (INVALID_TXN_STATE).
    assert_eq!(produce(&mut raw, "tx-b", b, "t", 1, 0, 1, "b").0, INVALID_TXN_STATE);
    assert_eq!(end(&mut raw, "tx-a", a, false), 0);
    wait_stable_below(&mut raw, 2);
    let (hw, lso, aborted, offsets) = fetch(&mut raw, "t", 0, 0, 1);
    assert_eq!((hw, lso), (6, 2), "A's abort marker at 5; B's transaction still open at 2");
    assert_eq!(aborted, Some(vec![(a.0, 0)]));
    assert_eq!(offsets, vec![0, 1], "read_committed gets only what lies below the LSO");
    assert_eq!(end(&mut raw, "tx-b", b, true), 0);
    wait_stable(&mut raw, "t", 0, &broker);
    let (hw, lso, aborted, offsets) = fetch(&mut raw, "t", 0, 0, 1);
    assert_eq!((hw, lso), (7, 7));
    assert_eq!(aborted, Some(vec![(a.0, 0)]), "the client drops A's records by this list");
    assert_eq!(offsets, vec![0, 1, 2, 3, 4]);
    let (_, _, aborted, _) = fetch(&mut raw, "t", 0, 2, 1);
    assert_eq!(aborted, Some(vec![(a.0, 0)]), "A's abort marker (5) lies past the fetch offset");
    let (_, _, aborted, offsets) = fetch(&mut raw, "t", 0, 0, 0);
    assert_eq!((aborted, offsets.len()), (None, 5), "read_uncommitted: everything, no list");
    // A new incarnation of A bumps the epoch: the old one is fenced at the coordinator and at
    // the partitions.
    let a2 = init(&mut raw, "tx-a", 60_000);
    assert_eq!((a2.0, a2.1), (a.0, a.1 + 1));
    assert_eq!(add(&mut raw, "tx-a", a, "t", &[0]), PRODUCER_FENCED);
    assert_eq!(produce(&mut raw, "tx-a", a, "t", 1, 0, 1, "zombie").0, INVALID_PRODUCER_EPOCH, "as Kafka answers a fenced producer's produce");
    assert_eq!(end(&mut raw, "tx-a", a, true), PRODUCER_FENCED);
    assert_eq!(add(&mut raw, "tx-a", a2, "t", &[1]), 0);
    assert_eq!(produce(&mut raw, "tx-a", a2, "t", 1, 0, 1, "a2"), (0, 0));
    assert_eq!(end(&mut raw, "tx-a", a2, true), 0);
    wait_stable(&mut raw, "t", 1, &broker);
    // /metrics (published each second): two commits, one abort, nothing open; the LSO gauge.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let m = broker.metrics();
        let line = |prefix: &str| m.lines().find(|l| l.starts_with(prefix)).and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
        let seen = (
            line("spate_transactions_ended_total{outcome=\"committed\"}"),
            line("spate_transactions_ended_total{outcome=\"aborted\"}"),
            line("spate_transactions_open "),
            line("spate_partition_last_stable_offset{topic=\"t\",partition=\"0\"}"),
        );
        if seen == (Some(2.0), Some(1.0), Some(0.0), Some(7.0)) {
            break;
        }
        assert!(Instant::now() < deadline, "transaction metrics {seen:?}:\n{m}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // `spate txn`: both ids, as Kafka's kafka-transactions.sh shows them.
    let spate = |args: &[&str]| {
        let out = std::process::Command::new(common::spate_bin()).args(["txn", "-b", &broker.bootstrap()]).args(args).output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (ok, listed, _) = spate(&["list"]);
    assert!(ok);
    let rows: Vec<Vec<&str>> = listed.lines().skip(1).map(|l| l.split_whitespace().collect()).collect();
    let (pa, pb) = (a.0.to_string(), b.0.to_string());
    assert_eq!(rows, vec![vec!["tx-a", "0", pa.as_str(), "CompleteCommit"], vec!["tx-b", "0", pb.as_str(), "CompleteCommit"]], "{listed}");
    let (ok, described, _) = spate(&["--json", "describe", "tx-a"]);
    assert!(ok);
    let d: serde_json::Value = serde_json::from_str(&described).unwrap();
    assert_eq!((d[0]["producer_epoch"].as_i64(), d[0]["state"].as_str()), (Some(a2.1 as i64), Some("CompleteCommit")), "{described}");
    let (ok, _, err) = spate(&["describe", "nobody"]);
    assert!(!ok && err.contains("TRANSACTIONAL_ID_NOT_FOUND"), "{err}");

    fn wait_stable_below(raw: &mut Raw, lso: i64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while latest(raw, "t", 0, 1) != lso || latest(raw, "t", 0, 0) < 6 {
            assert!(Instant::now() < deadline, "the abort marker did not land");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[test]
fn a_commit_answered_just_before_a_kill9_is_completed_after_restart() {
    let mut broker = Broker::start(&[]);
    const PARTS: i32 = 16;
    create_topic(&broker.bootstrap(), "c", PARTS, &[]);
    let mut raw = Raw::connect(broker.port);
    let id = "tx-crash";
    let pe = init(&mut raw, id, 60_000);
    let all: Vec<i32> = (0..PARTS).collect();
    assert_eq!(add(&mut raw, id, pe, "c", &all), 0);
    for p in 0..PARTS {
        assert_eq!(produce(&mut raw, id, pe, "c", p, 0, 2, "c").0, 0);
    }
    // The answer comes once PrepareCommit is durable; the sixteen markers are written after it.
    // Killed at once, the broker usually has not written them all.
    assert_eq!(end(&mut raw, id, pe, true), 0);
    broker.kill9();
    broker.restart();
    let resumed = broker.log().contains("resuming the markers of a transaction left prepared");
    eprintln!("the restarted coordinator resumed prepared markers: {resumed}");
    let mut raw = Raw::connect(broker.port);
    for p in 0..PARTS {
        wait_stable(&mut raw, "c", p, &broker);
        let (hw, lso, aborted, offsets) = fetch(&mut raw, "c", p, 0, 1);
        // The marker, or two of them when it was written before the kill and again by the
        // restarted coordinator (harmless, as in Kafka: the second closes nothing).
        assert!(hw == lso && (3..=4).contains(&hw), "partition {p}: HW {hw}, LSO {lso}");
        assert_eq!((aborted, offsets), (Some(vec![]), vec![0, 1]), "partition {p}: the committed records");
    }
    // The transaction is complete at the coordinator: the next incarnation starts at once.
    let next = init(&mut raw, id, 60_000);
    assert_eq!(next, (pe.0, pe.1 + 1));
}

#[test]
fn an_open_transaction_survives_a_kill9_and_is_aborted_at_its_timeout() {
    let mut broker = Broker::start(&["--transaction-abort-timed-out-transaction-cleanup-interval-ms", "200"]);
    create_topic(&broker.bootstrap(), "o", 1, &[]);
    let mut raw = Raw::connect(broker.port);
    let id = "tx-open";
    let pe = init(&mut raw, id, 3_000);
    assert_eq!(add(&mut raw, id, pe, "o", &[0]), 0);
    assert_eq!(produce(&mut raw, id, pe, "o", 0, 0, 3, "o"), (0, 0));
    broker.kill9();
    broker.restart();
    let mut raw = Raw::connect(broker.port);
    // Right after the restart the transaction is still open (it has seconds left), unless the
    // restart itself took longer than its timeout.
    let started = Instant::now();
    let lso = latest(&mut raw, "o", 0, 1);
    assert!(lso == 0 || started.elapsed() > Duration::from_secs(3), "LSO {lso}: the open transaction was not rebuilt");
    wait_stable(&mut raw, "o", 0, &broker);
    let (hw, lso, aborted, offsets) = fetch(&mut raw, "o", 0, 0, 1);
    assert_eq!((hw, lso, aborted, offsets), (4, 4, Some(vec![(pe.0, 0)]), vec![0, 1, 2]), "aborted at its timeout; the log:\n{}", broker.log());
    assert!(broker.log().contains("aborting a transaction open past its timeout"), "{}", broker.log());
    // The abort bumped the epoch: the producer that timed out is fenced.
    assert_eq!(end(&mut raw, id, pe, true), PRODUCER_FENCED);
    assert_eq!(init(&mut raw, id, 3_000), (pe.0, pe.1 + 2));
}

#[test]
fn transactional_offsets_count_once_committed_and_survive_a_restart() {
    let mut broker = Broker::start(&[]);
    create_topic(&broker.bootstrap(), "in", 1, &[]);
    create_topic(&broker.bootstrap(), "out", 1, &[]);
    let mut raw = Raw::connect(broker.port);
    let group = "txn-group";
    let id = "tx-offsets";
    let pe = init(&mut raw, id, 60_000);
    let fetch_committed = |raw: &mut Raw| -> (i16, i64) {
        let r: OffsetFetchResponse = raw.call(
            ApiKey::OffsetFetch,
            7,
            &OffsetFetchRequest::default()
                .with_group_id(GroupId(StrBytes::from_string(group.into())))
                .with_require_stable(true)
                .with_topics(Some(vec![OffsetFetchRequestTopic::default().with_name(name("in")).with_partition_indexes(vec![0])])),
            7,
        );
        assert_eq!(r.error_code, 0, "{r:?}");
        let p = &r.topics[0].partitions[0];
        (p.error_code, p.committed_offset)
    };
    let commit_offset = |raw: &mut Raw, pe: (i64, i16), offset: i64| -> i16 {
        let r: AddOffsetsToTxnResponse = raw.call(
            ApiKey::AddOffsetsToTxn,
            3,
            &AddOffsetsToTxnRequest::default()
                .with_transactional_id(txn_id(id))
                .with_producer_id(ProducerId(pe.0))
                .with_producer_epoch(pe.1)
                .with_group_id(GroupId(StrBytes::from_string(group.into()))),
            3,
        );
        assert_eq!(r.error_code, 0, "{r:?}");
        let r: TxnOffsetCommitResponse = raw.call(
            ApiKey::TxnOffsetCommit,
            3,
            &TxnOffsetCommitRequest::default()
                .with_transactional_id(txn_id(id))
                .with_group_id(GroupId(StrBytes::from_string(group.into())))
                .with_producer_id(ProducerId(pe.0))
                .with_producer_epoch(pe.1)
                .with_generation_id(-1)
                .with_topics(vec![TxnOffsetCommitRequestTopic::default()
                    .with_name(name("in"))
                    .with_partitions(vec![TxnOffsetCommitRequestPartition::default().with_partition_index(0).with_committed_offset(offset)])]),
            3,
        );
        r.topics[0].partitions[0].error_code
    };
    let wait_committed = |raw: &mut Raw, want: i64| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = fetch_committed(raw);
            if got == (0, want) {
                return;
            }
            assert!(Instant::now() < deadline, "committed offset {got:?}, want {want}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    // First transaction: output and offsets, committed.
    assert_eq!(add(&mut raw, id, pe, "out", &[0]), 0);
    assert_eq!(produce(&mut raw, id, pe, "out", 0, 0, 1, "x").0, 0);
    assert_eq!(commit_offset(&mut raw, pe, 10), 0);
    assert_eq!(fetch_committed(&mut raw), (UNSTABLE_OFFSET_COMMIT, -1), "require_stable: the transaction is not over");
    assert_eq!(end(&mut raw, id, pe, true), 0);
    wait_committed(&mut raw, 10);
    // Second transaction: aborted, its offsets never count.
    assert_eq!(add(&mut raw, id, pe, "out", &[0]), 0);
    assert_eq!(produce(&mut raw, id, pe, "out", 0, 1, 1, "y").0, 0);
    assert_eq!(commit_offset(&mut raw, pe, 20), 0);
    assert_eq!(end(&mut raw, id, pe, false), 0);
    wait_committed(&mut raw, 10);
    // Third: offsets written, then the broker dies with the transaction open; the restarted
    // coordinator has it (pending), and the next incarnation aborts it.
    assert_eq!(add(&mut raw, id, pe, "out", &[0]), 0);
    assert_eq!(commit_offset(&mut raw, pe, 30), 0);
    broker.restart();
    let mut raw = Raw::connect(broker.port);
    assert_eq!(fetch_committed(&mut raw), (UNSTABLE_OFFSET_COMMIT, -1), "the pending offsets were reloaded");
    let next = init(&mut raw, id, 60_000);
    assert_eq!(next.1, pe.1 + 2, "aborted under a bumped epoch, then bumped again");
    wait_committed(&mut raw, 10);
    broker.restart();
    let mut raw = Raw::connect(broker.port);
    wait_committed(&mut raw, 10);
}

/// librdkafka's consume-transform-produce (its transactional example, through the `rdkafka`
/// crate): a read_committed consumer of `src` and a transactional producer copy it to `dst` with
/// the input offsets committed in each transaction (`send_offsets_to_transaction`); the broker is
/// killed (-9) twice with a transaction open (its records written) and restarted. librdkafka
/// reconnects and the open transaction, which the coordinator reloaded, commits; had anything
/// failed, the copier would start again as a real one does (a new producer with the same
/// transactional id fences and aborts what the old one left, the consumer resumes from the
/// committed offsets). `dst` ends with every record of `src` exactly once, in order per
/// partition, and the group's offsets at `src`'s end.
#[test]
fn librdkafka_copies_a_topic_exactly_once_through_kill9() {
    use rdkafka::consumer::Consumer;
    use rdkafka::message::Message;
    use rdkafka::producer::{BaseRecord, Producer};
    const N: usize = 3000;
    let mut broker = Broker::start(&["--group-initial-rebalance-delay-ms", "0"]);
    let bootstrap = broker.bootstrap();
    create_topic(&bootstrap, "src", 3, &[]);
    create_topic(&bootstrap, "dst", 3, &[]);
    let p = common::producer(&bootstrap, &[("enable.idempotence", "true"), ("acks", "all")]);
    for i in 0..N {
        let v = format!("r{i}");
        p.send(BaseRecord::<(), _>::to("src").payload(&v).partition((i % 3) as i32)).expect("queued");
    }
    common::flush(&p);
    drop(p);
    let all_parts = || {
        let mut tpl = rdkafka::TopicPartitionList::new();
        for part in 0..3 {
            tpl.add_partition_offset("src", part, rdkafka::Offset::Stored).unwrap();
        }
        tpl
    };
    let mut kills = 0;
    let mut transactions = 0;
    let mut starts = 0;
    'copier: loop {
        starts += 1;
        assert!(starts < 20, "the copier had to start again {starts} times");
        let consumer = common::group_consumer(&bootstrap, "copier", &[("isolation.level", "read_committed")]);
        consumer.assign(&all_parts()).unwrap();
        let producer = common::producer(
            &bootstrap,
            &[("transactional.id", "copier"), ("enable.idempotence", "true"), ("acks", "all"), ("transaction.timeout.ms", "60000")],
        );
        if let Err(e) = producer.init_transactions(Duration::from_secs(60)) {
            eprintln!("init_transactions: {e}; starting again");
            continue;
        }
        loop {
            let mut batch = Vec::new();
            let deadline = Instant::now() + Duration::from_millis(500);
            while batch.len() < 100 && Instant::now() < deadline {
                if let Some(m) = consumer.poll(Duration::from_millis(50)) {
                    match m {
                        Ok(m) => batch.push((m.partition(), m.payload().unwrap().to_vec())),
                        Err(e) => eprintln!("consumer: {e}"),
                    }
                }
            }
            let positions = consumer.position().unwrap();
            let consumed: i64 = positions.elements().iter().map(|e| e.offset().to_raw().unwrap_or(0).max(0)).sum();
            if batch.is_empty() {
                if consumed as usize >= N {
                    break 'copier;
                }
                continue;
            }
            let attempt = (|| -> Result<(), rdkafka::error::KafkaError> {
                producer.begin_transaction()?;
                for (part, v) in &batch {
                    producer.send(BaseRecord::<(), _>::to("dst").payload(v).partition(*part)).map_err(|(e, _)| e)?;
                }
                if transactions == 5 || transactions == 15 {
                    // Killed with this transaction open: its records may be written, never
                    // committed (or committed whole, if the commit gets through afterwards).
                    producer.flush(Duration::from_secs(30))?;
                    broker.kill9();
                    broker.restart();
                    kills += 1;
                }
                producer.send_offsets_to_transaction(&positions, &consumer.group_metadata().unwrap(), Duration::from_secs(60))?;
                producer.commit_transaction(Duration::from_secs(60))
            })();
            transactions += 1;
            if let Err(e) = attempt {
                eprintln!("transaction {transactions}: {e}; the copier starts again");
                continue 'copier;
            }
        }
    }
    assert_eq!(kills, 2);
    // dst, read_committed: each source record once, in order per partition.
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", &bootstrap).set("group.id", "checker").set("isolation.level", "read_committed").set("enable.auto.commit", "false");
    let checker: rdkafka::consumer::BaseConsumer = c.create().unwrap();
    let mut tpl = rdkafka::TopicPartitionList::new();
    for part in 0..3 {
        tpl.add_partition_offset("dst", part, rdkafka::Offset::Beginning).unwrap();
    }
    checker.assign(&tpl).unwrap();
    let mut got: Vec<Vec<usize>> = vec![Vec::new(); 3];
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.iter().map(Vec::len).sum::<usize>() < N && Instant::now() < deadline {
        if let Some(Ok(m)) = checker.poll(Duration::from_millis(200)) {
            let v: usize = std::str::from_utf8(m.payload().unwrap()).unwrap()[1..].parse().unwrap();
            got[m.partition() as usize].push(v);
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    while let Some(Ok(m)) = checker.poll(Duration::from_millis(200)) {
        let v: usize = std::str::from_utf8(m.payload().unwrap()).unwrap()[1..].parse().unwrap();
        got[m.partition() as usize].push(v);
    }
    for (part, vals) in got.iter().enumerate() {
        let want: Vec<usize> = (0..N).filter(|i| i % 3 == part).collect();
        assert_eq!(vals, &want, "dst-{part}: not each source record exactly once, in order ({} read)", vals.len());
    }
    // The group's offsets: src's end.
    let committed = common::group_consumer(&bootstrap, "copier", &[("isolation.level", "read_committed")]).committed_offsets(all_parts(), Duration::from_secs(30)).unwrap();
    for e in committed.elements() {
        assert_eq!(e.offset(), rdkafka::Offset::Offset(1000), "committed offset of src-{}", e.partition());
    }
    eprintln!("copied {N} records in {transactions} transactions; the copier started {starts} times");
}

/// A transactional id idle longer than `transactional_id_expiration_ms` with no transaction
/// under way is forgotten (a tombstone in `__transaction_state`, so also after a restart), and
/// its next InitProducerId gets a new producer id at epoch 0.
#[test]
fn an_idle_transactional_id_expires_and_starts_afresh() {
    let mut broker = Broker::start(&["--transactional-id-expiration-ms", "1000", "--transaction-remove-expired-transaction-cleanup-interval-ms", "200"]);
    create_topic(&broker.bootstrap(), "e", 1, &[]);
    let mut raw = Raw::connect(broker.port);
    let id = "tx-idle";
    let pe = init(&mut raw, id, 60_000);
    assert_eq!(add(&mut raw, id, pe, "e", &[0]), 0);
    assert_eq!(produce(&mut raw, id, pe, "e", 0, 0, 1, "e").0, 0);
    assert_eq!(end(&mut raw, id, pe, true), 0);
    wait_stable(&mut raw, "e", 0, &broker);
    let describe = |raw: &mut Raw| -> i16 {
        let r: DescribeTransactionsResponse =
            raw.call(ApiKey::DescribeTransactions, 0, &DescribeTransactionsRequest::default().with_transactional_ids(vec![txn_id(id)]), 0);
        r.transaction_states[0].error_code
    };
    const TRANSACTIONAL_ID_NOT_FOUND: i16 = 105;
    let deadline = Instant::now() + Duration::from_secs(60);
    while describe(&mut raw) != TRANSACTIONAL_ID_NOT_FOUND {
        assert!(Instant::now() < deadline, "the idle id was never forgotten; log:\n{}", broker.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(broker.log().contains("transactional id expired"), "{}", broker.log());
    broker.restart();
    let mut raw = Raw::connect(broker.port);
    assert_eq!(describe(&mut raw), TRANSACTIONAL_ID_NOT_FOUND, "the tombstone outlives a kill -9");
    let again = init(&mut raw, id, 60_000);
    assert!(again.0 != pe.0 && again.1 == 0, "a forgotten id starts afresh: {again:?} after {pe:?}");
}

/// A produce of keyed records (`pid` -1: a plain one), each `(key, value)`: the error code.
fn produce_keyed(raw: &mut Raw, id: Option<&str>, (pid, epoch): (i64, i16), topic: &str, seq: i32, recs: &[(String, String)]) -> i16 {
    let recs: Vec<_> = recs.iter().map(|(k, v)| (Some(bytes::Bytes::from(k.clone())), Some(bytes::Bytes::from(v.clone())))).collect();
    let b = batch_of((pid, epoch), seq, &recs);
    let req = ProduceRequest::default()
        .with_transactional_id(id.map(txn_id))
        .with_acks(-1)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(name(topic))
            .with_partition_data(vec![PartitionProduceData::default().with_index(0).with_records(Some(b.into()))])]);
    let r: ProduceResponse = raw.call(ApiKey::Produce, 9, &req, 9);
    r.responses[0].partition_responses[0].error_code
}

/// Every data record of partition 0 of `topic` at isolation level `isolation`, as (offset, key,
/// value), and the aborted transactions the Fetch from 0 lists (read_committed only).
fn read_keyed(raw: &mut Raw, topic: &str, isolation: i8) -> (Vec<(i64, String, String)>, Vec<(i64, i64)>) {
    let mut out = Vec::new();
    let mut at = 0;
    let mut aborted_listed = Vec::new();
    loop {
        let p = &fetch_partition(raw, topic, 0, at, isolation);
        if at == 0 {
            aborted_listed = p.aborted_transactions.iter().flatten().map(|a| (a.producer_id.0, a.first_offset)).collect();
        }
        let records = p.records.clone().unwrap_or_default();
        let before = at;
        spate::protocol::batch::scan(&records, |pos, h| {
            at = at.max(h.last_offset() + 1);
            if h.is_control() {
                return;
            }
            let one = &records[pos..pos + h.total_len()];
            let mut offsets = Vec::new();
            spate::protocol::batch::visit(one, h, |r, _| offsets.push(r.offset)).expect("uncompressed");
            for (o, (k, v)) in offsets.into_iter().zip(spate::protocol::batch::key_values(one, h).expect("uncompressed")) {
                let s = |b: Option<bytes::Bytes>| String::from_utf8(b.unwrap_or_default().to_vec()).unwrap();
                out.push((o, s(k), s(v)));
            }
        });
        let end = if isolation == 1 { p.last_stable_offset } else { p.high_watermark };
        if at >= end || at == before {
            return (out, aborted_listed);
        }
    }
}

/// Compaction by Kafka's rules, through the wire: an aborted transaction's records leave the
/// log and supersede nothing, committed ones are compacted as plain ones, and once the abort
/// marker's delete horizon has passed no Fetch lists the aborted transaction any more; the
/// same after a kill -9.
#[test]
fn compaction_removes_aborted_transactions_and_their_markers_in_time() {
    let mut broker = Broker::start(&["--log-cleaner-backoff-ms", "100"]);
    let bootstrap = broker.bootstrap();
    let topic = "compacted-txn";
    create_topic(&bootstrap, topic, 1, &[("cleanup.policy", "compact"), ("segment.bytes", "1024"), ("delete.retention.ms", "1500")]);
    let mut raw = Raw::connect(broker.port);
    let keyed = |n: usize, value: &str| -> Vec<(String, String)> { (0..n).map(|i| (format!("k{i}"), value.to_string())).collect() };

    let plain = (-1, -1);
    assert_eq!(produce_keyed(&mut raw, None, plain, topic, 0, &keyed(10, "plain")), 0);
    let a = init(&mut raw, "compact-a", 60_000);
    assert_eq!(add(&mut raw, "compact-a", a, topic, &[0]), 0);
    assert_eq!(produce_keyed(&mut raw, Some("compact-a"), a, topic, 0, &keyed(10, "aborted")), 0);
    assert_eq!(end(&mut raw, "compact-a", a, false), 0);
    let b = init(&mut raw, "compact-b", 60_000);
    assert_eq!(add(&mut raw, "compact-b", b, topic, &[0]), 0);
    assert_eq!(produce_keyed(&mut raw, Some("compact-b"), b, topic, 0, &keyed(5, "committed")), 0);
    assert_eq!(end(&mut raw, "compact-b", b, true), 0);
    wait_stable(&mut raw, topic, 0, &broker);
    let (_, listed) = read_keyed(&mut raw, topic, 1);
    assert_eq!(listed.len(), 1, "the aborted transaction is listed before compaction: {listed:?}");
    // Enough plain records after them to close segments, so the cleaner takes them.
    for i in 0..40 {
        let filler: Vec<(String, String)> = (0..3).map(|j| (format!("f{j}"), format!("filler-{i}"))).collect();
        assert_eq!(produce_keyed(&mut raw, None, plain, topic, 0, &filler), 0);
    }
    // In offset order: the plain records the committed transaction did not supersede, then it.
    let expected: Vec<(String, String)> =
        (5..10).map(|i| (format!("k{i}"), "plain".to_string())).chain((0..5).map(|i| (format!("k{i}"), "committed".to_string()))).collect();
    let settled = |raw: &mut Raw| {
        let (all, _) = read_keyed(raw, topic, 0);
        let (_, listed) = read_keyed(raw, topic, 1);
        let ks: Vec<(String, String)> = all.iter().filter(|(_, k, _)| k.starts_with('k')).map(|(_, k, v)| (k.clone(), v.clone())).collect();
        (ks, listed)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (ks, listed) = settled(&mut raw);
        if ks == expected && listed.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "60 s on, read_uncommitted holds {ks:?} and read_committed lists {listed:?}; log:\n{}",
            broker.log()
        );
        // Segments close as records come: the horizon passes with the cleaner's next look.
        assert_eq!(produce_keyed(&mut raw, None, plain, topic, 0, &[("f0".into(), "more".into())]), 0);
        std::thread::sleep(Duration::from_millis(200));
    }
    let (committed_view, _) = read_keyed(&mut raw, topic, 1);
    assert!(committed_view.iter().all(|(_, _, v)| v != "aborted"), "{committed_view:?}");
    broker.kill9();
    broker.restart();
    let mut raw = Raw::connect(broker.port);
    let (ks, listed) = settled(&mut raw);
    assert_eq!((ks, listed), (expected, vec![]), "after a kill -9");
}

package spate.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;
import static spate.it.Clients.TIMEOUT_S;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.ListConsumerGroupOffsetsOptions;
import org.apache.kafka.clients.admin.ListOffsetsOptions;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerGroupMetadata;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.IsolationLevel;
import org.apache.kafka.common.KafkaException;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.InvalidProducerEpochException;
import org.apache.kafka.common.errors.ProducerFencedException;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.RegisterExtension;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;

/**
 * Kafka transactions (transaction version 2, which Spate finalizes as Kafka 4.x does; see
 * TransactionVersionTest for version 1 beside it) with the Java client (kafka-clients 4.1.1) against
 * Spate: transactional producers that commit and abort, read_committed and read_uncommitted
 * consumers, the last stable offset, transactional offset commits and OffsetFetch
 * require_stable, fencing by a new producer with the same transactional.id, and exactly-once
 * consume-transform-produce through kill -9 of the broker, by a hand-written application and by
 * Kafka's own system-test tool {@code org.apache.kafka.tools.TransactionalMessageCopier}.
 */
class TransactionsTest {
    @RegisterExtension
    static final SpateBroker broker = new SpateBroker();

    private static final String READ_COMMITTED = "read_committed";
    private static final String READ_UNCOMMITTED = "read_uncommitted";
    private static final ObjectMapper JSON = new ObjectMapper();

    private static Properties txProducer(String transactionalId) {
        Properties p = Clients.producer(broker, true);
        p.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, transactionalId);
        return p;
    }

    private static Properties reader(String isolation) {
        Properties p = Clients.consumer(broker, true);
        p.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, isolation);
        return p;
    }

    private static String brokerLog() {
        return "broker log " + broker.logFile() + ":\n" + broker.logTail(40);
    }

    /** The values of every partition of {@code topic}, read to its end with {@code isolation}. */
    private static List<List<String>> values(String topic, int partitions, String isolation) {
        List<List<String>> out = new ArrayList<>();
        for (List<ConsumerRecord<String, String>> part : Clients.<String, String>readAll(reader(isolation), topic, partitions,
                TransactionsTest::brokerLog)) {
            out.add(part.stream().map(ConsumerRecord::value).toList());
        }
        return out;
    }

    /** End offsets of partitions 0..n-1 as a consumer with {@code isolation} sees them (LSO for read_committed). */
    private static List<Long> endOffsets(String topic, int partitions, String isolation) {
        List<TopicPartition> tps = new ArrayList<>();
        for (int p = 0; p < partitions; p++) {
            tps.add(new TopicPartition(topic, p));
        }
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(reader(isolation))) {
            Map<TopicPartition, Long> end = c.endOffsets(tps);
            return tps.stream().map(end::get).toList();
        }
    }

    /**
     * Waits (60 s at most) until no transaction is open on any partition of {@code topic}: its
     * last stable offsets (read_committed end offsets) are its high watermarks, which it returns.
     * A commit or abort is answered once the coordinator has written its decision and the
     * markers follow (as in Kafka), so a test that just ended a transaction waits for them
     * before it reads with read_committed.
     */
    private static List<Long> awaitStable(String topic, int partitions) throws InterruptedException {
        long deadline = System.currentTimeMillis() + 60_000;
        while (true) {
            List<Long> hw = endOffsets(topic, partitions, READ_UNCOMMITTED);
            List<Long> lso = endOffsets(topic, partitions, READ_COMMITTED);
            if (hw.equals(lso)) {
                return hw;
            }
            if (System.currentTimeMillis() > deadline) {
                fail("a transaction is still open on " + topic + " 60 s after the last one ended: last stable offsets " + lso
                        + ", high watermarks " + hw + "\n" + brokerLog());
            }
            Thread.sleep(100);
        }
    }

    /** Waits (60 s at most) until the end offsets of {@code topic} with {@code isolation} are {@code expected}. */
    private static void awaitEndOffsets(String topic, int partitions, String isolation, List<Long> expected, String what)
            throws InterruptedException {
        long deadline = System.currentTimeMillis() + 60_000;
        List<Long> got;
        while (!(got = endOffsets(topic, partitions, isolation)).equals(expected)) {
            if (System.currentTimeMillis() > deadline) {
                fail(what + ": " + isolation + " end offsets of " + topic + " are " + got + " after 60 s, not " + expected
                        + "\n" + brokerLog());
            }
            Thread.sleep(100);
        }
    }

    /**
     * The group's committed offsets of {@code tps} as a read_committed consumer's
     * {@code committed()} reads them: OffsetFetch with require_stable, which the client asks
     * again while the broker answers UNSTABLE_OFFSET_COMMIT (a transactional offset of a
     * transaction whose marker is not written yet), for 60 s at most.
     */
    private static Map<TopicPartition, Long> stableOffsets(String group, Set<TopicPartition> tps) {
        Properties cp = reader(READ_COMMITTED);
        cp.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(cp)) {
            Map<TopicPartition, Long> out = new HashMap<>();
            c.committed(tps, Duration.ofSeconds(60)).forEach((tp, om) -> out.put(tp, om == null ? null : om.offset()));
            return out;
        }
    }

    private static List<List<String>> lists(int n) {
        List<List<String>> out = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            out.add(new ArrayList<>());
        }
        return out;
    }

    /**
     * Where {@code got} differs from {@code expected} (both one partition, in order): how many
     * are missing, which are there more than once, which should not be there, the first index
     * where they part.
     */
    private static String diff(List<String> expected, List<String> got) {
        Map<String, Integer> counts = new HashMap<>();
        got.forEach(v -> counts.merge(v, 1, Integer::sum));
        Set<String> want = new HashSet<>(expected);
        List<String> missing = expected.stream().filter(v -> !counts.containsKey(v)).toList();
        List<String> dups = counts.entrySet().stream().filter(e -> e.getValue() > 1).map(e -> e.getKey() + " x" + e.getValue()).toList();
        List<String> extra = got.stream().filter(v -> !want.contains(v)).toList();
        int at = 0;
        while (at < expected.size() && at < got.size() && expected.get(at).equals(got.get(at))) {
            at++;
        }
        return "expected " + expected.size() + " records, got " + got.size() + "; missing " + missing.size() + " "
                + VerifiableEvents.first(missing) + ", duplicated " + dups.size() + " " + VerifiableEvents.first(dups)
                + ", not expected " + extra.size() + " " + VerifiableEvents.first(extra) + "; first difference at index "
                + at + " (expected " + (at < expected.size() ? expected.get(at) : "the end") + ", got "
                + (at < got.size() ? got.get(at) : "the end") + ")";
    }

    private static void assertPartitions(List<List<String>> expected, List<List<String>> got, String what) {
        for (int p = 0; p < expected.size(); p++) {
            if (!expected.get(p).equals(got.get(p))) {
                fail(what + ", partition " + p + ": " + diff(expected.get(p), got.get(p)) + "\n" + brokerLog());
            }
        }
    }

    /**
     * Sends {@code perPartition} records to each partition from {@code producer} and waits for
     * their acknowledgements, noting each value in {@code log} (the topic's records in offset
     * order, since nothing else is in flight) and in {@code mine}.
     */
    private static void sendBlock(KafkaProducer<String, String> producer, String topic, String prefix, int partitions,
            int perPartition, List<List<String>> log, List<String> mine) throws Exception {
        List<Future<RecordMetadata>> acks = new ArrayList<>();
        for (int p = 0; p < partitions; p++) {
            for (int i = 0; i < perPartition; i++) {
                String v = prefix + "-p" + p + "-" + i;
                acks.add(producer.send(new ProducerRecord<>(topic, p, "k" + i, v)));
                log.get(p).add(v);
                mine.add(v);
            }
        }
        for (Future<RecordMetadata> f : acks) {
            f.get(TIMEOUT_S, TimeUnit.SECONDS);
        }
    }

    /**
     * Two transactional producers interleave their transactions on the same three partitions
     * (each transaction writes to every partition, in two blocks, the other producer's block and
     * a non-transactional record in between), over eight rounds in which both commit, one
     * commits and the other aborts, or both abort. A read_committed consumer sees exactly the
     * committed records and the non-transactional ones, in the order they were written, per
     * partition (so the broker's aborted-transaction list is right for each producer, not only
     * for the last batch); a read_uncommitted one sees every record, aborted included, in that
     * order. Each partition's end offset is its records plus one marker per transaction that
     * wrote to it, and with no transaction open the last stable offset is the high watermark.
     */
    @Test
    void readCommittedSeesExactlyTheCommittedRecords() throws Exception {
        String topic = "txn-mixed";
        int partitions = 3;
        int rounds = 8;
        Clients.createTopic(broker, topic, partitions, Map.of());
        List<List<String>> log = lists(partitions);
        Set<String> aborted = new HashSet<>();
        int transactions = 0;
        int abortedTransactions = 0;
        try (KafkaProducer<String, String> a = new KafkaProducer<>(txProducer("txn-mixed-a"));
                KafkaProducer<String, String> b = new KafkaProducer<>(txProducer("txn-mixed-b"));
                KafkaProducer<String, String> plain = new KafkaProducer<>(Clients.producer(broker, true))) {
            a.initTransactions();
            b.initTransactions();
            for (int r = 0; r < rounds; r++) {
                boolean commitA = r % 2 == 0;
                boolean commitB = r % 3 != 1;
                List<String> ofA = new ArrayList<>();
                List<String> ofB = new ArrayList<>();
                a.beginTransaction();
                b.beginTransaction();
                for (int step = 0; step < 2; step++) {
                    sendBlock(a, topic, "a" + r + "." + step, partitions, 2, log, ofA);
                    sendBlock(b, topic, "b" + r + "." + step, partitions, 2, log, ofB);
                    if (step == 0) {
                        sendBlock(plain, topic, "plain" + r, partitions, 1, log, new ArrayList<>());
                    }
                }
                if (commitA) {
                    a.commitTransaction();
                } else {
                    a.abortTransaction();
                    aborted.addAll(ofA);
                    abortedTransactions++;
                }
                if (commitB) {
                    b.commitTransaction();
                } else {
                    b.abortTransaction();
                    aborted.addAll(ofB);
                    abortedTransactions++;
                }
                transactions += 2;
            }
        }
        List<List<String>> committed = lists(partitions);
        for (int p = 0; p < partitions; p++) {
            for (String v : log.get(p)) {
                if (!aborted.contains(v)) {
                    committed.get(p).add(v);
                }
            }
        }
        List<Long> hw = awaitStable(topic, partitions);
        for (int p = 0; p < partitions; p++) {
            assertEquals(log.get(p).size() + transactions, hw.get(p),
                    "end offset of partition " + p + ": " + log.get(p).size() + " records and " + transactions
                            + " transaction markers\n" + brokerLog());
        }
        assertPartitions(committed, values(topic, partitions, READ_COMMITTED), "read_committed");
        assertPartitions(log, values(topic, partitions, READ_UNCOMMITTED), "read_uncommitted");
        System.out.println("TransactionsTest: " + transactions + " transactions (" + abortedTransactions + " aborted) over "
                + partitions + " partitions, end offsets " + hw + ", read_committed saw "
                + committed.stream().mapToInt(List::size).sum() + " of " + log.stream().mapToInt(List::size).sum() + " records");
    }

    /**
     * The last stable offset: while a transaction is open on a partition, a read_committed
     * consumer reads nothing from its first record on, not even a non-transactional record
     * written after it, and its end offset (ListOffsets with isolation READ_COMMITTED, by the
     * consumer and by the admin client) is that first offset, while read_uncommitted reads
     * everything. Once the transaction commits, read_committed reads its records and the later
     * non-transactional one, in offset order; a later aborted transaction moves the end offsets
     * (record and marker) but read_committed reads nothing of it.
     */
    @Test
    void openTransactionHoldsBackTheLastStableOffset() throws Exception {
        String topic = "txn-lso";
        TopicPartition tp = new TopicPartition(topic, 0);
        Clients.createTopic(broker, topic, 1, Map.of());
        try (KafkaProducer<String, String> tx = new KafkaProducer<>(txProducer("txn-lso"));
                KafkaProducer<String, String> plain = new KafkaProducer<>(Clients.producer(broker, true));
                KafkaConsumer<String, String> rc = new KafkaConsumer<>(reader(READ_COMMITTED));
                Admin admin = Clients.admin(broker)) {
            tx.initTransactions();
            tx.beginTransaction();
            assertEquals(0, tx.send(new ProducerRecord<>(topic, 0, "k", "t1")).get(TIMEOUT_S, TimeUnit.SECONDS).offset());
            assertEquals(1, tx.send(new ProducerRecord<>(topic, 0, "k", "t2")).get(TIMEOUT_S, TimeUnit.SECONDS).offset());
            assertEquals(2, plain.send(new ProducerRecord<>(topic, 0, "k", "plain")).get(TIMEOUT_S, TimeUnit.SECONDS).offset());

            assertEquals(List.of(3L), endOffsets(topic, 1, READ_UNCOMMITTED), "high watermark");
            assertEquals(List.of(0L), endOffsets(topic, 1, READ_COMMITTED),
                    "last stable offset with a transaction open from offset 0\n" + brokerLog());
            long adminLso = admin.listOffsets(Map.of(tp, OffsetSpec.latest()), new ListOffsetsOptions(IsolationLevel.READ_COMMITTED))
                    .partitionResult(tp).get(TIMEOUT_S, TimeUnit.SECONDS).offset();
            assertEquals(0L, adminLso, "Admin.listOffsets(latest, READ_COMMITTED) with a transaction open\n" + brokerLog());
            assertEquals(List.of(List.of("t1", "t2", "plain")), values(topic, 1, READ_UNCOMMITTED), "read_uncommitted");

            rc.assign(List.of(tp));
            rc.seekToBeginning(List.of(tp));
            List<String> early = new ArrayList<>();
            long until = System.currentTimeMillis() + 2_000;
            while (System.currentTimeMillis() < until) {
                rc.poll(Duration.ofMillis(200)).forEach(r -> early.add(r.value()));
            }
            assertEquals(List.of(), early, "read_committed read past the last stable offset while the transaction was open\n"
                    + brokerLog());
            assertEquals(0L, rc.position(tp), "read_committed position while the transaction is open");

            tx.commitTransaction();
            List<String> after = Clients.pollN(rc, 3).stream().map(ConsumerRecord::value).toList();
            assertEquals(List.of("t1", "t2", "plain"), after, "read_committed after the commit\n" + brokerLog());
            assertEquals(List.of(4L), awaitStable(topic, 1), "end offset after the commit (marker at 3)");

            tx.beginTransaction();
            assertEquals(4, tx.send(new ProducerRecord<>(topic, 0, "k", "t3")).get(TIMEOUT_S, TimeUnit.SECONDS).offset());
            tx.abortTransaction();
            assertEquals(List.of(6L), awaitStable(topic, 1), "end offset after the abort (marker at 5)");
            List<String> more = new ArrayList<>();
            until = System.currentTimeMillis() + 1_000;
            while (System.currentTimeMillis() < until || rc.position(tp) < 6) {
                if (System.currentTimeMillis() > until + TIMEOUT_S * 1000) {
                    fail("read_committed position " + rc.position(tp) + ", not past the aborted transaction (6)\n" + brokerLog());
                }
                rc.poll(Duration.ofMillis(200)).forEach(r -> more.add(r.value()));
            }
            assertEquals(List.of(), more, "read_committed read the aborted transaction\n" + brokerLog());
            assertEquals(List.of(List.of("t1", "t2", "plain", "t3")), values(topic, 1, READ_UNCOMMITTED), "read_uncommitted");
        }
    }

    /**
     * Offsets committed in transactions (AddOffsetsToTxn, TxnOffsetCommit): an offset sent in a
     * committed transaction is the group's offset; one sent in an aborted transaction never is.
     * While a transaction holding an offset for a partition is open, OffsetFetch without
     * require_stable answers the last committed offset, and a read_committed consumer's
     * {@code committed()} (OffsetFetch with require_stable: the broker answers
     * UNSTABLE_OFFSET_COMMIT and the client asks again) does not complete; once the transaction
     * commits, it completes with the new offset.
     */
    @Test
    void transactionalOffsetCommitsAndRequireStable() throws Exception {
        String topic = "txn-offsets";
        String group = "txn-offsets-group";
        TopicPartition tp = new TopicPartition(topic, 0);
        Clients.createTopic(broker, topic, 1, Map.of());
        ConsumerGroupMetadata groupMetadata = new ConsumerGroupMetadata(group);
        try (KafkaProducer<String, String> tx = new KafkaProducer<>(txProducer("txn-offsets"));
                Admin admin = Clients.admin(broker)) {
            tx.initTransactions();
            tx.beginTransaction();
            tx.send(new ProducerRecord<>(topic, 0, "k", "v1"));
            tx.sendOffsetsToTransaction(Map.of(tp, new OffsetAndMetadata(3, "first")), groupMetadata);
            tx.commitTransaction();
            assertEquals(3L, stableOffsets(group, Set.of(tp)).get(tp), "offset of the committed transaction\n" + brokerLog());

            tx.beginTransaction();
            tx.sendOffsetsToTransaction(Map.of(tp, new OffsetAndMetadata(7, "aborted")), groupMetadata);
            tx.abortTransaction();
            assertEquals(3L, stableOffsets(group, Set.of(tp)).get(tp), "offset after an aborted transaction sent 7\n" + brokerLog());
            assertEquals(3L, groupOffset(admin, group, tp, false), "offset (require_stable false) after the abort\n" + brokerLog());

            tx.beginTransaction();
            tx.sendOffsetsToTransaction(Map.of(tp, new OffsetAndMetadata(9, "pending")), groupMetadata);
            assertEquals(3L, groupOffset(admin, group, tp, false),
                    "offset (require_stable false) while a transaction holding 9 is open\n" + brokerLog());

            Properties cp = reader(READ_COMMITTED);
            cp.put(ConsumerConfig.GROUP_ID_CONFIG, group);
            CompletableFuture<OffsetAndMetadata> stable = CompletableFuture.supplyAsync(() -> {
                try (KafkaConsumer<String, String> c = new KafkaConsumer<>(cp)) {
                    return c.committed(Set.of(tp), Duration.ofSeconds(60)).get(tp);
                }
            });
            Thread.sleep(2_000);
            assertFalse(stable.isDone(), "committed() with require_stable answered while a transactional offset was pending: "
                    + (stable.isDone() ? stable.handle((v, e) -> v + " / " + e).get() : "") + "\n" + brokerLog());
            tx.commitTransaction();
            OffsetAndMetadata om = stable.get(90, TimeUnit.SECONDS);
            assertEquals(9L, om == null ? -1L : om.offset(), "committed() with require_stable once the transaction committed: " + om);
            assertEquals("pending", om.metadata());
            assertEquals(9L, groupOffset(admin, group, tp, false), "offset (require_stable false) after the commit\n" + brokerLog());
        }
    }

    private static long groupOffset(Admin admin, String group, TopicPartition tp, boolean requireStable) throws Exception {
        OffsetAndMetadata om = admin.listConsumerGroupOffsets(group, new ListConsumerGroupOffsetsOptions().requireStable(requireStable))
                .partitionsToOffsetAndMetadata().get(TIMEOUT_S, TimeUnit.SECONDS).get(tp);
        return om == null ? -1 : om.offset();
    }

    /**
     * Fencing, one transactional.id and four producers in turn:
     * (1) the first has a transaction open with records on both partitions when the second's
     * initTransactions() (InitProducerId) bumps the epoch: that aborts the open transaction,
     * and the first's commitTransaction() then fails with ProducerFencedException;
     * (2) the second commits a transaction, the third's initTransactions() fences it, and its
     * next send (to a partition not yet in its new transaction: AddPartitionsToTxn with the old
     * epoch) fails with ProducerFencedException, as does its commitTransaction();
     * (3) the third has a transaction open on partition 0 when the fourth fences it; its next
     * send to that partition reaches the partition with the old epoch and fails (Kafka's own
     * TransactionsTest.testFencingOnSend accepts ProducerFencedException or
     * InvalidProducerEpochException there) and is not written: it leaves no transaction open
     * (the last stable offset is the high watermark).
     * Then the fourth commits. A read_committed consumer sees exactly the records of the second's
     * and the fourth's committed transactions, in order; read_uncommitted also sees the aborted
     * records of the first and the third, and never the refused one.
     */
    @Test
    void aNewProducerWithTheSameTransactionalIdFencesTheOld() throws Exception {
        String topic = "txn-fence";
        String id = "txn-fence";
        int partitions = 2;
        Clients.createTopic(broker, topic, partitions, Map.of());
        List<List<String>> log = lists(partitions);
        List<List<String>> committed = lists(partitions);
        List<String> scratch = new ArrayList<>();

        KafkaProducer<String, String> first = new KafkaProducer<>(txProducer(id));
        KafkaProducer<String, String> second = new KafkaProducer<>(txProducer(id));
        KafkaProducer<String, String> third = new KafkaProducer<>(txProducer(id));
        KafkaProducer<String, String> fourth = new KafkaProducer<>(txProducer(id));
        try {
            // (1) fenced on commit; the open transaction is aborted by the new producer's InitProducerId.
            first.initTransactions();
            first.beginTransaction();
            sendBlock(first, topic, "first", partitions, 3, log, scratch);
            second.initTransactions();
            assertEquals(endOffsets(topic, partitions, READ_UNCOMMITTED), endOffsets(topic, partitions, READ_COMMITTED),
                    "the first producer's transaction is still open after the second's initTransactions()\n" + brokerLog());
            assertEquals(List.of(List.of(), List.of()), values(topic, partitions, READ_COMMITTED),
                    "read_committed after the first producer's transaction was aborted by the second's initTransactions()");
            assertThrows(ProducerFencedException.class, first::commitTransaction,
                    "commitTransaction() of the fenced first producer\n" + brokerLog());

            // (2) fenced on send: with transaction version 1 its AddPartitionsToTxn carries the old
            // epoch (PRODUCER_FENCED); with version 2 the partition leader adds the partition for
            // it and answers the produce INVALID_PRODUCER_EPOCH, as Kafka's leader does.
            second.beginTransaction();
            sendBlock(second, topic, "second", partitions, 3, log, scratch);
            second.commitTransaction();
            for (int p = 0; p < partitions; p++) {
                committed.get(p).addAll(log.get(p).subList(3, 6));
            }
            third.initTransactions();
            second.beginTransaction();
            Future<RecordMetadata> late = second.send(new ProducerRecord<>(topic, 0, "k", "second-fenced"));
            ExecutionException e = assertThrows(ExecutionException.class, () -> late.get(TIMEOUT_S, TimeUnit.SECONDS),
                    "a send of the fenced second producer succeeded");
            assertTrue(e.getCause() instanceof ProducerFencedException || e.getCause() instanceof InvalidProducerEpochException,
                    "the fenced second producer's send failed with " + e.getCause() + "\n" + brokerLog());
            KafkaException ce = assertThrows(KafkaException.class, second::commitTransaction, "commitTransaction() of the fenced second producer");
            if (ce instanceof InvalidProducerEpochException) {
                // Transaction version 2: the produce's error is abortable in the client; the
                // abort's EndTxn then meets the coordinator's newer epoch.
                assertThrows(ProducerFencedException.class, second::abortTransaction, "abortTransaction() of the fenced second producer");
            } else {
                assertInstanceOf(ProducerFencedException.class, ce, "commitTransaction() of the fenced second producer");
            }

            // (3) a produce with the old epoch to a partition of the open transaction.
            third.beginTransaction();
            List<String> ofThird = new ArrayList<>();
            sendBlock(third, topic, "third", 1, 2, log, ofThird);
            fourth.initTransactions();
            Future<RecordMetadata> stale = third.send(new ProducerRecord<>(topic, 0, "k", "third-stale"));
            ExecutionException se = assertThrows(ExecutionException.class, () -> stale.get(TIMEOUT_S, TimeUnit.SECONDS),
                    "a send with the old epoch of the fenced third producer succeeded\n" + brokerLog());
            assertTrue(se.getCause() instanceof ProducerFencedException || se.getCause() instanceof InvalidProducerEpochException,
                    "the fenced third producer's send failed with " + se.getCause() + "\n" + brokerLog());
            assertEquals(endOffsets(topic, partitions, READ_UNCOMMITTED), endOffsets(topic, partitions, READ_COMMITTED),
                    "a transaction is open after the fenced producer's refused send\n" + brokerLog());

            fourth.beginTransaction();
            List<String> ofFourth = new ArrayList<>();
            sendBlock(fourth, topic, "fourth", partitions, 2, log, ofFourth);
            fourth.commitTransaction();
            for (int p = 0; p < partitions; p++) {
                for (String v : ofFourth) {
                    if (v.startsWith("fourth-p" + p + "-")) {
                        committed.get(p).add(v);
                    }
                }
            }
        } finally {
            for (KafkaProducer<String, String> p : List.of(first, second, third, fourth)) {
                p.close(Duration.ofSeconds(5));
            }
        }
        awaitStable(topic, partitions);
        assertPartitions(committed, values(topic, partitions, READ_COMMITTED), "read_committed");
        assertPartitions(log, values(topic, partitions, READ_UNCOMMITTED), "read_uncommitted");
    }

    /** The transformation of {@link #consumeTransformProduceIsExactlyOnceThroughKill9}. */
    private static String transform(String value) {
        return value.toUpperCase(java.util.Locale.ROOT) + "!";
    }

    /** The app of the crash in {@link #consumeTransformProduceIsExactlyOnceThroughKill9}: an exception of its own. */
    private static final class SimulatedCrash extends RuntimeException {
        SimulatedCrash() {
            super("the app crashes in the middle of a transaction (simulated)");
        }
    }

    /**
     * A consume-transform-produce application, as Kafka's documentation writes one: a consumer
     * in a group (read_committed, no auto-commit, subscribe) and a transactional producer; each
     * poll's records are transformed and written to the output (same partition) in one
     * transaction, with the consumed offsets (sendOffsetsToTransaction with the consumer's group
     * metadata). On any failure it does what an application restarted after a crash does: the
     * producer is abandoned as it is (closed at once, its transaction neither committed nor
     * aborted), a fresh producer with the same transactional.id calls initTransactions() (which
     * aborts or completes what the old one left open), and the consumer goes back to the
     * group's committed offsets. On request it "crashes" once in the middle of a transaction,
     * its records written: it stops there until told to go on, then fails as above.
     */
    private static final class CopyApp implements Runnable {
        final String input;
        final String output;
        final String group;
        final String transactionalId;
        final Map<TopicPartition, Long> ends;
        final AtomicLong committedRecords = new AtomicLong();
        final AtomicInteger transactions = new AtomicInteger();
        final AtomicInteger producers = new AtomicInteger();
        final List<String> failures = new CopyOnWriteArrayList<>();
        final AtomicReference<Throwable> error = new AtomicReference<>();
        final Map<TopicPartition, Long> committed = new ConcurrentHashMap<>();
        volatile boolean crashRequested;
        final CountDownLatch inOpenTransaction = new CountDownLatch(1);
        final CountDownLatch resume = new CountDownLatch(1);
        volatile boolean stop;

        CopyApp(String input, String output, String group, String transactionalId, Map<TopicPartition, Long> ends) {
            this.input = input;
            this.output = output;
            this.group = group;
            this.transactionalId = transactionalId;
            this.ends = ends;
        }

        boolean done() {
            for (Map.Entry<TopicPartition, Long> e : ends.entrySet()) {
                if (!e.getValue().equals(committed.get(e.getKey()))) {
                    return false;
                }
            }
            return true;
        }

        @Override
        public void run() {
            Properties cp = reader(READ_COMMITTED);
            cp.put(ConsumerConfig.GROUP_ID_CONFIG, group);
            cp.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, 50);
            cp.put(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG, 10_000);
            cp.put(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG, 1_000);
            try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(cp)) {
                consumer.subscribe(List.of(input));
                KafkaProducer<String, String> producer = freshProducer();
                try {
                    while (!stop && !done()) {
                        ConsumerRecords<String, String> records = consumer.poll(Duration.ofMillis(200));
                        if (records.isEmpty()) {
                            continue;
                        }
                        try {
                            producer.beginTransaction();
                            Map<TopicPartition, OffsetAndMetadata> next = new HashMap<>();
                            for (ConsumerRecord<String, String> r : records) {
                                producer.send(new ProducerRecord<>(output, r.partition(), r.key(), transform(r.value())));
                                next.put(new TopicPartition(r.topic(), r.partition()), new OffsetAndMetadata(r.offset() + 1));
                            }
                            producer.sendOffsetsToTransaction(next, consumer.groupMetadata());
                            if (crashRequested) {
                                crashRequested = false;
                                producer.flush(); // its records are in the output, in the open transaction
                                inOpenTransaction.countDown();
                                if (!resume.await(3, TimeUnit.MINUTES)) {
                                    throw new IllegalStateException("never told to go on after the crash");
                                }
                                throw new SimulatedCrash();
                            }
                            producer.commitTransaction();
                            next.forEach((tp, om) -> committed.put(tp, om.offset()));
                            committedRecords.addAndGet(records.count());
                            transactions.incrementAndGet();
                        } catch (KafkaException | SimulatedCrash e) {
                            failures.add(e.toString());
                            producer.close(Duration.ZERO); // abandoned: no commit, no abort
                            producer = freshProducer();
                            rewind(consumer);
                        }
                    }
                } finally {
                    producer.close(Duration.ofSeconds(10));
                }
            } catch (Throwable t) {
                error.compareAndSet(null, t);
            }
        }

        /** A new producer with the same transactional.id, initialized; tried again for 2 minutes while the broker is away. */
        private KafkaProducer<String, String> freshProducer() throws InterruptedException {
            long deadline = System.currentTimeMillis() + 120_000;
            while (true) {
                KafkaProducer<String, String> p = new KafkaProducer<>(txProducer(transactionalId));
                producers.incrementAndGet();
                try {
                    p.initTransactions();
                    return p;
                } catch (KafkaException e) {
                    failures.add("initTransactions: " + e);
                    p.close(Duration.ZERO);
                    if (System.currentTimeMillis() > deadline) {
                        throw e;
                    }
                    Thread.sleep(500);
                }
            }
        }

        /** Back to the group's committed offsets (OffsetFetch with require_stable); tried again for 2 minutes. */
        private void rewind(KafkaConsumer<String, String> consumer) throws InterruptedException {
            long deadline = System.currentTimeMillis() + 120_000;
            while (true) {
                try {
                    Set<TopicPartition> assignment = consumer.assignment();
                    Map<TopicPartition, OffsetAndMetadata> offsets = consumer.committed(assignment, Duration.ofSeconds(30));
                    for (TopicPartition tp : assignment) {
                        OffsetAndMetadata om = offsets.get(tp);
                        if (om != null) {
                            consumer.seek(tp, om.offset());
                        } else {
                            consumer.seekToBeginning(List.of(tp));
                        }
                    }
                    return;
                } catch (KafkaException e) {
                    failures.add("committed: " + e);
                    if (System.currentTimeMillis() > deadline) {
                        throw e;
                    }
                    Thread.sleep(500);
                }
            }
        }

        String state() {
            Map<String, Long> offsets = new TreeMap<>();
            committed.forEach((tp, offset) -> offsets.put(tp.toString(), offset));
            return "app: " + committedRecords.get() + " records in " + transactions.get() + " committed transactions, "
                    + producers.get() + " producers, committed offsets " + offsets + ", error " + error.get()
                    + ", failures " + failures;
        }
    }

    private static void awaitProgress(CopyApp app, Thread thread, long records, String before) throws InterruptedException {
        long deadline = System.currentTimeMillis() + 120_000;
        while (app.committedRecords.get() < records) {
            if (System.currentTimeMillis() > deadline || !thread.isAlive() || app.error.get() != null) {
                fail("the app did not reach " + records + " committed records before " + before + "; " + app.state()
                        + "\n" + brokerLog());
            }
            Thread.sleep(10);
        }
    }

    /**
     * Exactly-once consume-transform-produce ({@link CopyApp}) through two kill -9s of the
     * broker: 3000 records on a 3-partition input topic are transformed into a 3-partition
     * output topic, 50 records per transaction at most. The broker is killed once at a moment
     * of its own after a third of the input is committed, and again after two thirds while the
     * app has a transaction open (records written, offsets sent, not committed) which it then
     * abandons as a crashed instance would: the restarted broker must recover that open
     * transaction, and the app's fresh producer with the same transactional.id must have it
     * aborted. At the end: the output read with read_committed is each input record
     * transformed exactly once, in the input's order per partition (no duplicates, nothing
     * lost); read_uncommitted also holds the abandoned transaction's records (so there was
     * something to abort); and the group's committed offsets (require_stable) are the input's
     * end offsets.
     */
    @Test
    @Timeout(value = 5, unit = TimeUnit.MINUTES)
    void consumeTransformProduceIsExactlyOnceThroughKill9() throws Exception {
        String input = "ctp-input";
        String output = "ctp-output";
        String group = "ctp-group";
        int partitions = 3;
        int n = 3000;
        Clients.createTopic(broker, input, partitions, Map.of());
        Clients.createTopic(broker, output, partitions, Map.of());
        try (KafkaProducer<String, String> p = new KafkaProducer<>(Clients.producer(broker, true))) {
            List<Future<RecordMetadata>> acks = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                acks.add(p.send(new ProducerRecord<>(input, i % partitions, "k" + i, "record-" + i)));
            }
            for (Future<RecordMetadata> f : acks) {
                f.get(TIMEOUT_S, TimeUnit.SECONDS);
            }
        }
        Map<TopicPartition, Long> ends = new HashMap<>();
        List<Long> inputEnds = endOffsets(input, partitions, READ_UNCOMMITTED);
        for (int q = 0; q < partitions; q++) {
            ends.put(new TopicPartition(input, q), inputEnds.get(q));
        }

        CopyApp app = new CopyApp(input, output, group, "ctp-app", ends);
        Thread thread = new Thread(app, "ctp-app");
        thread.setDaemon(true);
        thread.start();
        List<String> kills = new ArrayList<>();
        try {
            awaitProgress(app, thread, n / 3, "the first kill");
            long atKill = app.committedRecords.get();
            broker.kill();
            Thread.sleep(500);
            broker.restart();
            kills.add("kill 1 at " + atKill + " committed records");

            awaitProgress(app, thread, 2L * n / 3, "the second kill");
            app.crashRequested = true;
            if (!app.inOpenTransaction.await(60, TimeUnit.SECONDS)) {
                fail("the app never stopped in an open transaction; " + app.state() + "\n" + brokerLog());
            }
            atKill = app.committedRecords.get();
            broker.kill();
            Thread.sleep(500);
            broker.restart();
            kills.add("kill 2 at " + atKill + " committed records, a transaction open");
            app.resume.countDown();

            thread.join(180_000);
            if (thread.isAlive()) {
                fail("the app did not finish within 3 minutes of the second restart; " + app.state() + "\n" + brokerLog());
            }
        } finally {
            app.stop = true;
            app.resume.countDown();
            thread.join(30_000);
        }
        assertNull(app.error.get(), "the app failed: " + app.state() + "\n" + brokerLog());

        List<List<String>> expected = new ArrayList<>();
        for (List<String> part : values(input, partitions, READ_UNCOMMITTED)) {
            expected.add(part.stream().map(TransactionsTest::transform).toList());
        }
        assertEquals(n, expected.stream().mapToInt(List::size).sum(), "records in the input topic");
        awaitStable(output, partitions);
        List<List<String>> committed = values(output, partitions, READ_COMMITTED);
        List<List<String>> all = values(output, partitions, READ_UNCOMMITTED);
        int inLog = all.stream().mapToInt(List::size).sum();
        String summary = "TransactionsTest consume-transform-produce: " + kills + "; " + app.state() + "; output records "
                + committed.stream().mapToInt(List::size).sum() + " read_committed, " + inLog + " read_uncommitted";
        System.out.println(summary);
        assertPartitions(expected, committed, "the output read with read_committed (" + summary + ")");
        assertTrue(inLog > n, "no aborted records in the output: the transaction open at the second kill left nothing to abort ("
                + summary + ")");
        assertEquals(ends, stableOffsets(group, ends.keySet()), "the group's committed offsets against the input's end offsets ("
                + summary + ")\n" + brokerLog());
    }

    /**
     * The last of a copier's JSON progress lines (kafka-tools 4.1.1 prints
     * {@code {"transactionalId", "stage", "time", "totalProcessed", "consumed", "remaining"}},
     * stage "ProcessLoop" at each turn of its loop and "ShutdownComplete" from its shutdown
     * hook) whose {@code stage} is {@code stage} (any stage if null), or null if none.
     */
    private static JsonNode lastProgress(List<String> lines, String stage) {
        JsonNode last = null;
        for (String line : lines) {
            if (!line.startsWith("{")) {
                continue;
            }
            try {
                JsonNode e = JSON.readTree(line);
                if (e.has("totalProcessed") && (stage == null || stage.equals(e.path("stage").asText()))) {
                    last = e;
                }
            } catch (java.io.IOException ignored) {
                // not a JSON line
            }
        }
        return last;
    }

    /**
     * Kafka's own {@code TransactionalMessageCopier} (kafka-tools, as Kafka's system test
     * transactions_test.py runs it: one copier per input partition, each with its own
     * transactional.id and the same consumer group, a read_committed consumer assigned its
     * partition, output to the same partition of the output topic; here also
     * {@code --use-group-metadata} and {@code --enable-random-aborts}, so that about a third of
     * its transactions abort and it goes back to its committed offsets) copies 2 x 4000 records
     * from a 2-partition topic to a 3-partition one while the broker is killed with SIGKILL and
     * restarted once both copiers have copied a fifth of their partition. Each copier reports
     * its progress as JSON lines; both must finish (exit 0, stage "ShutdownComplete" with 0
     * remaining). Then, as the system test checks: the output read with read_committed is
     * exactly the input, each record once, in order per partition; the group's committed offsets
     * are the input's ends.
     */
    @Test
    @Timeout(value = 5, unit = TimeUnit.MINUTES)
    void transactionalMessageCopierCopiesExactlyOnceThroughKill9() throws Exception {
        String input = "copier-input";
        String output = "copier-output";
        String group = "copier-group";
        int inputPartitions = 2;
        int perPartition = 4000;
        Clients.createTopic(broker, input, inputPartitions, Map.of());
        Clients.createTopic(broker, output, 3, Map.of());
        try (KafkaProducer<String, String> p = new KafkaProducer<>(Clients.producer(broker, true))) {
            List<Future<RecordMetadata>> acks = new ArrayList<>();
            for (int i = 0; i < perPartition * inputPartitions; i++) {
                acks.add(p.send(new ProducerRecord<>(input, i % inputPartitions, null, Integer.toString(i))));
            }
            for (Future<RecordMetadata> f : acks) {
                f.get(TIMEOUT_S, TimeUnit.SECONDS);
            }
        }
        List<ChildJvm> copiers = new ArrayList<>();
        String killed = "";
        try {
            for (int i = 0; i < inputPartitions; i++) {
                copiers.add(ChildJvm.start("TransactionalMessageCopier-" + i, List.of(),
                        "org.apache.kafka.tools.TransactionalMessageCopier", List.of(
                                "--broker-list", broker.bootstrap(),
                                "--transactional-id", "copier-" + i,
                                "--consumer-group", group,
                                "--input-topic", input,
                                "--input-partition", Integer.toString(i),
                                "--output-topic", output,
                                "--transaction-size", "100",
                                "--transaction-timeout", "40000",
                                "--use-group-metadata",
                                "--enable-random-aborts")));
            }
            long deadline = System.currentTimeMillis() + 120_000;
            while (true) {
                boolean ready = true;
                for (ChildJvm c : copiers) {
                    JsonNode last = lastProgress(c.lines(), null);
                    ready &= last != null && last.get("totalProcessed").asLong() >= perPartition / 5;
                }
                if (ready) {
                    break;
                }
                if (System.currentTimeMillis() > deadline || copiers.stream().anyMatch(c -> !c.isAlive())) {
                    fail("the copiers did not both copy " + perPartition / 5 + " records within 120 s: " + progress(copiers)
                            + "\n" + brokerLog());
                }
                Thread.sleep(10);
            }
            broker.kill();
            killed = "killed at " + progress(copiers);
            Thread.sleep(500);
            broker.restart();
            for (ChildJvm c : copiers) {
                if (!c.waitFor(180_000)) {
                    fail("the copier did not finish within 3 minutes of the restart (" + killed + "); now " + progress(copiers)
                            + "\n" + c.logs() + "\nstderr:\n" + c.stderrTail(30) + "\n" + brokerLog());
                }
                assertEquals(0, c.exitValue(), "the copier's exit status (" + killed + "); " + c.logs() + "\nstderr:\n"
                        + c.stderrTail(30) + "\n" + brokerLog());
                JsonNode end = lastProgress(c.lines(), "ShutdownComplete");
                assertTrue(end != null && end.get("remaining").asLong() == 0, "the copier ended with " + end + " (" + killed
                        + "); " + c.logs() + "\nstderr:\n" + c.stderrTail(30));
            }
        } finally {
            for (ChildJvm c : copiers) {
                c.close();
            }
        }

        List<List<String>> in = values(input, inputPartitions, READ_UNCOMMITTED);
        List<List<String>> expected = new ArrayList<>(in);
        expected.add(List.of()); // output partition 2: no copier writes there
        awaitStable(output, 3);
        List<List<String>> committed = values(output, 3, READ_COMMITTED);
        List<List<String>> all = values(output, 3, READ_UNCOMMITTED);
        String summary = "TransactionalMessageCopier: " + killed + "; output " + committed.stream().mapToInt(List::size).sum()
                + " records read_committed, " + all.stream().mapToInt(List::size).sum() + " read_uncommitted (aborted included)";
        System.out.println("TransactionsTest " + summary);
        assertPartitions(expected, committed, "the copied topic read with read_committed (" + summary + ")");
        Map<TopicPartition, Long> expectedOffsets = new HashMap<>();
        for (int i = 0; i < inputPartitions; i++) {
            expectedOffsets.put(new TopicPartition(input, i), (long) perPartition);
        }
        assertEquals(expectedOffsets, stableOffsets(group, expectedOffsets.keySet()), "the group's committed offsets ("
                + summary + ")\n" + brokerLog());
    }

    private static String progress(List<ChildJvm> copiers) {
        List<String> out = new ArrayList<>();
        for (int i = 0; i < copiers.size(); i++) {
            JsonNode last = lastProgress(copiers.get(i).lines(), null);
            out.add("copier-" + i + " " + (last == null ? "no progress yet" : "totalProcessed " + last.get("totalProcessed")
                    + ", remaining " + last.get("remaining")) + (copiers.get(i).isAlive() ? "" : " (exited)"));
        }
        return out.toString();
    }
}

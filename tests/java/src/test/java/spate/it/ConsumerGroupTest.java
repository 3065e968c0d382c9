package spate.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;
import static spate.it.Clients.TIMEOUT_S;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRebalanceListener;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.CooperativeStickyAssignor;
import org.apache.kafka.clients.consumer.RangeAssignor;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/**
 * subscribe() in a group, under the classic protocol and KIP-848 (group.protocol=consumer): two
 * members share a 4-partition topic, then commit (sync and async) and read their offsets back.
 */
class ConsumerGroupTest {
    @RegisterExtension
    static final SpateBroker broker = new SpateBroker();

    private static final int PARTITIONS = 4;
    private static final int PER_PARTITION = 25;

    /** Records what the rebalance callbacks said: the partitions owned now, and every call. */
    static final class RecordingListener implements ConsumerRebalanceListener {
        final Set<TopicPartition> owned = ConcurrentHashMap.newKeySet();
        final List<String> calls = new CopyOnWriteArrayList<>();

        @Override
        public void onPartitionsAssigned(Collection<TopicPartition> partitions) {
            calls.add("assigned " + partitions);
            owned.addAll(partitions);
        }

        @Override
        public void onPartitionsRevoked(Collection<TopicPartition> partitions) {
            calls.add("revoked " + partitions);
            owned.removeAll(partitions);
        }

        @Override
        public void onPartitionsLost(Collection<TopicPartition> partitions) {
            calls.add("lost " + partitions);
            owned.removeAll(partitions);
        }
    }

    /**
     * @param protocol group.protocol
     * @param assignor classic: the client-side assignor (partition.assignment.strategy, eager range
     *                 or incremental cooperative-sticky); consumer: the broker's (group.remote.assignor)
     */
    @ParameterizedTest(name = "group.protocol={0}, assignor {1}")
    @CsvSource({"classic,range", "classic,cooperative-sticky", "consumer,uniform", "consumer,range"})
    void twoMembersShareATopicAndCommit(String protocol, String assignor) throws Exception {
        String topic = "shared-" + protocol + "-" + assignor;
        String group = "group-" + protocol + "-" + assignor;
        Clients.createTopic(broker, topic, PARTITIONS, Map.of());
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(Clients.producer(broker, true))) {
            for (int p = 0; p < PARTITIONS; p++) {
                for (int i = 0; i < PER_PARTITION; i++) {
                    producer.send(new ProducerRecord<>(topic, p, "k" + i, "p" + p + "-" + i));
                }
            }
            producer.flush();
        }

        Properties cp = Clients.consumer(broker, true);
        cp.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        cp.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, protocol);
        if (protocol.equals("classic")) {
            cp.put(ConsumerConfig.PARTITION_ASSIGNMENT_STRATEGY_CONFIG, assignor.equals("range")
                    ? RangeAssignor.class.getName() : CooperativeStickyAssignor.class.getName());
        } else {
            cp.put(ConsumerConfig.GROUP_REMOTE_ASSIGNOR_CONFIG, assignor);
        }
        cp.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, 10); // several polls, so the rebalance happens mid-stream
        Properties cp1 = (Properties) cp.clone();
        cp1.put(ConsumerConfig.CLIENT_ID_CONFIG, group + "-a");
        Properties cp2 = (Properties) cp.clone();
        cp2.put(ConsumerConfig.CLIENT_ID_CONFIG, group + "-b");

        RecordingListener l1 = new RecordingListener();
        RecordingListener l2 = new RecordingListener();
        Set<TopicPartition> all = new HashSet<>();
        for (int p = 0; p < PARTITIONS; p++) {
            all.add(new TopicPartition(topic, p));
        }
        // The offsets read of each partition since it last (re)started at 0.
        Map<TopicPartition, List<Long>> seen = new HashMap<>();

        try (KafkaConsumer<String, String> c1 = new KafkaConsumer<>(cp1);
             KafkaConsumer<String, String> c2 = new KafkaConsumer<>(cp2)) {
            c1.subscribe(List.of(topic), l1);
            // The first member alone gets the whole topic.
            long deadline = System.currentTimeMillis() + TIMEOUT_S * 1000;
            while (!l1.owned.equals(all)) {
                if (System.currentTimeMillis() > deadline) {
                    fail("first member never owned all partitions; callbacks " + l1.calls);
                }
                record(c1.poll(Duration.ofMillis(100)), seen);
            }
            c2.subscribe(List.of(topic), l2);
            // Both members poll until each has some partitions and together they have all of them.
            deadline = System.currentTimeMillis() + 60_000;
            while (true) {
                record(c1.poll(Duration.ofMillis(100)), seen);
                record(c2.poll(Duration.ofMillis(100)), seen);
                boolean shared = !l1.owned.isEmpty() && !l2.owned.isEmpty()
                        && disjoint(l1.owned, l2.owned) && union(l1.owned, l2.owned).equals(all);
                if (shared && c1.assignment().equals(l1.owned) && c2.assignment().equals(l2.owned)) {
                    break;
                }
                if (System.currentTimeMillis() > deadline) {
                    fail("members never shared the topic: a owns " + l1.owned + " (" + l1.calls + "), b owns "
                            + l2.owned + " (" + l2.calls + ")\nbroker log:\n" + broker.logTail(30));
                }
            }
            assertTrue(l2.calls.get(0).startsWith("assigned"), "b's first callback: " + l2.calls);

            // Each member reads the rest of its partitions: every partition's owner reaches its end.
            deadline = System.currentTimeMillis() + TIMEOUT_S * 1000;
            while (!allRead(c1, l1, c2, all)) {
                if (System.currentTimeMillis() > deadline) {
                    fail("not every record was read; last offsets seen " + seen);
                }
                record(c1.poll(Duration.ofMillis(100)), seen);
                record(c2.poll(Duration.ofMillis(100)), seen);
            }
            assertEquals(l1.owned, c1.assignment(), "a's assignment vs its callbacks " + l1.calls);
            assertEquals(l2.owned, c2.assignment(), "b's assignment vs its callbacks " + l2.calls);

            // commitSync on a (its positions), commitAsync with a callback on b.
            c1.commitSync();
            AtomicReference<Map<TopicPartition, OffsetAndMetadata>> asyncDone = new AtomicReference<>();
            AtomicReference<Exception> asyncError = new AtomicReference<>();
            Map<TopicPartition, OffsetAndMetadata> bOffsets = new HashMap<>();
            for (TopicPartition tp : l2.owned) {
                bOffsets.put(tp, new OffsetAndMetadata(PER_PARTITION, "b-was-here"));
            }
            c2.commitAsync(bOffsets, (offsets, exception) -> {
                asyncError.set(exception);
                asyncDone.set(offsets);
            });
            deadline = System.currentTimeMillis() + TIMEOUT_S * 1000;
            while (asyncDone.get() == null && asyncError.get() == null) {
                if (System.currentTimeMillis() > deadline) {
                    fail("commitAsync's callback never ran");
                }
                c1.poll(Duration.ofMillis(50));
                c2.poll(Duration.ofMillis(50));
            }
            assertNull(asyncError.get(), "commitAsync failed");
            assertEquals(bOffsets, asyncDone.get());

            // Both members read back all four committed offsets.
            for (KafkaConsumer<String, String> c : List.of(c1, c2)) {
                Map<TopicPartition, OffsetAndMetadata> committed = c.committed(all, Duration.ofSeconds(TIMEOUT_S));
                for (TopicPartition tp : all) {
                    OffsetAndMetadata om = committed.get(tp);
                    assertNotNull(om, "committed offset of " + tp);
                    assertEquals(PER_PARTITION, om.offset(), "committed offset of " + tp);
                    assertEquals(l2.owned.contains(tp) ? "b-was-here" : "", om.metadata(), "metadata of " + tp);
                }
            }
        }

        // After both left, a new member of the group starts from the committed offsets: it sees
        // only records produced after the commits.
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(Clients.producer(broker, true))) {
            for (int p = 0; p < PARTITIONS; p++) {
                producer.send(new ProducerRecord<>(topic, p, "new", "new-" + p));
            }
            producer.flush();
        }
        RecordingListener l3 = new RecordingListener();
        try (KafkaConsumer<String, String> c3 = new KafkaConsumer<>(cp)) {
            c3.subscribe(List.of(topic), l3);
            List<ConsumerRecord<String, String>> got = new ArrayList<>();
            long deadline = System.currentTimeMillis() + TIMEOUT_S * 1000;
            while (got.size() < PARTITIONS) {
                if (System.currentTimeMillis() > deadline) {
                    fail("the new member read " + got.size() + " new records; callbacks " + l3.calls);
                }
                c3.poll(Duration.ofMillis(100)).forEach(got::add);
            }
            c3.poll(Duration.ofMillis(300)).forEach(got::add);
            assertEquals(PARTITIONS, got.size(), "only the records after the committed offsets");
            for (ConsumerRecord<String, String> r : got) {
                assertEquals(PER_PARTITION, r.offset());
                assertEquals("new-" + r.partition(), r.value());
            }
            assertEquals(all, l3.owned);
        }
    }

    private static void record(Iterable<ConsumerRecord<String, String>> records, Map<TopicPartition, List<Long>> seen) {
        for (ConsumerRecord<String, String> r : records) {
            TopicPartition tp = new TopicPartition(r.topic(), r.partition());
            List<Long> offsets = seen.computeIfAbsent(tp, k -> new ArrayList<>());
            // Nothing is committed until the end, so a partition that (re)joins a member is read
            // from offset 0; within one run of reads the offsets follow one another.
            if (offsets.isEmpty() || r.offset() <= offsets.get(offsets.size() - 1)) {
                assertEquals(0, r.offset(), "a new run of reads of " + tp + " after " + offsets);
                offsets.clear();
            } else {
                assertEquals(offsets.get(offsets.size() - 1) + 1, r.offset(), "gap in " + tp);
            }
            offsets.add(r.offset());
            assertEquals("p" + r.partition() + "-" + r.offset(), r.value());
        }
    }

    private static boolean allRead(KafkaConsumer<String, String> c1, RecordingListener l1,
                                   KafkaConsumer<String, String> c2, Set<TopicPartition> all) {
        for (TopicPartition tp : all) {
            KafkaConsumer<String, String> owner = l1.owned.contains(tp) ? c1 : c2;
            if (owner.position(tp, Duration.ofSeconds(TIMEOUT_S)) != PER_PARTITION) {
                return false;
            }
        }
        return true;
    }

    private static boolean disjoint(Set<TopicPartition> a, Set<TopicPartition> b) {
        for (TopicPartition tp : a) {
            if (b.contains(tp)) {
                return false;
            }
        }
        return true;
    }

    private static Set<TopicPartition> union(Set<TopicPartition> a, Set<TopicPartition> b) {
        Set<TopicPartition> u = new HashSet<>(a);
        u.addAll(b);
        return u;
    }
}

package spate.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;
import static spate.it.Clients.TIMEOUT_S;

import java.time.Duration;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.ConsumerRecords;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

/**
 * Incremental fetch sessions (KIP-227), which the Java consumer uses by default: a group of two
 * members consumes a 200-partition topic while records keep arriving, every record arrives once,
 * and the broker's {@code /metrics} shows that the fetches were served from sessions, without a
 * single session error. And when sessions are evicted under the consumers (one slot, two
 * consumers), each gets FETCH_SESSION_ID_NOT_FOUND, opens a new session, and misses nothing.
 */
class FetchSessionTest {
    @RegisterExtension
    static final SpateBroker broker = new SpateBroker();

    /** One core with one session slot, evictable at once: two consumers take it from each other. */
    @RegisterExtension
    static final SpateBroker oneSlot = new SpateBroker("--cores", "1",
            "--max-incremental-fetch-session-cache-slots", "1", "--min-incremental-fetch-session-eviction-ms", "0");

    private static final int PARTITIONS = 200;
    private static final int ROUNDS = 4;

    @Test
    void aGroupReadsTwoHundredPartitionsThroughIncrementalFetchSessions() throws Exception {
        String topic = "sessions";
        Clients.createTopic(broker, topic, PARTITIONS, Map.of());
        Properties cp = Clients.consumer(broker, true);
        cp.put(ConsumerConfig.GROUP_ID_CONFIG, "sessions-group");
        cp.put(ConsumerConfig.FETCH_MAX_WAIT_MS_CONFIG, 100);
        Properties cp1 = (Properties) cp.clone();
        cp1.put(ConsumerConfig.CLIENT_ID_CONFIG, "sessions-a");
        Properties cp2 = (Properties) cp.clone();
        cp2.put(ConsumerConfig.CLIENT_ID_CONFIG, "sessions-b");
        Set<TopicPartition> all = new HashSet<>();
        for (int p = 0; p < PARTITIONS; p++) {
            all.add(new TopicPartition(topic, p));
        }
        Map<String, Integer> got = new HashMap<>();
        try (KafkaConsumer<String, String> c1 = new KafkaConsumer<>(cp1);
             KafkaConsumer<String, String> c2 = new KafkaConsumer<>(cp2);
             KafkaProducer<String, String> producer = new KafkaProducer<>(Clients.producer(broker, true))) {
            c1.subscribe(List.of(topic));
            c2.subscribe(List.of(topic));
            // Nothing is produced until the group has settled, so no record is read twice by a
            // partition's second owner (nothing is committed).
            long deadline = System.currentTimeMillis() + 60_000;
            while (c1.assignment().isEmpty() || c2.assignment().isEmpty() || !union(c1, c2).equals(all)) {
                if (System.currentTimeMillis() > deadline) {
                    fail("the two members never shared the topic: " + c1.assignment().size() + " and "
                            + c2.assignment().size() + " partitions");
                }
                record(c1.poll(Duration.ofMillis(100)), got);
                record(c2.poll(Duration.ofMillis(100)), got);
            }
            assertTrue(got.isEmpty(), "records before anything was produced: " + got);
            // Rounds of one record per partition (the last round several), each read in full
            // before the next: the members' sessions carry their positions from round to round.
            Set<String> sent = new HashSet<>();
            for (int round = 0; round < ROUNDS; round++) {
                int perPartition = round == ROUNDS - 1 ? 5 : 1;
                for (int p = 0; p < PARTITIONS; p++) {
                    for (int i = 0; i < perPartition; i++) {
                        String value = "r" + round + "-p" + p + "-" + i;
                        producer.send(new ProducerRecord<>(topic, p, null, value));
                        sent.add(value);
                    }
                }
                producer.flush();
                deadline = System.currentTimeMillis() + TIMEOUT_S * 1000;
                while (got.size() < sent.size()) {
                    if (System.currentTimeMillis() > deadline) {
                        Set<String> missing = new HashSet<>(sent);
                        missing.removeAll(got.keySet());
                        fail("round " + round + ": " + missing.size() + " records never arrived, e.g. "
                                + missing.stream().limit(5).toList() + "\nbroker log:\n" + broker.logTail(30));
                    }
                    record(c1.poll(Duration.ofMillis(100)), got);
                    record(c2.poll(Duration.ofMillis(100)), got);
                }
            }
            record(c1.poll(Duration.ofMillis(300)), got);
            record(c2.poll(Duration.ofMillis(300)), got);
            assertEquals(sent, got.keySet());
            got.forEach((value, times) -> assertEquals(1, times, value + " arrived " + times + " times"));
        }

        String metrics = broker.metrics();
        double incremental = SpateBroker.metricSum(metrics, "spate_fetch_requests_total", "kind=\"incremental\"");
        double full = SpateBroker.metricSum(metrics, "spate_fetch_requests_total", "kind=\"full\"");
        System.out.println("FetchSessionTest: " + incremental + " incremental fetches, " + full + " full ones");
        assertTrue(incremental > 10 * full && full > 0,
                "fetches were not served from sessions: " + incremental + " incremental, " + full + " full");
        for (String code : List.of("FETCH_SESSION_ID_NOT_FOUND", "INVALID_FETCH_SESSION_EPOCH", "FETCH_SESSION_TOPIC_ID_ERROR")) {
            assertEquals(0.0, SpateBroker.metricSum(metrics, "spate_errors_total", "code=\"" + code + "\""), code);
        }
    }

    @Test
    void consumersWhoseSessionsAreEvictedStartNewOnesAndMissNothing() throws Exception {
        String topic = "evicted";
        Clients.createTopic(oneSlot, topic, 4, Map.of());
        Properties cp = Clients.consumer(oneSlot, true);
        cp.put(ConsumerConfig.FETCH_MAX_WAIT_MS_CONFIG, 50);
        Map<String, Integer> got = new HashMap<>();
        Set<String> sent = new HashSet<>();
        try (KafkaConsumer<String, String> c1 = new KafkaConsumer<>(cp);
             KafkaConsumer<String, String> c2 = new KafkaConsumer<>(cp);
             KafkaProducer<String, String> producer = new KafkaProducer<>(Clients.producer(oneSlot, true))) {
            c1.assign(List.of(new TopicPartition(topic, 0), new TopicPartition(topic, 1)));
            c2.assign(List.of(new TopicPartition(topic, 2), new TopicPartition(topic, 3)));
            long deadline = System.currentTimeMillis() + TIMEOUT_S * 1000;
            for (int round = 0; round < 50; round++) {
                for (int p = 0; p < 4; p++) {
                    String value = "r" + round + "-p" + p;
                    producer.send(new ProducerRecord<>(topic, p, null, value));
                    sent.add(value);
                }
                producer.flush();
                record(c1.poll(Duration.ofMillis(20)), got);
                record(c2.poll(Duration.ofMillis(20)), got);
            }
            while (got.size() < sent.size()) {
                if (System.currentTimeMillis() > deadline) {
                    fail((sent.size() - got.size()) + " records never arrived\nbroker log:\n" + oneSlot.logTail(30));
                }
                record(c1.poll(Duration.ofMillis(50)), got);
                record(c2.poll(Duration.ofMillis(50)), got);
            }
        }
        assertEquals(sent, got.keySet());
        got.forEach((value, times) -> assertEquals(1, times, value + " arrived " + times + " times"));
        String metrics = oneSlot.metrics();
        double notFound = SpateBroker.metricSum(metrics, "spate_errors_total", "code=\"FETCH_SESSION_ID_NOT_FOUND\"");
        double evictions = SpateBroker.metricSum(metrics, "spate_fetch_session_evictions_total");
        double incremental = SpateBroker.metricSum(metrics, "spate_fetch_requests_total", "kind=\"incremental\"");
        System.out.println("FetchSessionTest (one slot): " + evictions + " evictions, " + notFound
                + " FETCH_SESSION_ID_NOT_FOUND, " + incremental + " incremental fetches");
        assertTrue(evictions > 0 && notFound > 0 && incremental > 0,
                evictions + " evictions, " + notFound + " FETCH_SESSION_ID_NOT_FOUND, " + incremental + " incremental");
    }

    private static Set<TopicPartition> union(KafkaConsumer<?, ?> a, KafkaConsumer<?, ?> b) {
        Set<TopicPartition> u = new HashSet<>(a.assignment());
        u.addAll(b.assignment());
        return u;
    }

    private static void record(ConsumerRecords<String, String> records, Map<String, Integer> got) {
        for (ConsumerRecord<String, String> r : records) {
            got.merge(r.value(), 1, Integer::sum);
        }
    }
}

package spate.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static spate.it.Clients.TIMEOUT_S;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AlterClientQuotasOptions;
import org.apache.kafka.clients.admin.AlterClientQuotasResult;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.Metric;
import org.apache.kafka.common.MetricName;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.InvalidRequestException;
import org.apache.kafka.common.quota.ClientQuotaAlteration;
import org.apache.kafka.common.quota.ClientQuotaEntity;
import org.apache.kafka.common.quota.ClientQuotaFilter;
import org.apache.kafka.common.quota.ClientQuotaFilterComponent;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

/**
 * Client quotas with the Java client: {@code Admin.alterClientQuotas / describeClientQuotas}
 * (AlterClientQuotas, key 49; DescribeClientQuotas, key 48) on client-id, user and default
 * entities, and what a producer and a consumer over their byte rates meet: answers carrying
 * {@code throttle_time_ms} (KIP-219), which the client honours and shows in its own
 * {@code produce-throttle-time-max} / {@code fetch-throttle-time-max}, and a rate held to the
 * quota, while a client without a quota beside it is never throttled.
 *
 * <p>One broker, one PLAINTEXT listener (every client is User:ANONYMOUS). The tests share it and
 * run one at a time; each removes the quotas it set in a {@code finally} block, since a user or
 * default quota left behind would change which quota applies to the next test's clients.
 */
class QuotaTest {
    private static final String USER = ClientQuotaEntity.USER;
    private static final String CLIENT_ID = ClientQuotaEntity.CLIENT_ID;
    private static final String PRODUCER_BYTE_RATE = "producer_byte_rate";
    private static final String CONSUMER_BYTE_RATE = "consumer_byte_rate";
    private static final String REQUEST_PERCENTAGE = "request_percentage";

    /** The slow producer's and the slow reader's quotas, bytes per second. */
    private static final double PRODUCE_QUOTA = 524_288;
    private static final double FETCH_QUOTA = 262_144;
    /** Value size of every record of the rate tests. */
    private static final int RECORD_BYTES = 1024;
    /** The rate is measured from this long after the start... */
    private static final long WARM_UP_MS = 3_000;
    /** ...to this long after it. */
    private static final long RUN_MS = 12_000;
    /** The unthrottled producer beside the slow one is paced to this (four times the other's quota). */
    private static final double FAST_PACE = 4 * PRODUCE_QUOTA;

    @RegisterExtension
    static final SpateBroker broker = new SpateBroker();

    /**
     * alterClientQuotas sets producer_byte_rate on client id "slow" and consumer_byte_rate on
     * "slow-reader"; describeClientQuotas with {@code ClientQuotaFilter.all()} returns exactly
     * those two, and filters on one entity (contains, containsOnly) or on the client-id type
     * return what they match. validateOnly changes nothing; an Op with a null value removes the
     * key (and with its last key the entity). Refused per entity with InvalidRequestException
     * while a good entity in the same call is applied: an unknown key, a value that is not
     * positive.
     */
    @Test
    void alterDescribeAndRemoveClientIdQuotas() throws Exception {
        ClientQuotaEntity slow = entity(CLIENT_ID, "slow");
        ClientQuotaEntity reader = entity(CLIENT_ID, "slow-reader");
        try (Admin admin = Clients.admin(broker)) {
            try {
                alter(admin, slow, PRODUCER_BYTE_RATE, PRODUCE_QUOTA);
                alter(admin, reader, CONSUMER_BYTE_RATE, FETCH_QUOTA);
                Map<ClientQuotaEntity, Map<String, Double>> both = Map.of(
                        slow, Map.of(PRODUCER_BYTE_RATE, PRODUCE_QUOTA),
                        reader, Map.of(CONSUMER_BYTE_RATE, FETCH_QUOTA));
                assertEquals(both, describe(admin, ClientQuotaFilter.all()), "describeClientQuotas(all())");
                assertEquals(Map.of(slow, both.get(slow)),
                        describe(admin, ClientQuotaFilter.contains(List.of(ClientQuotaFilterComponent.ofEntity(CLIENT_ID, "slow")))),
                        "filter: client-id slow");
                assertEquals(Map.of(reader, both.get(reader)),
                        describe(admin, ClientQuotaFilter.containsOnly(List.of(ClientQuotaFilterComponent.ofEntity(CLIENT_ID, "slow-reader")))),
                        "filter: only client-id slow-reader");
                assertEquals(both, describe(admin, ClientQuotaFilter.contains(List.of(ClientQuotaFilterComponent.ofEntityType(CLIENT_ID)))),
                        "filter: any client-id");
                assertEquals(Map.of(), describe(admin, ClientQuotaFilter.contains(List.of(ClientQuotaFilterComponent.ofEntity(CLIENT_ID, "nobody")))),
                        "filter: a client id without quotas");
                assertEquals(Map.of(), describe(admin, ClientQuotaFilter.contains(List.of(ClientQuotaFilterComponent.ofEntityType(USER)))),
                        "filter: any user (none set)");

                // A second key on the same entity joins the first; validateOnly applies nothing.
                alter(admin, slow, REQUEST_PERCENTAGE, 50.0);
                assertEquals(Map.of(PRODUCER_BYTE_RATE, PRODUCE_QUOTA, REQUEST_PERCENTAGE, 50.0), describe(admin, ClientQuotaFilter.all()).get(slow),
                        "client-id slow with two keys");
                admin.alterClientQuotas(List.of(new ClientQuotaAlteration(slow, List.of(new ClientQuotaAlteration.Op(PRODUCER_BYTE_RATE, 1.0)))),
                        new AlterClientQuotasOptions().validateOnly(true)).all().get(TIMEOUT_S, TimeUnit.SECONDS);
                assertEquals(PRODUCE_QUOTA, describe(admin, ClientQuotaFilter.all()).get(slow).get(PRODUCER_BYTE_RATE), "after a validateOnly alteration");

                // Removal: an Op with a null value.
                alter(admin, slow, REQUEST_PERCENTAGE, null);
                assertEquals(both, describe(admin, ClientQuotaFilter.all()), "after removing request_percentage of slow");
                alter(admin, slow, PRODUCER_BYTE_RATE, null);
                assertEquals(Map.of(reader, both.get(reader)), describe(admin, ClientQuotaFilter.all()), "after removing slow's last key");
                alter(admin, reader, CONSUMER_BYTE_RATE, null);
                assertEquals(Map.of(), describe(admin, ClientQuotaFilter.all()), "after removing slow-reader's");

                // Refusals, each entity answered on its own.
                ClientQuotaEntity good = entity(CLIENT_ID, "good");
                ClientQuotaEntity unknownKey = entity(CLIENT_ID, "unknown-key");
                ClientQuotaEntity negative = entity(CLIENT_ID, "negative");
                AlterClientQuotasResult r = admin.alterClientQuotas(List.of(
                        new ClientQuotaAlteration(good, List.of(new ClientQuotaAlteration.Op(PRODUCER_BYTE_RATE, 1_000_000.0))),
                        new ClientQuotaAlteration(unknownKey, List.of(new ClientQuotaAlteration.Op("bogus_byte_rate", 1_000.0))),
                        new ClientQuotaAlteration(negative, List.of(new ClientQuotaAlteration.Op(CONSUMER_BYTE_RATE, -5.0)))));
                r.values().get(good).get(TIMEOUT_S, TimeUnit.SECONDS);
                for (ClientQuotaEntity bad : List.of(unknownKey, negative)) {
                    ExecutionException e = assertThrows(ExecutionException.class, () -> r.values().get(bad).get(TIMEOUT_S, TimeUnit.SECONDS),
                            "alterClientQuotas of " + bad);
                    assertInstanceOf(InvalidRequestException.class, e.getCause(), "alterClientQuotas of " + bad + ": " + e.getCause());
                }
                assertEquals(Map.of(good, Map.of(PRODUCER_BYTE_RATE, 1_000_000.0)), describe(admin, ClientQuotaFilter.all()),
                        "after one good and two refused alterations");
                alter(admin, good, PRODUCER_BYTE_RATE, null);
            } finally {
                removeAll(admin);
            }
        }
    }

    /**
     * User and default entities through describe: quotas on user alice, the default user, alice
     * with client id slow, the default user with the default client id, and the default client
     * id (a request_percentage among them) are each described as set, and the filters pick them
     * as Kafka's do: a named user (contains: with or without a client part; containsOnly: alone),
     * the default user, any user, a user and a client id together, the default client id.
     */
    @Test
    void userAndDefaultEntitiesThroughDescribe() throws Exception {
        ClientQuotaEntity alice = entity(USER, "alice");
        ClientQuotaEntity defaultUser = entity(USER, null);
        ClientQuotaEntity aliceSlow = entity(USER, "alice", CLIENT_ID, "slow");
        ClientQuotaEntity defaultBoth = entity(USER, null, CLIENT_ID, null);
        ClientQuotaEntity defaultClient = entity(CLIENT_ID, null);
        Map<ClientQuotaEntity, Map<String, Double>> set = Map.of(
                alice, Map.of(PRODUCER_BYTE_RATE, 1e6, CONSUMER_BYTE_RATE, 2e6),
                defaultUser, Map.of(PRODUCER_BYTE_RATE, 3e6),
                aliceSlow, Map.of(PRODUCER_BYTE_RATE, 4e6),
                defaultBoth, Map.of(REQUEST_PERCENTAGE, 200.0),
                defaultClient, Map.of(CONSUMER_BYTE_RATE, 5e6));
        try (Admin admin = Clients.admin(broker)) {
            try {
                List<ClientQuotaAlteration> alterations = new ArrayList<>();
                set.forEach((e, keys) -> alterations.add(new ClientQuotaAlteration(e,
                        keys.entrySet().stream().map(k -> new ClientQuotaAlteration.Op(k.getKey(), k.getValue())).toList())));
                admin.alterClientQuotas(alterations).all().get(TIMEOUT_S, TimeUnit.SECONDS);
                assertEquals(set, describe(admin, ClientQuotaFilter.all()), "describeClientQuotas(all())");
                assertEquals(pick(set, alice, aliceSlow), describe(admin, ClientQuotaFilter.contains(
                        List.of(ClientQuotaFilterComponent.ofEntity(USER, "alice")))), "filter: user alice");
                assertEquals(pick(set, alice), describe(admin, ClientQuotaFilter.containsOnly(
                        List.of(ClientQuotaFilterComponent.ofEntity(USER, "alice")))), "filter: only user alice");
                assertEquals(pick(set, defaultUser, defaultBoth), describe(admin, ClientQuotaFilter.contains(
                        List.of(ClientQuotaFilterComponent.ofDefaultEntity(USER)))), "filter: the default user");
                assertEquals(pick(set, defaultUser), describe(admin, ClientQuotaFilter.containsOnly(
                        List.of(ClientQuotaFilterComponent.ofDefaultEntity(USER)))), "filter: only the default user");
                assertEquals(pick(set, alice, defaultUser, aliceSlow, defaultBoth), describe(admin, ClientQuotaFilter.contains(
                        List.of(ClientQuotaFilterComponent.ofEntityType(USER)))), "filter: any user");
                assertEquals(pick(set, aliceSlow), describe(admin, ClientQuotaFilter.contains(List.of(
                        ClientQuotaFilterComponent.ofEntity(USER, "alice"), ClientQuotaFilterComponent.ofEntity(CLIENT_ID, "slow")))),
                        "filter: user alice and client id slow");
                assertEquals(pick(set, defaultBoth, defaultClient), describe(admin, ClientQuotaFilter.contains(
                        List.of(ClientQuotaFilterComponent.ofDefaultEntity(CLIENT_ID)))), "filter: the default client id");
                assertEquals(pick(set, defaultClient), describe(admin, ClientQuotaFilter.containsOnly(
                        List.of(ClientQuotaFilterComponent.ofDefaultEntity(CLIENT_ID)))), "filter: only the default client id");
            } finally {
                removeAll(admin);
            }
            assertEquals(Map.of(), describe(admin, ClientQuotaFilter.all()), "after removing every quota");
        }
    }

    /**
     * Kafka's precedence decides which quota a client meets, seen end to end without SASL (every
     * client here is User:ANONYMOUS): client id "prec" has producer_byte_rate 8 KiB/s, then
     * more specific entities are added one by one, alternately a large and a small rate, and
     * after each a new producer with client.id=prec sends one 16 KB record: its
     * produce-throttle-time-max is above 0 exactly when the most specific entity's rate is the
     * small one. Order (least specific first): client, default user, default user + client,
     * user, user + default client, user + client.
     */
    @Test
    void precedenceDecidesWhichQuotaApplies() throws Exception {
        String topic = "quota-precedence";
        Clients.createTopic(broker, topic, 1, Map.of());
        double small = 8192;
        double large = 1e9;
        List<Object[]> steps = List.of(
                new Object[] {entity(CLIENT_ID, "prec"), small},
                new Object[] {entity(USER, null), large},
                new Object[] {entity(USER, null, CLIENT_ID, "prec"), small},
                new Object[] {entity(USER, "ANONYMOUS"), large},
                new Object[] {entity(USER, "ANONYMOUS", CLIENT_ID, null), small},
                new Object[] {entity(USER, "ANONYMOUS", CLIENT_ID, "prec"), large});
        List<String> seen = new ArrayList<>();
        try (Admin admin = Clients.admin(broker)) {
            try {
                for (Object[] step : steps) {
                    ClientQuotaEntity e = (ClientQuotaEntity) step[0];
                    double rate = (Double) step[1];
                    alter(admin, e, PRODUCER_BYTE_RATE, rate);
                    Properties p = Clients.producer(broker, false);
                    p.put(ProducerConfig.CLIENT_ID_CONFIG, "prec");
                    p.put(ProducerConfig.ACKS_CONFIG, "1");
                    p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, false);
                    double throttle;
                    try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(p)) {
                        producer.send(new ProducerRecord<>(topic, 0, null, new byte[16_000])).get(TIMEOUT_S, TimeUnit.SECONDS);
                        throttle = clientMetricMax(producer.metrics(), "produce-throttle-time-max");
                    }
                    seen.add(e.entries() + "=" + (long) rate + ": throttle max " + throttle + " ms");
                    if (rate == small) {
                        assertTrue(throttle > 0, "with " + e.entries() + " at " + (long) rate + " B/s the most specific entity, a 16 KB "
                                + "produce was not throttled; steps so far: " + seen + "\n" + log());
                    } else {
                        assertEquals(0.0, throttle, "with " + e.entries() + " at " + (long) rate + " B/s the most specific entity, a 16 KB "
                                + "produce was throttled; steps so far: " + seen + "\n" + log());
                    }
                }
            } finally {
                removeAll(admin);
            }
        }
        System.out.println("QuotaTest precedence: " + seen);
    }

    /**
     * A producer with client.id=slow under producer_byte_rate=512 KiB/s sends 1 KiB records as
     * fast as it can (acks=1, linger 5 ms) for 12 s: the bytes acknowledged from 3 s to 12 s
     * come at 0.5x to 1.1x the quota, and its produce-throttle-time-max is above 0. Beside it,
     * a producer with client.id=fast (no quota) paced to four times that quota is never
     * throttled (its produce-throttle-time-max is 0). The broker counts Produce throttles.
     */
    @Test
    void producerIsHeldToItsQuotaAndAnotherIsNot() throws Exception {
        Clients.createTopic(broker, "quota-slow", 1, Map.of());
        Clients.createTopic(broker, "quota-fast", 1, Map.of());
        double throttlesBefore = SpateBroker.metricSum(broker.metrics(), "spate_quota_throttles_total", "Produce");
        try (Admin admin = Clients.admin(broker)) {
            try {
                alter(admin, entity(CLIENT_ID, "slow"), PRODUCER_BYTE_RATE, PRODUCE_QUOTA);
                Run slow = new Run("slow", "quota-slow", 0);
                Run fast = new Run("fast", "quota-fast", FAST_PACE);
                long t0 = System.nanoTime();
                slow.start(t0);
                fast.start(t0);
                // The slow producer's bytes acknowledged in each second, for the report.
                List<Long> perSecond = new ArrayList<>();
                long slowAt3 = 0, fastAt3 = 0, t3 = 0, last = 0;
                for (long s = 1; s * 1000 <= RUN_MS; s++) {
                    sleepUntil(t0, s * 1000);
                    long now = slow.acked.get();
                    perSecond.add(now - last);
                    last = now;
                    if (s * 1000 == WARM_UP_MS) {
                        slowAt3 = now;
                        fastAt3 = fast.acked.get();
                        t3 = System.nanoTime();
                    }
                }
                long slowAt12 = slow.acked.get(), fastAt12 = fast.acked.get();
                double secs = (System.nanoTime() - t3) / 1e9;
                slow.stop();
                fast.stop();
                double slowRate = (slowAt12 - slowAt3) / secs;
                double fastRate = (fastAt12 - fastAt3) / secs;
                String report = String.format("slow producer %.0f B/s (%.3f x its quota of %.0f), throttle max %.0f ms, avg %.1f ms, "
                        + "bytes acknowledged each second %s; fast producer %.0f B/s (paced to %.0f), throttle max %.1f ms; "
                        + "failed sends: slow %d, fast %d",
                        slowRate, slowRate / PRODUCE_QUOTA, PRODUCE_QUOTA, slow.throttleMax, slow.throttleAvg, perSecond, fastRate,
                        FAST_PACE, fast.throttleMax, slow.failed.get(), fast.failed.get());
                System.out.println("QuotaTest produce: " + report);
                assertEquals(null, slow.error.get(), "the slow producer's thread: " + report);
                assertEquals(null, fast.error.get(), "the fast producer's thread: " + report);
                assertTrue(slowRate <= 1.10 * PRODUCE_QUOTA, "over its quota by more than 10%: " + report + "\n" + log());
                assertTrue(slowRate >= 0.5 * PRODUCE_QUOTA, "under half its quota: " + report + "\n" + log());
                assertTrue(slow.throttleMax > 0, "the slow producer was never told to wait: " + report + "\n" + log());
                assertEquals(0.0, fast.throttleMax, "the producer without a quota was throttled: " + report + "\n" + log());
                double throttles = SpateBroker.metricSum(broker.metrics(), "spate_quota_throttles_total", "Produce") - throttlesBefore;
                assertTrue(throttles > 0, "spate_quota_throttles_total{api=Produce} did not grow: " + report);
            } finally {
                removeAll(admin);
            }
        }
    }

    /**
     * A consumer with client.id=slow-reader under consumer_byte_rate=256 KiB/s reads a topic
     * filled with 8 MiB of 1 KiB records (32 KiB a fetch, so that one fetch is an eighth of a
     * second's quota and the rate is not measured in lumps of whole seconds): what it reads from
     * 3 s to 12 s comes at 0.5x to 1.1x the quota, it is far from the end after 12 s, and its
     * fetch-throttle-time-max is above 0. The broker counts Fetch throttles.
     */
    @Test
    void consumerIsHeldToItsQuota() throws Exception {
        String topic = "quota-read";
        int records = 8 * 1024;
        Clients.createTopic(broker, topic, 1, Map.of());
        Properties pp = Clients.producer(broker, false);
        pp.put(ProducerConfig.CLIENT_ID_CONFIG, "filler");
        pp.put(ProducerConfig.ACKS_CONFIG, "1");
        pp.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, false);
        pp.put(ProducerConfig.LINGER_MS_CONFIG, 5);
        byte[] value = new byte[RECORD_BYTES];
        Arrays.fill(value, (byte) 'r');
        try (KafkaProducer<byte[], byte[]> p = new KafkaProducer<>(pp)) {
            for (int i = 0; i < records; i++) {
                p.send(new ProducerRecord<>(topic, 0, null, value));
            }
            p.flush();
        }
        double throttlesBefore = SpateBroker.metricSum(broker.metrics(), "spate_quota_throttles_total", "Fetch");
        try (Admin admin = Clients.admin(broker)) {
            try {
                alter(admin, entity(CLIENT_ID, "slow-reader"), CONSUMER_BYTE_RATE, FETCH_QUOTA);
                Properties cp = Clients.consumer(broker, false);
                cp.put(ConsumerConfig.CLIENT_ID_CONFIG, "slow-reader");
                cp.put(ConsumerConfig.MAX_PARTITION_FETCH_BYTES_CONFIG, 32_768);
                cp.put(ConsumerConfig.FETCH_MAX_BYTES_CONFIG, 32_768);
                TopicPartition tp = new TopicPartition(topic, 0);
                long read = 0, readAt3 = -1, t3 = 0;
                double throttleMax, throttleAvg;
                try (KafkaConsumer<byte[], byte[]> c = new KafkaConsumer<>(cp)) {
                    c.assign(List.of(tp));
                    c.seekToBeginning(List.of(tp));
                    List<Long> perSecond = new ArrayList<>();
                    long lastSecond = 0;
                    long t0 = System.nanoTime();
                    long now;
                    while ((now = System.nanoTime()) - t0 < RUN_MS * 1_000_000) {
                        if ((now - t0) / 1_000_000_000 > perSecond.size()) {
                            perSecond.add(read - lastSecond);
                            lastSecond = read;
                        }
                        if (readAt3 < 0 && now - t0 >= WARM_UP_MS * 1_000_000) {
                            readAt3 = read;
                            t3 = now;
                        }
                        for (ConsumerRecord<byte[], byte[]> r : c.poll(Duration.ofMillis(50))) {
                            read += r.value().length;
                        }
                    }
                    now = System.nanoTime();
                    double rate = (read - readAt3) / ((now - t3) / 1e9);
                    throttleMax = clientMetricMax(c.metrics(), "fetch-throttle-time-max");
                    throttleAvg = clientMetricMax(c.metrics(), "fetch-throttle-time-avg");
                    perSecond.add(read - lastSecond);
                    String report = String.format("slow-reader %.0f B/s (%.3f x its quota of %.0f), %d of %d bytes read in 12 s, "
                            + "throttle max %.0f ms, avg %.1f ms, bytes read each second %s", rate, rate / FETCH_QUOTA, FETCH_QUOTA, read,
                            (long) records * RECORD_BYTES, throttleMax, throttleAvg, perSecond);
                    System.out.println("QuotaTest fetch: " + report);
                    assertTrue(read < (long) records * RECORD_BYTES / 2, "read more than half the topic in 12 s: " + report + "\n" + log());
                    assertTrue(rate <= 1.10 * FETCH_QUOTA, "over its quota by more than 10%: " + report + "\n" + log());
                    assertTrue(rate >= 0.5 * FETCH_QUOTA, "under half its quota: " + report + "\n" + log());
                    assertTrue(throttleMax > 0, "the consumer was never told to wait: " + report + "\n" + log());
                    double throttles = SpateBroker.metricSum(broker.metrics(), "spate_quota_throttles_total", "Fetch") - throttlesBefore;
                    assertTrue(throttles > 0, "spate_quota_throttles_total{api=Fetch} did not grow: " + report);
                }
            } finally {
                removeAll(admin);
            }
        }
    }

    // ---- helpers ----

    /**
     * A producer (acks=1, idempotence off, linger 5 ms, 1 KiB records, 256 KiB of buffer so that
     * what is acknowledged follows what is sent) on its own thread, sending to partition 0 of
     * {@code topic} as fast as it can, or at {@code pace} bytes per second when above 0, and
     * counting the bytes acknowledged. {@link #stop()} ends it and reads its throttle metrics.
     */
    private static final class Run {
        final AtomicLong acked = new AtomicLong();
        final AtomicLong failed = new AtomicLong();
        final AtomicReference<Throwable> error = new AtomicReference<>();
        final AtomicBoolean stopping = new AtomicBoolean();
        final KafkaProducer<byte[], byte[]> producer;
        final String topic;
        final double pace;
        Thread thread;
        double throttleMax = Double.NaN;
        double throttleAvg = Double.NaN;

        Run(String clientId, String topic, double pace) {
            Properties p = Clients.producer(broker, false);
            p.put(ProducerConfig.CLIENT_ID_CONFIG, clientId);
            p.put(ProducerConfig.ACKS_CONFIG, "1");
            p.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, false);
            p.put(ProducerConfig.LINGER_MS_CONFIG, 5);
            p.put(ProducerConfig.BUFFER_MEMORY_CONFIG, 256 * 1024);
            this.producer = new KafkaProducer<>(p);
            this.topic = topic;
            this.pace = pace;
            producer.partitionsFor(topic); // metadata before the clock starts
        }

        void start(long t0) {
            byte[] value = new byte[RECORD_BYTES];
            Arrays.fill(value, (byte) 'q');
            thread = new Thread(() -> {
                try {
                    long sent = 0;
                    while (!stopping.get()) {
                        if (pace > 0 && sent > pace * (System.nanoTime() - t0) / 1e9) {
                            Thread.sleep(1);
                            continue;
                        }
                        producer.send(new ProducerRecord<>(topic, 0, null, value), (md, e) -> {
                            if (e == null) {
                                acked.addAndGet(RECORD_BYTES);
                            } else {
                                failed.incrementAndGet();
                            }
                        });
                        sent += RECORD_BYTES;
                    }
                } catch (Throwable t) {
                    error.set(t);
                }
            }, "quota-producer-" + topic);
            thread.start();
        }

        void stop() throws InterruptedException {
            stopping.set(true);
            thread.join(TIMEOUT_S * 1000);
            throttleMax = clientMetricMax(producer.metrics(), "produce-throttle-time-max");
            throttleAvg = clientMetricMax(producer.metrics(), "produce-throttle-time-avg");
            producer.close(Duration.ofSeconds(10));
        }
    }

    private static void sleepUntil(long t0, long ms) throws InterruptedException {
        long left = ms - (System.nanoTime() - t0) / 1_000_000;
        if (left > 0) {
            Thread.sleep(left);
        }
    }

    /** An entity of (type, name) pairs; a null name is the default. */
    private static ClientQuotaEntity entity(String... typeAndName) {
        Map<String, String> m = new HashMap<>();
        for (int i = 0; i < typeAndName.length; i += 2) {
            m.put(typeAndName[i], typeAndName[i + 1]);
        }
        return new ClientQuotaEntity(m);
    }

    /** Sets (or with a null value removes) one key of one entity, waiting for the answer. */
    private static void alter(Admin admin, ClientQuotaEntity e, String key, Double value) throws Exception {
        admin.alterClientQuotas(List.of(new ClientQuotaAlteration(e, List.of(new ClientQuotaAlteration.Op(key, value)))))
                .all().get(TIMEOUT_S, TimeUnit.SECONDS);
    }

    private static Map<ClientQuotaEntity, Map<String, Double>> describe(Admin admin, ClientQuotaFilter filter) throws Exception {
        return admin.describeClientQuotas(filter).entities().get(TIMEOUT_S, TimeUnit.SECONDS);
    }

    /** Removes every quota the broker has (so that the next test starts without any). */
    private static void removeAll(Admin admin) throws Exception {
        List<ClientQuotaAlteration> all = new ArrayList<>();
        describe(admin, ClientQuotaFilter.all()).forEach((e, keys) -> all.add(new ClientQuotaAlteration(e,
                keys.keySet().stream().map(k -> new ClientQuotaAlteration.Op(k, null)).toList())));
        if (!all.isEmpty()) {
            admin.alterClientQuotas(all).all().get(TIMEOUT_S, TimeUnit.SECONDS);
        }
    }

    private static Map<ClientQuotaEntity, Map<String, Double>> pick(Map<ClientQuotaEntity, Map<String, Double>> set, ClientQuotaEntity... es) {
        Map<ClientQuotaEntity, Map<String, Double>> out = new HashMap<>();
        for (ClientQuotaEntity e : es) {
            out.put(e, set.get(e));
        }
        return out;
    }

    /** The largest value of a client's metric {@code name} over its groups and tags (NaN: none recorded). */
    private static double clientMetricMax(Map<MetricName, ? extends Metric> metrics, String name) {
        double max = Double.NaN;
        for (Map.Entry<MetricName, ? extends Metric> e : metrics.entrySet()) {
            if (e.getKey().name().equals(name) && e.getValue().metricValue() instanceof Double d && !d.isNaN()) {
                max = Double.isNaN(max) ? d : Math.max(max, d);
            }
        }
        return max;
    }

    private static String log() {
        return "broker log " + broker.logFile() + ":\n" + broker.logTail(20);
    }
}

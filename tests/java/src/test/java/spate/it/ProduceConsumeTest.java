package spate.it;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static spate.it.Clients.TIMEOUT_S;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Random;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;

import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndTimestamp;
import org.apache.kafka.clients.consumer.OffsetOutOfRangeException;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerInterceptor;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.RecordTooLargeException;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeaders;
import org.apache.kafka.common.record.TimestampType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** Producing and fetching: the default producer, every codec, size limits, interceptors, offsetsForTimes. */
class ProduceConsumeTest {
    @RegisterExtension
    static final SpateBroker broker = new SpateBroker();

    private static byte[] utf8(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    private static String str(byte[] b) {
        return b == null ? null : new String(b, StandardCharsets.UTF_8);
    }

    private static List<TopicPartition> partitions(String topic, int n) {
        List<TopicPartition> tps = new ArrayList<>();
        for (int p = 0; p < n; p++) {
            tps.add(new TopicPartition(topic, p));
        }
        return tps;
    }

    /**
     * The producer with its defaults (idempotent, acks=all): 1000 keyed records with headers to a
     * 3-partition topic, read back with assign/seekToBeginning.
     */
    @Test
    void defaultProducerRoundTripsKeyedRecordsWithHeaders() throws Exception {
        String topic = "roundtrip";
        int n = 1000;
        Clients.createTopic(broker, topic, 3, Map.of());

        long before = System.currentTimeMillis();
        List<Future<RecordMetadata>> futures = new ArrayList<>();
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(Clients.producer(broker, true))) {
            for (int i = 0; i < n; i++) {
                RecordHeaders headers = new RecordHeaders();
                headers.add("idx", utf8(Integer.toString(i)));
                headers.add("source", utf8("spate-it"));
                headers.add("empty", new byte[0]);
                headers.add("null", null);
                headers.add("source", utf8("second-value-of-a-repeated-key"));
                futures.add(producer.send(new ProducerRecord<>(topic, null, "key-" + i, "value-" + i + "-" + "x".repeat(i % 50), headers)));
            }
            producer.flush();
        }
        List<RecordMetadata> metas = new ArrayList<>();
        for (Future<RecordMetadata> f : futures) {
            metas.add(f.get(TIMEOUT_S, TimeUnit.SECONDS));
        }

        // The broker's offsets: per partition 0, 1, 2... in send order (one producer, idempotent).
        Map<Integer, List<Integer>> sentByPartition = new HashMap<>();
        for (int i = 0; i < n; i++) {
            RecordMetadata m = metas.get(i);
            List<Integer> list = sentByPartition.computeIfAbsent(m.partition(), k -> new ArrayList<>());
            assertEquals(list.size(), m.offset(), "offset of record " + i + " in partition " + m.partition());
            list.add(i);
        }
        assertEquals(3, sentByPartition.size(), "1000 distinct keys should hash to all 3 partitions");

        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(Clients.consumer(broker, true))) {
            List<TopicPartition> tps = partitions(topic, 3);
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            List<ConsumerRecord<String, String>> got = Clients.pollN(consumer, n);
            assertEquals(n, got.size(), "records read back");

            Map<TopicPartition, Long> ends = consumer.endOffsets(tps);
            for (TopicPartition tp : tps) {
                assertEquals(sentByPartition.get(tp.partition()).size(), ends.get(tp), "end offset of " + tp);
            }

            Map<Integer, List<ConsumerRecord<String, String>>> gotByPartition = new HashMap<>();
            for (ConsumerRecord<String, String> r : got) {
                gotByPartition.computeIfAbsent(r.partition(), k -> new ArrayList<>()).add(r);
            }
            for (Map.Entry<Integer, List<Integer>> e : sentByPartition.entrySet()) {
                List<Integer> sent = e.getValue();
                List<ConsumerRecord<String, String>> recs = gotByPartition.get(e.getKey());
                assertNotNull(recs, "partition " + e.getKey());
                assertEquals(sent.size(), recs.size(), "records in partition " + e.getKey());
                for (int j = 0; j < sent.size(); j++) {
                    int i = sent.get(j);
                    ConsumerRecord<String, String> r = recs.get(j);
                    assertEquals(j, r.offset(), "offset order in partition " + e.getKey());
                    assertEquals("key-" + i, r.key());
                    assertEquals("value-" + i + "-" + "x".repeat(i % 50), r.value());
                    assertEquals(TimestampType.CREATE_TIME, r.timestampType());
                    assertTrue(r.timestamp() >= before && r.timestamp() <= System.currentTimeMillis(),
                            "timestamp " + r.timestamp());
                    Header[] hs = r.headers().toArray();
                    assertEquals(5, hs.length, "headers of record " + i);
                    assertEquals("idx", hs[0].key());
                    assertEquals(Integer.toString(i), str(hs[0].value()));
                    assertEquals("source", hs[1].key());
                    assertEquals("spate-it", str(hs[1].value()));
                    assertEquals("empty", hs[2].key());
                    assertArrayEquals(new byte[0], hs[2].value());
                    assertEquals("null", hs[3].key());
                    assertNull(hs[3].value());
                    assertEquals("source", hs[4].key());
                    assertEquals("second-value-of-a-repeated-key", str(hs[4].value()));
                    assertEquals("second-value-of-a-repeated-key", str(r.headers().lastHeader("source").value()));
                }
            }
        }
    }

    /**
     * A read_committed consumer (Kafka Streams' exactly-once, many applications): without
     * transactions the last stable offset is the high watermark, so it reads everything.
     */
    @Test
    void readCommittedConsumerReadsEverything() throws Exception {
        String topic = "read-committed";
        int n = 100;
        Clients.createTopic(broker, topic, 2, Map.of());
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(Clients.producer(broker, true))) {
            for (int i = 0; i < n; i++) {
                producer.send(new ProducerRecord<>(topic, i % 2, "k" + i, "v" + i));
            }
            producer.flush();
        }
        Properties cp = Clients.consumer(broker, true);
        cp.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(cp)) {
            List<TopicPartition> tps = partitions(topic, 2);
            consumer.assign(tps);
            consumer.seekToBeginning(tps);
            List<ConsumerRecord<String, String>> got = Clients.pollN(consumer, n);
            assertEquals(n, got.size());
            Set<String> values = new HashSet<>();
            got.forEach(r -> values.add(r.value()));
            assertEquals(n, values.size());
            Map<TopicPartition, Long> ends = consumer.endOffsets(tps); // ListOffsets, isolation level 1
            assertEquals(n / 2, ends.get(tps.get(0)));
            assertEquals(n / 2, ends.get(tps.get(1)));
        }
    }

    /** Every compression codec: values (compressible and random bytes) come back intact. */
    @ParameterizedTest
    @ValueSource(strings = {"none", "gzip", "snappy", "lz4", "zstd"})
    void everyCompressionCodecRoundTrips(String codec) throws Exception {
        String topic = "codec-" + codec;
        int n = 500;
        Clients.createTopic(broker, topic, 1, Map.of());
        Random rnd = new Random(codec.hashCode());
        List<byte[]> values = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            byte[] v;
            if (i % 3 == 0) {
                v = new byte[1 + rnd.nextInt(2000)];
                rnd.nextBytes(v);
            } else {
                v = utf8(("record " + i + " of codec " + codec + "; ").repeat(1 + i % 40));
            }
            values.add(v);
        }
        Properties pp = Clients.producer(broker, false);
        pp.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, codec);
        pp.put(ProducerConfig.LINGER_MS_CONFIG, 20);
        List<Future<RecordMetadata>> futures = new ArrayList<>();
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(pp)) {
            for (int i = 0; i < n; i++) {
                futures.add(producer.send(new ProducerRecord<>(topic, 0, utf8("k" + i), values.get(i))));
            }
            producer.flush();
        }
        for (int i = 0; i < n; i++) {
            assertEquals(i, futures.get(i).get(TIMEOUT_S, TimeUnit.SECONDS).offset());
        }
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(Clients.consumer(broker, false))) {
            TopicPartition tp = new TopicPartition(topic, 0);
            consumer.assign(List.of(tp));
            consumer.seekToBeginning(List.of(tp));
            List<ConsumerRecord<byte[], byte[]>> got = Clients.pollN(consumer, n);
            assertEquals(n, got.size());
            for (int i = 0; i < n; i++) {
                ConsumerRecord<byte[], byte[]> r = got.get(i);
                assertEquals(i, r.offset());
                assertEquals("k" + i, str(r.key()));
                assertArrayEquals(values.get(i), r.value(), "value of record " + i + " (" + codec + ")");
            }
        }
    }

    /**
     * A 900 KiB record fits the broker's default message.max.bytes (1048588) and round trips; a
     * 1.2 MiB one is refused by the broker (MESSAGE_TOO_LARGE) as RecordTooLargeException. The
     * producer's own max.request.size is raised so the broker, not the client, judges.
     */
    @Test
    void recordNearBrokerMaxMessageBytesRoundTripsAndLargerIsRefused() throws Exception {
        String topic = "big";
        Clients.createTopic(broker, topic, 1, Map.of());
        TopicPartition tp = new TopicPartition(topic, 0);
        Random rnd = new Random(42);
        byte[] fits = new byte[900 * 1024];
        rnd.nextBytes(fits);
        byte[] tooBig = new byte[1200 * 1024];
        rnd.nextBytes(tooBig);

        Properties pp = Clients.producer(broker, false);
        pp.put(ProducerConfig.MAX_REQUEST_SIZE_CONFIG, 8 * 1024 * 1024);
        pp.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, "none");
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(pp)) {
            RecordMetadata m = producer.send(new ProducerRecord<>(topic, 0, utf8("fits"), fits)).get(TIMEOUT_S, TimeUnit.SECONDS);
            assertEquals(0, m.offset());
            ExecutionException e = assertThrows(ExecutionException.class,
                    () -> producer.send(new ProducerRecord<>(topic, 0, utf8("too-big"), tooBig)).get(TIMEOUT_S, TimeUnit.SECONDS));
            assertInstanceOf(RecordTooLargeException.class, e.getCause(), "cause: " + e.getCause());
            // The producer goes on after the refusal.
            RecordMetadata after = producer.send(new ProducerRecord<>(topic, 0, utf8("after"), utf8("small"))).get(TIMEOUT_S, TimeUnit.SECONDS);
            assertEquals(1, after.offset(), "the refused record took no offset");
        }
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(Clients.consumer(broker, false))) {
            consumer.assign(List.of(tp));
            consumer.seekToBeginning(List.of(tp));
            List<ConsumerRecord<byte[], byte[]>> got = Clients.pollN(consumer, 2);
            assertEquals(2, got.size());
            assertEquals("fits", str(got.get(0).key()));
            assertArrayEquals(fits, got.get(0).value());
            assertEquals("after", str(got.get(1).key()));
            assertEquals(2L, consumer.endOffsets(List.of(tp)).get(tp));
        }
        // A consumer whose fetch limits are far below the record still gets it (the first batch
        // is returned whole, KIP-74).
        Properties cp = Clients.consumer(broker, false);
        cp.put(ConsumerConfig.MAX_PARTITION_FETCH_BYTES_CONFIG, 64 * 1024);
        cp.put(ConsumerConfig.FETCH_MAX_BYTES_CONFIG, 64 * 1024);
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(cp)) {
            consumer.assign(List.of(tp));
            consumer.seekToBeginning(List.of(tp));
            List<ConsumerRecord<byte[], byte[]>> got = Clients.pollN(consumer, 2);
            assertEquals(2, got.size());
            assertArrayEquals(fits, got.get(0).value());
        }
    }

    /** A topic's own max.message.bytes (64 KiB here) is enforced the same way. */
    @Test
    void topicMaxMessageBytesIsEnforced() throws Exception {
        String topic = "small-max";
        Clients.createTopic(broker, topic, 1, Map.of("max.message.bytes", "65536"));
        Properties pp = Clients.producer(broker, false);
        pp.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, "none");
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(pp)) {
            assertEquals(0, producer.send(new ProducerRecord<>(topic, 0, null, new byte[60 * 1024])).get(TIMEOUT_S, TimeUnit.SECONDS).offset());
            ExecutionException e = assertThrows(ExecutionException.class,
                    () -> producer.send(new ProducerRecord<>(topic, 0, null, new byte[100 * 1024])).get(TIMEOUT_S, TimeUnit.SECONDS));
            assertInstanceOf(RecordTooLargeException.class, e.getCause(), "cause: " + e.getCause());
        }
    }

    /** Stamps a header on every record and counts acknowledgements. */
    public static final class StampingInterceptor implements ProducerInterceptor<String, String> {
        static final AtomicInteger acked = new AtomicInteger();
        static final AtomicInteger failed = new AtomicInteger();

        @Override
        public ProducerRecord<String, String> onSend(ProducerRecord<String, String> r) {
            RecordHeaders headers = new RecordHeaders(r.headers().toArray());
            headers.add("stamped-by", utf8("StampingInterceptor"));
            return new ProducerRecord<>(r.topic(), r.partition(), r.timestamp(), r.key(), r.value() + "!", headers);
        }

        @Override
        public void onAcknowledgement(RecordMetadata metadata, Exception exception) {
            (exception == null ? acked : failed).incrementAndGet();
        }

        @Override
        public void close() {}

        @Override
        public void configure(Map<String, ?> configs) {}
    }

    @Test
    void producerInterceptorIsApplied() throws Exception {
        String topic = "intercepted";
        int n = 20;
        Clients.createTopic(broker, topic, 1, Map.of());
        Properties pp = Clients.producer(broker, true);
        pp.put(ProducerConfig.INTERCEPTOR_CLASSES_CONFIG, StampingInterceptor.class.getName());
        StampingInterceptor.acked.set(0);
        StampingInterceptor.failed.set(0);
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(pp)) {
            for (int i = 0; i < n; i++) {
                RecordHeaders h = new RecordHeaders();
                h.add("own", utf8("h" + i));
                producer.send(new ProducerRecord<>(topic, null, "k" + i, "v" + i, h));
            }
            producer.flush();
        }
        assertEquals(n, StampingInterceptor.acked.get(), "onAcknowledgement without error");
        assertEquals(0, StampingInterceptor.failed.get());
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(Clients.consumer(broker, true))) {
            TopicPartition tp = new TopicPartition(topic, 0);
            consumer.assign(List.of(tp));
            consumer.seekToBeginning(List.of(tp));
            List<ConsumerRecord<String, String>> got = Clients.pollN(consumer, n);
            assertEquals(n, got.size());
            for (int i = 0; i < n; i++) {
                ConsumerRecord<String, String> r = got.get(i);
                assertEquals("v" + i + "!", r.value());
                assertEquals("h" + i, str(r.headers().lastHeader("own").value()));
                Header stamp = r.headers().lastHeader("stamped-by");
                assertNotNull(stamp, "interceptor's header on record " + i);
                assertEquals("StampingInterceptor", str(stamp.value()));
            }
        }
    }

    /**
     * offsetsForTimes: the first offset whose timestamp is at or after the one asked, for records
     * with explicit timestamps batched together (uncompressed and compressed), and null past the end.
     */
    @ParameterizedTest
    @ValueSource(strings = {"none", "lz4"})
    void offsetsForTimesFindsTheFirstOffsetAtOrAfter(String codec) throws Exception {
        String topic = "times-" + codec;
        Clients.createTopic(broker, topic, 1, Map.of());
        TopicPartition tp = new TopicPartition(topic, 0);
        long base = 1_700_000_000_000L;
        int n = 50;
        Properties pp = Clients.producer(broker, true);
        pp.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, codec);
        pp.put(ProducerConfig.LINGER_MS_CONFIG, 50);
        // Two sends and flushes so that there are several batches, each with several records.
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(pp)) {
            for (int half = 0; half < 2; half++) {
                for (int i = half * n / 2; i < (half + 1) * n / 2; i++) {
                    producer.send(new ProducerRecord<>(topic, 0, base + i * 1000L, "k" + i, "v" + i));
                }
                producer.flush();
            }
        }
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(Clients.consumer(broker, true))) {
            Map<Long, Long> expected = new HashMap<>(); // timestamp asked -> offset expected
            expected.put(base - 5_000, 0L);       // before everything: the first record
            expected.put(base, 0L);               // exactly the first
            expected.put(base + 2_500, 3L);       // between records 2 and 3
            expected.put(base + 3_000, 3L);       // exactly record 3
            expected.put(base + 24_001, 25L);     // the first record of the second batch
            expected.put(base + 49_000, 49L);     // exactly the last
            for (Map.Entry<Long, Long> e : expected.entrySet()) {
                Map<TopicPartition, OffsetAndTimestamp> r = consumer.offsetsForTimes(Map.of(tp, e.getKey()));
                OffsetAndTimestamp ot = r.get(tp);
                assertNotNull(ot, "offsetsForTimes(" + (e.getKey() - base) + " after base)");
                assertEquals(e.getValue(), ot.offset(), "offset for " + (e.getKey() - base) + " after base");
                assertEquals(base + e.getValue() * 1000L, ot.timestamp(), "timestamp for " + (e.getKey() - base));
            }
            Map<TopicPartition, OffsetAndTimestamp> past = consumer.offsetsForTimes(Map.of(tp, base + 49_001));
            assertNull(past.get(tp), "nothing at or after a timestamp past the last record");

            // And the consumer can start there.
            consumer.assign(List.of(tp));
            consumer.seek(tp, consumer.offsetsForTimes(Map.of(tp, base + 40_500)).get(tp).offset());
            List<ConsumerRecord<String, String>> got = Clients.pollN(consumer, 9);
            Set<String> values = new HashSet<>();
            got.forEach(r -> values.add(r.value()));
            assertEquals(9, got.size());
            assertEquals(41, got.get(0).offset());
            assertEquals(base + 41_000, got.get(0).timestamp());
            assertTrue(values.contains("v49"));
        }
    }

    /**
     * assign() of three partitions, then positions moved per partition: seekToEnd (position is
     * each end offset, nothing to read until more is produced, and then only the new records),
     * seek to chosen offsets (each partition read from exactly there, in order), seekToBeginning
     * of one partition (only it is read again), and a seek past the end: with
     * auto.offset.reset=earliest the broker's OFFSET_OUT_OF_RANGE makes the consumer start again at
     * 0, with auto.offset.reset=none poll() throws OffsetOutOfRangeException naming the partition.
     */
    @Test
    void assignSeekSeekToBeginningSeekToEndAndPosition() throws Exception {
        String topic = "seek";
        Clients.createTopic(broker, topic, 3, Map.of());
        List<TopicPartition> tps = partitions(topic, 3);
        int[] counts = {10, 20, 30};
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(Clients.producer(broker, true))) {
            for (int p = 0; p < 3; p++) {
                for (int o = 0; o < counts[p]; o++) {
                    producer.send(new ProducerRecord<>(topic, p, "k", "p" + p + "-" + o));
                }
            }
            producer.flush();
        }
        Properties cp = Clients.consumer(broker, true);
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(cp)) {
            consumer.assign(tps);
            assertEquals(Set.copyOf(tps), consumer.assignment());

            // seekToEnd: positions are the end offsets; nothing to read.
            consumer.seekToEnd(tps);
            for (int p = 0; p < 3; p++) {
                assertEquals(counts[p], consumer.position(tps.get(p)), "position after seekToEnd of " + tps.get(p));
            }
            assertTrue(consumer.poll(java.time.Duration.ofMillis(300)).isEmpty(), "records after seekToEnd");
            // Records produced now are the only ones read.
            try (KafkaProducer<String, String> producer = new KafkaProducer<>(Clients.producer(broker, true))) {
                for (int p = 0; p < 3; p++) {
                    producer.send(new ProducerRecord<>(topic, p, "k", "p" + p + "-" + counts[p]));
                }
                producer.flush();
            }
            List<ConsumerRecord<String, String>> after = Clients.pollN(consumer, 3);
            assertEquals(3, after.size(), "records after seekToEnd and three more sends: " + after);
            for (ConsumerRecord<String, String> r : after) {
                assertEquals(counts[r.partition()], r.offset(), "the new record of partition " + r.partition());
                assertEquals("p" + r.partition() + "-" + counts[r.partition()], r.value());
            }
            for (int p = 0; p < 3; p++) {
                counts[p]++;
                assertEquals(counts[p], consumer.position(tps.get(p)));
            }

            // seek to chosen offsets, one per partition.
            long[] from = {3, 0, 29};
            for (int p = 0; p < 3; p++) {
                consumer.seek(tps.get(p), from[p]);
                assertEquals(from[p], consumer.position(tps.get(p)), "position after seek of " + tps.get(p));
            }
            int expected = 0;
            for (int p = 0; p < 3; p++) {
                expected += counts[p] - (int) from[p];
            }
            List<ConsumerRecord<String, String>> got = Clients.pollN(consumer, expected);
            assertEquals(expected, got.size(), "records after the seeks");
            Map<Integer, Long> next = new HashMap<>();
            for (int p = 0; p < 3; p++) {
                next.put(p, from[p]);
            }
            for (ConsumerRecord<String, String> r : got) {
                long want = next.get(r.partition());
                assertEquals(want, r.offset(), "offset order in partition " + r.partition());
                assertEquals("p" + r.partition() + "-" + r.offset(), r.value());
                next.put(r.partition(), want + 1);
            }
            for (int p = 0; p < 3; p++) {
                assertEquals(counts[p], consumer.position(tps.get(p)), "position at the end of " + tps.get(p));
            }

            // seekToBeginning of one partition: only it is read again.
            consumer.seekToBeginning(List.of(tps.get(1)));
            assertEquals(0, consumer.position(tps.get(1)));
            List<ConsumerRecord<String, String>> again = Clients.pollN(consumer, counts[1]);
            assertEquals(counts[1], again.size());
            for (int i = 0; i < again.size(); i++) {
                assertEquals(1, again.get(i).partition(), "only partition 1 was rewound");
                assertEquals(i, again.get(i).offset());
            }

            // Past the end, auto.offset.reset=earliest: OFFSET_OUT_OF_RANGE, then from 0.
            consumer.seek(tps.get(0), 1000);
            assertEquals(1000, consumer.position(tps.get(0)));
            List<ConsumerRecord<String, String>> reset = Clients.pollN(consumer, counts[0]);
            assertEquals(counts[0], reset.size(), "partition 0 read again after the reset: " + reset.size());
            assertEquals(0, reset.get(0).offset(), "the reset to earliest");
            assertEquals(counts[0], consumer.position(tps.get(0)));
        }

        // auto.offset.reset=none: the out-of-range position is the application's to handle.
        cp.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "none");
        try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(cp)) {
            consumer.assign(List.of(tps.get(2)));
            consumer.seek(tps.get(2), 500);
            OffsetOutOfRangeException e = assertThrows(OffsetOutOfRangeException.class, () -> {
                long deadline = System.currentTimeMillis() + TIMEOUT_S * 1000;
                while (System.currentTimeMillis() < deadline) {
                    consumer.poll(java.time.Duration.ofMillis(200));
                }
            }, "poll at offset 500 of a partition of " + counts[2] + " records, auto.offset.reset=none; broker log:\n"
                    + broker.logTail(20));
            assertEquals(Map.of(tps.get(2), 500L), e.offsetOutOfRangePartitions());
        }
    }
}

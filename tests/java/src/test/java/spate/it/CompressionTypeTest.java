package spate.it;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static spate.it.Clients.TIMEOUT_S;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Random;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.CorruptRecordException;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.record.CompressionType;
import org.apache.kafka.common.record.MemoryRecords;
import org.apache.kafka.common.record.MutableRecordBatch;
import org.apache.kafka.common.record.TimestampType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * A topic's {@code compression.type}: the broker stores every batch in the topic's codec,
 * recompressing those the producer sent in another, and the Java consumer reads them back; with
 * {@code producer} (the default) each batch keeps the producer's codec. What is stored is read
 * from the broker's segment files with the client's own batch parser ({@link MemoryRecords}).
 */
class CompressionTypeTest {
    @RegisterExtension
    static final SpateBroker broker = new SpateBroker();

    /** The client's codec names (compression.type of a producer). */
    private static final List<String> CLIENT_CODECS = List.of("none", "gzip", "snappy", "lz4", "zstd");

    /** Records per batch: about 100 KB, several xerial snappy and lz4 blocks once recompressed. */
    private static final int BATCH = 120;

    /** One record as sent, to compare with what is read. */
    private record Sent(byte[] key, byte[] value, List<Header> headers, long timestamp) {}

    private static byte[] utf8(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    /**
     * {@code n} records from a producer using {@code codec}: keys (some null), values (text of up
     * to 2 KB, random bytes, some null), headers on two of three, timestamps from {@code ts}.
     */
    private static List<Sent> records(String codec, String topicCodec, int n, long ts, Random rnd) {
        List<Sent> out = new ArrayList<>();
        for (int i = 0; i < n; i++) {
            byte[] key = i % 7 == 0 && i % 29 != 5 ? null : utf8(codec + "-" + i);
            byte[] value;
            if (i % 29 == 5) {
                value = null;
            } else if (i % 5 == 2) {
                value = new byte[1 + rnd.nextInt(1500)];
                rnd.nextBytes(value);
            } else {
                value = utf8((codec + " record " + i + " for a " + topicCodec + " topic; ").repeat(1 + i % 50));
            }
            List<Header> headers = i % 3 == 0 ? List.of()
                    : List.of(new RecordHeader("codec", utf8(codec)), new RecordHeader("i", utf8(Integer.toString(i))));
            out.add(new Sent(key, value, headers, ts + i));
        }
        return out;
    }

    /** A producer with {@code codec} whose batches hold everything sent before a flush (up to 1 MiB). */
    private static KafkaProducer<byte[], byte[]> producer(String codec) {
        Properties pp = Clients.producer(broker, false);
        pp.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, codec);
        pp.put(ProducerConfig.BATCH_SIZE_CONFIG, 1 << 20);
        pp.put(ProducerConfig.LINGER_MS_CONFIG, 5_000); // flush() sends at once
        return new KafkaProducer<>(pp);
    }

    /**
     * Sends {@code rs} to partition 0 as one batch (flushed after), and checks that they were
     * acknowledged at offsets {@code first}, {@code first + 1}, ...
     */
    private static void send(KafkaProducer<byte[], byte[]> p, String topic, List<Sent> rs, long first) throws Exception {
        List<Future<RecordMetadata>> acks = new ArrayList<>();
        for (Sent r : rs) {
            acks.add(p.send(new ProducerRecord<>(topic, 0, r.timestamp(), r.key(), r.value(), r.headers())));
        }
        p.flush();
        for (int i = 0; i < acks.size(); i++) {
            assertEquals(first + i, acks.get(i).get(TIMEOUT_S, TimeUnit.SECONDS).offset(), topic + ": offset of record " + i);
        }
    }

    /** Reads partition 0 of {@code topic} from the start and compares it record by record with {@code sent}. */
    private static void readBack(String topic, List<Sent> sent, String what) {
        try (KafkaConsumer<byte[], byte[]> consumer = new KafkaConsumer<>(Clients.consumer(broker, false))) {
            TopicPartition tp = new TopicPartition(topic, 0);
            consumer.assign(List.of(tp));
            consumer.seekToBeginning(List.of(tp));
            List<ConsumerRecord<byte[], byte[]>> got = Clients.pollN(consumer, sent.size());
            assertEquals(sent.size(), got.size(), what + ": records read");
            for (int i = 0; i < sent.size(); i++) {
                ConsumerRecord<byte[], byte[]> r = got.get(i);
                Sent s = sent.get(i);
                String where = what + ", record " + i;
                assertEquals(i, r.offset(), where);
                assertArrayEquals(s.key(), r.key(), where + ": key");
                assertArrayEquals(s.value(), r.value(), where + ": value");
                assertEquals(s.headers(), Arrays.asList(r.headers().toArray()), where + ": headers");
                assertEquals(s.timestamp(), r.timestamp(), where + ": timestamp");
                assertEquals(TimestampType.CREATE_TIME, r.timestampType(), where);
            }
        }
    }

    /**
     * The batches stored in partition 0 of {@code topic} below offset {@code end}, parsed from its
     * segment files ({@code <data>/topics/<topic>/0/<base offset>.log}) with the client's
     * {@link MemoryRecords}; each one's CRC is checked. Parsing stops at {@code end}: past it the
     * active segment holds zeros (its preallocated, unwritten part).
     */
    private static List<MutableRecordBatch> storedBatches(String topic, long end) throws IOException {
        Path dir = broker.dataDir().resolve("topics").resolve(topic).resolve("0");
        List<Path> logs;
        try (Stream<Path> files = Files.list(dir)) {
            logs = files.filter(f -> f.getFileName().toString().endsWith(".log"))
                    .sorted((a, b) -> Long.compare(base(a), base(b))).toList();
        }
        List<MutableRecordBatch> out = new ArrayList<>();
        for (Path log : logs) {
            Iterator<MutableRecordBatch> it = MemoryRecords.readableRecords(ByteBuffer.wrap(Files.readAllBytes(log)))
                    .batches().iterator();
            try {
                while ((out.isEmpty() || out.get(out.size() - 1).nextOffset() < end) && it.hasNext()) {
                    MutableRecordBatch b = it.next();
                    b.ensureValid();
                    out.add(b);
                }
            } catch (CorruptRecordException e) {
                // The zeros after the last batch of a segment that is not the last one.
            }
        }
        assertTrue(!out.isEmpty() && out.get(out.size() - 1).nextOffset() == end,
                topic + ": the segment files " + logs + " hold batches up to "
                        + (out.isEmpty() ? "none" : out.get(out.size() - 1).nextOffset()) + ", want up to " + end);
        return out;
    }

    private static long base(Path log) {
        String n = log.getFileName().toString();
        return Long.parseLong(n.substring(0, n.length() - ".log".length()));
    }

    private static List<CompressionType> codecs(List<MutableRecordBatch> batches) {
        return batches.stream().map(MutableRecordBatch::compressionType).toList();
    }

    /**
     * For each codec a topic can name, a one-partition topic with that {@code compression.type} is
     * fed by five producers, one per client codec (the topic's own among them), each sending one
     * record alone, then 120 records (about 100 KB) in one batch: the Java consumer reads every
     * record back in order, byte for byte (keys, values, nulls, headers, timestamps), and every
     * stored batch is in the topic's codec, with a valid CRC.
     */
    @ParameterizedTest
    @ValueSource(strings = {"uncompressed", "gzip", "snappy", "lz4", "zstd"})
    void everyBatchIsStoredInTheTopicsCodecAndReadsBack(String topicCodec) throws Exception {
        String topic = "ct-" + topicCodec;
        Clients.createTopic(broker, topic, 1, Map.of("compression.type", topicCodec));
        Random rnd = new Random(topicCodec.hashCode());
        long ts = System.currentTimeMillis() - 3_600_000;
        List<Sent> sent = new ArrayList<>();
        for (String codec : CLIENT_CODECS) {
            List<Sent> rs = records(codec, topicCodec, 1 + BATCH, ts + sent.size(), rnd);
            try (KafkaProducer<byte[], byte[]> p = producer(codec)) {
                send(p, topic, rs.subList(0, 1), sent.size());
                send(p, topic, rs.subList(1, rs.size()), sent.size() + 1);
            }
            sent.addAll(rs);
        }
        readBack(topic, sent, topicCodec + " topic");
        List<MutableRecordBatch> stored = storedBatches(topic, sent.size());
        CompressionType want = topicCodec.equals("uncompressed") ? CompressionType.NONE : CompressionType.forName(topicCodec);
        assertEquals(2 * CLIENT_CODECS.size(), stored.size(), "batches stored: " + codecs(stored));
        for (MutableRecordBatch b : stored) {
            assertEquals(want, b.compressionType(), topicCodec + " topic: the batch at " + b.baseOffset() + " of " + codecs(stored));
        }
    }

    /**
     * With {@code compression.type=producer} (the default: describeConfigs says so) a topic fed
     * in turn by a gzip and an lz4 producer stores each batch as it came, gzip and lz4 alternating,
     * and the consumer reads it all back. Then a broker-wide {@code compression.type=zstd}
     * (IncrementalAlterConfigs on the broker resource "") makes the next batches of both
     * producers zstd, and the topic's own {@code compression.type=snappy} wins over it for the
     * batches after; the batches stored before keep their codec, and everything reads back. The
     * broker-wide value is deleted again whatever happens.
     */
    @Test
    void producerKeepsEachBatchsCodecAndChangesApplyToLaterBatches() throws Exception {
        String topic = "ct-producer";
        Clients.createTopic(broker, topic, 1, Map.of());
        ConfigResource topicRes = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        ConfigResource everyBroker = new ConfigResource(ConfigResource.Type.BROKER, "");
        Random rnd = new Random(7);
        long ts = System.currentTimeMillis() - 3_600_000;
        List<Sent> sent = new ArrayList<>();
        List<CompressionType> want = new ArrayList<>();
        try (Admin admin = Clients.admin(broker);
                KafkaProducer<byte[], byte[]> gzip = producer("gzip");
                KafkaProducer<byte[], byte[]> lz4 = producer("lz4")) {
            ConfigEntry e = admin.describeConfigs(List.of(topicRes)).all().get(TIMEOUT_S, TimeUnit.SECONDS)
                    .get(topicRes).get("compression.type");
            assertEquals("producer", e.value(), e.toString());
            assertEquals(ConfigEntry.ConfigSource.DEFAULT_CONFIG, e.source(), e.toString());
            // Each step: (producer, the codec its batch must be stored in).
            List<Object[]> steps = new ArrayList<>();
            steps.add(new Object[] {gzip, CompressionType.GZIP});
            steps.add(new Object[] {lz4, CompressionType.LZ4});
            steps.add(new Object[] {gzip, CompressionType.GZIP});
            steps.add(new Object[] {lz4, CompressionType.LZ4});
            runSteps(topic, steps, sent, want, rnd, ts);
            try {
                admin.incrementalAlterConfigs(Map.of(everyBroker, List.of(new AlterConfigOp(
                        new ConfigEntry("compression.type", "zstd"), AlterConfigOp.OpType.SET))))
                        .all().get(TIMEOUT_S, TimeUnit.SECONDS);
                runSteps(topic, List.of(new Object[] {gzip, CompressionType.ZSTD}, new Object[] {lz4, CompressionType.ZSTD}),
                        sent, want, rnd, ts);
                admin.incrementalAlterConfigs(Map.of(topicRes, List.of(new AlterConfigOp(
                        new ConfigEntry("compression.type", "snappy"), AlterConfigOp.OpType.SET))))
                        .all().get(TIMEOUT_S, TimeUnit.SECONDS);
                runSteps(topic, List.of(new Object[] {gzip, CompressionType.SNAPPY}, new Object[] {lz4, CompressionType.SNAPPY}),
                        sent, want, rnd, ts);
            } finally {
                admin.incrementalAlterConfigs(Map.of(everyBroker, List.of(new AlterConfigOp(
                        new ConfigEntry("compression.type", null), AlterConfigOp.OpType.DELETE))))
                        .all().get(TIMEOUT_S, TimeUnit.SECONDS);
            }
        }
        readBack(topic, sent, "producer topic");
        assertEquals(want, codecs(storedBatches(topic, sent.size())), "the codecs of the stored batches");
    }

    @SuppressWarnings("unchecked")
    private static void runSteps(String topic, List<Object[]> steps, List<Sent> sent, List<CompressionType> want,
            Random rnd, long ts) throws Exception {
        for (Object[] step : steps) {
            KafkaProducer<byte[], byte[]> p = (KafkaProducer<byte[], byte[]>) step[0];
            CompressionType stored = (CompressionType) step[1];
            List<Sent> rs = records("step" + want.size(), "producer", 40, ts + sent.size(), rnd);
            send(p, topic, rs, sent.size());
            sent.addAll(rs);
            want.add(stored);
        }
    }
}

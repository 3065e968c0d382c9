package spate.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;
import static spate.it.Clients.TIMEOUT_S;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import java.util.stream.Stream;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.serialization.LongDeserializer;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.utils.Bytes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StoreQueryParameters;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Grouped;
import org.apache.kafka.streams.kstream.Materialized;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.processor.StateRestoreListener;
import org.apache.kafka.streams.state.KeyValueIterator;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.QueryableStoreTypes;
import org.apache.kafka.streams.state.ReadOnlyKeyValueStore;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.extension.RegisterExtension;

/**
 * An in-process Kafka Streams application (kafka-streams 4.1.1): word count with a
 * repartition (groupBy) and a persistent state store with a changelog (count), against Spate.
 */
class StreamsWordCountTest {
    @RegisterExtension
    static final SpateBroker broker = new SpateBroker();

    private static final int PARTITIONS = 3;
    private static final long RUNNING_TIMEOUT_MS = 60_000;
    private static final long RESULT_TIMEOUT_MS = 60_000;

    private static final List<String> TEXT_1 = List.of(
            "the quick brown fox jumps over the lazy dog",
            "The dog barks; the fox runs.",
            "a stream is a log and a log is a table",
            "Spate speaks the Kafka protocol",
            "count the words count them all",
            "fox fox fox",
            "kafka streams counts words with a state store",
            "the state store is backed by a changelog topic",
            "and the groupBy goes through a repartition topic",
            "one two three four five six seven eight nine ten");
    private static final List<String> TEXT_2 = List.of(
            "the fox is back after the restart",
            "counts continue from the changelog: the fox the dog the store",
            "ten nine eight seven six five four three two one",
            "a new word: zebra");

    /**
     * A new, empty state.dir under target/ (Streams warns about one in the OS temp directory);
     * all of them are deleted after the class.
     */
    private static Path stateDir() throws IOException {
        Path base = Paths.get("target", "streams-state").toAbsolutePath();
        Files.createDirectories(base);
        return Files.createTempDirectory(base, "state-");
    }

    @AfterAll
    static void deleteStateDirs() throws IOException {
        Path base = Paths.get("target", "streams-state").toAbsolutePath();
        if (Files.exists(base)) {
            try (Stream<Path> paths = Files.walk(base)) {
                for (Path p : paths.sorted(Comparator.reverseOrder()).toList()) {
                    Files.deleteIfExists(p);
                }
            }
        }
    }

    private static List<String> words(String line) {
        List<String> out = new ArrayList<>();
        for (String w : line.toLowerCase(Locale.ROOT).split("\\W+")) {
            if (!w.isEmpty()) {
                out.add(w);
            }
        }
        return out;
    }

    private static Map<String, Long> expectedCounts(List<String> lines) {
        Map<String, Long> m = new TreeMap<>();
        for (String line : lines) {
            for (String w : words(line)) {
                m.merge(w, 1L, Long::sum);
            }
        }
        return m;
    }

    static Topology topology(String input, String output) {
        StreamsBuilder b = new StreamsBuilder();
        b.stream(input, Consumed.with(Serdes.String(), Serdes.String()))
                .flatMapValues(StreamsWordCountTest::words)
                .groupBy((key, word) -> word, Grouped.with("words", Serdes.String(), Serdes.String()))
                .count(Materialized.<String, Long, KeyValueStore<Bytes, byte[]>>as("word-counts")
                        .withKeySerde(Serdes.String()).withValueSerde(Serdes.Long()))
                .toStream()
                .to(output, Produced.with(Serdes.String(), Serdes.Long()));
        return b.build();
    }

    static Properties streamsConfig(String appId, Path stateDir, String guarantee) {
        Properties p = new Properties();
        p.put(StreamsConfig.APPLICATION_ID_CONFIG, appId);
        p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, broker.bootstrap());
        p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, guarantee);
        p.put(StreamsConfig.STATE_DIR_CONFIG, stateDir.toString());
        p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 100);
        p.put(StreamsConfig.REPLICATION_FACTOR_CONFIG, 1);
        p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, 1);
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.SESSION_TIMEOUT_MS_CONFIG), 10_000);
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.HEARTBEAT_INTERVAL_MS_CONFIG), 1_000);
        p.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
        return p;
    }

    /** A running app, its last uncaught exception, and the records its stores restored. */
    private static final class App implements AutoCloseable {
        final KafkaStreams streams;
        final AtomicReference<Throwable> error = new AtomicReference<>();
        final AtomicLong restored = new AtomicLong();
        final List<String> states = new java.util.concurrent.CopyOnWriteArrayList<>();

        App(Topology topology, Properties config) {
            streams = new KafkaStreams(topology, config);
            streams.setStateListener((now, before) -> states.add(before + "->" + now));
            streams.setUncaughtExceptionHandler(e -> {
                error.compareAndSet(null, e);
                return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
            });
            streams.setGlobalStateRestoreListener(new StateRestoreListener() {
                @Override
                public void onRestoreStart(TopicPartition tp, String store, long start, long end) {}

                @Override
                public void onBatchRestored(TopicPartition tp, String store, long batchEnd, long n) {
                    restored.addAndGet(n);
                }

                @Override
                public void onRestoreEnd(TopicPartition tp, String store, long total) {}
            });
            streams.start();
        }

        /** Waits for RUNNING; fails with the app's state history, error and the broker log otherwise. */
        void awaitRunning() throws InterruptedException {
            long deadline = System.currentTimeMillis() + RUNNING_TIMEOUT_MS;
            while (streams.state() != KafkaStreams.State.RUNNING) {
                if (System.currentTimeMillis() > deadline || streams.state() == KafkaStreams.State.ERROR
                        || streams.state() == KafkaStreams.State.PENDING_ERROR) {
                    fail("the Streams app is " + streams.state() + ", not RUNNING (states " + states + ", error "
                            + error.get() + ")\nbroker log:\n" + broker.logTail(40));
                }
                Thread.sleep(50);
            }
        }

        @Override
        public void close() {
            // Leave the group so that the next instance is not kept waiting for this member's session.
            streams.close(new KafkaStreams.CloseOptions().leaveGroup(true).timeout(Duration.ofSeconds(30)));
        }
    }

    private static void produce(String topic, List<String> lines) throws Exception {
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(Clients.producer(broker, true))) {
            for (int i = 0; i < lines.size(); i++) {
                producer.send(new ProducerRecord<>(topic, "line-" + i, lines.get(i))).get(TIMEOUT_S, TimeUnit.SECONDS);
            }
        }
    }

    /**
     * Reads the output topic from the beginning until the latest count of every word is the
     * expected one (and no other word appears); fails with what it read otherwise.
     */
    private static void awaitCounts(String output, Map<String, Long> expected, App app) {
        awaitCounts(output, expected, app, "read_uncommitted", RESULT_TIMEOUT_MS);
    }

    /** {@link #awaitCounts(String, Map, App)} with the consumer's isolation.level and how long to wait. */
    private static void awaitCounts(String output, Map<String, Long> expected, App app, String isolation, long timeoutMs) {
        Properties cp = Clients.consumer(broker, true);
        cp.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, isolation);
        cp.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, LongDeserializer.class.getName());
        cp.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        Map<String, Long> latest = new TreeMap<>();
        try (KafkaConsumer<String, Long> c = new KafkaConsumer<>(cp)) {
            List<TopicPartition> tps = new ArrayList<>();
            for (int p = 0; p < PARTITIONS; p++) {
                tps.add(new TopicPartition(output, p));
            }
            c.assign(tps);
            c.seekToBeginning(tps);
            long deadline = System.currentTimeMillis() + timeoutMs;
            while (!latest.equals(expected)) {
                if (System.currentTimeMillis() > deadline || app.error.get() != null) {
                    fail("word counts on " + output + " (" + isolation + ") after " + timeoutMs + " ms: " + diff(expected, latest)
                            + "\napp state " + app.streams.state() + " " + app.states + ", error " + app.error.get()
                            + "\nbroker log:\n" + broker.logTail(40));
                }
                for (ConsumerRecord<String, Long> r : c.poll(Duration.ofMillis(200))) {
                    latest.put(r.key(), r.value());
                }
            }
        }
    }

    private static String diff(Map<String, Long> expected, Map<String, Long> got) {
        Map<String, String> d = new TreeMap<>();
        Set<String> keys = new java.util.TreeSet<>(expected.keySet());
        keys.addAll(got.keySet());
        for (String k : keys) {
            if (!java.util.Objects.equals(expected.get(k), got.get(k))) {
                d.put(k, "expected " + expected.get(k) + " got " + got.get(k));
            }
        }
        return d.isEmpty() ? "equal" : d.toString();
    }

    /**
     * at_least_once word count: the latest count per word on the output topic is the count of
     * the text; Streams created its repartition and changelog topics on Spate with the configs it
     * asked for (changelog compacted; repartition delete, infinite retention, 50 MB segments;
     * both CreateTime), with as many partitions as the input. Then the app is closed, more text
     * is produced, and a new instance with the same application.id and an empty state directory
     * restores the store from the changelog (the restore listener counts its records) and the
     * counts go on from there: the latest counts are those of all the text, as is the store
     * (queried interactively).
     */
    @Test
    void wordCountAtLeastOnceRestoresFromChangelog() throws Exception {
        Path state1 = stateDir();
        Path state2 = stateDir();
        String appId = "wc-alo";
        String input = "wc-input";
        String output = "wc-output";
        Clients.createTopic(broker, input, PARTITIONS, Map.of());
        Clients.createTopic(broker, output, PARTITIONS, Map.of());
        String repartition = appId + "-words-repartition";
        String changelog = appId + "-word-counts-changelog";

        produce(input, TEXT_1);
        try (App app = new App(topology(input, output), streamsConfig(appId, state1, StreamsConfig.AT_LEAST_ONCE))) {
            app.awaitRunning();
            awaitCounts(output, expectedCounts(TEXT_1), app);
            assertEquals(0, app.restored.get(), "nothing to restore on the first start");
        }

        // The internal topics, as Streams asked for them.
        try (Admin admin = Clients.admin(broker)) {
            Set<String> names = admin.listTopics().names().get(TIMEOUT_S, TimeUnit.SECONDS);
            assertTrue(names.contains(repartition), "no repartition topic " + repartition + " in " + names);
            assertTrue(names.contains(changelog), "no changelog topic " + changelog + " in " + names);
            Map<String, TopicDescription> d = admin.describeTopics(List.of(repartition, changelog))
                    .allTopicNames().get(TIMEOUT_S, TimeUnit.SECONDS);
            assertEquals(PARTITIONS, d.get(repartition).partitions().size(), "partitions of " + repartition);
            assertEquals(PARTITIONS, d.get(changelog).partitions().size(), "partitions of " + changelog);
            ConfigResource rRes = new ConfigResource(ConfigResource.Type.TOPIC, repartition);
            ConfigResource cRes = new ConfigResource(ConfigResource.Type.TOPIC, changelog);
            Map<ConfigResource, Config> configs = admin.describeConfigs(List.of(rRes, cRes)).all().get(TIMEOUT_S, TimeUnit.SECONDS);
            Config r = configs.get(rRes);
            Config c = configs.get(cRes);
            assertEquals("compact", value(c, "cleanup.policy"), changelog + " " + c);
            assertEquals("CreateTime", value(c, "message.timestamp.type"), changelog + " " + c);
            assertEquals("delete", value(r, "cleanup.policy"), repartition + " " + r);
            assertEquals("-1", value(r, "retention.ms"), repartition + " " + r);
            assertEquals("52428800", value(r, "segment.bytes"), repartition + " " + r);
            assertEquals("CreateTime", value(r, "message.timestamp.type"), repartition + " " + r);
        }

        // More text while the app is down; a new instance with no local state restores the store.
        produce(input, TEXT_2);
        List<String> all = new ArrayList<>(TEXT_1);
        all.addAll(TEXT_2);
        Map<String, Long> expectedAll = expectedCounts(all);
        try (App app = new App(topology(input, output), streamsConfig(appId, state2, StreamsConfig.AT_LEAST_ONCE))) {
            app.awaitRunning();
            awaitCounts(output, expectedAll, app);
            assertTrue(app.restored.get() > 0, "the new instance restored nothing from " + changelog);
            ReadOnlyKeyValueStore<String, Long> store = app.streams.store(
                    StoreQueryParameters.fromNameAndType("word-counts", QueryableStoreTypes.keyValueStore()));
            Map<String, Long> inStore = new TreeMap<>();
            try (KeyValueIterator<String, Long> it = store.all()) {
                it.forEachRemaining(kv -> inStore.put(kv.key, kv.value));
            }
            assertEquals(expectedAll, inStore, "the store after the restore and the new text: " + diff(expectedAll, inStore));
            System.out.println("StreamsWordCountTest: " + all.size() + " lines, " + expectedAll.size() + " words, "
                    + app.restored.get() + " changelog records restored by the second instance");
        }
    }

    /**
     * With DeleteRecords, Streams purges what it has consumed and committed of its repartition
     * topics (repartition.purge.interval.ms, here 200 ms): once the app has processed all the
     * text, each repartition partition's log start offset (ListOffsets earliest) reaches the
     * offset the app committed for it, which is the partition's end (and above 0: every
     * partition had records to purge).
     */
    @Test
    void repartitionTopicIsPurgedAfterCommit() throws Exception {
        Path state = stateDir();
        String appId = "wc-purge";
        String input = "purge-input";
        String output = "purge-output";
        Clients.createTopic(broker, input, PARTITIONS, Map.of());
        Clients.createTopic(broker, output, PARTITIONS, Map.of());
        String repartition = appId + "-words-repartition";
        produce(input, TEXT_1);
        Properties config = streamsConfig(appId, state, StreamsConfig.AT_LEAST_ONCE);
        config.put(StreamsConfig.REPARTITION_PURGE_INTERVAL_MS_CONFIG, 200);
        try (App app = new App(topology(input, output), config); Admin admin = Clients.admin(broker)) {
            app.awaitRunning();
            awaitCounts(output, expectedCounts(TEXT_1), app);
            List<TopicPartition> tps = new ArrayList<>();
            for (int p = 0; p < PARTITIONS; p++) {
                tps.add(new TopicPartition(repartition, p));
            }
            long deadline = System.currentTimeMillis() + RESULT_TIMEOUT_MS;
            Map<TopicPartition, Long> start = Map.of();
            Map<TopicPartition, Long> committed = Map.of();
            Map<TopicPartition, Long> end = Map.of();
            while (true) {
                start = offsets(admin, tps, OffsetSpec.earliest());
                committed = new HashMap<>();
                for (Map.Entry<TopicPartition, OffsetAndMetadata> e : admin.listConsumerGroupOffsets(appId)
                        .partitionsToOffsetAndMetadata().get(TIMEOUT_S, TimeUnit.SECONDS).entrySet()) {
                    if (e.getKey().topic().equals(repartition) && e.getValue() != null) {
                        committed.put(e.getKey(), e.getValue().offset());
                    }
                }
                end = offsets(admin, tps, OffsetSpec.latest());
                boolean purged = true;
                for (TopicPartition tp : tps) {
                    // Everything written was consumed and committed, and purged up to there.
                    purged &= committed.getOrDefault(tp, -1L).equals(end.get(tp)) && start.get(tp).equals(end.get(tp));
                }
                if (purged) {
                    break;
                }
                if (System.currentTimeMillis() > deadline) {
                    fail("repartition topic not purged after " + RESULT_TIMEOUT_MS + " ms: log start " + start
                            + ", committed " + committed + ", end " + end + "\nbroker log:\n" + broker.logTail(30));
                }
                Thread.sleep(200);
            }
            // Every partition had records to purge (the words spread over all three), so each
            // start really moved: ListOffsets earliest is the end, not 0.
            for (TopicPartition tp : tps) {
                assertTrue(end.get(tp) > 0, "nothing went through " + tp + ": log start " + start + ", end " + end);
            }
            List<Long> starts = new ArrayList<>();
            for (TopicPartition tp : tps) {
                starts.add(start.get(tp));
            }
            System.out.println("StreamsWordCountTest: " + repartition + " purged by Streams' deleteRecords: log start "
                    + "offsets " + starts + " (partitions 0-" + (PARTITIONS - 1) + "), each its committed end offset");
        }
    }

    private static Map<TopicPartition, Long> offsets(Admin admin, List<TopicPartition> tps, OffsetSpec spec) throws Exception {
        Map<TopicPartition, OffsetSpec> ask = new HashMap<>();
        tps.forEach(tp -> ask.put(tp, spec));
        Map<TopicPartition, Long> out = new HashMap<>();
        admin.listOffsets(ask).all().get(TIMEOUT_S, TimeUnit.SECONDS).forEach((tp, info) -> out.put(tp, info.offset()));
        return out;
    }

    /** What the output of an exactly-once run holds, read to its end with read_committed and with read_uncommitted. */
    private record Updates(Map<String, List<Long>> committed, int committedRecords, int allRecords) {}

    /**
     * Every count on {@code output}: word -> its counts in offset order (a word's updates all go
     * to the partition of its key, in order) as read_committed reads them from the beginning to
     * the last stable offset, and how many records read_committed and read_uncommitted read
     * (the difference is aborted records).
     */
    private static Updates updates(String output) {
        Properties cp = Clients.consumer(broker, true);
        cp.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, LongDeserializer.class.getName());
        cp.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        Map<String, List<Long>> committed = new TreeMap<>();
        int committedRecords = 0;
        for (List<ConsumerRecord<String, Long>> part : Clients.<String, Long>readAll(cp, output, PARTITIONS,
                () -> "broker log:\n" + broker.logTail(40))) {
            for (ConsumerRecord<String, Long> r : part) {
                committed.computeIfAbsent(r.key(), k -> new ArrayList<>()).add(r.value());
                committedRecords++;
            }
        }
        cp.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_uncommitted");
        int all = 0;
        for (List<ConsumerRecord<String, Long>> part : Clients.<String, Long>readAll(cp, output, PARTITIONS,
                () -> "broker log:\n" + broker.logTail(40))) {
            all += part.size();
        }
        return new Updates(committed, committedRecords, all);
    }

    /**
     * With the record cache off, count() emits one update per word it counts, so exactly once
     * means that read_committed reads, for each word that appears N times, the counts 1, 2, ...,
     * N in that order: not one repeated (an update of a transaction that was aborted and
     * processed again), none missing, nothing after N, and no other word.
     */
    private static void assertEachCountOnce(Updates u, Map<String, Long> expected, String context) {
        Map<String, String> wrong = new TreeMap<>();
        for (Map.Entry<String, Long> e : expected.entrySet()) {
            List<Long> want = java.util.stream.LongStream.rangeClosed(1, e.getValue()).boxed().toList();
            List<Long> got = u.committed().getOrDefault(e.getKey(), List.of());
            if (!want.equals(got)) {
                wrong.put(e.getKey(), "expected 1.." + e.getValue() + ", read_committed read " + got);
            }
        }
        for (String w : u.committed().keySet()) {
            if (!expected.containsKey(w)) {
                wrong.put(w, "not in the text, read_committed read " + u.committed().get(w));
            }
        }
        assertTrue(wrong.isEmpty(), "counts on the output read with read_committed (" + wrong.size() + " words wrong): "
                + wrong + "\n" + context + "\nbroker log:\n" + broker.logTail(40));
    }

    /** The Streams config of the exactly-once tests: exactly_once_v2, every update of the store sent on (no record cache). */
    private static Properties eosConfig(String appId, Path stateDir) {
        Properties config = streamsConfig(appId, stateDir, StreamsConfig.EXACTLY_ONCE_V2);
        config.put(StreamsConfig.STATESTORE_CACHE_MAX_BYTES_CONFIG, 0);
        return config;
    }

    /**
     * processing.guarantee=exactly_once_v2 (transactional producers, read_committed consumers,
     * offsets committed in the transactions): the word count over all the text gives, read with
     * read_committed, the latest count of each word that the text has (the counts at_least_once
     * gives in {@link #wordCountAtLeastOnceRestoresFromChangelog}), and, with the record cache
     * off, each word's updates are exactly 1, 2, ..., N: no update twice, none from aborted
     * data, none missing. The store (queried interactively) holds the same counts.
     */
    @Test
    void wordCountExactlyOnceV2() throws Exception {
        Path state = stateDir();
        String input = "eos-input";
        String output = "eos-output";
        Clients.createTopic(broker, input, PARTITIONS, Map.of());
        Clients.createTopic(broker, output, PARTITIONS, Map.of());
        List<String> all = new ArrayList<>(TEXT_1);
        all.addAll(TEXT_2);
        produce(input, all);
        Map<String, Long> expected = expectedCounts(all);
        try (App app = new App(topology(input, output), eosConfig("wc-eos", state))) {
            app.awaitRunning();
            awaitCounts(output, expected, app, "read_committed", RESULT_TIMEOUT_MS);
            Updates u = updates(output);
            assertEachCountOnce(u, expected, "app state " + app.streams.state() + " " + app.states + ", error " + app.error.get());
            ReadOnlyKeyValueStore<String, Long> store = app.streams.store(
                    StoreQueryParameters.fromNameAndType("word-counts", QueryableStoreTypes.keyValueStore()));
            Map<String, Long> inStore = new TreeMap<>();
            try (KeyValueIterator<String, Long> it = store.all()) {
                it.forEachRemaining(kv -> inStore.put(kv.key, kv.value));
            }
            assertEquals(expected, inStore, "the store: " + diff(expected, inStore));
            System.out.println("StreamsWordCountTest exactly_once_v2: " + all.size() + " lines, " + expected.size() + " words, "
                    + u.committedRecords() + " updates read_committed, " + u.allRecords() + " read_uncommitted");
        }
    }

    /**
     * exactly_once_v2 through a kill -9 of the broker: 240 lines (the text over and over) are
     * produced one by one, idempotently, while the app counts; after 120 of them the broker is
     * killed with SIGKILL and restarted on the same data directory, and the app goes on by
     * itself (its uncaught exception handler would stop it: it must not be called). The input
     * holds each line once; the output read with read_committed gives each word's count of the
     * input, reached by exactly 1, 2, ..., N (whatever Streams aborted and processed again
     * around the kill is never read by read_committed).
     */
    @Test
    @Timeout(value = 5, unit = TimeUnit.MINUTES)
    void wordCountExactlyOnceV2ThroughKill9() throws Exception {
        Path state = stateDir();
        String input = "eos-kill-input";
        String output = "eos-kill-output";
        int lines = 240;
        Clients.createTopic(broker, input, PARTITIONS, Map.of());
        Clients.createTopic(broker, output, PARTITIONS, Map.of());
        List<String> pool = new ArrayList<>(TEXT_1);
        pool.addAll(TEXT_2);
        AtomicLong sent = new AtomicLong();
        AtomicReference<Throwable> sendError = new AtomicReference<>();
        String killed;
        try (App app = new App(topology(input, output), eosConfig("wc-eos-kill", state))) {
            app.awaitRunning();
            Thread producer = new Thread(() -> {
                try (KafkaProducer<String, String> p = new KafkaProducer<>(Clients.producer(broker, true))) {
                    for (int i = 0; i < lines; i++) {
                        p.send(new ProducerRecord<>(input, "line-" + i, pool.get(i % pool.size()))).get(60, TimeUnit.SECONDS);
                        sent.incrementAndGet();
                        Thread.sleep(25);
                    }
                } catch (Throwable t) {
                    sendError.set(t);
                }
            }, "eos-kill-input");
            producer.setDaemon(true);
            producer.start();
            long deadline = System.currentTimeMillis() + 120_000;
            while (sent.get() < lines / 2) {
                if (System.currentTimeMillis() > deadline || !producer.isAlive()) {
                    fail("the input producer did not send " + lines / 2 + " lines (" + sent.get() + ", error " + sendError.get()
                            + ")\nbroker log:\n" + broker.logTail(30));
                }
                Thread.sleep(10);
            }
            killed = "killed after " + sent.get() + " lines sent";
            broker.kill();
            Thread.sleep(500);
            broker.restart();
            producer.join(120_000);
            assertFalse(producer.isAlive(), "the input producer did not finish within 120 s of the restart (" + sent.get()
                    + " lines sent)\nbroker log:\n" + broker.logTail(30));
            assertNull(sendError.get(), "the input producer failed after " + sent.get() + " lines: " + sendError.get());

            // The input, read back: each line once (the idempotent producer through the kill).
            Properties ip = Clients.consumer(broker, true);
            List<String> text = new ArrayList<>();
            Map<String, Integer> keys = new TreeMap<>();
            for (List<ConsumerRecord<String, String>> part : Clients.<String, String>readAll(ip, input, PARTITIONS,
                    () -> "broker log:\n" + broker.logTail(30))) {
                for (ConsumerRecord<String, String> r : part) {
                    text.add(r.value());
                    keys.merge(r.key(), 1, Integer::sum);
                }
            }
            assertEquals(lines, keys.size(), "distinct lines in the input (" + killed + ")");
            assertEquals(lines, text.size(), "records in the input, lines more than once: "
                    + keys.entrySet().stream().filter(e -> e.getValue() > 1).toList() + " (" + killed + ")");

            Map<String, Long> expected = expectedCounts(text);
            awaitCounts(output, expected, app, "read_committed", 2 * RESULT_TIMEOUT_MS);
            Updates u = updates(output);
            String context = killed + "; app state " + app.streams.state() + " " + app.states + ", error " + app.error.get();
            assertEachCountOnce(u, expected, context);
            assertNull(app.error.get(), "the app's uncaught exception handler was called: " + context);
            System.out.println("StreamsWordCountTest exactly_once_v2 through kill -9: " + killed + "; " + lines + " lines, "
                    + expected.size() + " words, " + u.committedRecords() + " updates read_committed, " + u.allRecords()
                    + " read_uncommitted (the difference aborted); app states " + app.states);
        }
    }

    private static String value(Config c, String name) {
        assertNotNull(c.get(name), name + " missing in " + c);
        return c.get(name).value();
    }
}

package spate.it;

import static org.junit.jupiter.api.Assertions.fail;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import java.util.function.Supplier;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/** Client configurations and small helpers shared by the tests. */
final class Clients {
    /** Every blocking wait on a future is bounded by this. */
    static final long TIMEOUT_S = 30;

    private Clients() {}

    static Properties producer(SpateBroker broker, boolean strings) {
        Properties p = new Properties();
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, broker.bootstrap());
        p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG,
                strings ? StringSerializer.class.getName() : ByteArraySerializer.class.getName());
        p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG,
                strings ? StringSerializer.class.getName() : ByteArraySerializer.class.getName());
        p.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, 30_000);
        p.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, 20_000);
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, 30_000);
        return p;
    }

    static Properties consumer(SpateBroker broker, boolean strings) {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, broker.bootstrap());
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG,
                strings ? StringDeserializer.class.getName() : ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG,
                strings ? StringDeserializer.class.getName() : ByteArrayDeserializer.class.getName());
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 30_000);
        p.put(ConsumerConfig.REQUEST_TIMEOUT_MS_CONFIG, 20_000);
        return p;
    }

    static Admin admin(SpateBroker broker) {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, broker.bootstrap());
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 30_000);
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, 20_000);
        return Admin.create(p);
    }

    static void createTopic(SpateBroker broker, String name, int partitions, Map<String, String> configs)
            throws Exception {
        try (Admin admin = admin(broker)) {
            admin.createTopics(List.of(new NewTopic(name, partitions, (short) 1).configs(configs)))
                    .all().get(TIMEOUT_S, TimeUnit.SECONDS);
        }
    }

    /** Polls until {@code n} records came back (or fails after {@link #TIMEOUT_S}). */
    static <K, V> List<ConsumerRecord<K, V>> pollN(KafkaConsumer<K, V> consumer, int n) {
        List<ConsumerRecord<K, V>> out = new ArrayList<>();
        long deadline = System.currentTimeMillis() + TIMEOUT_S * 1000;
        while (out.size() < n) {
            if (System.currentTimeMillis() > deadline) {
                fail("consumed " + out.size() + " records of " + n + " within " + TIMEOUT_S + " s");
            }
            consumer.poll(Duration.ofMillis(200)).forEach(out::add);
        }
        // Nothing more than expected (e.g. duplicates): one more short poll.
        consumer.poll(Duration.ofMillis(200)).forEach(out::add);
        return out;
    }

    /**
     * Every record of partitions 0..{@code partitions}-1 of {@code topic}, one list per partition
     * in offset order, read with a consumer of {@code props} (no group: assign) from the beginning
     * to the end offsets as they are when it starts. Its {@code isolation.level} decides what
     * that end is: the high watermark for read_uncommitted, the last stable offset for
     * read_committed (which also leaves out aborted records and the transaction markers). Fails
     * after 60 s with the positions reached, the end offsets and {@code context} (the broker log tail).
     */
    static <K, V> List<List<ConsumerRecord<K, V>>> readAll(Properties props, String topic, int partitions,
            Supplier<String> context) {
        List<TopicPartition> tps = new ArrayList<>();
        List<List<ConsumerRecord<K, V>>> out = new ArrayList<>();
        for (int p = 0; p < partitions; p++) {
            tps.add(new TopicPartition(topic, p));
            out.add(new ArrayList<>());
        }
        try (KafkaConsumer<K, V> c = new KafkaConsumer<>(props)) {
            c.assign(tps);
            c.seekToBeginning(tps);
            Map<TopicPartition, Long> end = c.endOffsets(tps);
            long deadline = System.currentTimeMillis() + 60_000;
            while (true) {
                boolean done = true;
                for (TopicPartition tp : tps) {
                    done &= c.position(tp) >= end.get(tp);
                }
                if (done) {
                    return out;
                }
                if (System.currentTimeMillis() > deadline) {
                    Map<TopicPartition, Long> at = new java.util.TreeMap<>(java.util.Comparator.comparing(TopicPartition::toString));
                    tps.forEach(tp -> at.put(tp, c.position(tp)));
                    fail("reading " + topic + " (" + props.getOrDefault(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_uncommitted") + ") to its end "
                            + end + " took more than 60 s: positions " + at + "\n" + context.get());
                }
                for (ConsumerRecord<K, V> r : c.poll(Duration.ofMillis(200))) {
                    out.get(r.partition()).add(r);
                }
            }
        }
    }
}

package spate.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;
import static spate.it.Clients.TIMEOUT_S;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.ListTopicsOptions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.QuorumInfo;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.GroupType;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.errors.InvalidReplicationFactorException;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * A three-node cluster ({@link SpateCluster}) driven by the Java client with nothing but a
 * bootstrap list of one node: the topic is created through node 1, its partitions' leaders are
 * spread over the three brokers, an idempotent producer bootstrapped at node 2 writes to all of
 * them, a consumer group bootstrapped at node 3 reads everything and commits, the admin client
 * reads the commits back (the group's coordinator being the leader of its
 * {@code __consumer_offsets} partition), and the topic deleted through node 2 is gone everywhere.
 * After each test the extension checks that the three nodes' metadata agree.
 */
class ClusterTest {
    @RegisterExtension
    static final SpateCluster cluster = new SpateCluster();

    private static final int PARTITIONS = 6;
    private static final int RECORDS = 600;
    private static final int OFFSETS_PARTITIONS = 50; // Spate's __consumer_offsets, as Kafka's default

    static Admin admin(int node) {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, cluster.bootstrap(node));
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 30_000);
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, 20_000);
        return Admin.create(p);
    }

    @ParameterizedTest(name = "group.protocol={0}")
    @ValueSource(strings = {"classic", "consumer"})
    void topicCreatedOnOneNodeIsProducedAndConsumedThroughTheOthers(String protocol) throws Exception {
        String topic = "spread-" + protocol;
        String group = "cluster-group-" + protocol;

        try (Admin a1 = admin(1); Admin a2 = admin(2); Admin a3 = admin(3)) {
            // Every node describes the same cluster of three, with a controller among them.
            for (Admin a : List.of(a1, a2, a3)) {
                DescribeClusterResult dc = a.describeCluster();
                Set<Integer> ids = dc.nodes().get(TIMEOUT_S, TimeUnit.SECONDS).stream().map(Node::id)
                        .collect(Collectors.toCollection(TreeSet::new));
                assertEquals(Set.of(1, 2, 3), ids, "describeCluster's nodes");
                Node controller = dc.controller().get(TIMEOUT_S, TimeUnit.SECONDS);
                assertNotNull(controller, "describeCluster's controller");
                assertTrue(ids.contains(controller.id()), "controller " + controller + " is one of " + ids);
                assertNotNull(dc.clusterId().get(TIMEOUT_S, TimeUnit.SECONDS), "cluster id");
            }

            // Every node's /v1/status: one quorum, the same leader among the three voters, three brokers.
            Set<Integer> quorumLeaders = new TreeSet<>();
            for (int node = 1; node <= SpateCluster.NODES; node++) {
                com.fasterxml.jackson.databind.JsonNode status = cluster.admin(node, "/v1/status");
                assertEquals(node, status.path("node_id").asInt(), "node_id in /v1/status");
                assertEquals(3, status.path("quorum").path("voters").size(), "voters in node " + node + "'s /v1/status");
                quorumLeaders.add(status.path("quorum").path("leader").asInt(-1));
                assertEquals(3, status.path("brokers").size(), "brokers in node " + node + "'s /v1/status");
            }
            assertEquals(1, quorumLeaders.size(), "the quorum's leader as each node sees it: " + quorumLeaders);
            assertTrue(Set.of(1, 2, 3).containsAll(quorumLeaders), "quorum leader " + quorumLeaders);

            // The admin client's describeMetadataQuorum (DescribeQuorum) through any node: the same
            // three voters, a leader among them, a high watermark past the cluster's first records.
            for (Admin a : List.of(a1, a2, a3)) {
                QuorumInfo q = a.describeMetadataQuorum().quorumInfo().get(TIMEOUT_S, TimeUnit.SECONDS);
                Set<Integer> voters = q.voters().stream().map(QuorumInfo.ReplicaState::replicaId)
                        .collect(Collectors.toCollection(TreeSet::new));
                assertEquals(Set.of(1, 2, 3), voters, "describeMetadataQuorum's voters: " + q);
                assertTrue(voters.contains(q.leaderId()), "describeMetadataQuorum's leader: " + q);
                assertTrue(q.highWatermark() > 0, "describeMetadataQuorum's high watermark: " + q);
            }

            // A replication factor above the three live brokers is refused; three is placed on all.
            ExecutionException rf = assertThrows(ExecutionException.class, () -> a1.createTopics(
                    List.of(new NewTopic(topic + "-rf4", 1, (short) 4))).all().get(TIMEOUT_S, TimeUnit.SECONDS));
            assertInstanceOf(InvalidReplicationFactorException.class, rf.getCause(), rf.toString());
            a1.createTopics(List.of(new NewTopic(topic + "-rf3", 1, (short) 3))).all().get(TIMEOUT_S, TimeUnit.SECONDS);
            cluster.assertConsistent(); // node 1 answered once it served the topic; the others follow
            assertEquals(3, a2.describeTopics(List.of(topic + "-rf3")).allTopicNames().get(TIMEOUT_S, TimeUnit.SECONDS)
                    .get(topic + "-rf3").partitions().get(0).replicas().size(), "replicas of a replication-factor-3 topic");

            // Created through node 1; its leaders spread over the three, as every node says.
            a1.createTopics(List.of(new NewTopic(topic, PARTITIONS, (short) 1))).all().get(TIMEOUT_S, TimeUnit.SECONDS);
            Map<Integer, Integer> leaderOf = null;
            for (Admin a : List.of(a1, a2, a3)) {
                Map<Integer, Integer> leaders = waitForLeaders(a, topic);
                if (leaderOf == null) {
                    leaderOf = leaders;
                }
                assertEquals(leaderOf, leaders, "leaders as described through another node");
            }
            Map<Integer, Long> perBroker = leaderOf.values().stream()
                    .collect(Collectors.groupingBy(id -> id, TreeMap::new, Collectors.counting()));
            assertEquals(Map.of(1, 2L, 2, 2L, 3, 2L), perBroker, "partitions led per broker; leaders " + leaderOf);

            // An idempotent acks=all producer that knows only node 2 writes keyed records to every partition.
            Properties pp = new Properties();
            pp.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, cluster.bootstrap(2));
            pp.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, org.apache.kafka.common.serialization.StringSerializer.class.getName());
            pp.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, org.apache.kafka.common.serialization.StringSerializer.class.getName());
            pp.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, true);
            pp.put(ProducerConfig.ACKS_CONFIG, "all");
            pp.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, 30_000);
            pp.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, 20_000);
            pp.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, 30_000);
            pp.put(ProducerConfig.LINGER_MS_CONFIG, 5);
            Map<String, String> sent = new HashMap<>(); // key -> value
            Map<Integer, List<String>> keysByPartition = new TreeMap<>(); // in offset order
            try (KafkaProducer<String, String> producer = new KafkaProducer<>(pp)) {
                List<Future<RecordMetadata>> acks = new ArrayList<>();
                for (int i = 0; i < RECORDS; i++) {
                    String key = "key-" + i;
                    sent.put(key, "value-" + i);
                    acks.add(producer.send(new ProducerRecord<>(topic, key, "value-" + i)));
                }
                producer.flush();
                Map<Integer, Map<Long, String>> byOffset = new TreeMap<>();
                for (int i = 0; i < RECORDS; i++) {
                    RecordMetadata md = acks.get(i).get(TIMEOUT_S, TimeUnit.SECONDS);
                    assertNull(byOffset.computeIfAbsent(md.partition(), k -> new TreeMap<>()).put(md.offset(), "key-" + i),
                            "two records acknowledged at " + md);
                }
                assertEquals(PARTITIONS, byOffset.size(), "partitions the keys went to");
                for (Map.Entry<Integer, Map<Long, String>> e : byOffset.entrySet()) {
                    List<Long> offsets = new ArrayList<>(e.getValue().keySet());
                    assertEquals(0L, offsets.get(0), "first offset of partition " + e.getKey());
                    assertEquals(offsets.size() - 1L, offsets.get(offsets.size() - 1), "offsets of partition " + e.getKey() + " dense");
                    keysByPartition.put(e.getKey(), new ArrayList<>(e.getValue().values()));
                }
            }

            // Each partition's end offset, as node 3 (through whichever leaders) reports it.
            Map<TopicPartition, OffsetSpec> latest = new HashMap<>();
            for (int p = 0; p < PARTITIONS; p++) {
                latest.put(new TopicPartition(topic, p), OffsetSpec.latest());
            }
            Map<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> ends =
                    a3.listOffsets(latest).all().get(TIMEOUT_S, TimeUnit.SECONDS);
            for (int p = 0; p < PARTITIONS; p++) {
                assertEquals(keysByPartition.get(p).size(), ends.get(new TopicPartition(topic, p)).offset(), "end of partition " + p);
            }

            // A consumer group that knows only node 3 reads every record once, then commits.
            Properties cp = new Properties();
            cp.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, cluster.bootstrap(3));
            cp.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, org.apache.kafka.common.serialization.StringDeserializer.class.getName());
            cp.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, org.apache.kafka.common.serialization.StringDeserializer.class.getName());
            cp.put(ConsumerConfig.GROUP_ID_CONFIG, group);
            cp.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, protocol);
            cp.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
            cp.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
            cp.put(ConsumerConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 30_000);
            cp.put(ConsumerConfig.REQUEST_TIMEOUT_MS_CONFIG, 20_000);
            Map<TopicPartition, OffsetAndMetadata> committed = new HashMap<>();
            try (KafkaConsumer<String, String> consumer = new KafkaConsumer<>(cp)) {
                consumer.subscribe(List.of(topic));
                Map<Integer, List<String>> read = new TreeMap<>();
                int count = 0;
                long deadline = System.currentTimeMillis() + 60_000;
                while (count < RECORDS) {
                    if (System.currentTimeMillis() > deadline) {
                        fail("the group read " + count + " of " + RECORDS + " records within 60 s; assignment "
                                + consumer.assignment() + "\n" + cluster.logTails(20));
                    }
                    for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) {
                        List<String> keys = read.computeIfAbsent(r.partition(), k -> new ArrayList<>());
                        assertEquals(keys.size(), r.offset(), "offset read next in partition " + r.partition());
                        assertEquals(sent.get(r.key()), r.value(), "value of " + r.key());
                        keys.add(r.key());
                        count++;
                    }
                }
                // Nothing more (no duplicates): one more short poll.
                assertTrue(consumer.poll(Duration.ofMillis(500)).isEmpty(), "records beyond the " + RECORDS + " produced");
                assertEquals(keysByPartition, read, "records read per partition, in offset order");
                assertEquals(PARTITIONS, consumer.assignment().size(), "the only member owns every partition");
                for (int p = 0; p < PARTITIONS; p++) {
                    committed.put(new TopicPartition(topic, p), new OffsetAndMetadata(keysByPartition.get(p).size()));
                }
                try {
                    consumer.commitSync(Duration.ofSeconds(TIMEOUT_S));
                } catch (org.apache.kafka.common.KafkaException e) {
                    // What the coordinators did with the group, to tell a lost member from a moved one.
                    throw new AssertionError("commitSync of the only member failed: " + e + "\n"
                            + cluster.logLinesWith(40, "group", "coordinat", "member", "fenced", "elect") + cluster.logTails(10), e);
                }
                Map<TopicPartition, OffsetAndMetadata> readBack = consumer.committed(committed.keySet(), Duration.ofSeconds(TIMEOUT_S));
                for (Map.Entry<TopicPartition, OffsetAndMetadata> e : committed.entrySet()) {
                    assertNotNull(readBack.get(e.getKey()), "committed offset of " + e.getKey() + " read back");
                    assertEquals(e.getValue().offset(), readBack.get(e.getKey()).offset(), "committed offset of " + e.getKey());
                }

                // The group's coordinator leads the group's __consumer_offsets partition.
                ConsumerGroupDescription desc = a1.describeConsumerGroups(List.of(group)).all()
                        .get(TIMEOUT_S, TimeUnit.SECONDS).get(group);
                assertEquals(protocol.equals("classic") ? GroupType.CLASSIC : GroupType.CONSUMER, desc.type(), "group type");
                assertEquals(1, desc.members().size(), "members " + desc.members());
                int offsetsPartition = javaAbs(group.hashCode()) % OFFSETS_PARTITIONS;
                TopicPartitionInfo offsetsInfo = a1.describeTopics(List.of("__consumer_offsets")).allTopicNames()
                        .get(TIMEOUT_S, TimeUnit.SECONDS).get("__consumer_offsets").partitions().get(offsetsPartition);
                assertNotNull(offsetsInfo.leader(), "leader of __consumer_offsets-" + offsetsPartition);
                assertEquals(offsetsInfo.leader().id(), desc.coordinator().id(),
                        "the coordinator of " + group + " vs the leader of __consumer_offsets-" + offsetsPartition);
            }

            // Every node's admin client reads the same commits back.
            for (Admin a : List.of(a1, a2, a3)) {
                Map<TopicPartition, OffsetAndMetadata> offsets = a.listConsumerGroupOffsets(group)
                        .partitionsToOffsetAndMetadata().get(TIMEOUT_S, TimeUnit.SECONDS);
                assertEquals(committed.keySet(), offsets.keySet(), "partitions with a committed offset");
                for (Map.Entry<TopicPartition, OffsetAndMetadata> e : committed.entrySet()) {
                    assertEquals(e.getValue().offset(), offsets.get(e.getKey()).offset(), "committed offset of " + e.getKey());
                }
            }

            // Deleted through node 2: gone from every node's metadata once all three serve the
            // same image (node 2 answers once it serves the deletion; the others follow a moment later).
            a2.deleteTopics(List.of(topic)).all().get(TIMEOUT_S, TimeUnit.SECONDS);
            cluster.assertConsistent();
            for (Admin a : List.of(a1, a2, a3)) {
                assertFalse(a.listTopics(new ListTopicsOptions().listInternal(true)).names()
                        .get(TIMEOUT_S, TimeUnit.SECONDS).contains(topic), topic + " still listed");
                ExecutionException gone = assertThrows(ExecutionException.class,
                        () -> a.describeTopics(List.of(topic)).allTopicNames().get(TIMEOUT_S, TimeUnit.SECONDS));
                assertInstanceOf(UnknownTopicOrPartitionException.class, gone.getCause(), gone.toString());
            }
            assertFalse(a1.listTopics().names().get(TIMEOUT_S, TimeUnit.SECONDS).contains(topic + "-rf4"),
                    "the refused topic was not created");
        }
    }

    /**
     * Each partition's leader as {@code admin} describes the topic, once every partition has one
     * (a node may serve the new topic a moment after the one that created it).
     */
    private static Map<Integer, Integer> waitForLeaders(Admin admin, String topic) throws Exception {
        Map<Integer, Integer> leaders = new TreeMap<>();
        cluster.waitFor("every partition of " + topic + " has a leader", 30_000, () -> {
            leaders.clear();
            TopicDescription td;
            try {
                td = admin.describeTopics(List.of(topic)).allTopicNames().get(TIMEOUT_S, TimeUnit.SECONDS).get(topic);
            } catch (ExecutionException e) {
                if (e.getCause() instanceof UnknownTopicOrPartitionException) {
                    return false;
                }
                throw e;
            }
            assertEquals(PARTITIONS, td.partitions().size(), "partitions of " + topic);
            for (TopicPartitionInfo p : td.partitions()) {
                if (p.leader() == null || p.leader().isEmpty()) {
                    return false;
                }
                assertEquals(List.of(p.leader()), p.replicas(), "replicas of partition " + p.partition());
                assertEquals(List.of(p.leader()), p.isr(), "ISR of partition " + p.partition());
                leaders.put(p.partition(), p.leader().id());
            }
            return true;
        });
        return new TreeMap<>(leaders);
    }

    /**
     * Transactions of version 2 (KIP-890 part 2, the Java client's default against Spate)
     * across the cluster: the partitions' leaders are spread over the three nodes, so leaders
     * add partitions to transactions coordinated elsewhere (AddPartitionsToTxn v5 between
     * brokers), and the group's coordinator adds its {@code __consumer_offsets} partition
     * (TxnOffsetCommit v5). Committed transactions are read whole with read_committed, aborted
     * ones not at all, and the group's offset is the last committed transaction's.
     */
    @Test
    void transactionsOfVersion2SpanTheBrokers() throws Exception {
        String topic = "txn-v2";
        String input = "txn-v2-input";
        String group = "txn-v2-group";
        try (Admin a = admin(1)) {
            a.createTopics(List.of(new NewTopic(topic, PARTITIONS, (short) 1), new NewTopic(input, 1, (short) 1)))
                    .all().get(TIMEOUT_S, TimeUnit.SECONDS);
            Map<Integer, Integer> leaders = waitForLeaders(a, topic);
            assertEquals(3, new TreeSet<>(leaders.values()).size(), "the partitions' leaders: " + leaders);
        }
        Properties pp = new Properties();
        pp.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, cluster.bootstrapAll());
        pp.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, org.apache.kafka.common.serialization.StringSerializer.class.getName());
        pp.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, org.apache.kafka.common.serialization.StringSerializer.class.getName());
        pp.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, "txn-v2-tx");
        pp.put(ProducerConfig.DELIVERY_TIMEOUT_MS_CONFIG, 60_000);
        pp.put(ProducerConfig.REQUEST_TIMEOUT_MS_CONFIG, 20_000);
        pp.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, 60_000);
        Map<Integer, List<String>> committed = new TreeMap<>();
        TopicPartition offsetsOf = new TopicPartition(input, 0);
        long lastCommitted = -1;
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(pp)) {
            producer.initTransactions();
            for (int t = 0; t < 6; t++) {
                producer.beginTransaction();
                List<String[]> sent = new ArrayList<>();
                for (int p = 0; p < PARTITIONS; p++) {
                    for (int i = 0; i < 5; i++) {
                        String v = "t" + t + "-p" + p + "-" + i;
                        producer.send(new ProducerRecord<>(topic, p, "k", v));
                        sent.add(new String[] {String.valueOf(p), v});
                    }
                }
                producer.sendOffsetsToTransaction(Map.of(offsetsOf, new OffsetAndMetadata(10L * (t + 1))),
                        new org.apache.kafka.clients.consumer.ConsumerGroupMetadata(group));
                if (t % 3 == 1) {
                    producer.abortTransaction();
                } else {
                    producer.commitTransaction();
                    for (String[] pv : sent) {
                        committed.computeIfAbsent(Integer.parseInt(pv[0]), k -> new ArrayList<>()).add(pv[1]);
                    }
                    lastCommitted = 10L * (t + 1);
                }
            }
        }
        Properties cp = new Properties();
        cp.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, cluster.bootstrapAll());
        cp.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, org.apache.kafka.common.serialization.StringDeserializer.class.getName());
        cp.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, org.apache.kafka.common.serialization.StringDeserializer.class.getName());
        cp.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        cp.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        List<List<ConsumerRecord<String, String>>> read = Clients.readAll(cp, topic, PARTITIONS, () -> cluster.logTails(30));
        for (int p = 0; p < PARTITIONS; p++) {
            assertEquals(committed.get(p), read.get(p).stream().map(ConsumerRecord::value).toList(),
                    "read_committed, partition " + p + "\n" + cluster.logTails(30));
        }
        try (Admin a = admin(2)) {
            long deadline = System.currentTimeMillis() + 30_000;
            long offset;
            // The offsets' marker follows the answer to the last EndTxn.
            while ((offset = a.listConsumerGroupOffsets(group, new org.apache.kafka.clients.admin.ListConsumerGroupOffsetsOptions()
                    .requireStable(true)).partitionsToOffsetAndMetadata().get(TIMEOUT_S, TimeUnit.SECONDS).get(offsetsOf).offset())
                    != lastCommitted && System.currentTimeMillis() < deadline) {
                Thread.sleep(100);
            }
            assertEquals(lastCommitted, offset, "the group's offset is the last committed transaction's\n" + cluster.logTails(30));
        }
    }

    /** Kafka's Utils.abs: Integer.MIN_VALUE maps to 0. */
    private static int javaAbs(int n) {
        return n == Integer.MIN_VALUE ? 0 : Math.abs(n);
    }
}

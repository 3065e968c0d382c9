package spate.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertNotNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;
import static spate.it.Clients.TIMEOUT_S;

import java.time.Duration;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.function.Function;
import java.util.stream.Collectors;
import java.util.stream.Stream;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.AlterConfigsOptions;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.ConsumerGroupListing;
import org.apache.kafka.clients.admin.CreateTopicsOptions;
import org.apache.kafka.clients.admin.CreateTopicsResult;
import org.apache.kafka.clients.admin.DescribeConfigsOptions;
import org.apache.kafka.clients.admin.DescribeProducersOptions;
import org.apache.kafka.clients.admin.DescribeProducersResult;
import org.apache.kafka.clients.admin.DeleteRecordsOptions;
import org.apache.kafka.clients.admin.DeletedRecords;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.GroupListing;
import org.apache.kafka.clients.admin.ListOffsetsResult.ListOffsetsResultInfo;
import org.apache.kafka.clients.admin.MemberDescription;
import org.apache.kafka.clients.admin.MemberToRemove;
import org.apache.kafka.clients.admin.LogDirDescription;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.ReplicaInfo;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.ProducerState;
import org.apache.kafka.clients.admin.RecordsToDelete;
import org.apache.kafka.clients.admin.RemoveMembersFromConsumerGroupOptions;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.CloseOptions;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.ElectionType;
import org.apache.kafka.common.GroupState;
import org.apache.kafka.common.GroupType;
import org.apache.kafka.common.KafkaFuture;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.errors.InvalidPartitionsException;
import org.apache.kafka.common.TopicCollection;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.Uuid;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.GroupNotEmptyException;
import org.apache.kafka.common.errors.InvalidConfigurationException;
import org.apache.kafka.common.errors.InvalidRequestException;
import org.apache.kafka.common.errors.InvalidTopicException;
import org.apache.kafka.common.errors.RecordTooLargeException;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.errors.UnknownTopicIdException;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;
import org.apache.kafka.common.errors.UnsupportedVersionException;
import org.apache.kafka.common.utils.ProducerIdAndEpoch;
import org.junit.jupiter.api.AfterAll;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.DynamicTest;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.TestFactory;
import org.junit.jupiter.api.extension.RegisterExtension;

/** The AdminClient's calls, those Spate serves and, bounded, those it does not. */
class AdminClientTest {
    @RegisterExtension
    static final SpateBroker broker = new SpateBroker();

    private static Admin admin;

    @BeforeAll
    static void createAdmin() {
        admin = Clients.admin(broker);
    }

    @AfterAll
    static void closeAdmin() {
        if (admin != null) {
            admin.close(Duration.ofSeconds(10));
        }
    }

    /**
     * createPartitions grows a topic (describeTopics shows the new count at once; a smaller count
     * is InvalidPartitionsException), and describeLogDirs reports each partition's bytes and the
     * disk's total and usable bytes.
     */
    @Test
    void createPartitionsAndDescribeLogDirs() throws Exception {
        String topic = "admin-grow";
        get(admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all());
        try (KafkaProducer<String, String> p = new KafkaProducer<>(Clients.producer(broker, true))) {
            p.send(new ProducerRecord<>(topic, 0, "k", "v")).get(TIMEOUT_S, TimeUnit.SECONDS);
        }
        get(admin.createPartitions(Map.of(topic, NewPartitions.increaseTo(3))).all());
        assertEquals(3, get(admin.describeTopics(List.of(topic)).allTopicNames()).get(topic).partitions().size());
        ExecutionException e = assertThrows(ExecutionException.class,
                () -> admin.createPartitions(Map.of(topic, NewPartitions.increaseTo(2))).all().get(TIMEOUT_S, TimeUnit.SECONDS));
        assertInstanceOf(InvalidPartitionsException.class, e.getCause());

        Map<Integer, Map<String, LogDirDescription>> dirs = get(admin.describeLogDirs(List.of(0)).allDescriptions());
        assertEquals(1, dirs.get(0).size(), "one log directory: " + dirs);
        LogDirDescription d = dirs.get(0).values().iterator().next();
        ReplicaInfo first = d.replicaInfos().get(new TopicPartition(topic, 0));
        ReplicaInfo added = d.replicaInfos().get(new TopicPartition(topic, 2));
        assertTrue(first != null && first.size() > 0, "the written partition has bytes: " + d.replicaInfos());
        assertTrue(added != null && added.size() == 0, "a new partition is empty: " + d.replicaInfos());
        assertTrue(d.totalBytes().isPresent() && d.usableBytes().isPresent(), d.toString());
        assertTrue(d.usableBytes().getAsLong() <= d.totalBytes().getAsLong(), d.toString());
    }

    private static <T> T get(KafkaFuture<T> f) throws Exception {
        return f.get(TIMEOUT_S, TimeUnit.SECONDS);
    }

    /** The cause of a failed future's ExecutionException. */
    private static Throwable failure(KafkaFuture<?> f) {
        ExecutionException e = assertThrows(ExecutionException.class, () -> f.get(TIMEOUT_S, TimeUnit.SECONDS));
        return e.getCause();
    }

    @Test
    void topicsCreateListDescribeDelete() throws Exception {
        String topic = "admin-topics";
        CreateTopicsResult created = admin.createTopics(List.of(new NewTopic(topic, 3, (short) 1)));
        get(created.all());
        assertEquals(3, get(created.numPartitions(topic)));
        assertEquals(1, get(created.replicationFactor(topic)));
        Uuid id = get(created.topicId(topic));
        assertNotEquals(Uuid.ZERO_UUID, id);

        // Again: TopicExistsException. validateOnly: nothing is created.
        assertInstanceOf(TopicExistsException.class,
                failure(admin.createTopics(List.of(new NewTopic(topic, 3, (short) 1))).all()));
        get(admin.createTopics(List.of(new NewTopic("admin-validate-only", 2, (short) 1)),
                new CreateTopicsOptions().validateOnly(true)).all());

        Set<String> names = get(admin.listTopics().names());
        assertTrue(names.contains(topic), "listTopics " + names);
        assertFalse(names.contains("admin-validate-only"), "validateOnly created the topic: " + names);

        TopicDescription d = get(admin.describeTopics(List.of(topic)).allTopicNames()).get(topic);
        assertEquals(topic, d.name());
        assertEquals(id, d.topicId());
        assertFalse(d.isInternal());
        assertEquals(3, d.partitions().size());
        for (int p = 0; p < 3; p++) {
            TopicPartitionInfo info = d.partitions().get(p);
            assertEquals(p, info.partition());
            assertEquals(0, info.leader().id());
            assertEquals(List.of(0), info.replicas().stream().map(Node::id).toList());
            assertEquals(List.of(0), info.isr().stream().map(Node::id).toList());
        }
        get(admin.deleteTopics(List.of(topic)).all());
        long deadline = System.currentTimeMillis() + TIMEOUT_S * 1000;
        while (get(admin.listTopics().names()).contains(topic)) {
            if (System.currentTimeMillis() > deadline) {
                fail("topic still listed after deleteTopics");
            }
            Thread.sleep(100);
        }
        assertInstanceOf(UnknownTopicOrPartitionException.class,
                failure(admin.describeTopics(List.of(topic)).allTopicNames()));
    }

    /**
     * describeTopics by topic id (Metadata v12+ with topic ids). The Java client sends each topic
     * as {TopicId: id, Name: ""} (the generated default for Name is the empty string, not null).
     */
    @Test
    void describeTopicsByTopicId() throws Exception {
        String topic = "admin-by-id";
        CreateTopicsResult created = admin.createTopics(List.of(new NewTopic(topic, 2, (short) 1)));
        Uuid id = get(created.topicId(topic));
        TopicDescription d = get(admin.describeTopics(TopicCollection.ofTopicIds(List.of(id))).allTopicIds()).get(id);
        assertEquals(topic, d.name());
        assertEquals(id, d.topicId());
        assertEquals(2, d.partitions().size());
        // An id no topic has: UnknownTopicIdException.
        assertInstanceOf(UnknownTopicIdException.class,
                failure(admin.describeTopics(TopicCollection.ofTopicIds(List.of(Uuid.randomUuid()))).allTopicIds()));
    }

    /** deleteTopics by topic id (DeleteTopics v6). */
    @Test
    void deleteTopicsByTopicId() throws Exception {
        String topic = "admin-delete-by-id";
        CreateTopicsResult created = admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1)));
        Uuid id = get(created.topicId(topic));
        get(admin.deleteTopics(TopicCollection.ofTopicIds(List.of(id))).all());
        long deadline = System.currentTimeMillis() + TIMEOUT_S * 1000;
        while (get(admin.listTopics().names()).contains(topic)) {
            if (System.currentTimeMillis() > deadline) {
                fail("topic still listed after deleteTopics by id");
            }
            Thread.sleep(100);
        }
        assertInstanceOf(UnknownTopicIdException.class,
                failure(admin.deleteTopics(TopicCollection.ofTopicIds(List.of(id))).all()));
    }

    /**
     * removeMembersFromConsumerGroup with no members named (remove all): the admin describes the
     * group and sends LeaveGroup v3+ with each member's id; the classic group becomes empty.
     */
    @Test
    void removeAllMembersFromClassicGroup() throws Exception {
        String topic = "admin-remove-all";
        String group = "admin-dynamic";
        get(admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all());
        Properties cp = Clients.consumer(broker, true);
        cp.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        cp.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "classic");
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(cp)) {
            c.subscribe(List.of(topic));
            long deadline = System.currentTimeMillis() + TIMEOUT_S * 1000;
            while (c.assignment().isEmpty()) {
                if (System.currentTimeMillis() > deadline) {
                    fail("the member never got its partition");
                }
                c.poll(Duration.ofMillis(100));
            }
            // A committed offset keeps the group once it has no members (Spate, unlike Kafka,
            // forgets a group with neither members nor offsets at once).
            c.commitSync(Map.of(new TopicPartition(topic, 0), new OffsetAndMetadata(0)));
            ConsumerGroupDescription before = get(admin.describeConsumerGroups(List.of(group)).all()).get(group);
            assertEquals(1, before.members().size());
            get(admin.removeMembersFromConsumerGroup(group, new RemoveMembersFromConsumerGroupOptions()).all());
            ConsumerGroupDescription after = get(admin.describeConsumerGroups(List.of(group)).all()).get(group);
            assertTrue(after.members().isEmpty(), "members after the removal: " + after.members());
            assertEquals(GroupState.EMPTY, after.groupState());
            // It was removed: closing it must not send a LeaveGroup of its own.
            c.close(CloseOptions.groupMembershipOperation(CloseOptions.GroupMembershipOperation.REMAIN_IN_GROUP));
        }
    }

    /**
     * removeMembersFromConsumerGroup (LeaveGroup v3+, by group.instance.id): a static member of a
     * classic group is removed by an admin, and the group becomes empty.
     */
    @Test
    void removeStaticMemberFromClassicGroup() throws Exception {
        String topic = "admin-remove-member";
        String group = "admin-static";
        get(admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all());
        Properties cp = Clients.consumer(broker, true);
        cp.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        cp.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, "classic");
        cp.put(ConsumerConfig.GROUP_INSTANCE_ID_CONFIG, "static-1");
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(cp)) {
            c.subscribe(List.of(topic));
            long deadline = System.currentTimeMillis() + TIMEOUT_S * 1000;
            while (c.assignment().isEmpty()) {
                if (System.currentTimeMillis() > deadline) {
                    fail("the static member never got its partition");
                }
                c.poll(Duration.ofMillis(100));
            }
            // A committed offset keeps the group once it has no members (Spate, unlike Kafka,
            // forgets a group with neither members nor offsets at once).
            c.commitSync(Map.of(new TopicPartition(topic, 0), new OffsetAndMetadata(0)));
            ConsumerGroupDescription before = get(admin.describeConsumerGroups(List.of(group)).all()).get(group);
            assertEquals(1, before.members().size());
            assertEquals(Optional.of("static-1"), before.members().iterator().next().groupInstanceId());

            get(admin.removeMembersFromConsumerGroup(group, new RemoveMembersFromConsumerGroupOptions(
                    List.of(new MemberToRemove("static-1")))).all());
            ConsumerGroupDescription after = get(admin.describeConsumerGroups(List.of(group)).all()).get(group);
            assertTrue(after.members().isEmpty(), "members after the removal: " + after.members());
            assertEquals(GroupState.EMPTY, after.groupState());
        }
    }

    @Test
    void describeClusterNamesTheOneNodeAndAClusterId() throws Exception {
        DescribeClusterResult c = admin.describeCluster();
        Collection<Node> nodes = get(c.nodes());
        assertEquals(1, nodes.size(), "nodes " + nodes);
        Node node = nodes.iterator().next();
        assertEquals(0, node.id());
        assertEquals("127.0.0.1", node.host());
        assertEquals(broker.port(), node.port());
        String clusterId = get(c.clusterId());
        assertNotNull(clusterId);
        assertFalse(clusterId.isBlank());
        // The same id on every call (it is stored in the data directory).
        assertEquals(clusterId, get(admin.describeCluster().clusterId()));
    }

    @Test
    void describeConfigsOfATopicAndTheBroker() throws Exception {
        String topic = "admin-configs";
        get(admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1)
                .configs(Map.of("cleanup.policy", "compact", "retention.ms", "3600000")))).all());
        ConfigResource res = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        Config config = get(admin.describeConfigs(List.of(res)).all()).get(res);
        ConfigEntry cleanup = config.get("cleanup.policy");
        assertNotNull(cleanup, "cleanup.policy in " + config);
        assertEquals("compact", cleanup.value());
        assertEquals(ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, cleanup.source());
        assertEquals("3600000", config.get("retention.ms").value());
        ConfigEntry max = config.get("max.message.bytes");
        assertNotNull(max, "max.message.bytes in " + config);
        assertEquals("1048588", max.value());
        assertEquals(ConfigEntry.ConfigSource.DEFAULT_CONFIG, max.source());

        // A topic created without configs: cleanup.policy is the default, delete.
        String plain = "admin-configs-plain";
        get(admin.createTopics(List.of(new NewTopic(plain, 1, (short) 1))).all());
        ConfigResource plainRes = new ConfigResource(ConfigResource.Type.TOPIC, plain);
        assertEquals("delete", get(admin.describeConfigs(List.of(plainRes)).all()).get(plainRes).get("cleanup.policy").value());

        ConfigResource brokerRes = new ConfigResource(ConfigResource.Type.BROKER, "0");
        Config brokerConfig = get(admin.describeConfigs(List.of(brokerRes)).all()).get(brokerRes);
        assertEquals("1048588", brokerConfig.get("message.max.bytes").value());
        assertEquals("0", brokerConfig.get("node.id").value());

        ConfigResource missing = new ConfigResource(ConfigResource.Type.TOPIC, "admin-no-such-topic");
        assertInstanceOf(UnknownTopicOrPartitionException.class, failure(admin.describeConfigs(List.of(missing)).all()));
    }

    /**
     * Kafka 4.0's GROUP resource (type 32): a consumer group's settings. Spate applies the
     * broker's consumer-protocol session and heartbeat to every group (it answered
     * INVALID_REQUEST before); the broker was started with their defaults, 45 s and 5 s.
     */
    @Test
    void describeConfigsOfAGroup() throws Exception {
        ConfigResource group = new ConfigResource(ConfigResource.Type.GROUP, "admin-configs-group");
        Config config = get(admin.describeConfigs(List.of(group)).all()).get(group);
        assertEquals("45000", config.get("consumer.session.timeout.ms").value(), config.toString());
        assertEquals("5000", config.get("consumer.heartbeat.interval.ms").value(), config.toString());
        assertEquals(ConfigEntry.ConfigSource.DEFAULT_CONFIG, config.get("consumer.session.timeout.ms").source());
    }

    /**
     * Every topic setting Spate knows (README's topic settings table), each with a value other
     * than its broker default.
     */
    private static final Map<String, String> TOPIC_SETTINGS = new java.util.TreeMap<>(Map.ofEntries(
            Map.entry("cleanup.policy", "compact"),
            Map.entry("compression.type", "zstd"),
            Map.entry("delete.retention.ms", "3600000"),
            Map.entry("flush.messages", "1000"),
            Map.entry("flush.ms", "2000"),
            Map.entry("follower.replication.throttled.replicas", "0:1"),
            Map.entry("index.interval.bytes", "8192"),
            Map.entry("leader.replication.throttled.replicas", "*"),
            Map.entry("max.message.bytes", "2000000"),
            Map.entry("message.timestamp.type", "LogAppendTime"),
            Map.entry("min.insync.replicas", "2"),
            Map.entry("retention.bytes", "104857600"),
            Map.entry("retention.ms", "60000"),
            Map.entry("segment.bytes", "1048576"),
            Map.entry("segment.ms", "600000"),
            Map.entry("unclean.leader.election.enable", "true")));

    private static AlterConfigOp op(String key, String value, AlterConfigOp.OpType type) {
        return new AlterConfigOp(new ConfigEntry(key, value), type);
    }

    private static void alter(ConfigResource res, AlterConfigOp... ops) throws Exception {
        get(admin.incrementalAlterConfigs(Map.of(res, List.of(ops))).all());
    }

    /** A resource's configs by name, as describeConfigs reports them. */
    private static Map<String, ConfigEntry> describe(ConfigResource res) throws Exception {
        return get(admin.describeConfigs(List.of(res)).all()).get(res).entries().stream()
                .collect(Collectors.toMap(ConfigEntry::name, Function.identity()));
    }

    /**
     * IncrementalAlterConfigs (key 44) through {@code Admin.incrementalAlterConfigs}, with
     * describeConfigs after every step: SET of each topic setting in turn (the value as set,
     * DYNAMIC_TOPIC_CONFIG, and the keys not set yet still their defaults); APPEND and SUBTRACT on
     * {@code cleanup.policy} (no duplicates; an override equal to the default is still an override);
     * DELETE of all sixteen in one call (every value back to the broker default, DEFAULT_CONFIG);
     * APPEND to a key that is not overridden starts from its default.
     * ({@code Admin.alterConfigs}, the legacy AlterConfigs, was removed from the client in Kafka
     * 4.0; the Go and Python suites send AlterConfigs.)
     */
    @Test
    void incrementalAlterConfigsRoundTripsEveryTopicSetting() throws Exception {
        String topic = "admin-alter";
        get(admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all());
        ConfigResource res = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        Map<String, ConfigEntry> defaults = describe(res);
        assertEquals(TOPIC_SETTINGS.keySet(), defaults.keySet(), "the topic settings described");
        Map<String, String> defaultValues = new HashMap<>();
        defaults.forEach((k, e) -> {
            assertEquals(ConfigEntry.ConfigSource.DEFAULT_CONFIG, e.source(), e.toString());
            assertNotEquals(TOPIC_SETTINGS.get(k), e.value(), k + ": the test's value is the default");
            defaultValues.put(k, e.value());
        });

        // SET, one key at a time.
        Map<String, String> want = new HashMap<>(defaultValues);
        Set<String> overridden = new java.util.HashSet<>();
        for (Map.Entry<String, String> s : TOPIC_SETTINGS.entrySet()) {
            alter(res, op(s.getKey(), s.getValue(), AlterConfigOp.OpType.SET));
            want.put(s.getKey(), s.getValue());
            overridden.add(s.getKey());
            Map<String, ConfigEntry> now = describe(res);
            for (String k : TOPIC_SETTINGS.keySet()) {
                ConfigEntry e = now.get(k);
                assertNotNull(e, k + " after SET " + s.getKey());
                assertEquals(want.get(k), e.value(), k + " after SET " + s.getKey());
                assertEquals(overridden.contains(k) ? ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG
                        : ConfigEntry.ConfigSource.DEFAULT_CONFIG, e.source(), k + " after SET " + s.getKey());
            }
        }

        // APPEND and SUBTRACT: cleanup.policy is "compact" now.
        alter(res, op("cleanup.policy", "delete", AlterConfigOp.OpType.APPEND));
        assertEquals("compact,delete", describe(res).get("cleanup.policy").value());
        alter(res, op("cleanup.policy", "compact", AlterConfigOp.OpType.APPEND));
        assertEquals("compact,delete", describe(res).get("cleanup.policy").value(), "APPEND of a value already there");
        alter(res, op("cleanup.policy", "compact", AlterConfigOp.OpType.SUBTRACT));
        ConfigEntry cleanup = describe(res).get("cleanup.policy");
        assertEquals("delete", cleanup.value());
        assertEquals(ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, cleanup.source(), "an override equal to the default");

        // DELETE of every key in one call: all back to the broker defaults.
        alter(res, TOPIC_SETTINGS.keySet().stream().map(k -> op(k, null, AlterConfigOp.OpType.DELETE)).toArray(AlterConfigOp[]::new));
        Map<String, ConfigEntry> after = describe(res);
        for (String k : TOPIC_SETTINGS.keySet()) {
            assertEquals(defaultValues.get(k), after.get(k).value(), k + " after DELETE");
            assertEquals(ConfigEntry.ConfigSource.DEFAULT_CONFIG, after.get(k).source(), k + " after DELETE");
        }
        // DELETE of a key that is not overridden changes nothing and is no error.
        alter(res, op("retention.ms", null, AlterConfigOp.OpType.DELETE));
        assertEquals(ConfigEntry.ConfigSource.DEFAULT_CONFIG, describe(res).get("retention.ms").source());

        // APPEND to the default list.
        alter(res, op("cleanup.policy", "compact", AlterConfigOp.OpType.APPEND));
        cleanup = describe(res).get("cleanup.policy");
        assertEquals("delete,compact", cleanup.value());
        assertEquals(ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, cleanup.source());
    }

    /**
     * IncrementalAlterConfigs refusals, each for its own resource, and validateOnly: a bad value,
     * an unknown key, APPEND to a key that is not a list, SUBTRACT emptying the list, and a value
     * below a key's minimum are InvalidConfigurationException naming the key; a missing topic
     * UnknownTopicOrPartitionException; on broker 0 a key read at start only (num.partitions) and
     * on the cluster-wide broker default an unknown key InvalidConfigurationException with the
     * broker's message; {@code __consumer_offsets} InvalidRequestException. A refused resource
     * changes nothing (not even its valid operations), and refusals in one call do not stop the
     * other resources of that call. validateOnly answers as a change would and changes nothing.
     */
    @Test
    void incrementalAlterConfigsRefusalsAndValidateOnly() throws Exception {
        String topic = "admin-alter-errors";
        String other = "admin-alter-errors-2";
        get(admin.createTopics(List.of(
                new NewTopic(topic, 1, (short) 1).configs(Map.of("retention.ms", "3600000", "cleanup.policy", "compact")),
                new NewTopic(other, 1, (short) 1))).all());
        ConfigResource res = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        ConfigResource otherRes = new ConfigResource(ConfigResource.Type.TOPIC, other);

        record Refusal(String what, AlterConfigOp[] ops, String key) {}
        List<Refusal> invalid = List.of(
                new Refusal("a bad value", new AlterConfigOp[] {op("retention.ms", "soon", AlterConfigOp.OpType.SET)}, "retention.ms"),
                new Refusal("an unknown key", new AlterConfigOp[] {op("no.such.key", "1", AlterConfigOp.OpType.SET)}, "no.such.key"),
                new Refusal("a Kafka broker key on a topic", new AlterConfigOp[] {op("log.retention.ms", "1", AlterConfigOp.OpType.SET)},
                        "log.retention.ms"),
                new Refusal("APPEND to a key that is not a list", new AlterConfigOp[] {op("segment.bytes", "1", AlterConfigOp.OpType.APPEND)},
                        "segment.bytes"),
                new Refusal("SUBTRACT emptying the list", new AlterConfigOp[] {op("cleanup.policy", "compact", AlterConfigOp.OpType.SUBTRACT)},
                        "cleanup.policy"),
                new Refusal("a value below the minimum", new AlterConfigOp[] {op("segment.bytes", "1", AlterConfigOp.OpType.SET)}, "segment.bytes"),
                new Refusal("a bad timestamp type", new AlterConfigOp[] {op("message.timestamp.type", "Now", AlterConfigOp.OpType.SET)},
                        "message.timestamp.type"),
                new Refusal("a good SET beside a bad one", new AlterConfigOp[] {op("retention.ms", "1000", AlterConfigOp.OpType.SET),
                        op("max.message.bytes", "-5", AlterConfigOp.OpType.SET)}, "max.message.bytes"));
        for (Refusal r : invalid) {
            for (boolean validateOnly : List.of(false, true)) {
                String what = r.what() + (validateOnly ? " (validateOnly)" : "");
                Throwable cause = failure(admin.incrementalAlterConfigs(Map.of(res, List.of(r.ops())),
                        new AlterConfigsOptions().validateOnly(validateOnly)).all());
                assertInstanceOf(InvalidConfigurationException.class, cause, what + ": " + cause);
                assertTrue(cause.getMessage().contains(r.key()), what + ": the message names " + r.key() + ": " + cause.getMessage());
            }
        }
        Map<String, ConfigEntry> now = describe(res);
        assertEquals("3600000", now.get("retention.ms").value(), "after the refusals");
        assertEquals("compact", now.get("cleanup.policy").value(), "after the refusals");
        assertEquals(ConfigEntry.ConfigSource.DEFAULT_CONFIG, now.get("segment.bytes").source(), "after the refusals");
        assertEquals(ConfigEntry.ConfigSource.DEFAULT_CONFIG, now.get("max.message.bytes").source(), "after the refusals");

        // One call, five resources: each answered on its own.
        ConfigResource missing = new ConfigResource(ConfigResource.Type.TOPIC, "admin-alter-no-such-topic");
        ConfigResource broker0 = new ConfigResource(ConfigResource.Type.BROKER, "0");
        ConfigResource brokerDefault = new ConfigResource(ConfigResource.Type.BROKER, "");
        ConfigResource offsets = new ConfigResource(ConfigResource.Type.TOPIC, "__consumer_offsets");
        Map<ConfigResource, Collection<AlterConfigOp>> mixed = new java.util.LinkedHashMap<>();
        mixed.put(otherRes, List.of(op("retention.ms", "120000", AlterConfigOp.OpType.SET)));
        mixed.put(missing, List.of(op("retention.ms", "120000", AlterConfigOp.OpType.SET)));
        mixed.put(broker0, List.of(op("num.partitions", "3", AlterConfigOp.OpType.SET)));
        mixed.put(brokerDefault, List.of(op("no.such.broker.key", "1", AlterConfigOp.OpType.SET)));
        mixed.put(offsets, List.of(op("cleanup.policy", "delete", AlterConfigOp.OpType.SET)));
        Map<ConfigResource, KafkaFuture<Void>> answers = admin.incrementalAlterConfigs(mixed).values();
        get(answers.get(otherRes));
        Throwable cause = failure(answers.get(missing));
        assertInstanceOf(UnknownTopicOrPartitionException.class, cause, "a missing topic: " + cause);
        cause = failure(answers.get(broker0));
        assertInstanceOf(InvalidConfigurationException.class, cause, "num.partitions on broker 0: " + cause);
        assertEquals("num.partitions cannot be changed at run time (it is read at start)", cause.getMessage());
        cause = failure(answers.get(brokerDefault));
        assertInstanceOf(InvalidConfigurationException.class, cause, "an unknown key on the broker default: " + cause);
        assertEquals("unknown broker config \"no.such.broker.key\"", cause.getMessage());
        assertEquals("1", describe(broker0).get("num.partitions").value(), "num.partitions after its refusal");
        cause = failure(answers.get(offsets));
        assertInstanceOf(InvalidRequestException.class, cause, "__consumer_offsets: " + cause);
        assertTrue(cause.getMessage().contains("__consumer_offsets"), cause.getMessage());
        ConfigEntry changed = describe(otherRes).get("retention.ms");
        assertEquals("120000", changed.value());
        assertEquals(ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, changed.source());

        // validateOnly: accepted, nothing changes (SET, DELETE, APPEND alike).
        get(admin.incrementalAlterConfigs(Map.of(res, List.of(
                        op("retention.ms", "60000", AlterConfigOp.OpType.SET),
                        op("cleanup.policy", "delete", AlterConfigOp.OpType.APPEND),
                        op("segment.bytes", "1048576", AlterConfigOp.OpType.SET))),
                new AlterConfigsOptions().validateOnly(true)).all());
        get(admin.incrementalAlterConfigs(Map.of(otherRes, List.of(op("retention.ms", null, AlterConfigOp.OpType.DELETE))),
                new AlterConfigsOptions().validateOnly(true)).all());
        now = describe(res);
        assertEquals("3600000", now.get("retention.ms").value(), "after validateOnly");
        assertEquals("compact", now.get("cleanup.policy").value(), "after validateOnly");
        assertEquals(ConfigEntry.ConfigSource.DEFAULT_CONFIG, now.get("segment.bytes").source(), "after validateOnly");
        assertEquals("120000", describe(otherRes).get("retention.ms").value(), "after a validateOnly DELETE");
    }

    /**
     * An altered setting reaches the topic's open partition at once: after a record went to it,
     * SET {@code max.message.bytes=2000} makes a 3000-byte record fail with
     * RecordTooLargeException, and SET {@code message.timestamp.type=LogAppendTime} makes the
     * broker stamp a record sent with timestamp 1000; DELETE of both lets the same record in, with
     * its own timestamp.
     */
    @Test
    void alteredTopicSettingsApplyToTheOpenPartition() throws Exception {
        String topic = "admin-alter-applies";
        get(admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all());
        ConfigResource res = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        Properties pp = Clients.producer(broker, false);
        pp.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, "none");
        byte[] big = new byte[3000];
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(pp)) {
            assertEquals(0, producer.send(new ProducerRecord<>(topic, 0, null, big)).get(TIMEOUT_S, TimeUnit.SECONDS).offset());

            alter(res, op("max.message.bytes", "2000", AlterConfigOp.OpType.SET),
                    op("message.timestamp.type", "LogAppendTime", AlterConfigOp.OpType.SET));
            ExecutionException e = assertThrows(ExecutionException.class,
                    () -> producer.send(new ProducerRecord<>(topic, 0, null, big)).get(TIMEOUT_S, TimeUnit.SECONDS));
            assertInstanceOf(RecordTooLargeException.class, e.getCause(), "cause: " + e.getCause());
            long before = System.currentTimeMillis();
            RecordMetadata stamped = producer.send(new ProducerRecord<>(topic, 0, 1000L, null, new byte[10])).get(TIMEOUT_S, TimeUnit.SECONDS);
            assertEquals(1, stamped.offset(), "the refused record took no offset");
            assertTrue(stamped.timestamp() >= before - 1000, "LogAppendTime: the broker's stamp, got " + stamped.timestamp());

            alter(res, op("max.message.bytes", null, AlterConfigOp.OpType.DELETE),
                    op("message.timestamp.type", null, AlterConfigOp.OpType.DELETE));
            RecordMetadata back = producer.send(new ProducerRecord<>(topic, 0, 1000L, null, big)).get(TIMEOUT_S, TimeUnit.SECONDS);
            assertEquals(2, back.offset());
            assertEquals(1000L, back.timestamp(), "CreateTime again");
        }
    }

    /** A resource's configs by name, as describeConfigs reports them with their synonyms. */
    private static Map<String, ConfigEntry> describeWithSynonyms(ConfigResource res) throws Exception {
        return get(admin.describeConfigs(List.of(res), new DescribeConfigsOptions().includeSynonyms(true)).all()).get(res)
                .entries().stream().collect(Collectors.toMap(ConfigEntry::name, Function.identity()));
    }

    /** Each synonym as {@code SOURCE:name=value}, in the broker's order (the one that applies first). */
    private static List<String> synonyms(ConfigEntry e) {
        return e.synonyms().stream().map(s -> s.source() + ":" + s.name() + "=" + s.value()).toList();
    }

    /**
     * Broker configs changed at run time (Kafka's dynamic broker configs), through
     * {@code incrementalAlterConfigs} on the broker resource "" (every broker) and "0" (this
     * one), each step read back with {@code describeConfigs(includeSynonyms)} of broker 0, of the
     * broker default and of two topics (one overriding retention.ms):
     * <ul>
     * <li>before: log.retention.ms DEFAULT_CONFIG, not read-only; num.partitions read-only; the
     * broker default describes nothing;
     * <li>SET for every broker: DYNAMIC_DEFAULT_BROKER_CONFIG on broker 0, on the broker default
     * (the only config it describes) and on the plain topic, whose synonyms are
     * [DYNAMIC_DEFAULT_BROKER_CONFIG, DEFAULT_CONFIG] of log.retention.ms; the other topic keeps
     * DYNAMIC_TOPIC_CONFIG and lists its own value first;
     * <li>validateOnly SET on broker 0 changes nothing; SET on broker 0 wins:
     * DYNAMIC_BROKER_CONFIG, synonyms [DYNAMIC_BROKER_CONFIG, DYNAMIC_DEFAULT_BROKER_CONFIG,
     * DEFAULT_CONFIG]; the broker default still describes its own value only;
     * <li>refusals (also validateOnly), nothing changed: a key read at start, an unknown key, a
     * bad value and a value below the minimum are InvalidConfigurationException with the broker's
     * message naming the key;
     * <li>an open partition takes a change at once: message.max.bytes=2000 for every broker makes
     * a 3000-byte record to the plain topic fail with RecordTooLargeException (the topic with its
     * own max.message.bytes takes it), and DELETE lets it in again;
     * <li>DELETE on broker 0 uncovers the cluster-wide value, DELETE on "" the default.
     * </ul>
     * A finally block deletes every key it set from both layers, so the other tests of this class
     * (one broker) see the defaults.
     */
    @Test
    void brokerConfigsChangeAtRunTimeWithSourcesAndSynonyms() throws Exception {
        String plain = "admin-broker-dynamic";
        String own = "admin-broker-dynamic-own";
        get(admin.createTopics(List.of(new NewTopic(plain, 1, (short) 1),
                new NewTopic(own, 1, (short) 1).configs(Map.of("retention.ms", "3600000", "max.message.bytes", "100000")))).all());
        ConfigResource broker0 = new ConfigResource(ConfigResource.Type.BROKER, "0");
        ConfigResource every = new ConfigResource(ConfigResource.Type.BROKER, "");
        ConfigResource plainRes = new ConfigResource(ConfigResource.Type.TOPIC, plain);
        ConfigResource ownRes = new ConfigResource(ConfigResource.Type.TOPIC, own);
        String key = "log.retention.ms";
        String defaultMs = "604800000";
        String clusterMs = "1209600000"; // 14 days and 30 days: longer than the default, so
        String nodeMs = "2592000000"; // nothing of the other tests is deleted sooner meanwhile
        String defaultLayer = "DEFAULT_CONFIG:" + key + "=" + defaultMs;
        String clusterLayer = "DYNAMIC_DEFAULT_BROKER_CONFIG:" + key + "=" + clusterMs;
        String nodeLayer = "DYNAMIC_BROKER_CONFIG:" + key + "=" + nodeMs;

        record Layers(String value, ConfigEntry.ConfigSource source, List<String> synonyms) {}
        java.util.function.BiConsumer<String, Layers> expect = (after, want) -> {
            try {
                ConfigEntry b = describeWithSynonyms(broker0).get(key);
                assertEquals(want, new Layers(b.value(), b.source(), synonyms(b)), "broker 0 " + key + " after " + after);
                assertFalse(b.isReadOnly(), key + " is dynamic");
                ConfigEntry t = describeWithSynonyms(plainRes).get("retention.ms");
                assertEquals(want, new Layers(t.value(), t.source(), synonyms(t)), plain + " retention.ms after " + after);
                ConfigEntry o = describeWithSynonyms(ownRes).get("retention.ms");
                List<String> ownLayers = new java.util.ArrayList<>(List.of("DYNAMIC_TOPIC_CONFIG:retention.ms=3600000"));
                ownLayers.addAll(want.synonyms());
                assertEquals(new Layers("3600000", ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG, ownLayers),
                        new Layers(o.value(), o.source(), synonyms(o)), own + " retention.ms after " + after);
            } catch (Exception e) {
                throw new AssertionError(after + ": " + e, e);
            }
        };

        expect.accept("nothing", new Layers(defaultMs, ConfigEntry.ConfigSource.DEFAULT_CONFIG, List.of(defaultLayer)));
        ConfigEntry partitions = describeWithSynonyms(broker0).get("num.partitions");
        assertTrue(partitions.isReadOnly(), "num.partitions is read-only: " + partitions);
        assertEquals(ConfigEntry.ConfigSource.DEFAULT_CONFIG, partitions.source());
        assertEquals(Map.of(), describeWithSynonyms(every), "the broker default before any change");
        Properties pp = Clients.producer(broker, false);
        pp.put(ProducerConfig.COMPRESSION_TYPE_CONFIG, "none");
        byte[] big = new byte[3000];
        try (KafkaProducer<byte[], byte[]> producer = new KafkaProducer<>(pp)) {
            assertEquals(0, producer.send(new ProducerRecord<>(plain, 0, null, big)).get(TIMEOUT_S, TimeUnit.SECONDS).offset());

            alter(every, op(key, clusterMs, AlterConfigOp.OpType.SET));
            expect.accept("SET for every broker", new Layers(clusterMs, ConfigEntry.ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG,
                    List.of(clusterLayer, defaultLayer)));
            Map<String, ConfigEntry> cluster = describeWithSynonyms(every);
            assertEquals(Set.of(key), cluster.keySet(), "the broker default describes its dynamic configs only");
            assertEquals(new Layers(clusterMs, ConfigEntry.ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG, List.of(clusterLayer)),
                    new Layers(cluster.get(key).value(), cluster.get(key).source(), synonyms(cluster.get(key))));

            get(admin.incrementalAlterConfigs(Map.of(broker0, List.of(op(key, nodeMs, AlterConfigOp.OpType.SET))),
                    new AlterConfigsOptions().validateOnly(true)).all());
            expect.accept("validateOnly SET on broker 0", new Layers(clusterMs,
                    ConfigEntry.ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG, List.of(clusterLayer, defaultLayer)));
            alter(broker0, op(key, nodeMs, AlterConfigOp.OpType.SET));
            Layers nodeWins = new Layers(nodeMs, ConfigEntry.ConfigSource.DYNAMIC_BROKER_CONFIG,
                    List.of(nodeLayer, clusterLayer, defaultLayer));
            expect.accept("SET on broker 0", nodeWins);
            assertEquals(clusterMs, describeWithSynonyms(every).get(key).value(), "the broker default after SET on broker 0");

            record Refusal(ConfigResource res, AlterConfigOp op, String message) {}
            for (Refusal r : List.of(
                    new Refusal(broker0, op("num.partitions", "3", AlterConfigOp.OpType.SET),
                            "num.partitions cannot be changed at run time (it is read at start)"),
                    new Refusal(every, op("auto.create.topics.enable", "false", AlterConfigOp.OpType.SET),
                            "auto.create.topics.enable cannot be changed at run time (it is read at start)"),
                    new Refusal(every, op("no.such.broker.key", "1", AlterConfigOp.OpType.SET),
                            "unknown broker config \"no.such.broker.key\""),
                    new Refusal(broker0, op(key, "soon", AlterConfigOp.OpType.SET), key + ": "),
                    new Refusal(every, op("log.segment.bytes", "1", AlterConfigOp.OpType.SET), "log.segment.bytes: "))) {
                for (boolean validateOnly : List.of(false, true)) {
                    String what = r.res() + " " + r.op().configEntry().name() + (validateOnly ? " (validateOnly)" : "");
                    Throwable cause = failure(admin.incrementalAlterConfigs(Map.of(r.res(), List.of(r.op())),
                            new AlterConfigsOptions().validateOnly(validateOnly)).all());
                    assertInstanceOf(InvalidConfigurationException.class, cause, what + ": " + cause);
                    assertTrue(cause.getMessage().startsWith(r.message()), what + ": " + cause.getMessage());
                }
            }
            expect.accept("the refusals", nodeWins);
            assertEquals(Set.of(key), describeWithSynonyms(every).keySet(), "the broker default after the refusals");
            assertEquals("1", describeWithSynonyms(broker0).get("num.partitions").value());

            // The open partition takes a broker-wide message.max.bytes at once.
            alter(every, op("message.max.bytes", "2000", AlterConfigOp.OpType.SET));
            ConfigEntry max = describeWithSynonyms(plainRes).get("max.message.bytes");
            assertEquals(List.of("DYNAMIC_DEFAULT_BROKER_CONFIG:message.max.bytes=2000", "DEFAULT_CONFIG:message.max.bytes=1048588"),
                    synonyms(max), "max.message.bytes follows message.max.bytes");
            ExecutionException e = assertThrows(ExecutionException.class,
                    () -> producer.send(new ProducerRecord<>(plain, 0, null, big)).get(TIMEOUT_S, TimeUnit.SECONDS));
            assertInstanceOf(RecordTooLargeException.class, e.getCause(), "cause: " + e.getCause());
            assertEquals(0, producer.send(new ProducerRecord<>(own, 0, null, big)).get(TIMEOUT_S, TimeUnit.SECONDS).offset(),
                    "a topic with its own max.message.bytes");
            alter(every, op("message.max.bytes", null, AlterConfigOp.OpType.DELETE));
            assertEquals(1, producer.send(new ProducerRecord<>(plain, 0, null, big)).get(TIMEOUT_S, TimeUnit.SECONDS).offset(),
                    "the refused record took no offset");

            alter(broker0, op(key, null, AlterConfigOp.OpType.DELETE));
            expect.accept("DELETE on broker 0", new Layers(clusterMs, ConfigEntry.ConfigSource.DYNAMIC_DEFAULT_BROKER_CONFIG,
                    List.of(clusterLayer, defaultLayer)));
            alter(every, op(key, null, AlterConfigOp.OpType.DELETE));
            expect.accept("DELETE for every broker", new Layers(defaultMs, ConfigEntry.ConfigSource.DEFAULT_CONFIG,
                    List.of(defaultLayer)));
            assertEquals(Map.of(), describeWithSynonyms(every), "the broker default after DELETE");
        } finally {
            List<AlterConfigOp> restore = Stream.of(key, "message.max.bytes", "log.segment.bytes")
                    .map(k -> op(k, null, AlterConfigOp.OpType.DELETE)).toList();
            get(admin.incrementalAlterConfigs(Map.of(broker0, restore, every, restore)).all());
        }
    }

    @Test
    void listOffsetsEarliestLatestMaxTimestampAndByTime() throws Exception {
        String topic = "admin-offsets";
        get(admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all());
        TopicPartition tp = new TopicPartition(topic, 0);
        long base = 1_700_000_000_000L;
        long[] ts = {base + 1000, base + 5000, base + 2000, base + 5000, base + 3000};
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(Clients.producer(broker, true))) {
            for (int i = 0; i < ts.length; i++) {
                producer.send(new ProducerRecord<>(topic, 0, ts[i], "k" + i, "v" + i));
            }
            producer.flush();
        }
        ListOffsetsResultInfo earliest = get(admin.listOffsets(Map.of(tp, OffsetSpec.earliest())).partitionResult(tp));
        ListOffsetsResultInfo latest = get(admin.listOffsets(Map.of(tp, OffsetSpec.latest())).partitionResult(tp));
        ListOffsetsResultInfo maxTs = get(admin.listOffsets(Map.of(tp, OffsetSpec.maxTimestamp())).partitionResult(tp));
        ListOffsetsResultInfo earliestLocal = get(admin.listOffsets(Map.of(tp, OffsetSpec.earliestLocal())).partitionResult(tp));
        ListOffsetsResultInfo byTime = get(admin.listOffsets(Map.of(tp, OffsetSpec.forTimestamp(base + 2500))).partitionResult(tp));
        assertEquals(0, earliest.offset());
        assertEquals(5, latest.offset());
        assertEquals(0, earliestLocal.offset(), "earliest-local (-4) on a broker without tiered storage");
        assertEquals(1, maxTs.offset(), "the first record holding the largest timestamp");
        assertEquals(base + 5000, maxTs.timestamp());
        assertEquals(1, byTime.offset(), "the first offset whose timestamp is >= base+2500");
        assertEquals(base + 5000, byTime.timestamp());
    }

    /**
     * deleteRecords (DeleteRecords v2) on three partitions of ten records each (offsets 0-9,
     * stamped base+i s): beforeOffset(4) answers low watermark 4, beforeOffset(-1) (the high
     * watermark, as kafka-delete-records.sh documents) 10; ListOffsets earliest (and
     * earliest-local) then give the new start, latest is unchanged. An offset at or below the
     * start changes nothing (the answer is the start). Past the high watermark:
     * OffsetOutOfRangeException for that partition, while another partition of the same call
     * moves. A lookup by timestamp never answers an offset below the start. A consumer with
     * auto.offset.reset=earliest reads from the start; seeking below it, the broker's
     * OFFSET_OUT_OF_RANGE makes it reset to the start again; with auto.offset.reset=none the
     * same seek fails with OffsetOutOfRangeException naming the partition and offset. A
     * partition moved to its end goes on taking records after it. The internal
     * __consumer_offsets is refused (InvalidTopicException).
     */
    @Test
    void deleteRecordsMovesTheLogStartOffset() throws Exception {
        String topic = "admin-delete-records";
        get(admin.createTopics(List.of(new NewTopic(topic, 3, (short) 1))).all());
        TopicPartition tp0 = new TopicPartition(topic, 0);
        TopicPartition tp1 = new TopicPartition(topic, 1);
        TopicPartition tp2 = new TopicPartition(topic, 2);
        List<TopicPartition> tps = List.of(tp0, tp1, tp2);
        long base = System.currentTimeMillis() - 600_000;
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(Clients.producer(broker, true))) {
            for (int i = 0; i < 10; i++) {
                for (TopicPartition tp : tps) {
                    producer.send(new ProducerRecord<>(topic, tp.partition(), base + i * 1000L, "k" + i, tp.partition() + "-" + i));
                }
            }
            producer.flush();
        }
        assertEquals(Map.of(tp0, 10L, tp1, 10L, tp2, 10L), offsetsOf(tps, OffsetSpec.latest()));

        // beforeOffset(4) and beforeOffset(-1): the answers are the new starts.
        Map<TopicPartition, KafkaFuture<DeletedRecords>> low = admin.deleteRecords(Map.of(
                tp0, RecordsToDelete.beforeOffset(4), tp1, RecordsToDelete.beforeOffset(-1))).lowWatermarks();
        assertEquals(4, get(low.get(tp0)).lowWatermark(), "low watermark after beforeOffset(4)");
        assertEquals(10, get(low.get(tp1)).lowWatermark(), "low watermark after beforeOffset(-1) (the high watermark)");
        assertEquals(Map.of(tp0, 4L, tp1, 10L, tp2, 0L), offsetsOf(tps, OffsetSpec.earliest()), "earliest");
        assertEquals(Map.of(tp0, 4L, tp1, 10L, tp2, 0L), offsetsOf(tps, OffsetSpec.earliestLocal()), "earliest-local");
        assertEquals(Map.of(tp0, 10L, tp1, 10L, tp2, 10L), offsetsOf(tps, OffsetSpec.latest()), "latest");

        // At or below the start: nothing changes, the answer is the start.
        for (long before : new long[] {2, 4, 0}) {
            DeletedRecords d = get(admin.deleteRecords(Map.of(tp0, RecordsToDelete.beforeOffset(before)))
                    .lowWatermarks().get(tp0));
            assertEquals(4, d.lowWatermark(), "low watermark after beforeOffset(" + before + ") with the start at 4");
        }

        // Past the high watermark: OFFSET_OUT_OF_RANGE for that partition only.
        Map<TopicPartition, KafkaFuture<DeletedRecords>> mixed = admin.deleteRecords(Map.of(
                tp0, RecordsToDelete.beforeOffset(6), tp2, RecordsToDelete.beforeOffset(11))).lowWatermarks();
        assertEquals(6, get(mixed.get(tp0)).lowWatermark(), "low watermark of the partition asked for 6");
        assertInstanceOf(org.apache.kafka.common.errors.OffsetOutOfRangeException.class, failure(mixed.get(tp2)),
                "beforeOffset(11) of a partition ending at 10");
        assertEquals(Map.of(tp0, 6L, tp1, 10L, tp2, 0L), offsetsOf(tps, OffsetSpec.earliest()), "earliest");

        // A lookup by timestamp: the first record at or after it that is still in the log.
        Map<TopicPartition, Long> byTime = offsetsOf(tps, OffsetSpec.forTimestamp(base - 1));
        assertEquals(6L, byTime.get(tp0), "by a timestamp before every record, with the start at 6");
        assertEquals(0L, byTime.get(tp2), "by a timestamp before every record, nothing deleted");
        assertEquals(5L, offsetsOf(List.of(tp2), OffsetSpec.forTimestamp(base + 5000)).get(tp2));
        assertEquals(7L, offsetsOf(List.of(tp0), OffsetSpec.forTimestamp(base + 7000)).get(tp0));

        // The partition emptied to its end takes new records after it.
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(Clients.producer(broker, true))) {
            assertEquals(10, producer.send(new ProducerRecord<>(topic, 1, "k10", "1-10")).get(TIMEOUT_S, TimeUnit.SECONDS).offset());
        }
        assertEquals(Map.of(tp0, 6L, tp1, 10L, tp2, 0L), offsetsOf(tps, OffsetSpec.earliest()), "earliest after the produce");

        // auto.offset.reset=earliest: reading starts at each start; a seek below it resets there.
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(Clients.consumer(broker, true))) {
            c.assign(tps);
            Map<TopicPartition, List<String>> read = readByPartition(c, 4 + 1 + 10);
            assertEquals(List.of("6:0-6", "7:0-7", "8:0-8", "9:0-9"), read.get(tp0), "partition 0 from its start");
            assertEquals(List.of("10:1-10"), read.get(tp1), "partition 1 from its start");
            assertEquals(10, read.get(tp2).size(), "partition 2 (nothing deleted): " + read.get(tp2));
            assertEquals("0:2-0", read.get(tp2).get(0));

            c.seek(tp0, 1);
            Map<TopicPartition, List<String>> again = readByPartition(c, 4);
            assertEquals(List.of("6:0-6", "7:0-7", "8:0-8", "9:0-9"), again.get(tp0),
                    "after a seek to 1, below the start 6 (OFFSET_OUT_OF_RANGE, reset to earliest)");
            assertEquals(10, c.position(tp0));
        }

        // auto.offset.reset=none: the same seek fails, naming the partition and offset.
        Properties none = Clients.consumer(broker, true);
        none.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "none");
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(none)) {
            c.assign(List.of(tp0));
            c.seek(tp0, 1);
            long deadline = System.currentTimeMillis() + TIMEOUT_S * 1000;
            org.apache.kafka.clients.consumer.OffsetOutOfRangeException oor = null;
            while (oor == null) {
                if (System.currentTimeMillis() > deadline) {
                    fail("no OffsetOutOfRangeException within " + TIMEOUT_S + " s for a fetch at 1, below the start 6");
                }
                try {
                    c.poll(Duration.ofMillis(200)).forEach(r -> fail("read " + r.offset() + " at a position below the start"));
                } catch (org.apache.kafka.clients.consumer.OffsetOutOfRangeException e) {
                    oor = e;
                }
            }
            assertEquals(Map.of(tp0, 1L), oor.offsetOutOfRangePartitions());
        }

        // The groups' own topic is not the admin's to trim.
        assertInstanceOf(InvalidTopicException.class, failure(admin.deleteRecords(Map.of(
                new TopicPartition("__consumer_offsets", 0), RecordsToDelete.beforeOffset(-1))).all()),
                "deleteRecords of __consumer_offsets");
    }

    /**
     * The producer id and epoch a KafkaProducer got from InitProducerId. The client does not
     * publish them: kafka-clients 4.1.1 keeps them in its private TransactionManager, read here
     * by reflection.
     */
    private static ProducerIdAndEpoch producerIdAndEpoch(KafkaProducer<?, ?> p) throws Exception {
        java.lang.reflect.Field f = KafkaProducer.class.getDeclaredField("transactionManager");
        f.setAccessible(true);
        Object tm = f.get(p);
        assertNotNull(tm, "the producer is not idempotent");
        java.lang.reflect.Method m = tm.getClass().getDeclaredMethod("producerIdAndEpoch");
        m.setAccessible(true);
        return (ProducerIdAndEpoch) m.invoke(tm);
    }

    /** Sends each value to the partition and waits for every acknowledgement. */
    private static void sendAll(KafkaProducer<String, String> p, TopicPartition tp, String... values) throws Exception {
        List<java.util.concurrent.Future<RecordMetadata>> acks = new java.util.ArrayList<>();
        for (String v : values) {
            acks.add(p.send(new ProducerRecord<>(tp.topic(), tp.partition(), null, v)));
        }
        p.flush();
        for (var a : acks) {
            a.get(TIMEOUT_S, TimeUnit.SECONDS);
        }
    }

    private static String[] values(String prefix, int n) {
        return java.util.stream.IntStream.range(0, n).mapToObj(i -> prefix + "-" + i).toArray(String[]::new);
    }

    /** One producer as describeProducers reports it, for comparing whole lists. */
    private static String show(ProducerState s) {
        return "id " + s.producerId() + " epoch " + s.producerEpoch() + " lastSequence " + s.lastSequence()
                + " coordinatorEpoch " + s.coordinatorEpoch() + " txnStart " + s.currentTransactionStartOffset();
    }

    /**
     * describeProducers (DescribeProducers, key 61) lists each partition's idempotent producers.
     * Two producers with the client's defaults (idempotent, acks=all) and one with idempotence off
     * write to partition 0 of a two-partition topic, the first also to partition 1: partition 0
     * lists exactly the two idempotent ones, sorted by id, each with the producer id and epoch it
     * got from InitProducerId, its last sequence (records sent - 1, counted per partition), no
     * coordinator epoch and no open transaction (the client maps the broker's -1 to empty), and
     * a last timestamp within its last send (the first producer's last send starts 300 ms after
     * its earlier ones, so it is the last write's time); partition 1 lists only the first
     * producer, with its own sequence and an earlier timestamp. A partition nobody wrote to lists
     * none. Asked of broker 0 directly ({@code brokerId(0)}), the same answer. A partition that
     * does not exist: the client treats the broker's UNKNOWN_TOPIC_OR_PARTITION as retriable
     * (DescribeProducersHandler: "Will retry later", and its Metadata lookup does the same), so
     * that partition fails with TimeoutException at the call's deadline, as against Kafka, while
     * the existing partition asked in the same call completes; the broker's own
     * UNKNOWN_TOPIC_OR_PARTITION answer is checked by the Go suite with a raw request.
     */
    @Test
    void describeProducersListsEachIdempotentProducer() throws Exception {
        String topic = "admin-producers";
        get(admin.createTopics(List.of(new NewTopic(topic, 2, (short) 1))).all());
        TopicPartition tp0 = new TopicPartition(topic, 0);
        TopicPartition tp1 = new TopicPartition(topic, 1);
        assertEquals(List.of(), get(admin.describeProducers(List.of(tp0)).partitionResult(tp0)).activeProducers(),
                "a partition nobody wrote to");

        long start = System.currentTimeMillis();
        ProducerIdAndEpoch first;
        ProducerIdAndEpoch second;
        long firstBefore;
        long firstAfter;
        long secondBefore;
        long secondAfter;
        try (KafkaProducer<String, String> p = new KafkaProducer<>(Clients.producer(broker, true))) {
            sendAll(p, tp0, values("first", 6));
            sendAll(p, tp1, values("first-p1", 3));
            Thread.sleep(300);
            firstBefore = System.currentTimeMillis();
            sendAll(p, tp0, values("first-more", 4));
            firstAfter = System.currentTimeMillis();
            first = producerIdAndEpoch(p);
        }
        try (KafkaProducer<String, String> p = new KafkaProducer<>(Clients.producer(broker, true))) {
            secondBefore = System.currentTimeMillis();
            sendAll(p, tp0, values("second", 5));
            secondAfter = System.currentTimeMillis();
            second = producerIdAndEpoch(p);
        }
        Properties plain = Clients.producer(broker, true);
        plain.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, false);
        try (KafkaProducer<String, String> p = new KafkaProducer<>(plain)) {
            sendAll(p, tp0, values("plain", 2));
        }
        assertTrue(first.isValid() && second.isValid(), first + ", " + second);
        assertNotEquals(first.producerId, second.producerId, "two producers, one id");

        for (DescribeProducersOptions options : List.of(new DescribeProducersOptions(), new DescribeProducersOptions().brokerId(0))) {
            Map<TopicPartition, DescribeProducersResult.PartitionProducerState> all =
                    get(admin.describeProducers(List.of(tp0, tp1), options).all());
            List<ProducerState> on0 = all.get(tp0).activeProducers().stream()
                    .sorted(java.util.Comparator.comparingLong(ProducerState::producerId)).toList();
            List<ProducerState> on1 = all.get(tp1).activeProducers();
            String where = options + ": partition 0 " + on0.stream().map(AdminClientTest::show).toList()
                    + ", partition 1 " + on1.stream().map(AdminClientTest::show).toList();
            List<ProducerIdAndEpoch> ids = first.producerId < second.producerId ? List.of(first, second) : List.of(second, first);
            assertEquals(ids.stream().map(x -> x.producerId).toList(), on0.stream().map(ProducerState::producerId).toList(), where);
            assertEquals(1, on1.size(), where);
            Map<Long, ProducerState> byId0 = on0.stream().collect(Collectors.toMap(ProducerState::producerId, Function.identity()));
            ProducerState f0 = byId0.get(first.producerId);
            ProducerState s0 = byId0.get(second.producerId);
            ProducerState f1 = on1.get(0);
            assertEquals(first.producerId, f1.producerId(), where);
            assertEquals(List.of(first.epoch, first.epoch, second.epoch),
                    List.of((short) f0.producerEpoch(), (short) f1.producerEpoch(), (short) s0.producerEpoch()), where);
            assertEquals(List.of(9, 2, 4), List.of(f0.lastSequence(), f1.lastSequence(), s0.lastSequence()), where);
            for (ProducerState s : List.of(f0, f1, s0)) {
                assertEquals(java.util.OptionalInt.empty(), s.coordinatorEpoch(), where);
                assertEquals(java.util.OptionalLong.empty(), s.currentTransactionStartOffset(), where);
            }
            assertTrue(firstBefore <= f0.lastTimestamp() && f0.lastTimestamp() <= firstAfter,
                    "first producer's last write " + f0.lastTimestamp() + ", want within [" + firstBefore + ", " + firstAfter + "]; " + where);
            assertTrue(start <= f1.lastTimestamp() && f1.lastTimestamp() < firstBefore,
                    "first producer's write to partition 1 " + f1.lastTimestamp() + ", want within [" + start + ", " + firstBefore + "); " + where);
            assertTrue(secondBefore <= s0.lastTimestamp() && s0.lastTimestamp() <= secondAfter,
                    "second producer's last write " + s0.lastTimestamp() + ", want within [" + secondBefore + ", " + secondAfter + "]; " + where);
        }

        TopicPartition missing = new TopicPartition(topic, 7);
        DescribeProducersResult r = admin.describeProducers(List.of(tp0, missing),
                new DescribeProducersOptions().brokerId(0).timeoutMs(2_000));
        assertEquals(2, get(r.partitionResult(tp0)).activeProducers().size(), "the existing partition beside a missing one");
        Throwable cause = failure(r.partitionResult(missing));
        assertInstanceOf(org.apache.kafka.common.errors.TimeoutException.class, cause, missing + ": " + cause);
    }

    /**
     * deleteRecords of a partition that does not exist. The Java client looks each partition's
     * leader up with Metadata first and treats UNKNOWN_TOPIC_OR_PARTITION there as retriable, so
     * it never sends DeleteRecords: the call fails with TimeoutException at its deadline (as it
     * does against Kafka). The broker's own answer (UNKNOWN_TOPIC_OR_PARTITION) is checked with
     * raw requests by the Go suite.
     */
    @Test
    void deleteRecordsOfAMissingPartitionTimesOut() throws Exception {
        String topic = "admin-delete-records-missing";
        get(admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all());
        for (TopicPartition tp : List.of(new TopicPartition("admin-no-such-topic", 0), new TopicPartition(topic, 5))) {
            Throwable cause = failure(admin.deleteRecords(Map.of(tp, RecordsToDelete.beforeOffset(0)),
                    new DeleteRecordsOptions().timeoutMs(1_000)).all());
            assertInstanceOf(org.apache.kafka.common.errors.TimeoutException.class, cause, tp + ": " + cause);
        }
    }

    /**
     * deleteRecords deletes the closed segments wholly below the new start (and only those), and
     * has done so when it answers: a topic with 1 KiB segments, 60 records of ~200 bytes, each
     * its own batch, spread over many segment files in the broker's data directory.
     */
    @Test
    void deleteRecordsDeletesSegmentsBelowTheStart() throws Exception {
        String topic = "admin-delete-records-segments";
        get(admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1).configs(Map.of("segment.bytes", "1024")))).all());
        TopicPartition tp = new TopicPartition(topic, 0);
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(Clients.producer(broker, true))) {
            for (int i = 0; i < 60; i++) {
                producer.send(new ProducerRecord<>(topic, 0, "k" + i, i + "-" + "x".repeat(150))).get(TIMEOUT_S, TimeUnit.SECONDS);
            }
        }
        java.nio.file.Path dir = broker.dataDir().resolve("topics").resolve(topic).resolve("0");
        List<Long> before = segmentBases(dir, ".log");
        assertTrue(before.size() >= 8, "segments before: " + before);
        assertEquals(0L, before.get(0));

        assertEquals(37, get(admin.deleteRecords(Map.of(tp, RecordsToDelete.beforeOffset(37))).lowWatermarks().get(tp)).lowWatermark());
        List<Long> after = segmentBases(dir, ".log");
        // Kept: the segment holding offset 37 and every one after it.
        List<Long> kept = new java.util.ArrayList<>();
        for (int i = 0; i < before.size(); i++) {
            if (i + 1 == before.size() || before.get(i + 1) > 37) {
                kept.add(before.get(i));
            }
        }
        assertEquals(kept, after, "segments after deleteRecords(37), of " + before);
        for (String ext : List.of(".index", ".timeindex")) {
            for (long b : segmentBases(dir, ext)) {
                assertTrue(b >= after.get(0), ext + " of the deleted segment " + b + " left behind: " + segmentBases(dir, ext));
            }
        }
        // What is left reads from 37 on.
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(Clients.consumer(broker, true))) {
            c.assign(List.of(tp));
            List<String> read = readByPartition(c, 23).get(tp);
            assertEquals(23, read.size());
            assertTrue(read.get(0).startsWith("37:37-"), read.get(0));
            assertTrue(read.get(22).startsWith("59:59-"), read.get(22));
        }
    }

    /** The base offsets of the segment files (named by base offset, 20 digits) ending in ext, sorted. */
    private static List<Long> segmentBases(java.nio.file.Path dir, String ext) throws java.io.IOException {
        try (Stream<java.nio.file.Path> files = java.nio.file.Files.list(dir)) {
            return files.map(f -> f.getFileName().toString()).filter(n -> n.endsWith(ext))
                    .map(n -> Long.parseLong(n.substring(0, n.length() - ext.length()))).sorted().toList();
        }
    }

    private static Map<TopicPartition, Long> offsetsOf(List<TopicPartition> tps, OffsetSpec spec) throws Exception {
        Map<TopicPartition, OffsetSpec> ask = new HashMap<>();
        tps.forEach(tp -> ask.put(tp, spec));
        Map<TopicPartition, Long> out = new HashMap<>();
        get(admin.listOffsets(ask).all()).forEach((tp, info) -> out.put(tp, info.offset()));
        return out;
    }

    /** Polls until n records came ("offset:value" per partition, in order); then one more short poll. */
    private static Map<TopicPartition, List<String>> readByPartition(KafkaConsumer<String, String> c, int n) {
        Map<TopicPartition, List<String>> out = new HashMap<>();
        int got = 0;
        long deadline = System.currentTimeMillis() + TIMEOUT_S * 1000;
        while (got < n) {
            if (System.currentTimeMillis() > deadline) {
                fail("read " + got + " of " + n + " records: " + out);
            }
            for (var r : c.poll(Duration.ofMillis(200))) {
                out.computeIfAbsent(new TopicPartition(r.topic(), r.partition()), k -> new java.util.ArrayList<>())
                        .add(r.offset() + ":" + r.value());
                got++;
            }
        }
        for (var r : c.poll(Duration.ofMillis(300))) {
            fail("an extra record " + r.partition() + "@" + r.offset() + " after " + out);
        }
        return out;
    }

    /**
     * A classic group and a KIP-848 group: listed, described while a member is in them, their
     * offsets listed, altered (once empty) and deleted.
     */
    @Test
    @SuppressWarnings("deprecation") // listConsumerGroups: still in the 4.x Admin API
    void consumerGroupsListDescribeOffsetsAlterDelete() throws Exception {
        String topic = "admin-groups";
        get(admin.createTopics(List.of(new NewTopic(topic, 2, (short) 1))).all());
        TopicPartition tp0 = new TopicPartition(topic, 0);
        TopicPartition tp1 = new TopicPartition(topic, 1);
        try (KafkaProducer<String, String> producer = new KafkaProducer<>(Clients.producer(broker, true))) {
            for (int i = 0; i < 10; i++) {
                producer.send(new ProducerRecord<>(topic, i % 2, "k" + i, "v" + i));
            }
            producer.flush();
        }

        Map<String, String> protocols = Map.of("admin-classic", "classic", "admin-kip848", "consumer");
        Map<String, KafkaConsumer<String, String>> consumers = new HashMap<>();
        try {
            for (Map.Entry<String, String> e : protocols.entrySet()) {
                Properties cp = Clients.consumer(broker, true);
                cp.put(ConsumerConfig.GROUP_ID_CONFIG, e.getKey());
                cp.put(ConsumerConfig.GROUP_PROTOCOL_CONFIG, e.getValue());
                cp.put(ConsumerConfig.CLIENT_ID_CONFIG, e.getKey() + "-client");
                KafkaConsumer<String, String> c = new KafkaConsumer<>(cp);
                consumers.put(e.getKey(), c);
                c.subscribe(List.of(topic));
                int read = 0;
                long deadline = System.currentTimeMillis() + TIMEOUT_S * 1000;
                while (read < 10) {
                    if (System.currentTimeMillis() > deadline) {
                        fail(e.getKey() + " read " + read + " of 10 records");
                    }
                    read += c.poll(Duration.ofMillis(100)).count();
                }
                c.commitSync();
            }

            // Listed, with their state and type.
            Map<String, ConsumerGroupListing> listed = get(admin.listConsumerGroups().all()).stream()
                    .collect(Collectors.toMap(ConsumerGroupListing::groupId, Function.identity()));
            assertTrue(listed.keySet().containsAll(protocols.keySet()), "listConsumerGroups " + listed);
            assertEquals(Optional.of(GroupState.STABLE), listed.get("admin-classic").groupState(), listed.toString());
            assertEquals(Optional.of(GroupType.CLASSIC), listed.get("admin-classic").type(), listed.toString());
            assertEquals(Optional.of(GroupState.STABLE), listed.get("admin-kip848").groupState(), listed.toString());
            assertEquals(Optional.of(GroupType.CONSUMER), listed.get("admin-kip848").type(), listed.toString());

            // The 4.x listGroups (every group type) agrees.
            Map<String, GroupListing> groups = get(admin.listGroups().all()).stream()
                    .collect(Collectors.toMap(GroupListing::groupId, Function.identity()));
            assertEquals(Optional.of(GroupType.CLASSIC), groups.get("admin-classic").type(), groups.toString());
            assertEquals(Optional.of(GroupType.CONSUMER), groups.get("admin-kip848").type(), groups.toString());
            for (String group : protocols.keySet()) {
                assertEquals("consumer", groups.get(group).protocol(), group + " protocol type");
                assertEquals(Optional.of(GroupState.STABLE), groups.get(group).groupState(), group);
            }

            // Described: one member holding both partitions.
            Map<String, ConsumerGroupDescription> described = get(admin.describeConsumerGroups(List.copyOf(protocols.keySet())).all());
            for (String group : protocols.keySet()) {
                ConsumerGroupDescription d = described.get(group);
                assertNotNull(d, group);
                assertEquals(group, d.groupId());
                assertEquals(GroupState.STABLE, d.groupState(), group);
                assertEquals(protocols.get(group).equals("classic") ? GroupType.CLASSIC : GroupType.CONSUMER, d.type(), group);
                assertEquals(0, d.coordinator().id(), group);
                assertEquals(1, d.members().size(), group + " members " + d.members());
                MemberDescription m = d.members().iterator().next();
                assertEquals(group + "-client", m.clientId(), group);
                assertEquals(Set.of(tp0, tp1), m.assignment().topicPartitions(), group + " assignment");
                assertFalse(d.partitionAssignor().isEmpty(), group + " assignor");
            }

            // A group with a member cannot be deleted.
            assertInstanceOf(GroupNotEmptyException.class,
                    failure(admin.deleteConsumerGroups(List.of("admin-classic")).all()));
        } finally {
            consumers.values().forEach(c -> c.close(Duration.ofSeconds(10)));
        }

        for (String group : protocols.keySet()) {
            // Committed offsets: 5 records read in each partition.
            Map<TopicPartition, OffsetAndMetadata> offsets =
                    get(admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata());
            assertEquals(Map.of(tp0, new OffsetAndMetadata(5, ""), tp1, new OffsetAndMetadata(5, "")),
                    withoutLeaderEpoch(offsets), group);

            // Empty now; its offsets can be altered.
            ConsumerGroupDescription d = get(admin.describeConsumerGroups(List.of(group)).all()).get(group);
            assertEquals(GroupState.EMPTY, d.groupState(), group);
            assertTrue(d.members().isEmpty(), group);
            get(admin.alterConsumerGroupOffsets(group, Map.of(tp0, new OffsetAndMetadata(2, "rewound"))).all());
            offsets = get(admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata());
            assertEquals(Map.of(tp0, new OffsetAndMetadata(2, "rewound"), tp1, new OffsetAndMetadata(5, "")),
                    withoutLeaderEpoch(offsets), group);

            // deleteConsumerGroupOffsets (OffsetDelete) takes one partition's offset away.
            get(admin.deleteConsumerGroupOffsets(group, Set.of(tp1)).all());
            offsets = get(admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata());
            assertEquals(Map.of(tp0, new OffsetAndMetadata(2, "rewound")), withoutLeaderEpoch(offsets), group);
        }

        get(admin.deleteConsumerGroups(List.copyOf(protocols.keySet())).all());
        Set<String> left = get(admin.listConsumerGroups().all()).stream()
                .map(ConsumerGroupListing::groupId).collect(Collectors.toSet());
        for (String group : protocols.keySet()) {
            assertFalse(left.contains(group), group + " still listed after deleteConsumerGroups: " + left);
            assertTrue(withoutLeaderEpoch(get(admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata())).isEmpty(),
                    group + " has offsets after deleteConsumerGroups");
        }
    }

    /** Offsets without their leader epoch and without partitions that have none committed. */
    private static Map<TopicPartition, OffsetAndMetadata> withoutLeaderEpoch(Map<TopicPartition, OffsetAndMetadata> m) {
        Map<TopicPartition, OffsetAndMetadata> out = new HashMap<>();
        m.forEach((tp, om) -> {
            if (om != null) {
                out.put(tp, new OffsetAndMetadata(om.offset(), om.metadata()));
            }
        });
        return out;
    }

    /**
     * A single node runs without a metadata quorum: describeMetadataQuorum fails at once with
     * InvalidRequestException whose message names the setting (ClusterTest describes a real quorum).
     */
    @Test
    void describeMetadataQuorumOnASingleNodeSaysThereIsNoQuorum() throws Exception {
        Throwable cause = failure(admin.describeMetadataQuorum().quorumInfo());
        assertInstanceOf(InvalidRequestException.class, cause, "describeMetadataQuorum failed with " + cause);
        assertTrue(cause.getMessage().contains("controller_quorum_voters"), cause.getMessage());
    }

    /**
     * ElectLeaders and the reassignment APIs on a single node (ClusterTest and tests/cluster.rs
     * use them on a cluster): every partition is led by its only replica already
     * (ElectionNotNeededException), no reassignment is in progress, and moving a partition
     * elsewhere is refused (InvalidReplicaAssignmentException).
     */
    @Test
    void electLeadersAndReassignmentsOnASingleNode() throws Exception {
        String topic = "admin-elect";
        get(admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all());
        TopicPartition tp = new TopicPartition(topic, 0);
        Throwable cause = failure(admin.electLeaders(ElectionType.PREFERRED, Set.of(tp)).all());
        assertInstanceOf(org.apache.kafka.common.errors.ElectionNotNeededException.class, cause, "electLeaders failed with " + cause);
        assertTrue(get(admin.listPartitionReassignments().reassignments()).isEmpty(), "reassignments in progress");
        cause = failure(admin.alterPartitionReassignments(Map.of(tp,
                Optional.of(new org.apache.kafka.clients.admin.NewPartitionReassignment(List.of(7))))).all());
        assertInstanceOf(org.apache.kafka.common.errors.InvalidReplicaAssignmentException.class, cause,
                "alterPartitionReassignments failed with " + cause);
    }

    /**
     * Calls whose APIs Spate does not advertise in ApiVersions (README's API table): each fails
     * with UnsupportedVersionException, within the bound, instead of hanging.
     */
    @TestFactory
    Stream<DynamicTest> unsupportedCallsFailWithUnsupportedVersion() throws Exception {
        String topic = "admin-unsupported";
        get(admin.createTopics(List.of(new NewTopic(topic, 1, (short) 1))).all());
        TopicPartition tp = new TopicPartition(topic, 0);
        Map<String, java.util.function.Supplier<KafkaFuture<?>>> calls = new java.util.LinkedHashMap<>();
        calls.put("describeDelegationToken (DescribeDelegationToken, key 41)",
                () -> admin.describeDelegationToken().delegationTokens());
        return calls.entrySet().stream().map(e -> DynamicTest.dynamicTest(e.getKey(), () -> {
            long start = System.nanoTime();
            Throwable cause = failure(e.getValue().get());
            assertInstanceOf(UnsupportedVersionException.class, cause, e.getKey() + " failed with " + cause);
            assertTrue(System.nanoTime() - start < TimeUnit.SECONDS.toNanos(TIMEOUT_S));
        }));
    }
}

package spate.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertInstanceOf;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;
import static spate.it.Clients.TIMEOUT_S;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeUnit;
import java.util.stream.Collectors;

import org.apache.kafka.clients.CommonClientConfigs;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.CreateAclsResult;
import org.apache.kafka.clients.admin.DeleteAclsResult;
import org.apache.kafka.clients.admin.DescribeClusterOptions;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.ScramCredentialInfo;
import org.apache.kafka.clients.admin.ScramMechanism;
import org.apache.kafka.clients.admin.UserScramCredentialUpsertion;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.KafkaFuture;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.acl.AccessControlEntry;
import org.apache.kafka.common.acl.AccessControlEntryFilter;
import org.apache.kafka.common.acl.AclBinding;
import org.apache.kafka.common.acl.AclBindingFilter;
import org.apache.kafka.common.acl.AclOperation;
import org.apache.kafka.common.acl.AclPermissionType;
import org.apache.kafka.common.config.SaslConfigs;
import org.apache.kafka.common.errors.ClusterAuthorizationException;
import org.apache.kafka.common.errors.GroupAuthorizationException;
import org.apache.kafka.common.errors.InvalidRequestException;
import org.apache.kafka.common.errors.TopicAuthorizationException;
import org.apache.kafka.common.errors.TransactionalIdAuthorizationException;
import org.apache.kafka.common.resource.PatternType;
import org.apache.kafka.common.resource.ResourcePattern;
import org.apache.kafka.common.resource.ResourcePatternFilter;
import org.apache.kafka.common.resource.ResourceType;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.RegisterExtension;

/**
 * Spate's ACL authorizer ({@code --authorizer acl}) with the Java client: the ACL APIs through
 * {@code Admin.createAcls / describeAcls / deleteAcls}, and what a SASL user meets in the
 * producer, the transactional producer, the consumer and the admin client without the ACLs each
 * request needs (Kafka's exceptions: TopicAuthorizationException, GroupAuthorizationException,
 * ClusterAuthorizationException, TransactionalIdAuthorizationException) and with them.
 *
 * <p>One broker with a PLAINTEXT listener, whose principal (User:ANONYMOUS) is the super user
 * ({@code --super-users User:ANONYMOUS}) the tests do their admin work with, and a SASL_PLAINTEXT
 * listener (PLAIN and SCRAM-SHA-256) for the users under test. Each test makes its own user
 * ({@code alice-<test>}, SCRAM-SHA-256, made with alterUserScramCredentials on PLAINTEXT) and its
 * own topics and groups, so that the ACLs one test grants open nothing another test expects to be
 * closed (an idempotent producer's InitProducerId, for one, is allowed by WRITE on any topic).
 */
class AclTest {
    private static final String PLAINTEXT = "PLAINTEXT";
    private static final String SASL_PLAINTEXT = "SASL_PLAINTEXT";

    @RegisterExtension
    static final SpateBroker broker = SpateBroker.withListeners(List.of(PLAINTEXT, SASL_PLAINTEXT),
            "--authorizer", "acl", "--super-users", "User:ANONYMOUS",
            "--sasl-enabled-mechanisms", "PLAIN,SCRAM-SHA-256").named("acl");

    // ---- the ACL APIs ----

    /**
     * createAcls of five bindings (LITERAL and PREFIXED topics, a group, a DENY for one host, a
     * wildcard topic of another principal); describeAcls by principal, by resource, by operation
     * and permission, ANY (every binding), and MATCH (the literal, wildcard and prefixed bindings
     * that apply to one name); deleteAcls answers each filter with the bindings it removed, and
     * they are gone.
     */
    @Test
    void createDescribeDeleteAcls() throws Exception {
        String p = "User:acl-admin";
        String topic = "acl-admin-topic";
        String prefix = "acl-admin-prefix-";
        AclBinding readTopic = binding(p, ResourceType.TOPIC, topic, PatternType.LITERAL, AclOperation.READ);
        AclBinding writePrefix = binding(p, ResourceType.TOPIC, prefix, PatternType.PREFIXED, AclOperation.WRITE);
        AclBinding readGroup = binding(p, ResourceType.GROUP, "acl-admin-group", PatternType.LITERAL, AclOperation.READ);
        AclBinding denyWrite = new AclBinding(new ResourcePattern(ResourceType.TOPIC, topic, PatternType.LITERAL),
                new AccessControlEntry(p, "10.0.0.1", AclOperation.WRITE, AclPermissionType.DENY));
        AclBinding wildcard = binding("User:acl-admin-other", ResourceType.TOPIC, "*", PatternType.LITERAL, AclOperation.DESCRIBE);
        try (Admin admin = superAdmin()) {
            admin.createAcls(List.of(readTopic, writePrefix, readGroup, denyWrite, wildcard)).all().get(TIMEOUT_S, TimeUnit.SECONDS);

            AccessControlEntryFilter byP = new AccessControlEntryFilter(p, null, AclOperation.ANY, AclPermissionType.ANY);
            assertEquals(Set.of(readTopic, writePrefix, readGroup, denyWrite),
                    describe(admin, new AclBindingFilter(ResourcePatternFilter.ANY, byP)), "by principal " + p);
            assertEquals(Set.of(readTopic, denyWrite),
                    describe(admin, new AclBindingFilter(new ResourcePatternFilter(ResourceType.TOPIC, topic, PatternType.LITERAL),
                            AccessControlEntryFilter.ANY)), "by resource TOPIC " + topic + " LITERAL");
            assertEquals(Set.of(denyWrite), describe(admin, new AclBindingFilter(ResourcePatternFilter.ANY,
                    new AccessControlEntryFilter(null, "10.0.0.1", AclOperation.WRITE, AclPermissionType.DENY))),
                    "by host, operation and permission");
            Set<AclBinding> all = describe(admin, AclBindingFilter.ANY);
            assertTrue(all.containsAll(List.of(readTopic, writePrefix, readGroup, denyWrite, wildcard)), "ANY: " + all);
            assertEquals(Set.of(writePrefix, wildcard), describe(admin, new AclBindingFilter(
                    new ResourcePatternFilter(ResourceType.TOPIC, prefix + "x", PatternType.MATCH), AccessControlEntryFilter.ANY)),
                    "MATCH of " + prefix + "x: the prefix and the wildcard");
            assertEquals(Set.of(readTopic, denyWrite, wildcard), describe(admin, new AclBindingFilter(
                    new ResourcePatternFilter(ResourceType.TOPIC, topic, PatternType.MATCH), AccessControlEntryFilter.ANY)),
                    "MATCH of " + topic + ": its literal bindings and the wildcard");
            assertEquals(Set.of(writePrefix), describe(admin, new AclBindingFilter(
                    new ResourcePatternFilter(ResourceType.TOPIC, null, PatternType.PREFIXED), byP)), "PREFIXED of " + p);

            AclBindingFilter reads = new AclBindingFilter(ResourcePatternFilter.ANY,
                    new AccessControlEntryFilter(p, null, AclOperation.READ, AclPermissionType.ALLOW));
            AclBindingFilter theWildcard = wildcard.toFilter();
            DeleteAclsResult deleted = admin.deleteAcls(List.of(reads, theWildcard));
            assertEquals(Set.of(readTopic, readGroup), deletedBy(deleted, reads), "deleteAcls of " + p + "'s READs");
            assertEquals(Set.of(wildcard), deletedBy(deleted, theWildcard), "deleteAcls of the wildcard binding");
            assertEquals(Set.of(writePrefix, denyWrite), describe(admin, new AclBindingFilter(ResourcePatternFilter.ANY, byP)),
                    "after the READs were deleted");
            assertEquals(Set.of(writePrefix, denyWrite),
                    new HashSet<>(admin.deleteAcls(List.of(new AclBindingFilter(ResourcePatternFilter.ANY, byP))).all()
                            .get(TIMEOUT_S, TimeUnit.SECONDS)), "deleteAcls of the rest");
            assertEquals(Set.of(), describe(admin, new AclBindingFilter(ResourcePatternFilter.ANY, byP)), "after deleting all");
        }
    }

    /**
     * Bindings Kafka refuses are refused one by one with InvalidRequestException: a PREFIXED
     * wildcard, a CLUSTER resource not named kafka-cluster, an empty topic name, a principal
     * without its type; a valid binding in the same request is created.
     */
    @Test
    void invalidBindingsAreRefused() throws Exception {
        String p = "User:acl-invalid";
        AclBinding valid = binding(p, ResourceType.TOPIC, "acl-invalid-ok", PatternType.LITERAL, AclOperation.READ);
        List<AclBinding> invalid = List.of(
                binding(p, ResourceType.TOPIC, "*", PatternType.PREFIXED, AclOperation.READ),
                binding(p, ResourceType.CLUSTER, "not-kafka-cluster", PatternType.LITERAL, AclOperation.DESCRIBE),
                binding(p, ResourceType.TOPIC, "", PatternType.LITERAL, AclOperation.READ),
                binding("alice", ResourceType.TOPIC, "acl-invalid-ok", PatternType.LITERAL, AclOperation.READ));
        try (Admin admin = superAdmin()) {
            List<AclBinding> all = new ArrayList<>(invalid);
            all.add(valid);
            CreateAclsResult r = admin.createAcls(all);
            for (AclBinding b : invalid) {
                ExecutionException e = assertThrows(ExecutionException.class, () -> r.values().get(b).get(TIMEOUT_S, TimeUnit.SECONDS),
                        "createAcls of " + b);
                assertInstanceOf(InvalidRequestException.class, e.getCause(), "createAcls of " + b + ": " + e.getCause());
            }
            r.values().get(valid).get(TIMEOUT_S, TimeUnit.SECONDS);
            assertEquals(Set.of(valid), describe(admin, new AclBindingFilter(ResourcePatternFilter.ANY,
                    new AccessControlEntryFilter(p, null, AclOperation.ANY, AclPermissionType.ANY))), "what was created");
        }
    }

    /**
     * A user without the cluster's ALTER and DESCRIBE may neither create nor describe ACLs:
     * ClusterAuthorizationException for both.
     */
    @Test
    void aclApisNeedClusterRights() throws Exception {
        String user = newUser("acl-apis");
        try (Admin admin = admin(user)) {
            ExecutionException e = assertThrows(ExecutionException.class, () -> admin.createAcls(List.of(
                    binding("User:" + user, ResourceType.TOPIC, "acl-apis", PatternType.LITERAL, AclOperation.READ)))
                    .all().get(TIMEOUT_S, TimeUnit.SECONDS), "createAcls as " + user);
            assertInstanceOf(ClusterAuthorizationException.class, e.getCause(), "createAcls as " + user);
            e = assertThrows(ExecutionException.class, () -> admin.describeAcls(AclBindingFilter.ANY).values()
                    .get(TIMEOUT_S, TimeUnit.SECONDS), "describeAcls as " + user);
            assertInstanceOf(ClusterAuthorizationException.class, e.getCause(), "describeAcls as " + user);
        }
    }

    // ---- producers ----

    /**
     * A (non-idempotent) producer without WRITE on the topic: the send fails with
     * TopicAuthorizationException (the topic's Metadata is refused); with WRITE (which implies
     * DESCRIBE) the record is written.
     */
    @Test
    void producerNeedsWrite() throws Exception {
        String user = newUser("producer");
        String topic = "acl-producer";
        Clients.createTopic(broker, topic, 1, Map.of());
        Properties pp = producerProps(user);
        pp.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, false);
        assertSendFails(pp, topic, TopicAuthorizationException.class, user + " without WRITE");
        allow(user, ResourceType.TOPIC, topic, PatternType.LITERAL, AclOperation.WRITE);
        try (KafkaProducer<String, String> p = new KafkaProducer<>(pp)) {
            assertEquals(0, p.send(new ProducerRecord<>(topic, "k", "v")).get(TIMEOUT_S, TimeUnit.SECONDS).offset(), log());
        }
    }

    /**
     * The idempotent producer (the Java default): with DESCRIBE on the topic but neither the
     * cluster's IDEMPOTENT_WRITE nor WRITE on any topic, InitProducerId is refused and the send
     * fails with ClusterAuthorizationException; with WRITE on the topic (which Kafka takes for
     * IDEMPOTENT_WRITE) it writes.
     */
    @Test
    void idempotentProducerNeedsIdempotentWriteOrSomeWrite() throws Exception {
        String user = newUser("idempotent");
        String topic = "acl-idempotent";
        Clients.createTopic(broker, topic, 1, Map.of());
        allow(user, ResourceType.TOPIC, topic, PatternType.LITERAL, AclOperation.DESCRIBE);
        Properties pp = producerProps(user);
        pp.put(ProducerConfig.ENABLE_IDEMPOTENCE_CONFIG, true);
        assertSendFails(pp, topic, ClusterAuthorizationException.class, user + " (idempotent) without IDEMPOTENT_WRITE or WRITE");
        allow(user, ResourceType.TOPIC, topic, PatternType.LITERAL, AclOperation.WRITE);
        try (KafkaProducer<String, String> p = new KafkaProducer<>(pp)) {
            for (int i = 0; i < 3; i++) {
                assertEquals(i, p.send(new ProducerRecord<>(topic, "k", "v" + i)).get(TIMEOUT_S, TimeUnit.SECONDS).offset(), log());
            }
        }
    }

    /**
     * A transactional producer with WRITE on the topic but not on its transactional id:
     * initTransactions() throws TransactionalIdAuthorizationException (FindCoordinator for the
     * id is refused). With WRITE on the id (PREFIXED here) a transaction commits, and a
     * read_committed reader sees its records.
     */
    @Test
    void transactionalProducerNeedsWriteOnTransactionalId() throws Exception {
        String user = newUser("txn");
        String topic = "acl-txn";
        Clients.createTopic(broker, topic, 1, Map.of());
        allow(user, ResourceType.TOPIC, topic, PatternType.LITERAL, AclOperation.WRITE);
        Properties pp = producerProps(user);
        pp.put(ProducerConfig.TRANSACTIONAL_ID_CONFIG, "acl-txn-id-1");
        pp.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, 20_000);
        try (KafkaProducer<String, String> p = new KafkaProducer<>(pp)) {
            Exception e = assertThrows(Exception.class, p::initTransactions, "initTransactions without WRITE on the id");
            assertInstanceOf(TransactionalIdAuthorizationException.class, e, "initTransactions without WRITE on the id: " + e);
        }
        allow(user, ResourceType.TRANSACTIONAL_ID, "acl-txn-id-", PatternType.PREFIXED, AclOperation.WRITE);
        try (KafkaProducer<String, String> p = new KafkaProducer<>(pp)) {
            p.initTransactions();
            p.beginTransaction();
            p.send(new ProducerRecord<>(topic, "k", "t0"));
            p.send(new ProducerRecord<>(topic, "k", "t1"));
            p.commitTransaction();
        }
        Properties rp = Clients.consumer(broker, true);
        rp.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
        List<List<ConsumerRecord<String, String>>> all = Clients.readAll(rp, topic, 1, AclTest::log);
        List<String> read = all.get(0).stream().map(ConsumerRecord::value).toList();
        assertEquals(List.of("t0", "t1"), read, log());
    }

    // ---- consumers ----

    /**
     * A group consumer (classic protocol) with READ on the topic but no ACL for its group:
     * poll() throws GroupAuthorizationException. With READ on the group but subscribed to a topic
     * it has no ACL for: TopicAuthorizationException naming that topic.
     */
    @Test
    void consumerNeedsGroupAndTopicRead() throws Exception {
        String user = newUser("consumer");
        String topic = "acl-consumer";
        String other = "acl-consumer-unreadable";
        String group = "acl-consumer-group";
        Clients.createTopic(broker, topic, 1, Map.of());
        Clients.createTopic(broker, other, 1, Map.of());
        allow(user, ResourceType.TOPIC, topic, PatternType.LITERAL, AclOperation.READ);
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(consumerProps(user, group))) {
            c.subscribe(List.of(topic));
            GroupAuthorizationException e = pollUntilThrows(c, GroupAuthorizationException.class, user + " without READ on " + group);
            assertEquals(group, e.groupId(), e.toString());
        }
        allow(user, ResourceType.GROUP, group, PatternType.LITERAL, AclOperation.READ);
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(consumerProps(user, group))) {
            c.subscribe(List.of(other));
            TopicAuthorizationException e = pollUntilThrows(c, TopicAuthorizationException.class, user + " subscribed to " + other);
            assertEquals(Set.of(other), e.unauthorizedTopics(), e.toString());
        }
    }

    /**
     * A group consumer with only READ on its group and its topic (as Kafka asks of a consumer):
     * reads the 10 records, commits, and a second member of the group resumes from the commit
     * and reads 5 more. Resuming, the Java consumer validates the committed position (it carries
     * the leader epoch of the records) with OffsetForLeaderEpoch (KIP-320), which Kafka allows
     * with DESCRIBE on the topic (implied by READ): the test checks that the broker got at least
     * one, so that this request is covered, and that the broker refused nothing.
     */
    @Test
    void consumerWithGroupAndTopicReadWorks() throws Exception {
        String user = newUser("reader");
        String topic = "acl-reader";
        String group = topic + "-group";
        Clients.createTopic(broker, topic, 1, Map.of());
        produce(topic, 0, 10);
        allow(user, ResourceType.TOPIC, topic, PatternType.LITERAL, AclOperation.READ);
        allow(user, ResourceType.GROUP, group, PatternType.LITERAL, AclOperation.READ);
        TopicPartition tp = new TopicPartition(topic, 0);
        String what = user + " (READ on " + topic + " and " + group + ")";
        int logStart = broker.log().length();
        double denials = denials();
        List<String> read = new ArrayList<>();
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(consumerProps(user, group))) {
            c.subscribe(List.of(topic));
            pollOrFail(c, 10, what, logStart).forEach(r -> read.add(r.value()));
            c.commitSync(Duration.ofSeconds(TIMEOUT_S));
            Map<TopicPartition, OffsetAndMetadata> committed = c.committed(Set.of(tp), Duration.ofSeconds(TIMEOUT_S));
            assertEquals(10L, committed.get(tp).offset(), what + ": committed " + committed);
            assertTrue(committed.get(tp).leaderEpoch().isPresent(), what + ": committed " + committed);
        }
        produce(topic, 10, 15);
        double validations = offsetForLeaderEpochRequests();
        try (KafkaConsumer<String, String> c = new KafkaConsumer<>(consumerProps(user, group))) {
            c.subscribe(List.of(topic));
            pollOrFail(c, 5, what + ", resuming from its commit", logStart).forEach(r -> read.add(r.value()));
            c.commitSync(Duration.ofSeconds(TIMEOUT_S));
        }
        validations = offsetForLeaderEpochRequests() - validations;
        List<String> want = new ArrayList<>();
        for (int i = 0; i < 15; i++) {
            want.add("v" + i);
        }
        assertEquals(want, read, what);
        assertTrue(validations >= 1, what + ": the resuming consumer sent no OffsetForLeaderEpoch (" + validations + ")");
        String since = broker.log().substring(logStart);
        assertTrue(!since.contains("closing connection"), what + ": the broker closed a connection:\n" + since);
        assertEquals(0, denials() - denials, what + ": denials other than Cluster/Create (the auto-creation probe)\n" + since);
    }

    // ---- admin ----

    /** createTopics without CREATE (on the cluster or the topic) fails with TopicAuthorizationException; with a PREFIXED CREATE it works. */
    @Test
    void createTopicsNeedsCreate() throws Exception {
        String user = newUser("creator");
        try (Admin admin = admin(user)) {
            ExecutionException e = assertThrows(ExecutionException.class, () -> admin.createTopics(
                    List.of(new NewTopic("acl-created-1", 1, (short) 1))).all().get(TIMEOUT_S, TimeUnit.SECONDS), "createTopics without CREATE");
            assertInstanceOf(TopicAuthorizationException.class, e.getCause(), "createTopics without CREATE: " + e.getCause());
            allow(user, ResourceType.TOPIC, "acl-created-", PatternType.PREFIXED, AclOperation.CREATE);
            admin.createTopics(List.of(new NewTopic("acl-created-1", 1, (short) 1))).all().get(TIMEOUT_S, TimeUnit.SECONDS);
            e = assertThrows(ExecutionException.class, () -> admin.createTopics(
                    List.of(new NewTopic("acl-other-1", 1, (short) 1))).all().get(TIMEOUT_S, TimeUnit.SECONDS), "createTopics outside the prefix");
            assertInstanceOf(TopicAuthorizationException.class, e.getCause(), "createTopics outside the prefix: " + e.getCause());
        }
        try (Admin admin = superAdmin()) {
            Set<String> names = admin.listTopics().names().get(TIMEOUT_S, TimeUnit.SECONDS);
            assertTrue(names.contains("acl-created-1") && !names.contains("acl-other-1"), names.toString());
        }
    }

    /**
     * The cluster's DESCRIBE: without it describeLogDirs and describeMetadataQuorum fail with
     * ClusterAuthorizationException; describeCluster works for anyone, as on Kafka's brokers
     * (KafkaApis answers DescribeCluster without an ACL check; only the authorized operations it
     * was asked for need DESCRIBE, else they are empty). With an ALLOW for DESCRIBE on
     * kafka-cluster, describeLogDirs answers and describeCluster's authorized operations include
     * DESCRIBE (and not ALTER).
     */
    @Test
    void clusterDescribe() throws Exception {
        String user = newUser("describer");
        try (Admin admin = admin(user)) {
            ExecutionException e = assertThrows(ExecutionException.class,
                    () -> admin.describeLogDirs(List.of(0)).allDescriptions().get(TIMEOUT_S, TimeUnit.SECONDS), "describeLogDirs as " + user);
            assertInstanceOf(ClusterAuthorizationException.class, e.getCause(), "describeLogDirs as " + user + ": " + e.getCause());
            e = assertThrows(ExecutionException.class,
                    () -> admin.describeMetadataQuorum().quorumInfo().get(TIMEOUT_S, TimeUnit.SECONDS), "describeMetadataQuorum as " + user);
            assertInstanceOf(ClusterAuthorizationException.class, e.getCause(), "describeMetadataQuorum as " + user + ": " + e.getCause());
            DescribeClusterResult dc = admin.describeCluster(new DescribeClusterOptions().includeAuthorizedOperations(true));
            assertEquals(List.of(broker.port(SASL_PLAINTEXT)), kafkaAnswers(dc.nodes(), "describeCluster as " + user + " (no ACL)")
                    .stream().map(Node::port).toList(), "describeCluster as " + user + " (no ACL)");
            Set<AclOperation> ops = kafkaAnswers(dc.authorizedOperations(), "describeCluster as " + user + " (no ACL)");
            assertTrue(ops == null || ops.isEmpty(), "authorized operations of " + user + " (no ACL): " + ops);
        }
        allow(user, ResourceType.CLUSTER, "kafka-cluster", PatternType.LITERAL, AclOperation.DESCRIBE);
        try (Admin admin = admin(user)) {
            assertEquals(Set.of(0), admin.describeLogDirs(List.of(0)).allDescriptions().get(TIMEOUT_S, TimeUnit.SECONDS).keySet());
            Set<AclOperation> ops = admin.describeCluster(new DescribeClusterOptions().includeAuthorizedOperations(true))
                    .authorizedOperations().get(TIMEOUT_S, TimeUnit.SECONDS);
            assertTrue(ops != null && ops.contains(AclOperation.DESCRIBE) && !ops.contains(AclOperation.ALTER),
                    "authorized operations with DESCRIBE on the cluster: " + ops);
        }
    }

    /**
     * listTopics lists the topics the user may describe (READ and WRITE imply DESCRIBE; a
     * PREFIXED DESCRIBE) and leaves out the one it has no ACL for; describeTopics describes one
     * it may describe and refuses that one with TopicAuthorizationException (the Java 4.1 admin
     * client sends DescribeCluster first, for the brokers, then DescribeTopicPartitions or, as
     * Spate does not serve that, Metadata); the super user lists all four.
     */
    @Test
    void listTopicsShowsOnlyDescribableTopics() throws Exception {
        String user = newUser("lister");
        List<String> topics = List.of("acl-list-read", "acl-list-write", "acl-list-prefixed-1", "acl-list-hidden");
        for (String t : topics) {
            Clients.createTopic(broker, t, 1, Map.of());
        }
        allow(user, ResourceType.TOPIC, "acl-list-read", PatternType.LITERAL, AclOperation.READ);
        allow(user, ResourceType.TOPIC, "acl-list-write", PatternType.LITERAL, AclOperation.WRITE);
        allow(user, ResourceType.TOPIC, "acl-list-prefixed-", PatternType.PREFIXED, AclOperation.DESCRIBE);
        try (Admin admin = admin(user)) {
            Set<String> seen = new TreeSet<>(admin.listTopics().names().get(TIMEOUT_S, TimeUnit.SECONDS));
            seen.retainAll(topics);
            assertEquals(new TreeSet<>(List.of("acl-list-read", "acl-list-write", "acl-list-prefixed-1")), seen, log());
            assertEquals(Set.of("acl-list-read"), kafkaAnswers(admin.describeTopics(List.of("acl-list-read")).allTopicNames(),
                    "describeTopics of a topic " + user + " may read").keySet(), "describeTopics of a topic " + user + " may read");
            ExecutionException e = assertThrows(ExecutionException.class, () -> admin.describeTopics(List.of("acl-list-hidden"))
                    .allTopicNames().get(TIMEOUT_S, TimeUnit.SECONDS), "describeTopics of a topic " + user + " may not describe");
            assertInstanceOf(TopicAuthorizationException.class, e.getCause(), "describeTopics acl-list-hidden: " + e.getCause());
        }
        try (Admin admin = superAdmin()) {
            assertTrue(admin.listTopics().names().get(TIMEOUT_S, TimeUnit.SECONDS).containsAll(topics), "the super user's listing");
        }
    }

    // ---- helpers ----

    /** Makes the SCRAM-SHA-256 user {@code alice-<tag>} (password {@code <name>-secret}); its name. */
    private static String newUser(String tag) throws Exception {
        String user = "alice-" + tag;
        try (Admin admin = superAdmin()) {
            admin.alterUserScramCredentials(List.of(new UserScramCredentialUpsertion(user,
                    new ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096), user + "-secret")))
                    .all().get(TIMEOUT_S, TimeUnit.SECONDS);
        }
        return user;
    }

    private static AclBinding binding(String principal, ResourceType type, String name, PatternType pattern, AclOperation op) {
        return new AclBinding(new ResourcePattern(type, name, pattern), new AccessControlEntry(principal, "*", op, AclPermissionType.ALLOW));
    }

    /** An ALLOW of {@code ops} on a resource for User:{@code user}, from any host, made by the super user. */
    private static void allow(String user, ResourceType type, String name, PatternType pattern, AclOperation... ops) throws Exception {
        List<AclBinding> bindings = new ArrayList<>();
        for (AclOperation op : ops) {
            bindings.add(binding("User:" + user, type, name, pattern, op));
        }
        try (Admin admin = superAdmin()) {
            admin.createAcls(bindings).all().get(TIMEOUT_S, TimeUnit.SECONDS);
        }
    }

    private static Set<AclBinding> describe(Admin admin, AclBindingFilter filter) throws Exception {
        return new HashSet<>(admin.describeAcls(filter).values().get(TIMEOUT_S, TimeUnit.SECONDS));
    }

    private static Set<AclBinding> deletedBy(DeleteAclsResult r, AclBindingFilter filter) throws Exception {
        Set<AclBinding> out = new HashSet<>();
        for (DeleteAclsResult.FilterResult fr : r.values().get(filter).get(TIMEOUT_S, TimeUnit.SECONDS).values()) {
            assertEquals(null, fr.exception(), "deleteAcls of " + filter + ": " + fr.binding());
            out.add(fr.binding());
        }
        return out;
    }

    /** {@code user} on SASL_PLAINTEXT with SCRAM-SHA-256. */
    private static Properties sasl(String user) {
        Properties p = new Properties();
        p.put(CommonClientConfigs.SECURITY_PROTOCOL_CONFIG, SASL_PLAINTEXT);
        p.put(SaslConfigs.SASL_MECHANISM, "SCRAM-SHA-256");
        p.put(SaslConfigs.SASL_JAAS_CONFIG, "org.apache.kafka.common.security.scram.ScramLoginModule required username=\""
                + user + "\" password=\"" + user + "-secret\";");
        return p;
    }

    private static Properties producerProps(String user) {
        Properties p = Clients.producer(broker, true);
        p.putAll(sasl(user));
        p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, broker.bootstrap(SASL_PLAINTEXT));
        p.put(ProducerConfig.MAX_BLOCK_MS_CONFIG, 15_000);
        return p;
    }

    private static Properties consumerProps(String user, String group) {
        Properties p = Clients.consumer(broker, true);
        p.putAll(sasl(user));
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, broker.bootstrap(SASL_PLAINTEXT));
        p.put(ConsumerConfig.GROUP_ID_CONFIG, group);
        return p;
    }

    private static Admin admin(String user) {
        Properties p = sasl(user);
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, broker.bootstrap(SASL_PLAINTEXT));
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 30_000);
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, 20_000);
        return Admin.create(p);
    }

    /** An admin client on PLAINTEXT: User:ANONYMOUS, the super user. */
    private static Admin superAdmin() {
        return Clients.admin(broker);
    }

    /** Records {@code v<from>}..{@code v<to - 1>} to partition 0 of {@code topic}, as the super user. */
    private static void produce(String topic, int from, int to) throws Exception {
        try (KafkaProducer<String, String> p = new KafkaProducer<>(Clients.producer(broker, true))) {
            for (int i = from; i < to; i++) {
                p.send(new ProducerRecord<>(topic, 0, "k", "v" + i)).get(TIMEOUT_S, TimeUnit.SECONDS);
            }
        }
    }

    /** A send through a producer of {@code props} fails with an exception of {@code type}. */
    private static void assertSendFails(Properties props, String topic, Class<? extends Exception> type, String what) {
        try (KafkaProducer<String, String> p = new KafkaProducer<>(props)) {
            Exception e = assertThrows(Exception.class,
                    () -> p.send(new ProducerRecord<>(topic, "k", "refused")).get(TIMEOUT_S, TimeUnit.SECONDS), what);
            // The refusal itself, or (send() after the producer already failed its
            // InitProducerId) the KafkaException "in an error state" the client wraps it in.
            Throwable cause = e instanceof ExecutionException ? e.getCause() : e;
            if (!type.isInstance(cause) && cause != null && cause.getCause() != null && type.isInstance(cause.getCause())) {
                cause = cause.getCause();
            }
            assertInstanceOf(type, cause, what + ": " + e + "\n" + log());
        }
    }

    /** Polls until poll() throws; the exception, which must be a {@code type}. */
    private static <T extends Exception> T pollUntilThrows(KafkaConsumer<String, String> c, Class<T> type, String what) {
        long deadline = System.currentTimeMillis() + TIMEOUT_S * 1000;
        while (System.currentTimeMillis() < deadline) {
            try {
                c.poll(Duration.ofMillis(200));
            } catch (Exception e) {
                return assertInstanceOf(type, e, what + ": " + e);
            }
        }
        return fail(what + ": poll() threw nothing within " + TIMEOUT_S + " s\n" + log());
    }

    /**
     * Polls {@code n} records, failing (with the broker's log lines since {@code logStart} about
     * authorization and closed connections) when they do not come within {@link Clients#TIMEOUT_S}.
     */
    private static List<ConsumerRecord<String, String>> pollOrFail(KafkaConsumer<String, String> c, int n, String what, int logStart) {
        List<ConsumerRecord<String, String>> out = new ArrayList<>();
        long deadline = System.currentTimeMillis() + TIMEOUT_S * 1000;
        while (out.size() < n && System.currentTimeMillis() < deadline) {
            c.poll(Duration.ofMillis(200)).forEach(out::add);
        }
        if (out.size() < n) {
            String since = broker.log().substring(logStart);
            String lines = since.lines().filter(l -> l.contains("authoriz") || l.contains("may not send") || l.contains("clos"))
                    .limit(20).collect(Collectors.joining("\n"));
            fail(what + ": read " + out.size() + " of " + n + " records in " + TIMEOUT_S + " s; the broker's log about it:\n" + lines);
        }
        return out;
    }

    /**
     * spate_authorization_denials_total so far, less Cluster/Create: the Java clients' Metadata
     * asks for auto-creation, and Spate counts its probe of the cluster's CREATE as a denial even
     * for topics that exist (Kafka checks it only for topics that do not, and logs no denial).
     */
    private static double denials() throws Exception {
        String m = broker.metrics();
        return SpateBroker.metricSum(m, "spate_authorization_denials_total")
                - SpateBroker.metricSum(m, "spate_authorization_denials_total", "resource_type=\"Cluster\"", "operation=\"Create\"");
    }

    /**
     * The value of a future Kafka's brokers complete for any principal; a
     * ClusterAuthorizationException fails the test naming the cause: Spate refuses DescribeCluster
     * without the cluster's DESCRIBE, where Kafka's brokers answer it for anyone (KafkaApis
     * handleDescribeCluster: no ACL check, AuthHelper.computeDescribeClusterResponse asks for
     * DESCRIBE only to fill in the authorized operations), and the Java 4.1 admin client sends
     * DescribeCluster for describeCluster and before describeTopics.
     */
    private static <T> T kafkaAnswers(KafkaFuture<T> f, String what) throws Exception {
        try {
            return f.get(TIMEOUT_S, TimeUnit.SECONDS);
        } catch (ExecutionException e) {
            if (e.getCause() instanceof ClusterAuthorizationException) {
                fail(what + ": " + e.getCause() + ". Spate answered the DescribeCluster request CLUSTER_AUTHORIZATION_FAILED; "
                        + "Kafka's brokers answer DescribeCluster for every principal (only its authorized operations need "
                        + "DESCRIBE on the cluster)\n" + log());
            }
            throw e;
        }
    }

    /** OffsetForLeaderEpoch requests the broker has served (or refused) so far. */
    private static double offsetForLeaderEpochRequests() throws Exception {
        return SpateBroker.metricSum(broker.metrics(), "spate_requests_total", "api=\"OffsetForLeaderEpoch\"");
    }

    private static String log() {
        return "broker log " + broker.logFile() + ":\n" + broker.logTail(30);
    }
}

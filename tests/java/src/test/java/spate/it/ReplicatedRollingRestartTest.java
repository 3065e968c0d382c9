package spate.it;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;
import static spate.it.VerifiableEvents.count;
import static spate.it.VerifiableEvents.consumedAll;
import static spate.it.VerifiableEvents.consumedValues;
import static spate.it.VerifiableEvents.countPartitions;
import static spate.it.VerifiableEvents.events;
import static spate.it.VerifiableEvents.first;
import static spate.it.Clients.TIMEOUT_S;

import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.junit.jupiter.api.extension.RegisterExtension;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

import com.fasterxml.jackson.databind.JsonNode;

/**
 * Kafka's system-test tools ({@code VerifiableProducer}, {@code VerifiableConsumer}, child JVMs)
 * against a three-node cluster ({@link SpateCluster}) while each broker in turn is restarted the
 * way an operator rolls a cluster: SIGTERM (a controlled shutdown: the broker is fenced first and
 * its leaderships move to another in-sync replica before it stops), start again on the same
 * ports and data directory, wait until it is unfenced and every partition's ISR (the topic's and
 * {@code __consumer_offsets}') holds all three replicas again, then the next broker.
 *
 * <p>The topic has 3 partitions, replication factor 3 and {@code min.insync.replicas=2}, so it
 * stays writable with acks=all while any one broker is down. The producer is idempotent with
 * unbounded retries (its --producer.config: the tool itself sets retries=0, which turns
 * idempotence off), acks=-1, at a fixed rate with no end: it is stopped with SIGTERM (its
 * shutdown hook closes the producer, which waits for every record in flight) once the last
 * broker is back and it has had more records acknowledged since. Its records carry keys
 * (--repeating-keys), so the key hash spreads them over every partition: without keys the Java
 * client's sticky partitioner moves on only after a batch.size worth of records, and a run this
 * short can leave a partition empty (then it has nothing to roll through and no commit to
 * check). The consumer is in a group,
 * commits synchronously after every poll and prints every record (--verbose). Every client is
 * given all three nodes as its bootstrap list. The brokers heartbeat every 500 ms with a 3 s
 * session, so that a restarted broker is unfenced quickly.
 */
class ReplicatedRollingRestartTest {
    @RegisterExtension
    static final SpateCluster cluster = new SpateCluster(
            "--broker-heartbeat-interval-ms", "500",
            "--broker-session-timeout-ms", "3000");

    private static final int PARTITIONS = 3;
    private static final short REPLICAS = 3;
    private static final int THROUGHPUT = 150; // records/s, until the producer is stopped
    /** Acknowledgements the producer must get after each restart before the next one, and at the end. */
    private static final int ACKS_BETWEEN = 300;
    private static final long ISR_TIMEOUT_MS = 45_000;
    private static final long PROGRESS_TIMEOUT_MS = 30_000;
    private static final long CONSUMER_CATCH_UP_TIMEOUT_MS = 30_000;


    static Admin admin() {
        Properties p = new Properties();
        p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, cluster.bootstrapAll());
        p.put(AdminClientConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 30_000);
        p.put(AdminClientConfig.REQUEST_TIMEOUT_MS_CONFIG, 10_000);
        p.put(AdminClientConfig.RECONNECT_BACKOFF_MAX_MS_CONFIG, 500);
        return Admin.create(p);
    }

    /**
     * Proves, across a rolling restart of all three brokers (SIGTERM, restart, full ISR again,
     * next) in the middle of a produce/consume run:
     * (a) every value the producer reported acknowledged is in the topic exactly once, at the
     * partition and offset the acknowledgement gave, no value is in it twice, no send failed
     * (retriable errors are retried; with one broker down two in-sync replicas remain), and
     * the log holds no value the producer was never answered for;
     * (b) the group is never stuck: after each restart, once the ISR is full again, the consumer
     * gets every value acknowledged until then and commits successfully again; in the end it got
     * every acknowledged value, and every record it got is in the log at the partition and offset
     * it was read from (it never read a record that was later truncated away);
     * (c) a record it got twice lies at or after the offset it had last committed successfully
     * for that partition (a commit the coordinator acknowledged is not lost when the
     * coordinator's broker stops), its last successful commits reach the log end of every
     * partition, and once it has left, the group's offsets on the cluster (OffsetFetch) are
     * exactly the log ends.
     */
    @ParameterizedTest(name = "group.protocol={0}")
    @ValueSource(strings = {"classic", "consumer"})
    void rollingRestartLosesNothingAndTheGroupKeepsUp(String groupProtocol, @TempDir Path tmp) throws Exception {
        String topic = "rolling-" + groupProtocol;
        String group = "rolling-group-" + groupProtocol;
        try (Admin admin = admin()) {
            admin.createTopics(List.of(new NewTopic(topic, PARTITIONS, REPLICAS)
                    .configs(Map.of("min.insync.replicas", "2")))).all().get(TIMEOUT_S, TimeUnit.SECONDS);
            awaitFullIsr(admin, List.of(topic), "after creating " + topic);
        }

        Path producerConfig = tmp.resolve("producer.properties");
        Files.writeString(producerConfig, String.join("\n",
                "enable.idempotence=true",
                "retries=2147483647",
                "delivery.timeout.ms=120000",
                "request.timeout.ms=10000",
                "reconnect.backoff.max.ms=500",
                ""));
        Path consumerConfig = tmp.resolve("consumer.properties");
        Files.writeString(consumerConfig, String.join("\n",
                "request.timeout.ms=10000",
                "reconnect.backoff.max.ms=500",
                ""));

        List<String> consumerArgs = List.of(
                "--bootstrap-server", cluster.bootstrapAll(), "--topic", topic, "--group-id", group,
                "--group-protocol", groupProtocol, "--verbose", "--reset-policy", "earliest",
                "--consumer.config", consumerConfig.toString());
        try (ChildJvm consumer = ChildJvm.start("RollingConsumer-" + groupProtocol, List.of(),
                "org.apache.kafka.tools.VerifiableConsumer", consumerArgs)) {
            if (!consumer.awaitLine(l -> l.contains("\"partitions_assigned\"") && countPartitions(l) == PARTITIONS, 30_000)) {
                fail("the VerifiableConsumer never got all " + PARTITIONS + " partitions; its output: "
                        + consumer.lines() + "\n" + consumer.logs() + "\nstderr:\n" + consumer.stderrTail(30)
                        + "\n" + cluster.logTails(30));
            }

            List<String> restarts = new ArrayList<>();
            try (ChildJvm producer = ChildJvm.start("RollingProducer-" + groupProtocol, List.of(),
                    "org.apache.kafka.tools.VerifiableProducer", List.of(
                            "--bootstrap-server", cluster.bootstrapAll(), "--topic", topic,
                            "--throughput", Integer.toString(THROUGHPUT),
                            "--repeating-keys", "1000",
                            "--acks", "-1", "--producer.config", producerConfig.toString()));
                 Admin admin = admin()) {
                awaitAcks(producer, ACKS_BETWEEN, "before the first restart");
                for (int node = 1; node <= SpateCluster.NODES; node++) {
                    long acksBefore = count(producer.lines(), "producer_send_success");
                    long t0 = System.nanoTime();
                    SpateCluster.Restart r = cluster.restart(node);
                    awaitFullIsr(admin, List.of(topic, "__consumer_offsets"), "after restarting node " + node);
                    long isrMs = (System.nanoTime() - t0) / 1_000_000;

                    // The group keeps up: everything acknowledged until now is consumed, and a
                    // commit made after this point succeeds.
                    Set<String> ackedNow = ackedValues(producer.lines());
                    int committedBefore = consumer.lines().size();
                    long deadline = System.currentTimeMillis() + PROGRESS_TIMEOUT_MS;
                    while (!consumedAll(consumer.lines(), ackedNow) || !successfulCommitAfter(consumer.lines(), committedBefore)) {
                        if (System.currentTimeMillis() > deadline || !consumer.isAlive()) {
                            Set<String> missing = new HashSet<>(ackedNow);
                            missing.removeAll(consumedValues(consumer.lines()));
                            fail("the group did not keep up within " + PROGRESS_TIMEOUT_MS + " ms after restarting node " + node
                                    + " (" + r + "): " + missing.size() + " of the " + ackedNow.size()
                                    + " values acknowledged so far not consumed (" + first(new ArrayList<>(missing))
                                    + "), a successful commit since: " + successfulCommitAfter(consumer.lines(), committedBefore)
                                    + ", consumer alive " + consumer.isAlive() + "; " + consumer.logs()
                                    + "\nstderr:\n" + consumer.stderrTail(30) + "\n" + cluster.logTails(40));
                        }
                        Thread.sleep(100);
                    }
                    long keptUpMs = (System.nanoTime() - t0) / 1_000_000 - isrMs;
                    awaitAcks(producer, count(producer.lines(), "producer_send_success") + ACKS_BETWEEN,
                            "after restarting node " + node);
                    restarts.add(r + "; ISR full " + isrMs + " ms after SIGTERM; group caught up and committed "
                            + keptUpMs + " ms later; " + acksBefore + " acks before");
                }

                long stopStart = System.nanoTime();
                producer.terminate();
                if (!producer.waitFor(60_000)) {
                    fail("the VerifiableProducer did not exit within 60 s of SIGTERM; " + producer.logs()
                            + "\nstderr:\n" + producer.stderrTail(30) + "\n" + cluster.logTails(30));
                }
                String producerExit = "exit status " + producer.exitValue() + " "
                        + (System.nanoTime() - stopStart) / 1_000_000 + " ms after SIGTERM";
                assertTrue(producer.lines().stream().anyMatch(l -> l.contains("\"shutdown_complete\"")),
                        "the VerifiableProducer ended without shutdown_complete (" + producerExit + "), so its producer "
                                + "was not closed and records may still have been in flight; " + producer.logs()
                                + "\nstderr:\n" + producer.stderrTail(30));

                // The producer's account: acknowledged (value -> partition/offset) and failed values.
                VerifiableEvents.Account account = VerifiableEvents.producerAccount(producer.lines());
                Map<String, long[]> acked = account.acked();
                Map<String, String> failed = account.failed();

                // (a) The whole topic, read back by a fresh consumer (no group).
                Map<String, List<long[]>> inLog = readTopic(topic);
                VerifiableEvents.LogCheck log = VerifiableEvents.checkLog(account, inLog);
                List<String> lost = log.lost();
                List<String> twice = log.twice();
                List<String> misplaced = log.misplaced();
                List<String> anyTwice = log.anyTwice();
                List<String> unanswered = log.unanswered();
                int unacked = log.unacked();
                int logRecords = log.records();
                Map<TopicPartition, Long> ends = endOffsets(topic);

                // (b), (c) The consumer's account, once it caught up with the whole log.
                long catchUp = System.currentTimeMillis() + CONSUMER_CATCH_UP_TIMEOUT_MS;
                while ((!consumedAll(consumer.lines(), inLog.keySet()) || !committedTo(consumer.lines(), topic, ends))
                        && System.currentTimeMillis() < catchUp && consumer.isAlive()) {
                    Thread.sleep(200); // what is still missing then is reported below
                }
                long consumerStop = System.nanoTime();
                consumer.terminate();
                boolean consumerExited = consumer.waitFor(30_000);
                String consumerExit = consumerExited
                        ? "exit status " + consumer.exitValue() + " " + (System.nanoTime() - consumerStop) / 1_000_000 + " ms after SIGTERM"
                        : "still running 30 s after SIGTERM";
                VerifiableEvents.ConsumerCheck got = VerifiableEvents.checkConsumer(consumer.lines(), inLog, acked.keySet());
                Map<Integer, Long> committed = got.committed(); // partition -> highest successful commit
                Set<String> consumedValues = got.consumedValues();
                List<String> duplicates = got.duplicates();
                List<String> belowCommit = got.belowCommit();
                List<String> wrongData = got.wrongData();
                List<String> failedCommits = got.failedCommits();
                int consumedRecords = got.records();
                int assignments = got.assignments();
                List<String> notConsumed = got.notConsumed();
                Map<Integer, Long> endByPartition = new TreeMap<>();
                ends.forEach((tp, o) -> endByPartition.put(tp.partition(), o));

                String summary = String.format("ReplicatedRollingRestartTest[%s]: %s; producer %s; acked %d, send errors %d, "
                                + "records in log %d (%d not acked), log ends %s, consumed %d records (%d distinct values), "
                                + "duplicates %d, commits failed %d, last successful commits %s, partitions_assigned events %d",
                        groupProtocol, restarts, producerExit, acked.size(), failed.size(), logRecords, unacked,
                        endByPartition, consumedRecords, consumedValues.size(), duplicates.size(), failedCommits.size(),
                        committed, assignments);
                System.out.println(summary);
                String context = "\n" + summary + "\n" + producer.logs() + "\n" + consumer.logs() + "\n" + cluster.logTails(40);

                assertTrue(lost.isEmpty(), "acknowledged values missing from the topic (" + lost.size() + "): "
                        + first(lost) + context);
                assertTrue(twice.isEmpty(), "acknowledged values in the topic more than once (" + twice.size() + "): "
                        + first(twice) + context);
                assertTrue(misplaced.isEmpty(), "acknowledged values elsewhere than acknowledged (" + misplaced.size() + "): "
                        + first(misplaced) + context);
                assertTrue(anyTwice.isEmpty(), "values in the topic more than once (" + anyTwice.size() + "): "
                        + first(anyTwice) + context);
                assertTrue(failed.isEmpty(), "sends that failed (" + failed.size() + "): "
                        + first(new ArrayList<>(failed.entrySet())) + context);
                assertTrue(unanswered.isEmpty(), "values in the topic the producer was never answered for ("
                        + unanswered.size() + "): " + first(unanswered) + context);
                assertTrue(wrongData.isEmpty(), "records consumed that are not in the log there (" + wrongData.size() + "): "
                        + first(wrongData) + context);
                assertTrue(notConsumed.isEmpty(), "acknowledged values the group's consumer never got (" + notConsumed.size()
                        + "): " + first(notConsumed) + context);
                assertTrue(belowCommit.isEmpty(), "records redelivered from below a successfully committed offset ("
                        + belowCommit.size() + "): " + first(belowCommit) + context);
                assertEquals(endByPartition, committed, "the consumer's last successful commits against the log ends" + context);
                // A coordinator that takes over the group's __consumer_offsets partition finds the
                // group there (members, generation or epochs, assignment): no rebalance, as on Kafka.
                assertEquals(1, assignments, "partitions_assigned events: the group rebalanced during the rolling restart" + context);
                assertTrue(consumerExited, "the VerifiableConsumer did not exit within 30 s of SIGTERM" + context);
                assertTrue(consumer.lines().stream().anyMatch(l -> l.contains("\"shutdown_complete\"")),
                        "the VerifiableConsumer ended without shutdown_complete (" + consumerExit + "); stderr:\n"
                                + consumer.stderrTail(30) + context);

                // The group's offsets on the cluster, once its member is gone: the log ends.
                Map<TopicPartition, OffsetAndMetadata> stored = admin.listConsumerGroupOffsets(group)
                        .partitionsToOffsetAndMetadata().get(TIMEOUT_S, TimeUnit.SECONDS);
                Map<Integer, Long> storedByPartition = new TreeMap<>();
                stored.forEach((tp, om) -> {
                    if (tp.topic().equals(topic) && om != null) {
                        storedByPartition.put(tp.partition(), om.offset());
                    }
                });
                assertEquals(endByPartition, storedByPartition, "the group's committed offsets (listConsumerGroupOffsets) "
                        + "against the log ends" + context);
            }
        }
    }

    /**
     * Waits until every partition of {@code topics} has a leader and all three replicas in its
     * ISR, as the admin client describes them.
     */
    private static void awaitFullIsr(Admin admin, List<String> topics, String when) throws Exception {
        long deadline = System.currentTimeMillis() + ISR_TIMEOUT_MS;
        String last = "";
        while (true) {
            try {
                Map<String, TopicDescription> d = admin.describeTopics(topics).allTopicNames().get(TIMEOUT_S, TimeUnit.SECONDS);
                List<String> short_ = new ArrayList<>();
                for (TopicDescription td : d.values()) {
                    for (TopicPartitionInfo p : td.partitions()) {
                        if (p.leader() == null || p.replicas().size() != REPLICAS || p.isr().size() != REPLICAS) {
                            short_.add(td.name() + "-" + p.partition() + " leader " + (p.leader() == null ? "none" : p.leader().id())
                                    + " replicas " + p.replicas().stream().map(n -> n.id()).toList()
                                    + " isr " + p.isr().stream().map(n -> n.id()).toList());
                        }
                    }
                }
                if (short_.isEmpty()) {
                    return;
                }
                last = short_.size() + " partition(s) short: " + first(short_);
            } catch (java.util.concurrent.ExecutionException e) {
                last = e.getCause().toString();
            }
            if (System.currentTimeMillis() > deadline) {
                fail("the ISR of every partition of " + topics + " was not full within " + ISR_TIMEOUT_MS + " ms " + when
                        + ": " + last + "\n" + cluster.logTails(40));
            }
            Thread.sleep(200);
        }
    }

    private static void awaitAcks(ChildJvm producer, long acks, String when) throws InterruptedException {
        long deadline = System.currentTimeMillis() + PROGRESS_TIMEOUT_MS;
        while (count(producer.lines(), "producer_send_success") < acks) {
            if (System.currentTimeMillis() > deadline || !producer.isAlive()) {
                fail("the producer did not reach " + acks + " acknowledged records " + when + " ("
                        + count(producer.lines(), "producer_send_success") + ", alive " + producer.isAlive() + "); "
                        + producer.logs() + "\nstderr:\n" + producer.stderrTail(30) + "\n" + cluster.logTails(30));
            }
            Thread.sleep(20);
        }
    }

    private static Set<String> ackedValues(List<String> lines) {
        Set<String> out = new HashSet<>();
        for (JsonNode e : events(lines)) {
            if (e.path("name").asText().equals("producer_send_success")) {
                out.add(e.get("value").asText());
            }
        }
        return out;
    }


    /** Whether a successful offsets_committed event comes at or after line {@code from}. */
    private static boolean successfulCommitAfter(List<String> lines, int from) {
        return events(lines.subList(Math.min(from, lines.size()), lines.size())).stream()
                .anyMatch(e -> e.path("name").asText().equals("offsets_committed") && e.path("success").asBoolean()
                        && e.path("offsets").size() > 0);
    }

    /** Whether the consumer's successful commits reached {@code ends} on every partition. */
    private static boolean committedTo(List<String> lines, String topic, Map<TopicPartition, Long> ends) {
        Map<TopicPartition, Long> committed = new HashMap<>();
        for (JsonNode e : events(lines)) {
            if (e.path("name").asText().equals("offsets_committed") && e.path("success").asBoolean()) {
                for (JsonNode c : e.path("offsets")) {
                    committed.merge(new TopicPartition(topic, c.get("partition").asInt()), c.get("offset").asLong(), Math::max);
                }
            }
        }
        return ends.entrySet().stream().allMatch(x -> x.getValue().equals(committed.getOrDefault(x.getKey(), 0L)));
    }

    private static Properties consumerProps() {
        Properties p = new Properties();
        p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, cluster.bootstrapAll());
        p.put(ConsumerConfig.KEY_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.VALUE_DESERIALIZER_CLASS_CONFIG, StringDeserializer.class.getName());
        p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
        p.put(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG, "earliest");
        p.put(ConsumerConfig.DEFAULT_API_TIMEOUT_MS_CONFIG, 30_000);
        p.put(ConsumerConfig.REQUEST_TIMEOUT_MS_CONFIG, 20_000);
        return p;
    }

    /** Every record of the topic: value -> [partition, offset] of each record holding it. */
    private static Map<String, List<long[]>> readTopic(String topic) {
        return VerifiableEvents.readTopic(consumerProps(), topic, PARTITIONS, () -> cluster.logTails(30));
    }

    private static Map<TopicPartition, Long> endOffsets(String topic) {
        return VerifiableEvents.endOffsets(consumerProps(), topic, PARTITIONS);
    }

}
